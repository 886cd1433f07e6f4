import Synchronization
import VMCore
import PhysicalMemory

/// The deferred-split queue of today's design: large folios that may be worth splitting later —
/// partially unmapped ones, whose unmapped pages are wasted until the folio is split, and (6.12+) every
/// new THP, in case it turns out mostly zero. A shrinker splits them under memory pressure (Linux:
/// `struct deferred_split`, `deferred_split_folio()`, `deferred_split_scan()`).
///
/// The queue holds no reference: a folio freed while queued leaves the queue first
/// (`unqueueDeferredSplit`, Linux: `folio_unqueue_deferred_split()` in the free path). Membership is the
/// head's `.deferredSplit` flag, changed only under the queue's lock.
///
/// As in Linux, there is one queue for folios charged to no cgroup (the kernel's, Linux: the node's
/// `pgdat->deferred_split_queue`) and one per memory cgroup for the folios charged to it
/// (`memcg->deferred_split_queue`, found from the folio: `folio_split_queue()`); a cgroup's reclaim
/// shrinks its own, global reclaim all of them.
final class DeferredSplitQueue: Sendable {
    let folios = SpinLocked<[UInt32]>([])
    init() {}
    /// Folios on the queue (Linux: `split_queue_len`).
    var count: Int { folios.withLock { $0.count } }
}

extension Kernel {
    /// The queue the folio at `head` belongs on: its cgroup's, or the kernel's when it is charged to
    /// none (Linux: `folio_split_queue()`).
    @inline(__always)
    func splitQueue(of head: PFN) -> DeferredSplitQueue {
        guard memoryCgroups.active.load(ordering: .relaxed), let memcg = memoryCgroups.owner(of: head) else {
            return deferredSplitQueue
        }
        return memcg.deferredSplitQueue
    }

    /// Every deferred-split queue: the kernel's, then each cgroup's.
    var allSplitQueues: [DeferredSplitQueue] {
        guard memoryCgroups.active.load(ordering: .relaxed) else { return [deferredSplitQueue] }
        return [deferredSplitQueue] + memoryCgroups.all.map(\.deferredSplitQueue)
    }

    /// The folios on every queue, each queue in its order (the kernel's first).
    func allDeferredSplitFolios() -> [UInt32] {
        allSplitQueues.flatMap { queue in queue.folios.withLock { $0 } }
    }

    /// Queues the large folio `head` for a deferred split; `partiallyMapped` marks it as having
    /// unmapped pages, counted once per folio as `thp_deferred_split_page` unless `counted` is false
    /// (a new reservation, which Linux has no counter for) (Linux: `deferred_split_folio()`).
    @inline(__always)
    func deferredSplitFolio(_ head: PFN, partiallyMapped: Bool = true, counted: Bool = true) {
        guard defersSplit(partiallyMapped: partiallyMapped) else { return }
        queueDeferredSplit(head, partiallyMapped: partiallyMapped, counted: counted)
    }

    /// Puts a folio the policy defers on the queue (the body of `deferredSplitFolio`, out of line).
    private func queueDeferredSplit(_ head: PFN, partiallyMapped: Bool, counted: Bool) {
        let frames = memory.frames
        splitQueue(of: head).folios.withLock { queue in
            // The folio may be freed or split meanwhile by its last unmapper; both unqueue under this lock.
            let flags = frames.flags(head)
            guard flags.contains(.head), frames.refcount(head) > 0 else { return }
            if partiallyMapped && !flags.contains(.partiallyMapped) {
                frames.insertFlags(head, .partiallyMapped)
                if counted {
                    if frames.order(head) == PageGeometry.pmdOrder { vmstat.count(.thpDeferredSplitPage) }
                    mthpStats.count(frames.order(head).rawValue, .splitDeferred)
                }
            }
            if !flags.contains(.deferredSplit) {
                frames.insertFlags(head, .deferredSplit)
                queue.append(head.rawValue)
            }
        }
    }

    /// Takes `head` off the queue if it is on it (Linux: `folio_unqueue_deferred_split()`).
    func unqueueDeferredSplit(_ head: PFN) {
        let frames = memory.frames
        guard frames.flags(head).contains(.deferredSplit) else { return }
        guard !unqueue(head, from: splitQueue(of: head)) else { return }
        // A queued folio whose charge changed since it was queued (queued before its charge, or its
        // record moved by migration) is looked for on every queue.
        for queue in allSplitQueues where unqueue(head, from: queue) { return }
    }

    /// Takes `head` off `queue` under its lock; false if it is queued, but not there.
    private func unqueue(_ head: PFN, from queue: DeferredSplitQueue) -> Bool {
        let frames = memory.frames
        return queue.folios.withLock { queue -> Bool in
            guard frames.flags(head).contains(.deferredSplit) else { return true }
            guard let i = queue.firstIndex(of: head.rawValue) else { return false }
            frames.removeFlags(head, [.deferredSplit, .partiallyMapped])
            queue.remove(at: i)
            return true
        }
    }

    /// The deferred-split shrinker: looks at up to `limit` queued folios, splits the partially mapped
    /// ones (freeing their unmapped pages) and, when `shrink_underused` is on, the fully mapped ones
    /// with more than `max_ptes_none` zero-filled pages, whose zero pages become the shared zero page
    /// (`thp_underused_split_page`). Folios that cannot be split now stay queued. Returns the pages
    /// freed (Linux: `deferred_split_scan()`, `thp_underused()`).
    /// With `memcg`, the cgroup's own queue is shrunk (a memcg's reclaim); without, every queue, the
    /// kernel's first, up to `limit` folios in all (global reclaim, kswapd: Linux's memcg-aware
    /// shrinker is called for each memcg of the node).
    @discardableResult
    public func deferredSplitScan(limit: Int = 128, only memcg: MemoryCgroup? = nil) -> Int {
        guard splitsFoliosSeparately else { return 0 }
        let before = memory.freePages
        let queues = memcg.map { [$0.deferredSplitQueue] } ?? allSplitQueues
        var batch: [PFN] = []
        for queue in queues where batch.count < limit {
            batch += takeDeferredSplitBatch(queue, limit: limit - batch.count)
        }
        for head in batch { shrinkDeferredSplitFolio(head) }
        return max(0, memory.freePages - before)
    }

    /// Takes up to `limit` folios off `queue`, each with a reference so that it cannot be freed
    /// meanwhile; folios being freed are dropped (their free path finds them off the queue).
    private func takeDeferredSplitBatch(_ queue: DeferredSplitQueue, limit: Int) -> [PFN] {
        let frames = memory.frames
        return queue.folios.withLock { queue in
            var taken: [PFN] = []
            while taken.count < limit, !queue.isEmpty {
                let head = PFN(queue.removeFirst())
                if frames.tryGetReference(head) {
                    frames.removeFlags(head, .deferredSplit)
                    taken.append(head)
                } else {
                    // Being freed: its free path finds it off the queue.
                    frames.removeFlags(head, [.deferredSplit, .partiallyMapped])
                }
            }
            return taken
        }
    }

    /// The shrinker's decision on one folio taken off a queue (with a reference, which it drops).
    private func shrinkDeferredSplitFolio(_ head: PFN) {
        if memory.frames.flags(head).contains(.partiallyMapped) {
            if splitFolio(head) != .split {
                deferredSplitFolio(head, partiallyMapped: false)
            } else if policyReservesPages {
                vmstat.count(.thpReservBroken)
            }
        } else if splitsUnderused(hugepageSettings) && isUnderused(head) {
            if splitFolio(head, useZeroPage: true) == .split {
                vmstat.count(.thpUnderusedSplitPage)
            } else {
                deferredSplitFolio(head, partiallyMapped: false)
            }
        }
        putPage(head)
    }

    /// Whether more than `max_ptes_none` of the folio's pages hold only zeros. Metadata mode has no
    /// bytes to look at, so nothing is underused there (Linux: `thp_underused()`).
    func isUnderused(_ head: PFN) -> Bool {
        guard let storage = memory.storage else { return false }
        let limit = underusedZeroPageLimit()
        guard limit < PageGeometry.pmdOrder.pages - 1 else { return false }
        var zero = 0
        for i in 0..<memory.frames.order(head).pages where storage.isZero(head + i) {
            zero += 1
            if zero > limit { return true }
        }
        return false
    }

    /// Moves `head` to the tail of the queue if it is on it, so that the queue stays in order of last
    /// change and the shrinker breaks the reservation changed least recently first (FreeBSD:
    /// `vm_reserv_populate()` moving the reservation to the tail of `partpop`).
    func requeueDeferredSplit(_ head: PFN) {
        let frames = memory.frames
        guard frames.flags(head).contains(.deferredSplit) else { return }
        splitQueue(of: head).folios.withLock { queue in
            guard frames.flags(head).contains(.deferredSplit), queue.last != head.rawValue,
                  let i = queue.lastIndex(of: head.rawValue) else { return }
            queue.remove(at: i)
            queue.append(head.rawValue)
        }
    }
}
