import VMCore

/// Ingens (Kwon et al., OSDI 2016; ut-osa/ingens, Linux 4.3): no huge page at a fault; every 4 KiB
/// fault in a range that could hold a huge page sets the page's bit in the range's population bitmap,
/// and when `util_threshold` percent of the 512 pages are populated the range is queued for khugepaged,
/// which collapses queued ranges before it scans; its scan refuses ranges populated below the
/// threshold. An access-frequency sampler (`osa_hpage_scand`) wakes every `scan_sleep_millisecs`,
/// reads and clears the accessed bits of every tracked range, keeps each range's last four samples
/// (hot when all four saw an access), and counts each process's huge pages, idle huge pages and
/// anonymous pages. While ranges are queued khugepaged does not sleep, and serves them oldest first;
/// with the queue empty and `fairness` on, its scan goes to the process with the highest fairness
/// metric `weight × requirement × 100 / huge pages held` from that sample.
///
/// ```
///  fault ─► bitmap[pid, haddr] |= bit ─► weight ≥ 460 ─► queue (once, "committed") ─► khugepaged
///  munmap/MADV_DONTNEED ─► bits cleared, committed reset
///  sampler (every 4 s) ─► accessed bits read and cleared ─► history, hot ranges, huge/idle/RSS counts ─► fairness
/// ```
/// What runs on Linux 6.18's mechanism: the collapse itself (`collapse_huge_page()`), khugepaged's
/// wake-ups and budget (`pages_to_scan`, `scan_sleep_millisecs`), and its `enabled` rule: Ingens
/// tracks and promotes only where `enabled` allows huge pages (`transparent_hugepage_enabled()`).
///
/// Linux (Ingens): `do_anonymous_page()`'s `CONFIG_OSA` block (`popl_bitmap`, `hugepage_worklist`),
/// `khugepaged_scan_pmd()`'s `util_threshold` check, `osa_khugepaged_schedule_mm_slot()`,
/// `osa_compute_fairness_metric()`, `osa_clear_poplmap_range()`; osa/hugepage_scan.c's
/// `osa_hpage_do_scan()`, `osa_hpage_pmd_walker()`, `osa_bpage_pte_walker()`.
public struct IngensPolicy: HugepagePolicy {
    /// Percent of a range's 512 pages that must be populated before it is promoted (`util_threshold`).
    public var utilThreshold: Int
    /// Whether khugepaged's scan goes to the most deprived process first (`hugepage_fairness`).
    public var fairness: Bool
    /// The access-frequency sampler's period in milliseconds of simulated time; 0 stops it (Ingens:
    /// `scan_sleep_millisecs` of `osa_hpage_scand`, whose `has_work` is false at 0).
    public var scanSleepMillisecs: UInt64
    /// The fairness weight every process starts with (Ingens: `mm->hpage_stats.weight`, written
    /// through `/proc/PID/hugepage_stats`); a process of weight 0 is neither sampled nor ranked.
    public var weight: Int

    /// Ingens's defaults: 90 %, fairness off, the sampler every 4 s (as its sysfs files boot); every
    /// process weighs 1, where Ingens starts each at 0 and leaves it out until a weight is written.
    public init(utilThreshold: Int = 90, fairness: Bool = false, scanSleepMillisecs: UInt64 = 4000, weight: Int = 1) {
        precondition((0...100).contains(utilThreshold) && (0...IngensState.maxWeight).contains(weight))
        self.utilThreshold = utilThreshold
        self.fairness = fairness
        self.scanSleepMillisecs = scanSleepMillisecs
        self.weight = weight
    }

    /// The policy's name (`--policy`) and the folder of its knobs.
    public static let name = "ingens"

    public func faultOrders(in vma: VMA, at address: VirtualAddress, among candidates: FolioOrders,
                            settings: TransparentHugepageSettings) -> FolioOrders { [] }

    public func khugepagedMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool {
        settings.allowsHugepages(in: vma)
    }

    public func madviseMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool {
        !vma.isShared && !vma.flags.contains(.noHugepage)
    }

    public func defersSplit(partiallyMapped: Bool) -> Bool { partiallyMapped }

    public func splitsUnderused(settings: TransparentHugepageSettings) -> Bool { false }

    public func makeState() -> (any HugepagePolicyState)? {
        IngensState(self)
    }

    public func anonymousFaultMapped(_ mm: AddressSpace, _ vma: VMA, at address: VirtualAddress,
                                     state: (any HugepagePolicyState)?) {
        // Only where a huge page could go (Ingens: transparent_hugepage_enabled(), the range in the VMA).
        let settings = mm.kernel.hugepageSettings
        guard let state = state as? IngensState, settings.allowsHugepages(in: vma), mm.hugeRangeFits(vma, address) else { return }
        // Ingens calls khugepaged_enter() on every such fault, so that khugepaged scans this mm.
        if !mm.isRegisteredWithKhugepaged { mm.khugepagedEnter(vma) }
        state.populate(mm, address)
    }

    public func rangeUnmapped(_ mm: AddressSpace, from start: VirtualAddress, to end: VirtualAddress,
                              state: (any HugepagePolicyState)?) {
        (state as? IngensState)?.depopulate(mm.pid, start, end)
    }

    public func nextQueuedCollapse(state: (any HugepagePolicyState)?) -> (mm: AddressSpace, address: VirtualAddress)? {
        (state as? IngensState)?.dequeue()
    }

    public func hasQueuedCollapses(state: (any HugepagePolicyState)?) -> Bool {
        (state as? IngensState)?.hasQueued ?? false
    }

    public func khugepagedScanTarget(among pids: [Int], state: (any HugepagePolicyState)?) -> Int? {
        (state as? IngensState)?.fairestProcess(among: pids)
    }

    public func khugepagedMayCollapse(_ mm: AddressSpace, range haddr: VirtualAddress,
                                      state: (any HugepagePolicyState)?) -> Bool {
        (state as? IngensState)?.isUtilized(mm.pid, haddr) ?? false
    }

    public func khugepagedAttempted(_ mm: AddressSpace, range haddr: VirtualAddress, queued: Bool,
                                    result: CollapseResult, state: (any HugepagePolicyState)?) {
        (state as? IngensState)?.attempted(mm.pid, haddr, queued: queued, result: result)
    }

    public func nextThreadWakeup(state: (any HugepagePolicyState)?) -> UInt64? {
        (state as? IngensState)?.nextSample
    }

    public func runThreads(_ kernel: Kernel, state: (any HugepagePolicyState)?) {
        (state as? IngensState)?.sampleIfDue(kernel)
    }
}

/// Ingens's state in one kernel: each process's population bitmaps, the promotion queue, the knobs and
/// the counters, under one leaf lock (Ingens: `osa_poplmap_lock`, `worklist_lock`).
public final class IngensState: HugepagePolicyState {
    /// One 2 MiB range's population (Ingens: `popl_node_t`).
    struct Range {
        /// One bit per page, inline (a range's update allocates nothing).
        var bits = SIMD8<UInt64>()
        /// Pages whose bit is set (`bitmap_weight()`), kept as bits change.
        var weight = 0
        /// Queued, or promoted, since the bits last went down (Ingens: `committed`).
        var committed = false
        /// khugepaged collapsed it, and nothing was unmapped from it since.
        var promoted = false
        /// The sampler's last samples, newest in bit 0: whether any page of the range was accessed
        /// (Ingens: the top bits of `freq_bitmap`).
        var history: UInt8 = 0
        /// Samples taken since the range was first tracked, up to 8.
        var samples: UInt8 = 0
    }

    /// A range's population in a box of its own, so that the last range a fault updated can be reached
    /// again without a look-up (`State.last`).
    final class RangeBox {
        /// Read and written only under the state's lock.
        @exclusivity(unchecked) var r = Range()
    }

    /// A process's ranges and the totals the fairness metric uses.
    struct Process {
        weak var mm: AddressSpace?
        /// `mm` was set (by the process's first tracked fault), so a fault need not load the weak reference.
        var hasMM = false
        var ranges: [UInt64: RangeBox] = [:]
        var promotedRanges = 0
        /// Set by `setWeight(_:pid:)`; nil for the knob's default.
        var weight: Int?
        /// What the sampler's last pass saw.
        var sampled = IngensSample()
    }

    struct Queued {
        weak var mm: AddressSpace?
        let pid: Int
        let haddr: VirtualAddress
    }

    struct State {
        var utilThreshold: Int
        var fairness: Bool
        var scanSleepMillisecs: UInt64
        var defaultWeight: Int
        var processes: [Int: Process] = [:]
        /// The range the last fault updated, by pid and address: consecutive faults in one range (a
        /// first touch of 512 pages) skip both look-ups. Cleared wherever a range or a process may
        /// leave `processes`.
        var last: (pid: Int, haddr: UInt64, box: RangeBox)?
        /// The promotion queue, oldest first from `head` (Ingens: `hugepage_worklist`).
        var queue: [Queued] = []
        var head = 0
        /// When the sampler wakes next; nil while it waits for a process to track.
        var samplerWakeup: UInt64?
        var queuedRanges = 0, promotedRanges = 0, failedPromotions = 0, underutilizedSkips = 0, staleQueued = 0
        var samplePasses = 0, hotRangeSamples = 0, idleHugeSamples = 0

        func weight(_ p: Process) -> Int { p.weight ?? defaultWeight }
    }

    let state: SpinLocked<State>

    init(_ policy: IngensPolicy) {
        state = SpinLocked(State(utilThreshold: policy.utilThreshold, fairness: policy.fairness,
                                 scanSleepMillisecs: policy.scanSleepMillisecs, defaultWeight: policy.weight))
    }

    /// The largest fairness weight (Ingens's proc file takes three digits).
    public static let maxWeight = 999

    /// Pages of 512 that must be populated: `util_threshold * 512 / 100` (90 % → 460).
    static func thresholdPages(_ percent: Int) -> Int { percent * PageGeometry.entriesPerTable / 100 }

    // MARK: Knobs and counters

    public static let knobNames = ["ingens/util_threshold", "ingens/fairness", "ingens/scan_sleep_millisecs", "ingens/weight"]
    public var knobNames: [String] { Self.knobNames }

    public func knobText(_ name: String) -> String? {
        state.withLock { s in
            switch name {
            case "ingens/util_threshold": String(s.utilThreshold)
            case "ingens/fairness": s.fairness ? "1" : "0"
            case "ingens/scan_sleep_millisecs": String(s.scanSleepMillisecs)
            case "ingens/weight": String(s.defaultWeight)
            default: nil
            }
        }
    }

    public func setKnob(_ name: String, to text: String) -> String? {
        switch name {
        case "ingens/util_threshold":
            guard let v = Int(text), (0...100).contains(v) else {
                return "\(name): '\(text)' is not a percentage from 0 to 100"
            }
            state.withLock { $0.utilThreshold = v }
        case "ingens/fairness":
            guard text == "0" || text == "1" else { return "\(name): '\(text)' is not 0 or 1" }
            state.withLock { $0.fairness = text == "1" }
        case "ingens/scan_sleep_millisecs":
            guard let v = UInt64(text), v <= 3_600_000 else {
                return "\(name): '\(text)' is not a number of milliseconds from 0 (off) to 3600000"
            }
            state.withLock { s in
                s.scanSleepMillisecs = v
                // Off stops the thread; on again, it samples at its next wake-up (a fault or the clock).
                if v == 0 { s.samplerWakeup = nil }
            }
        case "ingens/weight":
            guard let v = Int(text), (0...Self.maxWeight).contains(v) else {
                return "\(name): '\(text)' is not a weight from 0 to \(Self.maxWeight)"
            }
            state.withLock { $0.defaultWeight = v }
        default:
            return "unknown knob '\(name)': Ingens has \(Self.knobNames.joined(separator: ", "))"
        }
        return nil
    }

    public var counters: [(name: String, value: Int)] {
        state.withLock { s in
            [("ingens_ranges_queued", s.queuedRanges), ("ingens_ranges_promoted", s.promotedRanges),
             ("ingens_promotions_failed", s.failedPromotions), ("ingens_queue_stale", s.staleQueued),
             ("ingens_scan_underutilized", s.underutilizedSkips), ("ingens_sample_passes", s.samplePasses),
             ("ingens_hot_range_samples", s.hotRangeSamples), ("ingens_idle_hugepage_samples", s.idleHugeSamples)]
        }
    }

    // MARK: Population

    /// Sets the bit of the page at `va`; queues the range once its weight reaches the threshold.
    func populate(_ mm: AddressSpace, _ va: VirtualAddress) {
        let haddr = va.alignedDown(PageGeometry.pmdSize)
        let page = Int((va.rawValue - haddr.rawValue) >> PageGeometry.pageShift)
        let now = mm.kernel.clock.now
        state.withLock { s in
            let threshold = Self.thresholdPages(s.utilThreshold)
            var queue = false
            // The sampler wakes when a process joins its list (`khugepaged_enter()` → `osa_hpage_enter_list()`).
            if s.samplerWakeup == nil && s.scanSleepMillisecs > 0 { s.samplerWakeup = now }
            let box: RangeBox
            if let last = s.last, last.pid == mm.pid, last.haddr == haddr.rawValue {
                box = last.box
            } else {
                box = s.processes[mm.pid, default: Process()].box(haddr.rawValue, mm)
                s.last = (mm.pid, haddr.rawValue, box)
            }
            let mask: UInt64 = 1 << UInt64(page & 63)
            if box.r.bits[page >> 6] & mask == 0 {
                box.r.bits[page >> 6] |= mask
                box.r.weight += 1
                if box.r.weight >= threshold && !box.r.committed { box.r.committed = true; queue = true }
            }
            if queue {
                s.queue.append(Queued(mm: mm, pid: mm.pid, haddr: haddr))
                s.queuedRanges += 1
            }
        }
    }

    /// Clears the bits of `[start, end)` of process `pid` (Ingens: `osa_clear_poplmap_range()`).
    func depopulate(_ pid: Int, _ start: VirtualAddress, _ end: VirtualAddress) {
        state.withLock { s in
            s.last = nil
            guard var process = s.processes.removeValue(forKey: pid) else { return }
            var haddr = start.alignedDown(PageGeometry.pmdSize)
            while haddr < end {
                if let box = process.ranges[haddr.rawValue] {
                    var r = box.r
                    let from = max(start, haddr), to = min(end, haddr + PageGeometry.pmdSize)
                    var page = Int((from.rawValue - haddr.rawValue) >> PageGeometry.pageShift)
                    let last = Int((to.rawValue - haddr.rawValue) >> PageGeometry.pageShift)
                    while page < last {
                        let mask: UInt64 = 1 << UInt64(page & 63)
                        if r.bits[page >> 6] & mask != 0 { r.bits[page >> 6] &= ~mask; r.weight -= 1 }
                        page += 1
                    }
                    r.committed = false
                    if r.promoted { r.promoted = false; process.promotedRanges -= 1 }
                    box.r = r
                    if r.weight == 0 { process.ranges[haddr.rawValue] = nil }
                }
                haddr = haddr + PageGeometry.pmdSize
            }
            if !process.ranges.isEmpty || process.weight != nil { s.processes[pid] = process }
        }
    }

    /// The next queued range that is still populated to the threshold, oldest first (Ingens:
    /// `osa_khugepaged_schedule_mm_slot()` serves `hugepage_worklist` in order, before and regardless of
    /// fairness). A range unmapped below the threshold since it was queued is dropped, as Ingens's scan
    /// of the queued address refuses it; so is a range of a process that exited.
    func dequeue() -> (mm: AddressSpace, address: VirtualAddress)? {
        state.withLock { s in
            let threshold = Self.thresholdPages(s.utilThreshold)
            while s.head < s.queue.count {
                let q = s.queue[s.head]
                s.head += 1
                if s.head == s.queue.count {
                    s.queue.removeAll(keepingCapacity: true); s.head = 0
                } else if s.head >= 1024 && s.head * 2 >= s.queue.count {
                    s.queue.removeFirst(s.head); s.head = 0     // served entries go, in O(1) amortized
                }
                guard let mm = q.mm, !mm.hasExited else { continue }
                guard (s.processes[q.pid]?.ranges[q.haddr.rawValue]?.r.weight ?? 0) >= threshold else {
                    s.staleQueued += 1
                    continue
                }
                return (mm, q.haddr)
            }
            return nil
        }
    }

    /// Whether ranges wait on the queue.
    var hasQueued: Bool { state.withLock { $0.head < $0.queue.count } }

    /// With fairness, the process among `pids` (khugepaged's slots, in order) whose scan should come
    /// next: the first with the highest fairness metric above 1 (`fairnessMetric(weight:_:)`, at least
    /// 1), leaving out processes of weight 0 and those Ingens does not track; nil without fairness or
    /// when none is above 1, so that the scan goes on where it is (Ingens:
    /// `osa_khugepaged_schedule_mm_slot()`, which starts from `metric_max = 1`).
    func fairestProcess(among pids: [Int]) -> Int? {
        state.withLock { s in
            guard s.fairness else { return nil }
            var best = 1, chosen: Int?
            for pid in pids {
                guard let p = s.processes[pid], let mm = p.mm, !mm.hasExited else { continue }
                let weight = s.weight(p)
                guard weight > 0 else { continue }
                let metric = max(1, Self.fairnessMetric(weight: weight, p.sampled))
                if metric > best { best = metric; chosen = pid }
            }
            return chosen
        }
    }

    /// Ingens's fairness metric of a process: `weight × requirement × 100 / huge pages`, with the
    /// requirement (anonymous pages / 512) and the huge pages (at least 1) from the sampler's last
    /// pass, so a process that needs many huge pages and holds few ranks first; 0 for weight 0
    /// (Ingens: `osa_compute_fairness_metric()`).
    public static func fairnessMetric(weight: Int, _ sample: IngensSample) -> Int {
        weight * sample.requirement * 100 / max(1, sample.hugePages)
    }

    /// Whether the range's weight reaches the threshold (Ingens: `khugepaged_scan_pmd()` in
    /// `deferred_mode`); counts a refusal.
    func isUtilized(_ pid: Int, _ haddr: VirtualAddress) -> Bool {
        state.withLock { s in
            let weight = s.processes[pid]?.ranges[haddr.rawValue]?.r.weight ?? 0
            if weight >= Self.thresholdPages(s.utilThreshold) { return true }
            s.underutilizedSkips += 1
            return false
        }
    }

    /// Records khugepaged's attempt at a range.
    func attempted(_ pid: Int, _ haddr: VirtualAddress, queued: Bool, result: CollapseResult) {
        state.withLock { s in
            if result == .succeeded {
                var newlyPromoted = false
                if let box = s.processes[pid]?.box(haddr.rawValue) {
                    box.r.committed = true
                    if !box.r.promoted { box.r.promoted = true; newlyPromoted = true }
                }
                if newlyPromoted { s.processes[pid]!.promotedRanges += 1 }
                if queued { s.promotedRanges += 1 }
            } else if queued && result != .pmdMapped {
                s.failedPromotions += 1
            }
        }
    }

    // MARK: For tests and reports

    /// The population count of the range at `haddr` of process `pid`.
    public func weight(pid: Int, range haddr: VirtualAddress) -> Int {
        state.withLock { $0.processes[pid]?.ranges[haddr.alignedDown(PageGeometry.pmdSize).rawValue]?.r.weight ?? 0 }
    }

    /// The queued ranges, oldest first.
    public var queuedRanges: [(pid: Int, address: VirtualAddress)] {
        state.withLock { s in s.queue[s.head...].map { ($0.pid, $0.haddr) } }
    }
}

extension IngensState.Process {
    /// The box of the range at `haddr`, made if absent; records `mm` as the process's if it has none yet.
    mutating func box(_ haddr: UInt64, _ mm: AddressSpace? = nil) -> IngensState.RangeBox {
        if let mm, !hasMM { self.mm = mm; hasMM = true }
        if let box = ranges[haddr] { return box }
        let box = IngensState.RangeBox()
        ranges[haddr] = box
        return box
    }
}
