import Synchronization
import VMCore

/// Per-CPU lists of free blocks for the two orders faults ask for most: base pages and huge pages
/// (Linux: `struct per_cpu_pages`; huge-page order since 5.13). A CPU frees to and allocates from its
/// own list without the zone lock, and moves `batch` blocks to or from the free lists when its list is
/// empty or above `high`. Blocks on these lists count as free (`freePages`) but do not merge with
/// their buddies until drained, which an allocation that finds nothing on the free lists does
/// (`drainPerCPULists()`, Linux: `drain_all_pages()`).
///
/// Each simulated CPU has lists of its own (`KernelConfiguration.cpus` of them), found by
/// `SimulatedCPU.current` (Linux: `this_cpu_ptr(zone->per_cpu_pageset)`): a block one CPU frees is
/// reused by that CPU's next allocation, whether CPUs run on host threads of their own or one host
/// thread interleaves them.
///
/// `high` scales with memory (1/512 of it per CPU for base pages, up to 96; huge pages only when a
/// CPU's share covers several), so small test machines cache little or nothing.
///
/// The huge-page list's `high` is tuned per CPU, as Linux 6.7+ tunes `pcp->high` between `high_min`
/// and `high_max`: it starts at the value above and rises by a batch each time the CPU has to refill
/// from the free lists (Linux: `nr_pcp_alloc()`) or frees into a full list (Linux: `nr_pcp_high()`),
/// up to 1/8 of memory shared among `highMaxShares` CPUs (Linux's `high_max` is
/// `managed_pages / 8 / CPUs`: 126,976 pages per CPU for this machine's 7.75 GiB Normal zone, on two
/// CPUs). The model divides by a fixed 8, the number of per-CPU slots it had before simulated CPUs
/// owned them, whatever the configured count: dividing by that count, as Linux does, changes
/// results of runs with more than 1 GiB, and is a change of the model of its own. A batch is half of
/// `high`: the model's rule, where Linux refills order-9 lists two pages at a time. Linux also lets
/// `high` decay toward `high_min` every second (`decay_pcp_high()`); the model has no clock and does
/// not. So a CPU that faults and frees huge pages in bulk reuses its own: a refill from the free lists
/// takes the zone lock and blocks that other CPUs freed, whose records and free-list neighbours are in
/// their caches (docs/performance.md, concurrent huge faults).
///
/// The lists are `PerCPUStacks`: each CPU's on cache lines of its own.
final class PerCPUPageLists: @unchecked Sendable {
    static let orders: [PageOrder] = [.base, PageGeometry.pmdOrder]

    /// Most base pages a CPU keeps; 0 turns their caching off.
    private let highBase: Int
    /// The huge-page list's least and greatest `high`; 0 turns its caching off.
    private let highHuge: (min: Int, max: Int)
    let stacks: PerCPUStacks
    /// How many CPUs share the 1/8 of memory the huge-page lists may hold at most (see above).
    static let highMaxShares = 8

    /// Lists for `cpus` CPUs.
    init(totalPages: Int, enabled: Bool, cpus: Int) {
        let share = enabled ? totalPages / 512 : 0
        highBase = min(share, 96)
        let least = min(share / PageGeometry.pmdOrder.pages / 4, 8)
        let most = least == 0 ? 0 : max(least, totalPages / 8 / Self.highMaxShares / PageGeometry.pmdOrder.pages)
        highHuge = (least, most)
        // One spare place per list: a free pushes before it spills.
        stacks = PerCPUStacks(capacities: [highBase + 1, most + 1], cpus: cpus)
    }

    deinit { stacks.release() }

    @inline(__always) func index(_ order: PageOrder) -> Int? {
        order == .base ? 0 : (order == PageGeometry.pmdOrder ? 1 : nil)
    }

    @inline(__always) func caches(_ order: PageOrder) -> Bool {
        guard let i = index(order) else { return false }
        return i == 0 ? highBase > 0 : highHuge.min > 0
    }

    /// Most blocks of list `i` the CPU whose stripe this is keeps now.
    @inline(__always) func high(_ i: Int, _ stripe: PerCPUStacks.Stripe) -> Int {
        i == 0 ? highBase : max(stripe.tuned, highHuge.min)
    }
    /// Blocks moved at once between list `i` and the free lists.
    @inline(__always) func batch(_ i: Int, _ stripe: PerCPUStacks.Stripe) -> Int {
        max(1, high(i, stripe) / (i == 0 ? 3 : 2))
    }
    /// The largest batch of any list.
    var maxBatch: Int { max(1, highBase / 3, highHuge.max / 2) }

    /// Raises the huge-page list's `high` by a batch, up to its greatest (see above); the stripe is
    /// locked.
    @inline(__always) func raiseHigh(_ i: Int, _ stripe: PerCPUStacks.Stripe) {
        guard i == 1 else { return }
        let now = high(i, stripe)
        if now < highHuge.max { stripe.setTuned(min(now + batch(i, stripe), highHuge.max)) }
    }

    /// How many CPUs have lists.
    var cpus: Int { stacks.cpus }

    /// Calls `body` with the lists of CPU `cpu` locked.
    @inline(__always) func withStripe<R>(_ cpu: Int, _ body: (PerCPUStacks.Stripe) -> R) -> R {
        stacks.withStripe(cpu, body)
    }

    /// Base pages on every CPU's lists now (a lockless sum: exact only when no CPU is changing them).
    var pages: Int {
        var total = 0
        for cpu in 0..<cpus {
            let s = stacks.stripe(cpu)
            total += s.count(0) + s.count(1) * PageGeometry.pmdOrder.pages
        }
        return total
    }
}

extension BuddyAllocator {
    /// Takes a block from the executing CPU's list, refilling it with `batch` blocks from the free lists when
    /// empty (Linux: `rmqueue_pcplist()` → `rmqueue_bulk()`).
    func allocateFromPerCPUList(_ order: PageOrder) -> PFN? {
        guard let i = perCPU.index(order) else { return nil }
        let cpu = SimulatedCPU.current
        let (popped, batch) = perCPU.withStripe(cpu) { stripe -> (UInt32?, Int) in
            if let pfn = stripe.pop(i) { return (pfn, 0) }
            perCPU.raiseHigh(i, stripe)
            return (nil, perCPU.batch(i, stripe))
        }
        if let pfn = popped {
            frames.clear(PFN(pfn))
            return PFN(pfn)
        }
        // The batch passes through a stack buffer: the refill allocates nothing on the host.
        return withUnsafeTemporaryAllocation(of: UInt32.self, capacity: batch) { taken -> PFN? in
            var n = 0
            lists.withLock { lists in
                while n < batch, let pfn = takeBlock(order: order, &lists) {
                    taken[n] = pfn.rawValue
                    n += 1
                }
                freeCount.wrappingSubtract(n * order.pages, ordering: .relaxed)
            }
            guard n > 0 else { return nil }
            let kept = UnsafeBufferPointer(rebasing: taken[0..<(n - 1)])
            for pfn in kept { frames.setHeader(PFN(pfn), kind: .free, order: order, flags: .perCPU) }
            // Another thread sharing this CPU's lists may have filled them meanwhile: what does not fit
            // goes back.
            let stored = perCPU.withStripe(cpu) { stripe -> Int in
                let room = min(kept.count, perCPU.high(i, stripe) - stripe.count(i))
                for k in 0..<max(room, 0) { stripe.push(i, kept[k]) }
                return max(room, 0)
            }
            for pfn in kept[stored...] {
                frames.clear(PFN(pfn))
                freeToFreeLists(PFN(pfn), order: order)
            }
            return PFN(taken[n - 1])
        }
    }

    /// Puts a block on the executing CPU's list, spilling `batch` blocks back to the free lists when the list
    /// is above `high` (Linux: `free_unref_page()` → `free_pcppages_bulk()`).
    func freeToPerCPUList(_ start: PFN, order: PageOrder) {
        guard let i = perCPU.index(order) else { preconditionFailure("order \(order) is not cached per CPU") }
        frames.setHeader(start, kind: .free, order: order, flags: .perCPU)
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: perCPU.maxBatch) { spill in
            let n = perCPU.withStripe(SimulatedCPU.current) { stripe -> Int in
                // Every operation leaves at most `high` blocks, and the stack has one place more.
                let pushed = stripe.push(i, start.rawValue)
                precondition(pushed, "a per-CPU list held more than high blocks")
                guard stripe.count(i) > perCPU.high(i, stripe) else { return 0 }
                perCPU.raiseHigh(i, stripe)
                guard stripe.count(i) > perCPU.high(i, stripe) else { return 0 }
                let n = min(perCPU.batch(i, stripe), stripe.count(i))
                stripe.removeOldest(i, n, into: spill.baseAddress!)
                return n
            }
            for pfn in spill[0..<n] {
                frames.clear(PFN(pfn))
                freeToFreeLists(PFN(pfn), order: order)
            }
        }
    }

    /// Moves every block on every CPU's list back to the free lists, merging; returns how many blocks
    /// moved (Linux: `drain_all_pages()`).
    @discardableResult
    public func drainPerCPULists() -> Int {
        var drained = 0
        for cpu in 0..<perCPU.cpus {
            for (i, order) in PerCPUPageLists.orders.enumerated() {
                let blocks = perCPU.withStripe(cpu) { $0.removeAll(i) }
                for pfn in blocks {
                    frames.clear(PFN(pfn))
                    freeToFreeLists(PFN(pfn), order: order)
                    drained += 1
                }
            }
        }
        return drained
    }

    /// The blocks of `order` on CPU `cpu`'s list, oldest first (for tests).
    func perCPUBlocks(cpu: Int, order: PageOrder) -> [PFN] {
        guard let i = perCPU.index(order) else { return [] }
        return perCPU.withStripe(cpu) { $0.contents(i) }.map { PFN($0) }
    }

    /// Calls `body(head, order)` for each block on a per-CPU list, for the invariant checker.
    public func forEachPerCPUBlock(_ body: (PFN, PageOrder) -> Void) {
        for cpu in 0..<perCPU.cpus {
            for (i, order) in PerCPUPageLists.orders.enumerated() {
                for pfn in perCPU.withStripe(cpu, { $0.contents(i) }) { body(PFN(pfn), order) }
            }
        }
    }
}
