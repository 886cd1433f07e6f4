#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import VMCore
import PhysicalMemory

/// References to compound pages in the 2010 design.
///
/// A huge page is one head frame and 511 tails. Mappings and ordinary references count in the head.
/// GUP may take a reference through any tail (the 4 KiB piece an O_DIRECT buffer lies in), and later
/// drop it through the same tail, possibly after the huge page was split into 512 small pages. So in
/// the 2010 design a tail reference counts twice: in the head, which keeps the whole page alive, and
/// in the tail, which records the pin so that `split_huge_page()` can give it to the right subpage.
///
/// ```
///  head                 tail 1      tail 2 …    tail 511
/// +-------------------+-----------+-----------+-----------+
/// | refcount = maps + | refcount  | refcount  | refcount  |   pins taken through the tail, each
/// |   all pins + refs | = its pins| = its pins| = its pins|   also counted in the head
/// | mapcount = PMDs   | 0         | 0         | 0         |
/// +-------------------+-----------+-----------+-----------+
/// ```
/// Invariant (2010): head refcount ≥ head mapcount + Σ tail refcounts. A tail's `put` and the split
/// exclude each other with the head's `compound_lock` bit.
extension Kernel {
    /// Whether references and pins taken on a tail page also count in the tail (2010), so that a split
    /// can hand each subpage its own; otherwise they live in the folio only. The one place the design's
    /// `tailPagePins` is read.
    @inline(__always) var pinsCountInTailPages: Bool { design.tailPagePins }

    /// Takes a reference on the page `pfn` (Linux 2.6.38: `get_page()`; on a tail page both the head's
    /// and the tail's counts rise).
    /// - Precondition: the caller already holds a reference or a mapping that keeps the page alive.
    public func getPage(_ pfn: PFN) {
        let frames = memory.frames
        if frames.flags(pfn).contains(.tail) {
            let head = frames.head(of: pfn)
            let count = frames.addRefcount(head, 1)
            precondition(count > 1, "get_page on a tail of \(head), which had no reference")
            if pinsCountInTailPages { frames.addRefcount(pfn, 1) }
        } else {
            let count = frames.addRefcount(pfn, 1)
            precondition(count > 1, "get_page on \(pfn), which had no reference")
        }
    }

    /// Drops one reference to the page `pfn` and frees its folio when it was the last (Linux:
    /// `put_page()`; in 2.6.38 `put_compound_page()` for tails). Returns what was freed, if anything.
    @discardableResult
    public func putPage(_ pfn: PFN) -> FolioRelease {
        let frames = memory.frames
        if pinsCountInTailPages && frames.flags(pfn).contains(.tail) {
            return putTailPage(pfn)
        }
        return putHead(frames.head(of: pfn))
    }

    /// Drops a reference held on a head or an ordinary page.
    @discardableResult
    private func putHead(_ head: PFN) -> FolioRelease {
        let remaining = memory.frames.addRefcount(head, -1)
        precondition(remaining >= 0, "refcount underflow on \(head)")
        var freed = FolioRelease()
        if remaining == 0 {
            unqueueDeferredSplit(head)
            if memory.frames.flags(head).contains(.lru) {
                lru.delete(head)
                freed.onLRU = 1
            }
            let pages = memory.frames.order(head).pages
            vmstat.count(.pgfree, pages)
            chargeRecords._withUnsafeGuaranteedRef { $0.uncharge(head, pages: pages) }
            memory.freeFolio(head)
            freed.pages = pages
            freed.folios = 1
            freed.largeFolios = pages > 1 ? 1 : 0
        }
        return freed
    }

    /// A tail's put, which may race with `split_huge_page()`: hold the head alive, take its
    /// `compound_lock`, and see whether the page is still compound. If it is, the tail's pin and the
    /// head's share go together; if a split got there first, the tail is an ordinary page now and the
    /// reference is its own (Linux 2.6.38: `put_compound_page()`).
    private func putTailPage(_ pfn: PFN) -> FolioRelease {
        let frames = memory.frames
        let head = frames.head(of: pfn)
        // The head cannot be freed while the tail holds a pin, but after a split the two are separate
        // pages whose counts may both reach zero; a reference on the head keeps it from that meanwhile.
        guard frames.tryGetReference(head) else {
            precondition(!frames.flags(pfn).contains(.tail), "tail \(pfn) of a freed head")
            return putHead(pfn)
        }
        lockCompound(head)
        guard frames.flags(pfn).contains(.tail) && frames.head(of: pfn) == head else {
            // split_huge_page() ran first: the pin moved to the now ordinary page `pfn`.
            unlockCompound(head)
            return putHead(head) + putHead(pfn)
        }
        let tailCount = frames.addRefcount(pfn, -1)
        precondition(tailCount >= 0, "tail refcount underflow on \(pfn)")
        let headCount = frames.addRefcount(head, -1)  // the temporary reference taken above
        precondition(headCount > 0, "head \(head) lost the reference its tail pin holds")
        unlockCompound(head)
        return putHead(head)
    }

    /// Takes the per-head bit spin lock that serializes a tail's put against a split (Linux 2.6.38:
    /// `compound_lock()`, a bit spinlock on `PG_compound_lock`).
    func lockCompound(_ head: PFN) {
        let frames = memory.frames
        Scheduling.point()
        while frames.insertFlags(head, .compoundLock).contains(.compoundLock) {
            while frames.flags(head).contains(.compoundLock) { Scheduling.pause() }
        }
    }

    /// Linux 2.6.38: `compound_unlock()`.
    func unlockCompound(_ head: PFN) {
        let old = memory.frames.removeFlags(head, .compoundLock)
        precondition(old.contains(.compoundLock), "compound_unlock of \(head), which was not locked")
    }
}
