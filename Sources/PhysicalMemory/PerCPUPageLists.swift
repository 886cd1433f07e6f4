import VMCore

/// Per-CPU lists of free blocks for the two orders faults ask for most: base pages and huge pages
/// (Linux: `struct per_cpu_pages`; huge-page order since 5.13). A CPU frees to and allocates from its
/// own list without the zone lock, and moves `batch` blocks to or from the free lists when its list is
/// empty or above `high`. Blocks on these lists count as free (`freePages`) but do not merge with
/// their buddies until drained, which an allocation that finds nothing on the free lists does
/// (`drainPerCPULists()`, Linux: `drain_all_pages()`).
///
/// `high` scales with memory (1/512 of it per CPU for base pages, up to 96; huge pages only when a
/// CPU's share covers several), so small test machines cache little or nothing.
final class PerCPUPageLists: @unchecked Sendable {
    static let orders: [PageOrder] = [.base, PageGeometry.pmdOrder]
    struct Lists { var blocks: [[UInt32]] = [[], []] }
    let stripes: [SpinLocked<Lists>]
    /// The same stripes, unretained, for the fault path (no reference counting per allocation).
    private let stripeRefs: UnsafeMutablePointer<Unmanaged<SpinLocked<Lists>>>
    /// Most blocks a CPU keeps, per cached order; 0 turns the order's caching off.
    let high: [Int]
    /// Blocks moved at once between a CPU's list and the free lists.
    let batch: [Int]

    init(totalPages: Int, enabled: Bool) {
        stripes = (0..<8).map { _ in SpinLocked(Lists()) }
        stripeRefs = .allocate(capacity: stripes.count)
        for (i, stripe) in stripes.enumerated() { (stripeRefs + i).initialize(to: .passUnretained(stripe)) }
        let share = enabled ? totalPages / 512 : 0
        let highBase = min(share, 96)
        let highHuge = min(share / PageGeometry.pmdOrder.pages / 4, 8)
        high = [highBase, highHuge]
        batch = [max(1, highBase / 3), max(1, highHuge / 2)]
    }

    deinit { stripeRefs.deallocate() }

    /// Calls `body` with the lists of stripe `i` locked, without retaining the stripe.
    @inline(__always) func withStripe<R>(_ i: Int, _ body: (inout Lists) -> R) -> R {
        stripeRefs[i]._withUnsafeGuaranteedRef { $0.withLock(body) }
    }

    @inline(__always) func index(_ order: PageOrder) -> Int? {
        order == .base ? 0 : (order == PageGeometry.pmdOrder ? 1 : nil)
    }

    @inline(__always) func caches(_ order: PageOrder) -> Bool {
        guard let i = index(order) else { return false }
        return high[i] > 0
    }
}

extension BuddyAllocator {
    /// Takes a block from this CPU's list, refilling it with `batch` blocks from the free lists when
    /// empty (Linux: `rmqueue_pcplist()` → `rmqueue_bulk()`).
    func allocateFromPerCPUList(_ order: PageOrder) -> PFN? {
        guard let i = perCPU.index(order) else { return nil }
        let cpu = CPUStripe.current
        if let pfn = perCPU.withStripe(cpu, { $0.blocks[i].popLast() }) {
            frames.clear(PFN(pfn))
            freeCount.wrappingSubtract(order.pages, ordering: .relaxed)
            return PFN(pfn)
        }
        // The batch passes through a stack buffer: the refill allocates nothing on the host.
        let batch = perCPU.batch[i]
        return withUnsafeTemporaryAllocation(of: UInt32.self, capacity: batch) { taken -> PFN? in
            var n = 0
            lists.withLock { lists in
                while n < batch, let pfn = takeBlock(order: order, &lists) {
                    taken[n] = pfn.rawValue
                    n += 1
                }
            }
            guard n > 0 else { return nil }
            let kept = UnsafeBufferPointer(rebasing: taken[0..<(n - 1)])
            for pfn in kept { frames.setHeader(PFN(pfn), kind: .free, order: order, flags: .perCPU) }
            if !kept.isEmpty { perCPU.withStripe(cpu) { $0.blocks[i].append(contentsOf: kept) } }
            freeCount.wrappingSubtract(order.pages, ordering: .relaxed)
            return PFN(taken[n - 1])
        }
    }

    /// Puts a block on this CPU's list, spilling `batch` blocks back to the free lists when the list
    /// is above `high` (Linux: `free_unref_page()` → `free_pcppages_bulk()`).
    func freeToPerCPUList(_ start: PFN, order: PageOrder) {
        guard let i = perCPU.index(order) else { preconditionFailure("order \(order) is not cached per CPU") }
        frames.setHeader(start, kind: .free, order: order, flags: .perCPU)
        freeCount.wrappingAdd(order.pages, ordering: .relaxed)
        let batch = perCPU.batch[i]
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: batch) { spill in
            let n = perCPU.withStripe(CPUStripe.current) { lists -> Int in
                lists.blocks[i].append(start.rawValue)
                guard lists.blocks[i].count > perCPU.high[i] else { return 0 }
                let n = min(batch, lists.blocks[i].count)
                for k in 0..<n { spill[k] = lists.blocks[i][k] }
                lists.blocks[i].removeFirst(n)
                return n
            }
            for pfn in spill[0..<n] {
                frames.clear(PFN(pfn))
                freeToFreeLists(PFN(pfn), order: order, counted: false)
            }
        }
    }

    /// Moves every block on every CPU's list back to the free lists, merging; returns how many blocks
    /// moved (Linux: `drain_all_pages()`).
    @discardableResult
    public func drainPerCPULists() -> Int {
        var drained = 0
        for stripe in perCPU.stripes {
            let all = stripe.withLock { lists -> [[UInt32]] in
                let blocks = lists.blocks
                lists.blocks = [[], []]
                return blocks
            }
            for (i, blocks) in all.enumerated() {
                for pfn in blocks {
                    frames.clear(PFN(pfn))
                    freeToFreeLists(PFN(pfn), order: PerCPUPageLists.orders[i], counted: false)
                    drained += 1
                }
            }
        }
        return drained
    }

    /// Calls `body(head, order)` for each block on a per-CPU list, for the invariant checker.
    public func forEachPerCPUBlock(_ body: (PFN, PageOrder) -> Void) {
        for stripe in perCPU.stripes {
            let all = stripe.withLock { $0.blocks }
            for (i, blocks) in all.enumerated() {
                for pfn in blocks { body(PFN(pfn), PerCPUPageLists.orders[i]) }
            }
        }
    }
}
