import VMCore

/// What Ingens's access-frequency sampler saw of one process at its last pass (Ingens:
/// `mm->hpage_stats`, filled by `osa_hpage_do_walk()`).
public struct IngensSample: Sendable, Hashable {
    /// Ranges mapped by a huge PMD (`total_hpage_count`).
    public var hugePages = 0
    /// Of those, the ones whose PMD was not accessed since the previous pass (`idle_hpage_count`).
    public var idleHugePages = 0
    /// Pages mapped by PTEs (`total_bpage_count`).
    public var basePages = 0
    /// Of those, the ones not accessed since the previous pass (`idle_bpage_count`).
    public var idleBasePages = 0
    /// Ranges accessed at each of the last four passes.
    public var hotRanges = 0
    /// Huge pages the process needs: its resident anonymous pages / 512, rounded down
    /// (`hpage_requirement = get_mm_counter(mm, MM_ANONPAGES) / 512`).
    public var requirement = 0

    public init() {}
}

/// The sampler (Ingens: the `osa_hpage_scand` kernel thread). Every `scan_sleep_millisecs` it walks each
/// tracked process of non-zero weight: for each 2 MiB range it reads and clears the accessed bit of
/// the huge PMD or of every PTE, as idle-page tracking does (`page_idle_clear_pte_refs()`, no TLB
/// flush, so an access served from the TLB leaves the bit clear, as on the hardware), shifts the
/// result into the range's history and counts huge, idle and resident pages for the fairness metric.
///
/// ```
///  wake ─► per process (weight > 0) ─► per tracked range: young? ─► history = history << 1 | young
///                                                          huge / idle / mapped counts ─► IngensSample
///  hot range: the last 4 samples all young (Ingens: the 4 newest bits of freq_bitmap set → osa_hot_page_set)
/// ```
/// Differences from Ingens: it keeps an 8-sample history per 4 KiB page and per huge page (in
/// `struct page`), the model one per 2 MiB range (a range is accessed when any of its pages was);
/// its walk covers every anonymous VMA, the model the ranges Ingens's fault path tracks (those where
/// `enabled` allows a huge page), so the requirement counts the resident pages there.
extension IngensState {
    /// Samples a range must have been accessed at, in a row, to be hot (Ingens: `weight == 4` over the
    /// newest bits of `freq_bitmap` in `osa_bpage_pte_walker()`).
    public static let hotSamples = 4

    /// When the sampler wakes next; nil when it is off or has no process to sample.
    var nextSample: UInt64? { state.withLock { $0.samplerWakeup } }

    /// Runs a sampler pass if it is due (called with the policy's other threads).
    func sampleIfDue(_ kernel: Kernel) {
        let now = kernel.clock.now
        guard state.withLock({ s in s.samplerWakeup.map { $0 <= now } ?? false }) else { return }
        sample(kernel, now: now)
    }

    /// One pass (Ingens: `osa_hpage_do_scan()` → `osa_hpage_do_walk()`). The mmap locks are taken
    /// outside the state's lock.
    private func sample(_ kernel: Kernel, now: UInt64) {
        let work: [(AddressSpace, [UInt64])] = state.withLock { s in
            s.processes.keys.sorted().compactMap { pid in
                guard let p = s.processes[pid], let mm = p.mm, !mm.hasExited, s.weight(p) > 0 else { return nil }
                return (mm, p.ranges.keys.sorted())
            }
        }
        var seen: [(pid: Int, haddr: UInt64, huge: Bool, mapped: Int, young: Int)] = []
        for (mm, ranges) in work {
            for haddr in ranges {
                let r = mm.sampleAccessed(VirtualAddress(haddr))
                seen.append((mm.pid, haddr, r?.huge ?? false, r?.mapped ?? 0, r?.young ?? 0))
            }
        }
        state.withLock { s in
            var samples: [Int: IngensSample] = [:]
            for (mm, _) in work { samples[mm.pid] = IngensSample() }
            var anonymous: [Int: Int] = [:]
            for v in seen {
                guard let box = s.processes[v.pid]?.ranges[v.haddr] else { continue }
                box.r.history = box.r.history << 1 | (v.young > 0 ? 1 : 0)
                box.r.samples = min(box.r.samples + 1, 8)
                let r = box.r
                if Self.isHot(r) { samples[v.pid]!.hotRanges += 1; s.hotRangeSamples += 1 }
                if v.huge {
                    samples[v.pid]!.hugePages += 1
                    if v.young == 0 { samples[v.pid]!.idleHugePages += 1; s.idleHugeSamples += 1 }
                } else {
                    samples[v.pid]!.basePages += v.mapped
                    samples[v.pid]!.idleBasePages += v.mapped - v.young
                }
                anonymous[v.pid, default: 0] += v.mapped
            }
            for (pid, var sample) in samples where s.processes[pid] != nil {
                sample.requirement = (anonymous[pid] ?? 0) / PageGeometry.entriesPerTable
                s.processes[pid]!.sampled = sample
            }
            // A process that exited leaves the list (`osa_hpage_exit_list()`).
            s.last = nil
            s.processes = s.processes.filter { $0.value.mm.map { !$0.hasExited } ?? ($0.value.weight != nil) }
            s.samplePasses += 1
            let live = s.processes.values.contains { $0.mm != nil }
            s.samplerWakeup = live && s.scanSleepMillisecs > 0
                ? now + s.scanSleepMillisecs * SimulatedClock.nanosecondsPerMillisecond : nil
        }
    }

    static func isHot(_ r: Range) -> Bool {
        let mask: UInt8 = (1 << hotSamples) - 1
        return r.samples >= UInt8(hotSamples) && r.history & mask == mask
    }

    // MARK: Weights and what the sampler saw

    /// Sets the fairness weight of process `pid`, 0 to 999 (Ingens: a write to
    /// `/proc/PID/hugepage_stats`); 0 leaves the process out of sampling and of the fairness ranking.
    public func setWeight(_ weight: Int, pid: Int) {
        precondition((0...Self.maxWeight).contains(weight))
        state.withLock { $0.processes[pid, default: Process()].weight = weight }
    }

    /// The fairness weight of process `pid`.
    public func weight(pid: Int) -> Int {
        state.withLock { s in s.processes[pid].map { s.weight($0) } ?? s.defaultWeight }
    }

    /// What the sampler's last pass saw of process `pid`.
    public func sample(pid: Int) -> IngensSample {
        state.withLock { $0.processes[pid]?.sampled ?? IngensSample() }
    }

    /// The fairness metric of process `pid` from the last pass (Ingens: `M_fairness` in
    /// `/proc/PID/hugepage_stats`).
    public func fairnessMetric(pid: Int) -> Int {
        state.withLock { s in
            guard let p = s.processes[pid] else { return 0 }
            return Self.fairnessMetric(weight: s.weight(p), p.sampled)
        }
    }

    /// Whether the range at `haddr` of process `pid` was accessed at each of the last four passes.
    public func isHot(pid: Int, range haddr: VirtualAddress) -> Bool {
        state.withLock { s in
            s.processes[pid]?.ranges[haddr.alignedDown(PageGeometry.pmdSize).rawValue].map { Self.isHot($0.r) } ?? false
        }
    }
}

extension AddressSpace {
    /// Reads and clears the accessed bits of the 2 MiB range at `haddr`: whether a huge PMD maps it,
    /// the pages mapped and how many of them were young; nil when the range is no longer in a VMA that
    /// holds it whole or its PMD is being split. No TLB flush, as idle-page tracking does none
    /// (Linux: `page_idle_clear_pte_refs()` → `ptep_clear_young_notify()`, `pmdp_clear_young_notify()`).
    ///
    /// Linux keeps the reference it clears in the page's `PG_young` (`page_idle_clear_pte_refs_one()`
    /// → `set_page_young()`), which khugepaged's referenced test and reclaim's `folio_referenced()`
    /// read; the model's frame flags have no bit left for it, so the sampler sets `PG_referenced`
    /// instead (`.referenced`): khugepaged's test sees the reference as Linux's does, and reclaim sees
    /// a page referenced once before (`folio_check_references()` without a young PTE reclaims it,
    /// where Linux's `PG_young` would count as a young PTE and keep it inactive once more).
    func sampleAccessed(_ haddr: VirtualAddress) -> (huge: Bool, mapped: Int, young: Int)? {
        mmapLock.withReadLock { () -> (huge: Bool, mapped: Int, young: Int)? in
            guard !hasExited, let vma = vmas.vma(containing: haddr), hugeRangeFits(vma, haddr) else { return nil }
            guard let (pmd, index) = walk(haddr, to: .pmd, allocate: false) else { return (false, 0, 0) }
            let pmdLock = pmdLock(pmd)
            pmdLock.spinLock()
            let entry = pmd[index]
            if entry.isHuge {
                defer { pmdLock.spinUnlock() }
                guard !entry.isSplitting else { return nil }
                if entry.isAccessed {
                    pmd.set(index, entry.makingOld())
                    kernel.memory.frames.insertFlags(entry.pfn, .referenced)
                }
                return (true, PageGeometry.entriesPerTable, entry.isAccessed ? PageGeometry.entriesPerTable : 0)
            }
            pmdLock.spinUnlock()
            guard !entry.isNone else { return (false, 0, 0) }
            // Under the mmap read lock a PTE table stays (a collapse takes the lock for writing).
            let table = kernel.table(at: entry)
            let lock = kernel.splitLock(table)
            lock.spinLock()
            defer { lock.spinUnlock() }
            var mapped = 0, young = 0
            for i in 0..<PageGeometry.entriesPerTable {
                let pte = table[i]
                guard pte.isMapped else { continue }
                mapped += 1
                guard pte.isAccessed else { continue }
                young += 1
                table.set(i, pte.makingOld())
                if kernel.memory.frames.kind(pte.pfn) == .anonymous { kernel.memory.frames.insertFlags(pte.pfn, .referenced) }
            }
            return (false, mapped, young)
        }
    }
}
