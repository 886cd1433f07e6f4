import Synchronization
import VMCore
import PhysicalMemory

/// `split_huge_page()` of the 2010 design: it cannot fail.
///
/// Every path that cannot handle a huge PMD (a partial munmap, mprotect or MADV_DONTNEED, a VMA split
/// inside a huge page, an mremap that is not 2 MiB-aligned) calls `splitHugePMD`, which splits the
/// page and with it every PMD in every process that maps it, in three phases:
///
/// 1. mark each mapping PMD *splitting* and flush the TLBs (faults, zap, fork and mremap that meet a
///    splitting PMD wait; gup-fast backs off);
/// 2. under the head's `compound_lock`, hand each tail its share of the counts — the mapcount of the
///    head and the pins taken through it — and make the 512 frames ordinary pages;
/// 3. for each marked PMD, withdraw the deposited table, fill 512 PTEs that keep the PMD's bits, and
///    point the PMD at the table.
///
/// Nothing is allocated, so nothing can fail (Linux 2.6.38: `split_huge_page()` → `__split_huge_page()`
/// → `__split_huge_page_splitting()`, `__split_huge_page_refcount()`, `__split_huge_page_map()`).
extension AddressSpace {
    /// Splits the huge PMD at `index` of `pmd` (mapping `haddr`): the huge zero page is replaced by 512
    /// zero-page PTEs; an anonymous huge page is split with every PMD that maps it. Does nothing if the
    /// PMD is not huge (any more) (Linux 2.6.38: `split_huge_page_pmd()`). In today's design only this
    /// PMD is split and the folio stays whole (`splitHugePMDKeepingFolio`).
    /// - Precondition: the mmap lock is held; no page-table lock is.
    func splitHugePMD(_ pmd: PageTable, _ index: Int, _ haddr: VirtualAddress) {
        if kernel.splitsFoliosSeparately {
            splitHugePMDKeepingFolio(pmd, index, haddr)
            return
        }
        let lock = pmdLock(pmd)
        lock.spinLock()
        let entry = pmd[index]
        guard entry.isHuge else { lock.spinUnlock(); return }
        if entry.isSplitting {
            lock.spinUnlock()
            waitForSplit(pmd, index)
            return
        }
        if entry.isSpecial {
            lock.spinUnlock()
            invalidatingSecondaryMMUs(haddr, haddr + PageGeometry.pmdSize) {
                lock.spinLock()
                let current = pmd[index]
                if current.isHuge && current.isSpecial && !current.isSplitting { splitHugeZeroPMD(pmd, index, current) }
                lock.spinUnlock()
                kernel.flushTLB(self, haddr, haddr + PageGeometry.pmdSize)
            }
            return
        }
        let head = entry.pfn
        kernel.getPage(head)
        lock.spinUnlock()
        kernel.splitHugePage(head)
        kernel.putPage(head)
    }

    /// Splits the huge PMD covering `va`, if there is one (Linux: `split_huge_pmd_address()`).
    func splitHugePMD(covering va: VirtualAddress) {
        guard let (pmd, index) = walk(va, to: .pmd, allocate: false), pmd[index].isHuge else { return }
        splitHugePMD(pmd, index, va.alignedDown(PageGeometry.pmdSize))
    }

    /// Replaces a huge zero PMD by a table of 512 zero-page PTEs (Linux: `__split_huge_zero_page_pmd()`).
    /// - Precondition: the PMD lock is held.
    func splitHugeZeroPMD(_ pmd: PageTable, _ index: Int, _ entry: PageTableEntry) {
        let table = withdrawTable(from: pmd)
        let bits = subpageBits(entry)
        for i in 0..<PageGeometry.entriesPerTable {
            table.set(i, PageTableEntry(pfn: kernel.zeroPage, bits: bits | PageTableEntry.specialBit))
        }
        pmd.set(index, PageTableEntry(pfn: table.pfn, bits: tablePointerBits))
        kernel.putHugeZeroPage(entry.pfn)
        kernel.vmstat.count(.thpSplitPMD)
    }

    /// The bits of each PTE that replaces a huge PMD: protection, write, dirty and accessed stay; the
    /// page-size, splitting and special bits go.
    func subpageBits(_ entry: PageTableEntry) -> UInt64 {
        entry.rawValue & ~PageTableEntry.pfnMask
            & ~(PageTableEntry.hugeBit | PageTableEntry.splittingBit | PageTableEntry.specialBit)
    }

    /// Walks to the PMD mapping `head` at `haddr` under `page_table_lock` (which keeps the tables
    /// above from being freed) and the PMD lock, and runs `body` on it if it maps `head`.
    fileprivate func withHugePMD(_ head: PFN, at haddr: VirtualAddress,
                                 _ body: (PageTable, Int, PageTableEntry) -> Void) {
        pageTableLock.lock()
        defer { pageTableLock.unlock() }
        guard let (pmd, index) = walk(haddr, to: .pmd, allocate: false) else { return }
        let lock = pmdLock(pmd)
        let nested = lock != pageTableLock.word
        if nested { lock.spinLock() }
        let entry = pmd[index]
        if entry.isHuge && !entry.isSpecial && entry.pfn == head { body(pmd, index, entry) }
        if nested { lock.spinUnlock() }
    }

    /// Phase 1 for one mapping: mark the PMD splitting and flush it from the TLBs (Linux 2.6.38:
    /// `__split_huge_page_splitting()` → `pmdp_splitting_flush()`). Returns whether it was marked.
    fileprivate func markSplitting(_ head: PFN, at haddr: VirtualAddress) -> Bool {
        var marked = false
        withHugePMD(head, at: haddr) { pmd, index, entry in
            if !entry.isSplitting { pmd.set(index, entry.with(PageTableEntry.splittingBit)) }
            marked = true
        }
        if marked { kernel.flushTLB(self, haddr, haddr + PageGeometry.pmdSize) }
        return marked
    }

    /// Phase 3 for one mapping: the deposited table takes 512 PTEs and replaces the huge PMD (Linux
    /// 2.6.38: `__split_huge_page_map()`).
    fileprivate func mapSplitPage(_ head: PFN, at haddr: VirtualAddress) -> Bool {
        var mapped = false
        withHugePMD(head, at: haddr) { pmd, index, entry in
            precondition(entry.isSplitting, "split found an unmarked PMD at \(haddr)")
            let table = withdrawTable(from: pmd)
            let bits = subpageBits(entry)
            for i in 0..<PageGeometry.entriesPerTable { table.set(i, PageTableEntry(pfn: head + i, bits: bits)) }
            pmd.set(index, PageTableEntry(pfn: table.pfn, bits: tablePointerBits))
            kernel.removeHugeMapping(head, self, haddr)
            mapped = true
        }
        if mapped {
            kernel.flushTLB(self, haddr, haddr + PageGeometry.pmdSize)
            kernel.vmstat.count(.thpSplitPMD)
        }
        return mapped
    }
}

extension Kernel {
    /// Splits the huge page `head` into 512 small pages and every PMD that maps it into PTEs; see the
    /// type's overview. A page no PMD maps any more is left compound (Linux 2.6.38: `split_huge_page()`,
    /// which needs the page mapped to find its anon_vma).
    /// - Precondition: the caller holds a reference on `head` and no page-table lock.
    func splitHugePage(_ head: PFN) {
        let split = splitSerialization.withLock { () -> Bool in
            let frames = memory.frames
            guard frames.flags(head).contains(.head), frames.mapcount(head) > 0 else { return false }

            // Phase 1, until no mapping is left unmarked: a fork or mremap racing with us can only add
            // a mapping by copying or moving a PMD that is not yet marked.
            var marked: [(mm: AddressSpace, address: VirtualAddress)] = []
            var markedMappings: [HugeMappings.Mapping] = []
            while true {
                let pending = hugeMappers(of: head).filter { m in !markedMappings.contains { $0.isSame(as: m) } }
                if pending.isEmpty { break }
                for m in pending {
                    // An mm that is being destroyed is zapping its mappings; wait for this one to go.
                    guard let mm = m.mm else {
                        while hugeMappers(of: head).contains(where: { $0.isSame(as: m) }) { Scheduling.pause() }
                        continue
                    }
                    // Secondary MMUs drop the range before it is marked, and may map it again after phase 3.
                    mm.startInvalidatingSecondaryMMUs(m.address, m.address + PageGeometry.pmdSize)
                    // The list and the PMDs change together under the PMD lock. A mapping that was
                    // zapped since the list was read is gone from both: skip it.
                    guard mm.markSplitting(head, at: m.address) else {
                        mm.endInvalidatingSecondaryMMUs(m.address, m.address + PageGeometry.pmdSize)
                        precondition(!hugeMappers(of: head).contains { $0.isSame(as: m) },
                                     "\(head) is listed at \(m.address) in mm \(mm.pid) but not mapped there")
                        continue
                    }
                    marked.append((mm, m.address))
                    markedMappings.append(m)
                }
            }
            let mapcount = frames.mapcount(head)
            precondition(Int(mapcount) == marked.count, "\(head) has mapcount \(mapcount) but \(marked.count) PMDs were marked")

            distributeCounts(head)

            for m in marked {
                let done = m.mm.mapSplitPage(head, at: m.address)
                precondition(done, "a splitting PMD of \(head) vanished at \(m.address)")
                m.mm.endInvalidatingSecondaryMMUs(m.address, m.address + PageGeometry.pmdSize)
            }
            vmstat.count(.thpSplitPage)
            mthpStats.count(PageGeometry.pmdOrder.rawValue, .split)
            return true
        }
        guard split else { return }
        // Phase 2 gave each tail an extra reference so that none is freed inside the split; a subpage
        // that nothing maps or pins goes now (Linux: the `put_page()` of each tail after the split).
        for i in 1..<PageGeometry.pmdOrder.pages { putPage(head + i) }
    }

    /// Phase 2: under `compound_lock`, each tail takes the head's mapcount, its own pins (which leave
    /// the head's count) and one extra reference, and becomes an ordinary page; then the head does
    /// (Linux 2.6.38: `__split_huge_page_refcount()`).
    private func distributeCounts(_ head: PFN) {
        let frames = memory.frames
        lockCompound(head)
        let mapcount = frames.mapcount(head)
        // The LRU lock keeps the head's list flags still while its header is rewritten, and the tails
        // join its list (2.6.38 takes `zone->lru_lock` around `__split_huge_page_refcount()`).
        lru.lockFlushed()
        memoryCgroups.splitRecord(head, order: PageGeometry.pmdOrder)
        let inherited = frames.flags(head).intersection([.dirty, .swapBacked, .referenced, .active, .anonExclusive])
        for i in 1..<PageGeometry.pmdOrder.pages {
            let tail = head + i
            let pins = pinsCountInTailPages ? frames.refcount(tail) : 0
            if pins != 0 { frames.addRefcount(head, -pins) }
            frames.setRefcount(tail, mapcount + pins + 1)
            frames.setMapcount(tail, mapcount)
            frames.setLink(tail, 0)
            frames.setHeader(tail, kind: .anonymous, order: .base, flags: inherited)
        }
        let headFlags = frames.flags(head).subtracting([.head, .explicitTails])
        frames.setHeader(head, kind: .anonymous, order: .base, flags: headFlags)
        lru.addSplitTails(head, oldPages: PageGeometry.pmdOrder.pages,
                          tails: (1..<PageGeometry.pmdOrder.pages).map { head + $0 })
        lru.lock.unlock()
        // The huge page no longer counts as one; its 512 mapped subpages count as small pages.
        vmstat.modify(.nrAnonTransparentHugepages, -1)
        if !anonPagesCountHugePages { vmstat.modify(.nrAnonPages, PageGeometry.pmdOrder.pages) }
        unlockCompound(head)
    }
}

extension AddressSpace {
    /// Splits every anonymous huge page mapped in `[start, start + length)`, as writing
    /// `<pid>,<start>,<end>` to debugfs `split_huge_pages` does; returns how many were split (Linux:
    /// `split_huge_pages_pid()`). The huge zero page is left alone, as Linux skips it.
    @discardableResult
    public func splitHugePages(_ start: VirtualAddress, length: UInt64) -> Int {
        if kernel.splitsFoliosSeparately { return splitFolios(start, length: length) }
        return mmapLock.withReadLock {
            var split = 0
            let end = start + length
            for vma in vmas.areas where vma.end > start && vma.start < end {
                forEachPTETable(max(vma.start, start), min(vma.end, end), huge: { pmd, index, haddr, _ in
                    if pmd[index].isSpecial { return .handled }
                    split += 1
                    return .split
                }) { _, _, _ in true }
            }
            return split
        }
    }
}

extension AddressSpace {
    /// Today's `split_huge_pages_pid()`: every large anonymous folio mapped in the range, by a PMD or
    /// by PTEs, is split with `splitFolio` (which fails for pinned ones); returns how many were split.
    func splitFolios(_ start: VirtualAddress, length: UInt64) -> Int {
        let frames = kernel.memory.frames
        let end = start + length
        // Collect the folios with a reference each, then split them without this mm's lock held.
        let heads: [PFN] = mmapLock.withReadLock {
            var found: [PFN] = []
            func consider(_ pfn: PFN) {
                guard frames.kind(pfn) == .anonymous, kernel.isInLargeFolio(pfn) else { return }
                let head = frames.head(of: pfn)
                if found.last != head && !found.contains(head) && frames.tryGetReference(head) { found.append(head) }
            }
            for vma in vmas.areas where vma.end > start && vma.start < end && !vma.isShared {
                forEachMappedPage(max(vma.start, start), min(vma.end, end), huge: { _, entry in
                    if !entry.isSpecial { consider(entry.pfn) }
                }) { _, entry in
                    if !entry.isSpecial { consider(entry.pfn) }
                }
            }
            return found
        }
        var split = 0
        for head in heads {
            if kernel.splitFolio(head) == .split { split += 1 }
            kernel.putPage(head)
        }
        return split
    }
}
