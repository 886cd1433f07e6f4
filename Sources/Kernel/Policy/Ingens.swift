import VMCore

/// Ingens (Kwon et al., OSDI 2016; ut-osa/ingens, Linux 4.3): no huge page at a fault; every 4 KiB
/// fault in a range that could hold a huge page sets the page's bit in the range's population bitmap,
/// and when `util_threshold` percent of the 512 pages are populated the range is queued for khugepaged,
/// which collapses queued ranges before it scans; its scan refuses ranges populated below the
/// threshold. With `fairness`, the queue is served first to the process whose huge pages cover the
/// least of its populated memory.
///
/// ```
///  fault ─► bitmap[pid, haddr] |= bit ─► weight ≥ 460 ─► queue (once, "committed") ─► khugepaged
///  munmap/MADV_DONTNEED ─► bits cleared, committed reset
/// ```
/// What runs on Linux 6.18's mechanism: the collapse itself (`collapse_huge_page()`), khugepaged's
/// wake-ups and budget (`pages_to_scan`, `scan_sleep_millisecs`), and its `enabled` rule: Ingens
/// tracks and promotes only where `enabled` allows huge pages (`transparent_hugepage_enabled()`).
///
/// Linux (Ingens): `do_anonymous_page()`'s `CONFIG_OSA` block (`popl_bitmap`, `hugepage_worklist`),
/// `khugepaged_scan_pmd()`'s `util_threshold` check, `osa_khugepaged_schedule_mm_slot()`,
/// `osa_compute_fairness_metric()`, `osa_clear_poplmap_range()`.
public struct IngensPolicy: HugepagePolicy {
    /// Percent of a range's 512 pages that must be populated before it is promoted (`util_threshold`).
    public var utilThreshold: Int
    /// Whether the queue is served to the most deprived process first (`hugepage_fairness`).
    public var fairness: Bool

    /// Ingens's defaults: 90 %, fairness off (as its sysfs files boot).
    public init(utilThreshold: Int = 90, fairness: Bool = false) {
        precondition((0...100).contains(utilThreshold))
        self.utilThreshold = utilThreshold
        self.fairness = fairness
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
        IngensState(utilThreshold: utilThreshold, fairness: fairness)
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

    public func khugepagedMayCollapse(_ mm: AddressSpace, range haddr: VirtualAddress,
                                      state: (any HugepagePolicyState)?) -> Bool {
        (state as? IngensState)?.isUtilized(mm.pid, haddr) ?? false
    }

    public func khugepagedAttempted(_ mm: AddressSpace, range haddr: VirtualAddress, queued: Bool,
                                    result: CollapseResult, state: (any HugepagePolicyState)?) {
        (state as? IngensState)?.attempted(mm.pid, haddr, queued: queued, result: result)
    }
}

/// Ingens's state in one kernel: each process's population bitmaps, the promotion queue, the knobs and
/// the counters, under one leaf lock (Ingens: `osa_poplmap_lock`, `worklist_lock`).
public final class IngensState: HugepagePolicyState {
    /// One 2 MiB range's population (Ingens: `popl_node_t`).
    struct Range {
        var bits = [UInt64](repeating: 0, count: PageGeometry.entriesPerTable / 64)
        /// Pages whose bit is set (`bitmap_weight()`), kept as bits change.
        var weight = 0
        /// Queued, or promoted, since the bits last went down (Ingens: `committed`).
        var committed = false
        /// khugepaged collapsed it, and nothing was unmapped from it since.
        var promoted = false
    }

    /// A process's ranges and the totals the fairness metric uses.
    struct Process {
        var ranges: [UInt64: Range] = [:]
        var populatedPages = 0
        var promotedRanges = 0
    }

    struct Queued {
        weak var mm: AddressSpace?
        let pid: Int
        let haddr: VirtualAddress
    }

    struct State {
        var utilThreshold: Int
        var fairness: Bool
        var processes: [Int: Process] = [:]
        var queue: [Queued] = []
        var queuedRanges = 0, promotedRanges = 0, failedPromotions = 0, underutilizedSkips = 0, staleQueued = 0
    }

    private let state: SpinLocked<State>

    init(utilThreshold: Int, fairness: Bool) {
        state = SpinLocked(State(utilThreshold: utilThreshold, fairness: fairness))
    }

    /// Pages of 512 that must be populated: `util_threshold * 512 / 100` (90 % → 460).
    static func thresholdPages(_ percent: Int) -> Int { percent * PageGeometry.entriesPerTable / 100 }

    // MARK: Knobs and counters

    public static let knobNames = ["ingens/util_threshold", "ingens/fairness"]
    public var knobNames: [String] { Self.knobNames }

    public func knobText(_ name: String) -> String? {
        state.withLock { s in
            switch name {
            case "ingens/util_threshold": String(s.utilThreshold)
            case "ingens/fairness": s.fairness ? "1" : "0"
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
        default:
            return "unknown knob '\(name)': Ingens has \(Self.knobNames.joined(separator: ", "))"
        }
        return nil
    }

    public var counters: [(name: String, value: Int)] {
        state.withLock { s in
            [("ingens_ranges_queued", s.queuedRanges), ("ingens_ranges_promoted", s.promotedRanges),
             ("ingens_promotions_failed", s.failedPromotions), ("ingens_queue_stale", s.staleQueued),
             ("ingens_scan_underutilized", s.underutilizedSkips)]
        }
    }

    // MARK: Population

    /// Sets the bit of the page at `va`; queues the range once its weight reaches the threshold.
    func populate(_ mm: AddressSpace, _ va: VirtualAddress) {
        let haddr = va.alignedDown(PageGeometry.pmdSize)
        let page = Int((va.rawValue - haddr.rawValue) >> PageGeometry.pageShift)
        state.withLock { s in
            let threshold = Self.thresholdPages(s.utilThreshold)
            var queue = false
            s.processes[mm.pid, default: Process()].update(haddr.rawValue) { r, p in
                let mask: UInt64 = 1 << UInt64(page & 63)
                guard r.bits[page >> 6] & mask == 0 else { return }
                r.bits[page >> 6] |= mask
                r.weight += 1
                p += 1
                if r.weight >= threshold && !r.committed { r.committed = true; queue = true }
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
            guard var process = s.processes.removeValue(forKey: pid) else { return }
            var haddr = start.alignedDown(PageGeometry.pmdSize)
            while haddr < end {
                if var r = process.ranges[haddr.rawValue] {
                    let from = max(start, haddr), to = min(end, haddr + PageGeometry.pmdSize)
                    var page = Int((from.rawValue - haddr.rawValue) >> PageGeometry.pageShift)
                    let last = Int((to.rawValue - haddr.rawValue) >> PageGeometry.pageShift)
                    while page < last {
                        let mask: UInt64 = 1 << UInt64(page & 63)
                        if r.bits[page >> 6] & mask != 0 { r.bits[page >> 6] &= ~mask; r.weight -= 1; process.populatedPages -= 1 }
                        page += 1
                    }
                    r.committed = false
                    if r.promoted { r.promoted = false; process.promotedRanges -= 1 }
                    process.ranges[haddr.rawValue] = r.weight == 0 ? nil : r
                }
                haddr = haddr + PageGeometry.pmdSize
            }
            if !process.ranges.isEmpty { s.processes[pid] = process }
        }
    }

    /// The next queued range that is still populated to the threshold: the oldest, or with fairness
    /// the oldest of the process whose huge pages cover the least of its populated memory (Ingens:
    /// `osa_khugepaged_schedule_mm_slot()` and `osa_compute_fairness_metric()`, which rank processes by
    /// huge pages held against their need). A range unmapped below the threshold since it was queued is
    /// dropped, as Ingens's scan of the queued address refuses it.
    func dequeue() -> (mm: AddressSpace, address: VirtualAddress)? {
        state.withLock { s in
            let threshold = Self.thresholdPages(s.utilThreshold)
            while !s.queue.isEmpty {
                var index = 0
                if s.fairness {
                    var best = Double.infinity
                    for (i, q) in s.queue.enumerated() {
                        let share = Self.hugeShare(s.processes[q.pid])
                        if share < best { best = share; index = i }
                    }
                }
                let q = s.queue.remove(at: index)
                guard let mm = q.mm, !mm.hasExited else { continue }
                guard (s.processes[q.pid]?.ranges[q.haddr.rawValue]?.weight ?? 0) >= threshold else {
                    s.staleQueued += 1
                    continue
                }
                return (mm, q.haddr)
            }
            return nil
        }
    }

    /// The share of a process's populated memory that its promoted huge pages cover (0 without any).
    static func hugeShare(_ p: Process?) -> Double {
        guard let p else { return 0 }
        return Double(p.promotedRanges * PageGeometry.entriesPerTable) / Double(max(1, p.populatedPages))
    }

    /// Whether the range's weight reaches the threshold (Ingens: `khugepaged_scan_pmd()` in
    /// `deferred_mode`); counts a refusal.
    func isUtilized(_ pid: Int, _ haddr: VirtualAddress) -> Bool {
        state.withLock { s in
            let weight = s.processes[pid]?.ranges[haddr.rawValue]?.weight ?? 0
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
                s.processes[pid]?.update(haddr.rawValue) { r, _ in
                    r.committed = true
                    if !r.promoted { r.promoted = true; newlyPromoted = true }
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
        state.withLock { $0.processes[pid]?.ranges[haddr.alignedDown(PageGeometry.pmdSize).rawValue]?.weight ?? 0 }
    }

    /// The queued ranges, oldest first.
    public var queuedRanges: [(pid: Int, address: VirtualAddress)] {
        state.withLock { $0.queue.map { ($0.pid, $0.haddr) } }
    }
}

extension IngensState.Process {
    /// Runs `body` on the range at `haddr` (made if absent) and the process's populated-page count.
    mutating func update(_ haddr: UInt64, _ body: (inout IngensState.Range, inout Int) -> Void) {
        var r = ranges[haddr] ?? IngensState.Range()
        body(&r, &populatedPages)
        ranges[haddr] = r
    }
}
