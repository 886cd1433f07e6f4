import VMCore

extension PhysicalMemory {
    /// Checks the allocator's invariants and returns a description of each violation (empty when all
    /// hold): free blocks are aligned and do not overlap; the free count equals the pages on the free
    /// lists; no two free buddies of one order coexist; frames inside free blocks carry nothing; every
    /// frame not on a free list has a non-free kind; tails link to a head whose folio covers them
    /// (Linux: `VM_BUG_ON_PAGE` checks in `mm/page_alloc.c`).
    ///
    /// The untouched blocks at the bottom of memory (`BuddyAllocator`) must have all-zero records; the
    /// per-frame checks cover the frames above them, so their cost follows the memory a run used.
    ///
    /// - Complexity: O(frames). Call it with the system quiescent.
    public func checkPhysicalInvariants() -> [String] {
        var problems: [String] = []
        let base = buddy.untouchedFrames
        if let written = frames.firstWrittenRecord(below: base) {
            problems.append("\(written) is in an untouched free block but its record was written")
        }
        var inFreeBlock = [Bool](repeating: false, count: totalPages - base)
        var freeTotal = base
        var heads: [PageOrder: Set<UInt32>] = [:]
        buddy.forEachFreeBlock(untouched: false) { pfn, order in
            if !pfn.isAligned(order: order) { problems.append("free block \(pfn) is not aligned to \(order)") }
            if pfn.index + order.pages > totalPages { problems.append("free block \(pfn) \(order) runs past memory") ; return }
            if pfn.index < base { problems.append("free block \(pfn) is listed among the untouched blocks") ; return }
            for i in 0..<order.pages {
                if inFreeBlock[pfn.index - base + i] { problems.append("frame \(pfn + i) is on two free lists") }
                inFreeBlock[pfn.index - base + i] = true
            }
            if frames.kind(pfn) != .free || !frames.flags(pfn).contains(.buddy) || frames.order(pfn) != order {
                problems.append("free block head \(pfn) has kind \(frames.kind(pfn)), flags \(frames.flags(pfn).rawValue), \(frames.order(pfn))")
            }
            heads[order, default: []].insert(pfn.rawValue)
            freeTotal += order.pages
        }
        for (order, set) in heads where order < PageOrder.max {
            for pfn in set where set.contains(PFN(pfn).buddy(order: order).rawValue) {
                problems.append("free buddies \(PFN(pfn)) and \(PFN(pfn).buddy(order: order)) of \(order) were not merged")
            }
        }
        buddy.forEachPerCPUBlock { pfn, order in
            if pfn.index < base { problems.append("per-CPU block \(pfn) is among the untouched blocks") ; return }
            for i in 0..<order.pages {
                if inFreeBlock[pfn.index - base + i] { problems.append("frame \(pfn + i) is on a free list and a per-CPU list") }
                inFreeBlock[pfn.index - base + i] = true
            }
            if frames.kind(pfn) != .free || !frames.flags(pfn).contains(.perCPU) || frames.order(pfn) != order {
                problems.append("per-CPU block \(pfn) has kind \(frames.kind(pfn)), flags \(frames.flags(pfn).rawValue), \(frames.order(pfn))")
            }
            freeTotal += order.pages
        }
        if freeTotal != freePages { problems.append("free count \(freePages) but the free lists hold \(freeTotal) pages") }
        for i in base..<totalPages {
            let pfn = PFN(UInt32(i))
            let kind = frames.kind(pfn)
            if inFreeBlock[i - base] {
                if kind != .free { problems.append("\(pfn) is in a free block but has kind \(kind)") }
                if frames.flags(pfn).isDisjoint(with: [.buddy, .perCPU]) && (frames.refcount(pfn) != 0 || frames.mapcount(pfn) != 0 || frames.link(pfn) != 0) {
                    problems.append("\(pfn) inside a free block carries counts or a link")
                }
            } else if kind == .free {
                problems.append("\(pfn) is neither free nor owned (leaked)")
            }
            let flags = frames.flags(pfn)
            if flags.contains(.tail) {
                let head = frames.head(of: pfn)
                if head.index >= totalPages || !frames.flags(head).contains(.head)
                    || head > pfn || pfn.index >= head.index + frames.order(head).pages {
                    problems.append("tail \(pfn) links to \(head), which is not a head covering it")
                } else if frames.kind(head) != kind {
                    problems.append("tail \(pfn) has kind \(kind) but its head \(head) has \(frames.kind(head))")
                }
            }
        }
        return problems
    }
}
