import VMCore

/// Free blocks zeroed ahead of their allocation, for a policy's pre-zeroing thread (HawkEye's
/// `asynczero` module): a flag on the free block's head (`FrameFlags.preZeroed`) that splitting keeps
/// on both halves and merging, per-CPU lists and compaction's isolation drop, so that a block marked
/// pre-zeroed is always all zeros.
extension BuddyAllocator {
    /// Marks one free block of `order` that is not yet marked, after `zero` cleared its frames under
    /// the zone lock: the first such block on the list, else an untouched max-order block. Returns the
    /// block, or nil when none is left to zero (HawkEye: `zero_fill_zone_pages()`, which skips blocks
    /// already zeroed by moving them to the list's tail).
    public func markPreZeroed(order: PageOrder, zero: (PFN) -> Void) -> PFN? {
        lists.withLock { lists -> PFN? in
            let o = Int(order.rawValue)
            var candidate = lists.heads[o]
            while candidate != FrameTable.noLink {
                let pfn = PFN(candidate)
                if !frames.flags(pfn).contains(.preZeroed) {
                    zero(pfn)
                    frames.insertFlags(pfn, .preZeroed)
                    return pfn
                }
                candidate = frames.nextFree(pfn)
            }
            guard order == .max, lists.untouched > 0 else { return nil }
            let block = PFN(UInt32((lists.untouched - 1) << o))
            listUntouched(downTo: block, &lists)
            zero(block)
            frames.insertFlags(block, .preZeroed)
            return block
        }
    }

    /// Free pages in blocks marked pre-zeroed (a walk of the free lists, for reports and tests).
    public var preZeroedFreePages: Int {
        var pages = 0
        forEachFreeBlock(untouched: false) { pfn, order in
            if frames.flags(pfn).contains(.preZeroed) { pages += order.pages }
        }
        return pages
    }
}

extension PhysicalMemory {
    /// Zeroes one free block of `order` ahead of its allocation and marks it; false when every free
    /// block of that order is marked already.
    public func preZeroFreeBlock(order: PageOrder) -> Bool {
        buddy.markPreZeroed(order: order) { pfn in storage?.zero(pfn, pages: order.pages) } != nil
    }

    /// `allocateFolio` zeroing the folio, also saying whether the block came pre-zeroed (its bytes are
    /// zero already, so they are not cleared again).
    public func allocateFolioNotingPreZeroed(order: PageOrder, kind: FrameKind,
                                             reserve: BuddyAllocator.Reserve = .min) -> (head: PFN, preZeroed: Bool)? {
        guard let head = buddy.allocate(order: order, reserve: reserve) else { return nil }
        let preZeroed = frames.flags(head).contains(.preZeroed)
        prepareFolio(head, order: order, kind: kind)
        if !preZeroed, let storage { storage.zero(head, pages: order.pages) }
        return (head, preZeroed)
    }
}
