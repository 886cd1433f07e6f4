import VMCore

extension BuddyAllocator {
    /// Takes the free base page `pfn` off the free lists, splitting the free block that holds it, and
    /// returns whether it was free; the frame comes back of kind `.free` with zero counts, like
    /// `allocate`. Compaction's free scanner uses it to take free pages where it wants them (Linux:
    /// `__isolate_free_page()` via `isolate_freepages_block()`, and `split_free_page()`).
    public func isolateFreePage(_ pfn: PFN) -> Bool {
        lists.withLock { lists -> Bool in
            listUntouched(downTo: pfn, &lists)
            // The free block containing pfn starts at pfn aligned down to its order.
            var found: (PFN, Int)?
            for order in 0...Int(PageOrder.max.rawValue) {
                let start = PFN(pfn.rawValue & ~((1 << UInt32(order)) - 1))
                if frames.flags(start).contains(.buddy) && Int(frames.order(start).rawValue) == order {
                    found = (start, order)
                    break
                }
            }
            guard var (start, order) = found else { return false }
            unlink(start, order: order, &lists)
            frames.clear(start)
            // Give back the halves that do not hold pfn (Linux: `expand()`).
            while order > 0 {
                order -= 1
                let upper = start + (1 << order)
                if pfn >= upper {
                    push(start, order: order, &lists)
                    start = upper
                } else {
                    push(upper, order: order, &lists)
                }
            }
            freeCount.wrappingSubtract(1, ordering: .relaxed)
            return true
        }
    }

    /// Whether some free block has at least `order` (Linux: the free-area test of
    /// `__compact_finished()`).
    public func hasFreeBlock(order: PageOrder) -> Bool {
        lists.withLock { lists in
            lists.untouched > 0
                || (Int(order.rawValue)...Int(PageOrder.max.rawValue)).contains { lists.heads[$0] != FrameTable.noLink }
        }
    }
}

extension PhysicalMemory {
    /// Takes the free page `pfn` as an order-0 folio of `kind` (refcount 1), or nil if it is not free.
    public func allocatePage(at pfn: PFN, kind: FrameKind) -> PFN? {
        guard buddy.isolateFreePage(pfn) else { return nil }
        frames.setHeader(pfn, kind: kind, order: .base, flags: [])
        frames.setRefcount(pfn, 1)
        return pfn
    }
}
