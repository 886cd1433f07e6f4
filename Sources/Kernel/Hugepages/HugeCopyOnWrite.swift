import VMCore
import PhysicalMemory

extension AddressSpace {
    /// A write to a write-protected huge PMD (Linux 2.6.38: `do_huge_pmd_wp_page()`). Today's design
    /// reuses a page marked exclusive or held by this PMD alone, and otherwise splits the PMD and copies
    /// 4 KiB (Linux 5.8+).
    ///
    /// - The huge zero page: allocate a zeroed huge page and map it writable (Linux 3.8:
    ///   `do_huge_pmd_wp_zero_page()`); without one, split the PMD into zero-page PTEs and let the 4 KiB
    ///   path copy the one page written.
    /// - A page this PMD alone maps (mapcount 1, the 2010 rule): make it writable in place.
    /// - A page others map too (after fork): copy it into a new huge page; when none can be allocated,
    ///   copy it into 512 small pages (Linux 2.6.38: `do_huge_pmd_wp_page_fallback()`).
    func hugeWriteProtectFault(_ vma: VMA, _ va: VirtualAddress, _ pmd: PageTable, _ index: Int,
                               _ orig: PageTableEntry, _ fault: inout FaultContext) -> HugeFaultResult {
        let frames = kernel.memory.frames
        let haddr = va.alignedDown(PageGeometry.pmdSize)
        let lock = pmdLock(pmd)
        let writableBits = PageTableEntry.userBits(vma.flags.protection) | PageTableEntry.hugeBit
            | PageTableEntry.writableBit | PageTableEntry.accessedBit | PageTableEntry.dirtyBit
        if orig.isSpecial { return hugeZeroPageWriteFault(vma, pmd, index, haddr, orig, writableBits, &fault) }

        lock.spinLock()
        guard pmd[index] == orig else { lock.spinUnlock(); return .done(.handled) }
        let head = orig.pfn
        let reuse: Bool
        switch kernel.design.hugeCOWReuse {
        case .mapcountOne: reuse = frames.mapcount(head) == 1
        case .anonExclusive: reuse = frames.flags(head).contains(.anonExclusive) || frames.refcount(head) == 1
        }
        if reuse {
            frames.insertFlags(head, .anonExclusive)
            pmd.set(index, orig.makingWritable().makingDirty().makingYoung())
            lock.spinUnlock()
            fault.resolution = .copyOnWrite
            return .done(.handled)
        }
        if kernel.design.hugeCOWCopy == .splitPMDCopyPage {
            // Linux 5.8+: split the PMD; the 4 KiB path copies the one page written.
            lock.spinUnlock()
            splitHugePMD(pmd, index, haddr)
            return .fallback
        }
        kernel.getPage(head)  // keeps the page while the lock is dropped for the allocation
        lock.spinUnlock()

        guard let copy = kernel.allocateHugePage(zeroed: false, &fault.compaction).flatMap({ copy in
            if charge(copy, order: PageGeometry.pmdOrder) { return copy }
            kernel.putPage(copy)
            return nil
        }) else {
            kernel.vmstat.count(.thpFaultFallback)
            let outcome = copyHugePageIntoSmallPages(vma, pmd, index, haddr, orig, &fault)
            kernel.putPage(head)
            return .done(outcome)
        }
        kernel.vmstat.count(.thpFaultAlloc)
        fault.hugePage(copied: true)
        if let storage = kernel.memory.storage {
            for i in 0..<PageGeometry.pmdOrder.pages { storage.copy(from: head + i, to: copy + i) }
        }
        return invalidatingSecondaryMMUs(haddr, haddr + PageGeometry.pmdSize) { () -> HugeFaultResult in
            lock.spinLock()
            guard pmd[index] == orig else {
                lock.spinUnlock()
                kernel.putPage(copy)
                kernel.putPage(head)
                return .done(.handled)
            }
            mapHugePage(copy, at: haddr)
            addNewAnonFolioToLRU(copy, vma, at: haddr)
            pmd.set(index, PageTableEntry(pfn: copy, bits: writableBits))
            unmapHugePage(head, at: haddr)
            kernel.putPage(head)  // the mapping's reference
            lock.spinUnlock()
            kernel.flushTLB(self, haddr, haddr + PageGeometry.pmdSize)
            kernel.putPage(head)  // the reference taken above
            fault.mapped = .pmd
            fault.resolution = .copyOnWrite
            return .done(.handled)
        }
    }

    /// A write to the huge zero page (Linux 3.8: `do_huge_pmd_wp_zero_page()`).
    private func hugeZeroPageWriteFault(_ vma: VMA, _ pmd: PageTable, _ index: Int, _ haddr: VirtualAddress,
                                        _ orig: PageTableEntry, _ writableBits: UInt64,
                                        _ fault: inout FaultContext) -> HugeFaultResult {
        let lock = pmdLock(pmd)
        guard let head = kernel.allocateHugePage(&fault.compaction).flatMap({ head in
            if charge(head, order: PageGeometry.pmdOrder) { return head }
            kernel.putPage(head)
            return nil
        }) else {
            kernel.vmstat.count(.thpFaultFallback)
            splitHugePMD(pmd, index, haddr)
            return .fallback
        }
        kernel.vmstat.count(.thpFaultAlloc)
        fault.hugePage(copied: false)
        return invalidatingSecondaryMMUs(haddr, haddr + PageGeometry.pmdSize) { () -> HugeFaultResult in
            lock.spinLock()
            guard pmd[index] == orig else {
                lock.spinUnlock()
                kernel.putPage(head)
                return .done(.handled)
            }
            mapHugePage(head, at: haddr)
            addNewAnonFolioToLRU(head, vma, at: haddr)
            pmd.set(index, PageTableEntry(pfn: head, bits: writableBits))
            kernel.putHugeZeroPage(orig.pfn)
            lock.spinUnlock()
            kernel.flushTLB(self, haddr, haddr + PageGeometry.pmdSize)
            fault.mapped = .pmd
            fault.resolution = .copyOnWrite
            return .done(.handled)
        }
    }

    /// COW of a shared huge page when no huge page is free: copy each 4 KiB piece into its own page and
    /// map them, writable, through the PMD's deposited table (Linux 2.6.38:
    /// `do_huge_pmd_wp_page_fallback()`). Out of memory when the 512 pages cannot all be had.
    private func copyHugePageIntoSmallPages(_ vma: VMA, _ pmd: PageTable, _ index: Int, _ haddr: VirtualAddress,
                                            _ orig: PageTableEntry, _ fault: inout FaultContext) -> FaultOutcome {
        let frames = kernel.memory.frames
        let head = orig.pfn
        var pages = [PFN]()
        pages.reserveCapacity(PageGeometry.pmdOrder.pages)
        for _ in 0..<PageGeometry.pmdOrder.pages {
            guard let page = kernel.memory.allocateFolio(order: .base, kind: .anonymous, zeroed: false) else {
                for page in pages { kernel.putPage(page) }
                return .outOfMemory
            }
            kernel.countAllocation(pages: 1)
            guard charge(page, order: .base) else {
                kernel.putPage(page)
                for page in pages { kernel.putPage(page) }
                return .outOfMemory
            }
            fault.copied(pages: 1)
            frames.insertFlags(page, [.anonExclusive, .swapBacked])
            if let storage = kernel.memory.storage { storage.copy(from: head + pages.count, to: page) }
            pages.append(page)
        }
        startInvalidatingSecondaryMMUs(haddr, haddr + PageGeometry.pmdSize)
        defer { endInvalidatingSecondaryMMUs(haddr, haddr + PageGeometry.pmdSize) }
        let lock = pmdLock(pmd)
        lock.spinLock()
        guard pmd[index] == orig else {
            lock.spinUnlock()
            for page in pages { kernel.putPage(page) }
            return .handled
        }
        let table = withdrawTable(from: pmd)
        let bits = PageTableEntry.userBits(vma.flags.protection) | PageTableEntry.writableBit
            | PageTableEntry.accessedBit | PageTableEntry.dirtyBit
        for (i, page) in pages.enumerated() {
            mapPage(page)
            addNewAnonFolioToLRU(page, vma, at: haddr + UInt64(i) * PageGeometry.pageSize)
            table.set(i, PageTableEntry(pfn: page, bits: bits))
        }
        pmd.set(index, PageTableEntry(pfn: table.pfn, bits: tablePointerBits))
        unmapHugePage(head, at: haddr)
        kernel.putPage(head)  // the mapping's reference
        lock.spinUnlock()
        kernel.flushTLB(self, haddr, haddr + PageGeometry.pmdSize)
        fault.mapped = .basePages(PageGeometry.pmdOrder.pages)
        fault.resolution = .copyOnWrite
        return .handled
    }
}
