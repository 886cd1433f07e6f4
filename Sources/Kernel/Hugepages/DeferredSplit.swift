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
final class DeferredSplitQueue: Sendable {
    let folios = SpinLocked<[UInt32]>([])
    init() {}
    /// Folios on the queue (Linux: `split_queue_len`).
    var count: Int { folios.withLock { $0.count } }
}

extension Kernel {
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
        deferredSplitQueue.folios.withLock { queue in
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
        deferredSplitQueue.folios.withLock { queue in
            guard frames.flags(head).contains(.deferredSplit) else { return }
            frames.removeFlags(head, [.deferredSplit, .partiallyMapped])
            if let i = queue.firstIndex(of: head.rawValue) { queue.remove(at: i) }
        }
    }

    /// The deferred-split shrinker: looks at up to `limit` queued folios, splits the partially mapped
    /// ones (freeing their unmapped pages) and, when `shrink_underused` is on, the fully mapped ones
    /// with more than `max_ptes_none` zero-filled pages, whose zero pages become the shared zero page
    /// (`thp_underused_split_page`). Folios that cannot be split now stay queued. Returns the pages
    /// freed (Linux: `deferred_split_scan()`, `thp_underused()`).
    /// With `memcg`, only the folios charged to it are looked at (Linux keeps a queue per memcg,
    /// `memcg->deferred_split_queue`, which a memcg's reclaim shrinks).
    @discardableResult
    public func deferredSplitScan(limit: Int = 128, only memcg: MemoryCgroup? = nil) -> Int {
        guard splitsFoliosSeparately else { return 0 }
        let frames = memory.frames
        let before = memory.freePages
        // Take a batch off the queue, each with a reference so that it cannot be freed meanwhile.
        let batch: [PFN] = deferredSplitQueue.folios.withLock { queue in
            var taken: [PFN] = []
            if let memcg {
                // The cgroup's own queue, in effect: take its folios, leave the others in order.
                var kept: [UInt32] = []
                for raw in queue {
                    let head = PFN(raw)
                    guard taken.count < limit, memoryCgroups.owner(of: head) === memcg else { kept.append(raw); continue }
                    if frames.tryGetReference(head) {
                        frames.removeFlags(head, .deferredSplit)
                        taken.append(head)
                    } else {
                        frames.removeFlags(head, [.deferredSplit, .partiallyMapped])
                    }
                }
                queue = kept
                return taken
            }
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
        for head in batch {
            if frames.flags(head).contains(.partiallyMapped) {
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
        return max(0, memory.freePages - before)
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
        deferredSplitQueue.folios.withLock { queue in
            guard frames.flags(head).contains(.deferredSplit), queue.last != head.rawValue,
                  let i = queue.lastIndex(of: head.rawValue) else { return }
            queue.remove(at: i)
            queue.append(head.rawValue)
        }
    }
}
