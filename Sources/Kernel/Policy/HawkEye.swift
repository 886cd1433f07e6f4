import VMCore

/// HawkEye (Panwar et al., ASPLOS 2019; apanwariisc/HawkEye, Linux 4.3): Linux's fault path (a huge
/// page at the fault where `enabled` allows it), and three additions.
///
/// - **Access-coverage bins.** Every 2 MiB range that took a 4 KiB fault in a VMA that allows huge
///   pages becomes a candidate. A sampler thread (`kbinmanager`) clears the accessed bits of each
///   candidate's PTEs, waits `sample_wait_millisecs`, counts the young ones `n`, and updates the
///   range's weight `w ← (6w + 4n) / 10` (at most 512) and its bin `⌈log2 w⌉` (0…9); it then sleeps
///   `scan_sleep_millisecs`. khugepaged promotes from the highest non-empty bin down, across
///   processes in turn, and never from bin 0; it does not scan otherwise. A range whose promotion
///   fails goes back to bin 0.
/// - **Pre-zeroing** (`HawkEyePolicy.preZeroing`): see `HawkEye+PreZeroing.swift`.
/// - **Bloat recovery**: under memory pressure the deferred-split shrinker splits huge pages with
///   zero-filled 4 KiB pages and maps the zero page there (`splitsUnderused` is on).
///
/// ```
///  4 KiB fault ─► candidate (bin 0) ─► sampler: clear A bits … 1 s … count young ─► w, bin
///  khugepaged ─► highest bin first, round robin over processes ─► collapse
/// ```
/// Linux (HawkEye): `ohp_enter()`/`add_ohp_bin()`, `kbinmanager()`, `ohp_adjust_mm_bins()`,
/// `update_kaddr_weight()`, `get_ohp_global_kaddr()`, `ohp_putback_kaddr()` (mm/ohp.c), `ohp_scan_mm()`
/// (mm/huge_memory.c).
public struct HawkEyePolicy: HugepagePolicy {
    /// Milliseconds between clearing the accessed bits and counting them (`kbinmanager_wait_scan_period(1000)`).
    public var sampleWaitMillisecs: UInt64
    /// Milliseconds the sampler sleeps between passes (`kbinmanager_wait_cpu_bound()`: at least 5000).
    public var scanSleepMillisecs: UInt64
    /// Whether free blocks are zeroed ahead, and at what rate.
    public var preZeroing: PreZeroingSettings
    /// Whether the shrinker recovers bloat (splits huge pages with zero-filled pages).
    public var bloatRecovery: Bool

    /// The pre-zeroing thread's settings (HawkEye's `asynczero` module parameters).
    public struct PreZeroingSettings: Sendable, Hashable {
        /// Whether the thread runs.
        public var enabled: Bool
        /// Blocks zeroed per wake-up (`count`).
        public var blocksPerWakeup: Int
        /// Milliseconds between wake-ups (`sleep`).
        public var sleepMillisecs: UInt64
        public init(enabled: Bool = true, blocksPerWakeup: Int = 10, sleepMillisecs: UInt64 = 1000) {
            self.enabled = enabled; self.blocksPerWakeup = blocksPerWakeup; self.sleepMillisecs = sleepMillisecs
        }
    }

    /// HawkEye's defaults.
    public init(sampleWaitMillisecs: UInt64 = 1000, scanSleepMillisecs: UInt64 = 5000,
                preZeroing: PreZeroingSettings = PreZeroingSettings(), bloatRecovery: Bool = true) {
        self.sampleWaitMillisecs = sampleWaitMillisecs
        self.scanSleepMillisecs = scanSleepMillisecs
        self.preZeroing = preZeroing
        self.bloatRecovery = bloatRecovery
    }

    /// The policy's name (`--policy`) and the folder of its knobs.
    public static let name = "hawkeye"

    // Linux's fault path, khugepaged's VMA rule and MADV_COLLAPSE, deferred split.
    public func faultOrders(in vma: VMA, at address: VirtualAddress, among candidates: FolioOrders,
                            settings: TransparentHugepageSettings) -> FolioOrders {
        Linux6_18Policy().faultOrders(in: vma, at: address, among: candidates, settings: settings)
    }
    public func khugepagedMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool {
        settings.allowsHugepages(in: vma)
    }
    public func madviseMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool {
        Linux6_18Policy().madviseMayCollapse(vma, settings: settings)
    }
    public func defersSplit(partiallyMapped: Bool) -> Bool { true }
    public func splitsUnderused(settings: TransparentHugepageSettings) -> Bool { bloatRecovery }

    /// Bloat recovery frees every zero-filled 4 KiB page of a huge page (HawkEye's `remove_zero_pages()`
    /// has no threshold); without it, Linux's `max_ptes_none` limit.
    public func underusedZeroPages(maxPtesNone: Int) -> Int { bloatRecovery ? 0 : maxPtesNone }

    /// Huge faults take pre-zeroed blocks while the pre-zeroing thread is configured.
    public func zeroing(order: PageOrder) -> PageZeroing {
        preZeroing.enabled && order == PageGeometry.pmdOrder ? .aheadWhenAvailable : .atFault
    }

    public func makeState() -> (any HugepagePolicyState)? { HawkEyeState(self) }

    public func anonymousFaultMapped(_ mm: AddressSpace, _ vma: VMA, at address: VirtualAddress,
                                     state: (any HugepagePolicyState)?) {
        let settings = mm.kernel.hugepageSettings
        guard let state = state as? HawkEyeState, settings.allowsHugepages(in: vma), mm.hugeRangeFits(vma, address) else { return }
        if !mm.isRegisteredWithKhugepaged { mm.khugepagedEnter(vma) }
        state.addCandidate(mm, address.alignedDown(PageGeometry.pmdSize), now: mm.kernel.clock.now)
        state.wakeZeroing(now: mm.kernel.clock.now)
    }

    public func rangeUnmapped(_ mm: AddressSpace, from start: VirtualAddress, to end: VirtualAddress,
                              state: (any HugepagePolicyState)?) {
        (state as? HawkEyeState)?.removeCandidates(mm.pid, start, end)
        (state as? HawkEyeState)?.wakeZeroing(now: mm.kernel.clock.now)
    }

    public func nextQueuedCollapse(state: (any HugepagePolicyState)?) -> (mm: AddressSpace, address: VirtualAddress)? {
        (state as? HawkEyeState)?.takeHottest()
    }

    /// HawkEye's khugepaged promotes from the bins only (`khugepaged_scan_mm_slot()` is compiled out).
    public func khugepagedMayCollapse(_ mm: AddressSpace, range haddr: VirtualAddress,
                                      state: (any HugepagePolicyState)?) -> Bool { false }

    public func khugepagedAttempted(_ mm: AddressSpace, range haddr: VirtualAddress, queued: Bool,
                                    result: CollapseResult, state: (any HugepagePolicyState)?) {
        (state as? HawkEyeState)?.attempted(mm, haddr, result: result)
    }

    public func nextThreadWakeup(state: (any HugepagePolicyState)?) -> UInt64? {
        (state as? HawkEyeState)?.nextWakeup
    }

    public func runThreads(_ kernel: Kernel, state: (any HugepagePolicyState)?) {
        (state as? HawkEyeState)?.run(kernel)
    }
}

/// HawkEye's state in one kernel: each process's candidate ranges with their weights and bins, the
/// sampler's and the pre-zeroing thread's timers, the knobs and the counters, under one leaf lock
/// (HawkEye: `mm->ohp.lock`, `ohp_mm_lock`).
public final class HawkEyeState: HugepagePolicyState {
    struct Candidate {
        var weight = 0
        var bin = 0
    }

    struct Process {
        weak var mm: AddressSpace?
        var candidates: [UInt64: Candidate] = [:]
    }

    enum SamplerPhase { case clear, count }

    struct State {
        var policy: HawkEyePolicy
        var processes: [Int: Process] = [:]
        /// Promotion order across processes: the pid promoted from last goes to the back.
        var roundRobin: [Int] = []
        var samplerPhase = SamplerPhase.clear
        var samplerWakeup: UInt64?
        var zeroWakeup: UInt64?
        var samplePasses = 0, rangesPromoted = 0, promotionsFailed = 0, rangesDropped = 0
        var blocksZeroed = 0
        var zeroIdle = false
    }

    let state: SpinLocked<State>

    init(_ policy: HawkEyePolicy) {
        state = SpinLocked(State(policy: policy, zeroWakeup: policy.preZeroing.enabled ? 0 : nil))
    }

    /// The bin of a candidate khugepaged has taken and not yet reported on.
    static let taken = -1

    /// The bin of `weight`: `order_base_2()`, the base-2 logarithm rounded up (0 and 1 → 0, 512 → 9).
    public static func bin(_ weight: Int) -> Int { weight <= 1 ? 0 : Int.bitWidth - (weight - 1).leadingZeroBitCount }

    /// The new weight from `weight` and `young` PTEs counted (`update_kaddr_weight()`).
    public static func nextWeight(_ weight: Int, young: Int) -> Int {
        min(PageGeometry.entriesPerTable, (weight * 6 + young * 4) / 10)
    }

    // MARK: Knobs and counters

    public static let knobNames = ["hawkeye/sample_wait_millisecs", "hawkeye/scan_sleep_millisecs",
                                   "hawkeye/prezero", "hawkeye/prezero_blocks", "hawkeye/prezero_sleep_millisecs"]
    public var knobNames: [String] { Self.knobNames }

    public func knobText(_ name: String) -> String? {
        state.withLock { s in
            let p = s.policy
            return switch name {
            case "hawkeye/sample_wait_millisecs": String(p.sampleWaitMillisecs)
            case "hawkeye/scan_sleep_millisecs": String(p.scanSleepMillisecs)
            case "hawkeye/prezero": p.preZeroing.enabled ? "1" : "0"
            case "hawkeye/prezero_blocks": String(p.preZeroing.blocksPerWakeup)
            case "hawkeye/prezero_sleep_millisecs": String(p.preZeroing.sleepMillisecs)
            default: nil
            }
        }
    }

    public func setKnob(_ name: String, to text: String) -> String? {
        func flag() -> Bool? { text == "1" ? true : text == "0" ? false : nil }
        func millis() -> UInt64? { UInt64(text).flatMap { $0 > 0 && $0 <= 3_600_000 ? $0 : nil } }
        switch name {
        case "hawkeye/sample_wait_millisecs", "hawkeye/scan_sleep_millisecs", "hawkeye/prezero_sleep_millisecs":
            guard let v = millis() else { return "\(name): '\(text)' is not a number of milliseconds from 1 to 3600000" }
            state.withLock { s in
                switch name {
                case "hawkeye/sample_wait_millisecs": s.policy.sampleWaitMillisecs = v
                case "hawkeye/scan_sleep_millisecs": s.policy.scanSleepMillisecs = v
                default: s.policy.preZeroing.sleepMillisecs = v
                }
            }
        case "hawkeye/prezero":
            guard let v = flag() else { return "\(name): '\(text)' is not 0 or 1" }
            state.withLock { s in
                s.policy.preZeroing.enabled = v
                if v && s.zeroWakeup == nil { s.zeroWakeup = 0 } else if !v { s.zeroWakeup = nil }
            }
        case "hawkeye/prezero_blocks":
            guard let v = Int(text), (1...1 << 20).contains(v) else { return "\(name): '\(text)' is not a count from 1 to 1048576" }
            state.withLock { $0.policy.preZeroing.blocksPerWakeup = v }
        default:
            return "unknown knob '\(name)': HawkEye has \(Self.knobNames.joined(separator: ", "))"
        }
        return nil
    }

    public var counters: [(name: String, value: Int)] {
        state.withLock { s in
            [("hawkeye_sample_passes", s.samplePasses), ("hawkeye_ranges_promoted", s.rangesPromoted),
             ("hawkeye_promotions_failed", s.promotionsFailed), ("hawkeye_ranges_dropped", s.rangesDropped),
             ("hawkeye_blocks_prezeroed", s.blocksZeroed)]
        }
    }

    // MARK: Candidates

    /// Makes the range at `haddr` a candidate in bin 0, once, and starts the sampler if it was idle
    /// (HawkEye: `add_ohp_bin()`).
    func addCandidate(_ mm: AddressSpace, _ haddr: VirtualAddress, now: UInt64) {
        state.withLock { s in
            if s.processes[mm.pid] == nil {
                s.processes[mm.pid] = Process(mm: mm)
                s.roundRobin.append(mm.pid)
            }
            if s.processes[mm.pid]!.candidates[haddr.rawValue] == nil {
                s.processes[mm.pid]!.candidates[haddr.rawValue] = Candidate()
            }
            if s.samplerWakeup == nil { s.samplerWakeup = now; s.samplerPhase = .clear }
        }
    }

    /// Drops the candidates whose whole range lies in `[start, end)` (HawkEye: `remove_ohp_bins()`
    /// when a VMA goes); a range partly unmapped stays, and its sampling sees fewer young PTEs.
    func removeCandidates(_ pid: Int, _ start: VirtualAddress, _ end: VirtualAddress) {
        state.withLock { s in
            guard var p = s.processes[pid], !p.candidates.isEmpty else { return }
            let first = start.alignedUp(PageGeometry.pmdSize).rawValue
            let last = end.alignedDown(PageGeometry.pmdSize).rawValue     // ranges start below this
            guard first < last else { return }
            if UInt64(p.candidates.count) > (last - first) >> PageGeometry.pmdShift {
                var haddr = first
                while haddr < last { p.candidates[haddr] = nil; haddr += PageGeometry.pmdSize }
            } else {
                p.candidates = p.candidates.filter { $0.key < first || $0.key >= last }
            }
            s.processes[pid] = p
        }
    }

    /// The candidate of the highest bin above 0, from the process whose turn it is; taken off the
    /// bins (HawkEye: `get_ohp_global_kaddr()`).
    func takeHottest() -> (mm: AddressSpace, address: VirtualAddress)? {
        state.withLock { s in
            for bin in stride(from: PageGeometry.pmdOrder.pages.trailingZeroBitCount, through: 1, by: -1) {
                for (i, pid) in s.roundRobin.enumerated() {
                    guard let p = s.processes[pid], let mm = p.mm, !mm.hasExited else { continue }
                    // Lowest address first within a bin, for determinism.
                    var lowest: UInt64?
                    for (address, c) in p.candidates where c.bin == bin && address < (lowest ?? .max) { lowest = address }
                    guard let haddr = lowest else { continue }
                    s.processes[pid]!.candidates[haddr]!.bin = Self.taken
                    s.roundRobin.remove(at: i)
                    s.roundRobin.append(pid)
                    return (mm, VirtualAddress(haddr))
                }
            }
            return nil
        }
    }

    /// Records khugepaged's attempt: a failure puts the range back in bin 0 (`ohp_putback_kaddr()`).
    func attempted(_ mm: AddressSpace, _ haddr: VirtualAddress, result: CollapseResult) {
        state.withLock { s in
            switch result {
            case .succeeded:
                s.rangesPromoted += 1
                s.processes[mm.pid]?.candidates[haddr.rawValue] = nil
            case .pmdMapped, .processExited, .vmaCheck, .pmdNone:
                s.rangesDropped += 1
                s.processes[mm.pid]?.candidates[haddr.rawValue] = nil
            default:
                // Back in bin 0 with its weight, until the next sample re-bins it.
                s.promotionsFailed += 1
                s.processes[mm.pid]?.candidates[haddr.rawValue]?.bin = 0
            }
        }
    }

    /// The candidates of process `pid`: address → (weight, bin).
    public func candidates(pid: Int) -> [VirtualAddress: (weight: Int, bin: Int)] {
        state.withLock { s in
            var result: [VirtualAddress: (weight: Int, bin: Int)] = [:]
            for (a, c) in s.processes[pid]?.candidates ?? [:] { result[VirtualAddress(a)] = (c.weight, c.bin) }
            return result
        }
    }

    // MARK: Threads

    /// The earliest of the sampler's and the pre-zeroing thread's wake-ups.
    var nextWakeup: UInt64? {
        state.withLock { s in
            switch (s.samplerWakeup, s.zeroWakeup) {
            case let (a?, b?): min(a, b)
            case let (a?, nil): a
            case let (nil, b?): b
            case (nil, nil): nil
            }
        }
    }

    /// Runs the threads that are due.
    func run(_ kernel: Kernel) {
        let now = kernel.clock.now
        let (samplerDue, zeroingDue) = state.withLock { s in
            (s.samplerWakeup.map { $0 <= now } ?? false, s.zeroWakeup.map { $0 <= now } ?? false)
        }
        if samplerDue { sample(kernel, now: now) }
        if zeroingDue { preZero(kernel, now: now) }
    }

    /// One step of the sampler: clear every candidate's accessed bits, or count them and re-bin
    /// (HawkEye: `kbinmanager_do_scan()` → `ohp_clear_pte_accessed_mm()`, then `ohp_adjust_mm_bins()`).
    /// The mmap locks are taken outside the state's lock.
    private func sample(_ kernel: Kernel, now: UInt64) {
        let (phase, work): (SamplerPhase, [(AddressSpace, [UInt64])]) = state.withLock { s in
            (s.samplerPhase, s.processes.keys.sorted().compactMap { pid in
                guard let p = s.processes[pid], let mm = p.mm, !mm.hasExited else { return nil }
                return (mm, p.candidates.keys.sorted())
            })
        }
        var counts: [(pid: Int, haddr: UInt64, young: Int?)] = []
        for (mm, ranges) in work {
            for haddr in ranges {
                let va = VirtualAddress(haddr)
                switch phase {
                case .clear: mm.clearYoung(va, length: PageGeometry.pmdSize)
                case .count: counts.append((mm.pid, haddr, mm.youngPTEs(va)))
                }
            }
        }
        state.withLock { s in
            switch phase {
            case .clear:
                s.samplerPhase = .count
                s.samplerWakeup = now + s.policy.sampleWaitMillisecs * SimulatedClock.nanosecondsPerMillisecond
            case .count:
                for (pid, haddr, young) in counts {
                    guard let old = s.processes[pid]?.candidates[haddr] else { continue }
                    guard let young else {
                        s.processes[pid]!.candidates[haddr] = nil
                        s.rangesDropped += 1
                        continue
                    }
                    let weight = Self.nextWeight(old.weight, young: young)
                    s.processes[pid]!.candidates[haddr] = Candidate(weight: weight, bin: Self.bin(weight))
                }
                s.processes = s.processes.filter { $0.value.mm.map { !$0.hasExited } ?? false }
                s.roundRobin.removeAll { s.processes[$0] == nil }
                s.samplePasses += 1
                s.samplerPhase = .clear
                let empty = s.processes.values.allSatisfy(\.candidates.isEmpty)
                s.samplerWakeup = empty ? nil : now + s.policy.scanSleepMillisecs * SimulatedClock.nanosecondsPerMillisecond
            }
        }
    }

    /// The pre-zeroing thread's wake-up (`HawkEye+PreZeroing.swift`).
    private func preZero(_ kernel: Kernel, now: UInt64) {
        let (blocks, sleep) = state.withLock { ($0.policy.preZeroing.blocksPerWakeup, $0.policy.preZeroing.sleepMillisecs) }
        let zeroed = kernel.preZeroFreeBlocks(blocks)
        state.withLock { s in
            s.blocksZeroed += zeroed
            // With nothing left to zero the thread waits for memory to be freed or used (the model's
            // own: HawkEye's polls forever, which would keep simulated time from ever running out).
            s.zeroIdle = zeroed == 0
            s.zeroWakeup = s.policy.preZeroing.enabled && zeroed > 0
                ? now + sleep * SimulatedClock.nanosecondsPerMillisecond : nil
        }
    }

    /// Wakes the pre-zeroing thread, after its sleep, if it went idle with nothing to zero.
    func wakeZeroing(now: UInt64) {
        state.withLock { s in
            guard s.zeroIdle, s.zeroWakeup == nil, s.policy.preZeroing.enabled else { return }
            s.zeroIdle = false
            s.zeroWakeup = now + s.policy.preZeroing.sleepMillisecs * SimulatedClock.nanosecondsPerMillisecond
        }
    }
}

extension AddressSpace {
    /// The young PTEs of the 2 MiB range at `haddr`, read without clearing them; nil when the range
    /// is no longer in a VMA that holds it whole, has no PTE table, or is mapped huge (HawkEye:
    /// `ohp_nr_accessed()` → `ohp_calc_hpage_hotness()`, which returns -1 there).
    func youngPTEs(_ haddr: VirtualAddress) -> Int? {
        mmapLock.withReadLock { () -> Int? in
            guard !hasExited, let vma = vmas.vma(containing: haddr), hugeRangeFits(vma, haddr),
                  let (pmd, index) = walk(haddr, to: .pmd, allocate: false) else { return nil }
            let entry = pmd[index]
            guard !entry.isNone, !entry.isHuge else { return nil }
            let table = kernel.table(at: entry)
            let lock = kernel.splitLock(table)
            lock.spinLock()
            defer { lock.spinUnlock() }
            var young = 0
            for i in 0..<PageGeometry.entriesPerTable {
                let pte = table[i]
                if pte.isMapped && pte.isAccessed { young += 1 }
            }
            return young
        }
    }
}
