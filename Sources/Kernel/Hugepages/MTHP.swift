import Synchronization
import VMCore
import PhysicalMemory

/// Multi-size THP (Linux 6.8+): anonymous folios of 16 KiB to 1 MiB, mapped by PTEs, allocated at a
/// write fault when `hugepages-<size>kB/enabled` allows the size. They give the TLB nothing (x86 has no
/// 64 KiB entries; AMD's PTE coalescing is not modelled) but fewer faults, and their pages live and
/// die together: a partial unmap queues them for a deferred split like a THP.
///
/// The fault tries the allowed orders from the largest down: the aligned range must lie inside the VMA
/// and all its PTEs be empty; an order whose allocation fails counts `anon_fault_fallback` and the
/// next smaller one is tried; with none left, the fault maps one 4 KiB page (Linux 6.18:
/// `do_anonymous_page()` → `alloc_anon_folio()`, `thp_vma_suitable_orders()`, `pte_range_none()`).
extension AddressSpace {
    /// A write fault that may map a large folio of an mTHP size, or nil when none applies (the caller
    /// maps a 4 KiB page). Today's design only; private anonymous VMAs only.
    /// - Precondition: the mmap lock is held for reading; `table` is the PTE table for `va`.
    func anonymousLargeFault(_ vma: VMA, _ va: VirtualAddress, _ table: PageTable,
                             _ fault: inout FaultContext) -> FaultOutcome? {
        guard kernel.supportsMTHP else { return nil }
        let orders = kernel.faultOrders(vma, va, among: .belowPMD, kernel.hugepageSettings)
        guard !orders.isEmpty else { return nil }
        let frames = kernel.memory.frames
        var order: UInt8 = PageGeometry.pmdOrder.rawValue - 1
        while order >= TransparentHugepageSettings.anonymousOrders.lowerBound {
            defer { order -= 1 }
            guard orders.contains(order: order) else { continue }
            let pages = 1 << Int(order)
            let start = va.alignedDown(PageGeometry.pageSize << UInt64(order))
            guard start >= vma.start, start + (PageGeometry.pageSize << UInt64(order)) <= vma.end else { continue }
            let first = start.tableIndex(.pte)
            guard (first..<(first + pages)).allSatisfy({ table[$0].isNone }) else { continue }
            guard let head = kernel.memory.allocateFolio(order: PageOrder(rawValue: order), kind: .anonymous,
                                                          zeroed: kernel.zeroesAtFault(order: PageOrder(rawValue: order))) else {
                kernel.mthpStats.count(order, .anonFaultFallback)
                continue
            }
            kernel.countAllocation(pages: pages)
            guard charge(head, order: PageOrder(rawValue: order)) else {
                kernel.putPage(head)
                kernel.mthpStats.count(order, .anonFaultFallbackCharge)
                continue
            }
            fault.zeroed(pages: pages)
            for i in 0..<pages { frames.insertFlags(head + i, [.anonExclusive, .swapBacked]) }
            frames.addRefcount(head, Int32(pages - 1))  // one reference per PTE
            var bits = PageTableEntry.userBits(vma.flags.protection) | PageTableEntry.accessedBit
            if vma.flags.contains(.write) { bits |= PageTableEntry.writableBit | PageTableEntry.dirtyBit }
            let lock = kernel.splitLock(table)
            lock.spinLock()
            guard (first..<(first + pages)).allSatisfy({ table[$0].isNone }) else {
                // Another CPU mapped part of the range first: give the folio back and retry the fault.
                lock.spinUnlock()
                frames.setRefcount(head, 1)
                kernel.putPage(head)
                return .handled
            }
            for i in 0..<pages { mapPage(head + i) }
            addNewAnonFolioToLRU(head, vma, at: start)
            for i in 0..<pages { table.set(first + i, PageTableEntry(pfn: head + i, bits: bits)) }
            lock.spinUnlock()
            kernel.mthpStats.count(order, .anonFaultAlloc)
            fault.mapped = .folio(order: order)
            fault.resolution = .mapped
            return .handled
        }
        return nil
    }
}

/// The per-size counters under `/sys/kernel/mm/transparent_hugepage/hugepages-<size>kB/stats/`
/// (Linux 6.18: `enum mthp_stat_item`, `mthp_stats`), kept for orders 2 to 9. `nr_anon` and
/// `nr_anon_partially_mapped` are states the model counts from the frame table when read.
public struct MTHPStats: @unchecked Sendable {
    public enum Event: Int, CaseIterable, Sendable {
        case anonFaultAlloc, anonFaultFallback, anonFaultFallbackCharge, swpout, swpoutFallback
        case split, splitFailed, splitDeferred

        /// The file name in `stats/`.
        public var name: String {
            switch self {
            case .anonFaultAlloc: "anon_fault_alloc"
            case .anonFaultFallback: "anon_fault_fallback"
            case .anonFaultFallbackCharge: "anon_fault_fallback_charge"
            case .swpout: "swpout"
            case .swpoutFallback: "swpout_fallback"
            case .split: "split"
            case .splitFailed: "split_failed"
            case .splitDeferred: "split_deferred"
            }
        }
    }

    private static let orders = TransparentHugepageSettings.anonymousOrders
    /// Per CPU, as Linux's `mthp_stats` are.
    private let counters = PerCPUCounters(count: orders.count * Event.allCases.count)

    init() {}

    /// Frees the counters, when the kernel goes.
    func release() { counters.release() }

    @inline(__always) private func slot(_ order: UInt8, _ event: Event) -> Int {
        Int(order - Self.orders.lowerBound) * Event.allCases.count + event.rawValue
    }

    /// Linux: `count_mthp_stat()`. Orders outside 2…9 are not counted.
    @inline(__always) func count(_ order: UInt8, _ event: Event, _ n: Int = 1) {
        guard Self.orders.contains(order) else { return }
        counters.add(slot(order, event), n)
    }

    public subscript(order: UInt8, event: Event) -> Int {
        Self.orders.contains(order) ? counters.sum(slot(order, event)) : 0
    }
}

extension Kernel {
    /// Whether anonymous folios of the orders below the PMD's exist (Linux 6.8+). The one place the
    /// design's `supportsMTHP` is read.
    @inline(__always) var supportsMTHP: Bool { design.supportsMTHP }

    /// The value of a per-size file below `/sys/kernel/mm/transparent_hugepage/`:
    /// `hugepages-64kB/stats/anon_fault_alloc`, `hugepages-2048kB/stats/nr_anon`, …; nil for another
    /// path. `nr_anon` counts the anonymous folios of the size, `nr_anon_partially_mapped` those on the
    /// deferred-split queue with unmapped pages.
    public func mthpStatValue(_ path: String) -> Int? {
        let parts = path.split(separator: "/")
        guard parts.count == 3, parts[1] == "stats", let order = TransparentHugepageSettings.order(ofSizeFolder: parts[0]) else { return nil }
        if let event = MTHPStats.Event.allCases.first(where: { $0.name == parts[2] }) { return mthpStats[order, event] }
        guard parts[2] == "nr_anon" || parts[2] == "nr_anon_partially_mapped" else { return nil }
        let frames = memory.frames
        let pages = 1 << Int(order)
        var folios = 0, partial = 0
        var pfn = 0
        while pfn < memory.totalPages {
            let flags = frames.flags(PFN(pfn))
            if flags.contains(.head) && frames.kind(PFN(pfn)) == .anonymous && frames.order(PFN(pfn)).rawValue == order {
                folios += 1
                if flags.contains(.partiallyMapped) { partial += 1 }
                pfn += pages
            } else {
                pfn += 1
            }
        }
        return parts[2] == "nr_anon" ? folios : partial
    }

    /// Every per-size stats file the model has, by its path below `/sys/kernel/mm/transparent_hugepage/`
    /// (as `mthpStatValue(_:)` reads them), the folio counts of every size from one pass over the
    /// frames.
    public func mthpStatValues() -> [String: Int] {
        var values = [String: Int]()
        let orders = TransparentHugepageSettings.anonymousOrders
        var folios = [Int](repeating: 0, count: Int(orders.upperBound) + 1), partial = folios
        let frames = memory.frames
        var pfn = 0
        while pfn < memory.totalPages {
            let flags = frames.flags(PFN(pfn))
            let order = frames.order(PFN(pfn)).rawValue
            if flags.contains(.head) && frames.kind(PFN(pfn)) == .anonymous && orders.contains(order) {
                folios[Int(order)] += 1
                if flags.contains(.partiallyMapped) { partial[Int(order)] += 1 }
                pfn += 1 << Int(order)
            } else {
                pfn += 1
            }
        }
        for order in orders {
            let folder = "hugepages-\(4 << order)kB/stats/"
            for event in MTHPStats.Event.allCases { values[folder + event.name] = mthpStats[order, event] }
            values[folder + "nr_anon"] = folios[Int(order)]
            values[folder + "nr_anon_partially_mapped"] = partial[Int(order)]
        }
        return values
    }

    /// Every per-size stats path the model has, for reports.
    public static var mthpStatPaths: [String] {
        TransparentHugepageSettings.anonymousOrders.flatMap { order in
            (MTHPStats.Event.allCases.map(\.name) + ["nr_anon", "nr_anon_partially_mapped"]).map { "hugepages-\(4 << order)kB/stats/\($0)" }
        }
    }
}
