import Synchronization
import VMCore
import PhysicalMemory

/// `split_huge_pmd()` of today's design: the PMD becomes 512 PTEs that map the pages of the same
/// folio, which stays large. It cannot fail either — the deposited table holds the PTEs — but unlike
/// the 2010 split it touches one mapping only; other processes keep their PMDs, and the folio is split
/// later, if at all, by `splitFolio` (Linux 4.5+: `__split_huge_pmd()` → `__split_huge_pmd_locked()`).
///
/// ```
///  PMD ──► folio (entire mapcount 1)    →    PMD ──► table ──► 512 PTEs ──► pages 0…511 of the folio
///  refcount 1 for the PMD                    refcount 512, one per PTE; each page mapcount 1
/// ```
extension AddressSpace {
    /// Splits the huge PMD at `index` of `pmd` (mapping `haddr`) into PTEs, keeping the folio whole;
    /// the huge zero page becomes 512 zero-page PTEs. Does nothing if the PMD is not huge (any more).
    /// - Precondition: the mmap lock is held; no page-table lock is.
    func splitHugePMDKeepingFolio(_ pmd: PageTable, _ index: Int, _ haddr: VirtualAddress) {
        let end = haddr + PageGeometry.pmdSize
        var migrating = false
        invalidatingSecondaryMMUs(haddr, end) {
            let lock = pmdLock(pmd)
            lock.spinLock()
            let entry = pmd[index]
            guard entry.isHuge else { lock.spinUnlock(); return }
            // A huge migration entry: the folio is moving; wait for it outside the invalidation.
            guard !entry.isSplitting else { lock.spinUnlock(); migrating = true; return }
            if entry.isSpecial {
                splitHugeZeroPMD(pmd, index, entry)
            } else {
                splitHugePMDLocked(pmd, index, haddr, entry)
            }
            lock.spinUnlock()
            kernel.flushTLB(self, haddr, end)
        }
        if migrating { waitForSplit(pmd, index) }
    }

    /// The split under the PMD lock: the deposited table takes 512 PTEs with the PMD's bits, each page
    /// is mapped by its PTE (and keeps the PMD's exclusive mark) before the PMD mapping goes, and the
    /// folio gains a reference per PTE beyond the PMD's one (Linux: `__split_huge_pmd_locked()`).
    /// - Precondition: the PMD lock is held and the entry is a present, non-special huge PMD.
    func splitHugePMDLocked(_ pmd: PageTable, _ index: Int, _ haddr: VirtualAddress, _ entry: PageTableEntry) {
        let frames = kernel.memory.frames
        let head = entry.pfn
        let pages = PageGeometry.pmdOrder.pages
        let table = withdrawTable(from: pmd)
        let bits = subpageBits(entry)
        let exclusive = frames.flags(head).contains(.anonExclusive)
        frames.addRefcount(head, Int32(pages - 1))
        for i in 0..<pages {
            if exclusive && i > 0 { frames.insertFlags(head + i, .anonExclusive) }
            mapPage(head + i)
            table.set(i, PageTableEntry(pfn: head + i, bits: bits))
        }
        pmd.set(index, PageTableEntry(pfn: table.pfn, bits: tablePointerBits))
        unmapHugePage(head, at: haddr)
        kernel.vmstat.count(.thpSplitPMD)
    }

    /// Splits the PMD that maps `head` at `haddr`, if it still does, under `page_table_lock` (which keeps
    /// the tables above from being freed): how a folio split reaches the PMD mappings of other
    /// processes (Linux: `try_to_migrate()` with `TTU_SPLIT_HUGE_PMD`).
    func splitHugePMD(mapping head: PFN, at haddr: VirtualAddress) {
        let end = haddr + PageGeometry.pmdSize
        startInvalidatingSecondaryMMUs(haddr, end)
        defer { endInvalidatingSecondaryMMUs(haddr, end) }
        var split = false
        pageTableLock.lock()
        if let (pmd, index) = walk(haddr, to: .pmd, allocate: false) {
            let lock = pmdLock(pmd)
            let nested = lock != pageTableLock.word
            if nested { lock.spinLock() }
            let entry = pmd[index]
            if entry.isHuge && entry.isPresent && !entry.isSpecial && !entry.isSplitting && entry.pfn == head {
                splitHugePMDLocked(pmd, index, haddr, entry)
                split = true
            }
            if nested { lock.spinUnlock() }
        }
        pageTableLock.unlock()
        if split { kernel.flushTLB(self, haddr, end) }
    }
}

extension Kernel {
    /// Whether splitting a huge PMD leaves its folio whole, to be split apart later if at all (Linux
    /// 4.5+: `split_huge_pmd()` and `split_huge_page()`), or splits the page with every PMD that maps it
    /// (2010: `split_huge_page_pmd()`). The one place the design's `splitPMDSplitsPage` is read.
    @inline(__always) var splitsFoliosSeparately: Bool { !design.splitPMDSplitsPage }
}
