import Synchronization
import VMCore
import PhysicalMemory

/// What a huge-page fault path decided.
enum HugeFaultResult: Equatable {
    /// The fault is resolved (or failed) at PMD level.
    case done(FaultOutcome)
    /// Use 4 KiB pages for this fault (Linux: `VM_FAULT_FALLBACK`).
    case fallback
}

extension AddressSpace {
    /// Whether the 2 MiB-aligned range around `va` lies inside `vma` (Linux: `transhuge_vma_suitable()`).
    @inline(__always) func hugeRangeFits(_ vma: VMA, _ va: VirtualAddress) -> Bool {
        let haddr = va.alignedDown(PageGeometry.pmdSize)
        return haddr >= vma.start && vma.end - haddr >= PageGeometry.pmdSize
    }

    /// Whether smaps reports the VMA as eligible: it covers at least one aligned 2 MiB range, where the
    /// policy would map a huge PMD at a fault (Linux 6.18: `thp_vma_allowable_orders()` for
    /// `THPeligible`).
    func isHugepageEligible(_ vma: VMA) -> Bool {
        vma.end.rawValue >= PageGeometry.pmdSize && hugeRangeFits(vma, vma.end - PageGeometry.pmdSize)
            && kernel.faultMayMapHugePMD(vma, vma.end - PageGeometry.pmdSize, kernel.hugepageSettings)
    }

    /// The first touch of an empty PMD in a VMA that allows huge pages: allocate a 2 MiB page and a PTE
    /// table to deposit beside it, then under the PMD lock re-check that the PMD is still empty and
    /// map it; on a read with `use_zero_page`, map the huge zero page instead. Falls back to 4 KiB when
    /// the range does not fit the VMA (uncounted) or no huge page can be allocated
    /// (`thp_fault_fallback`) (Linux: `do_huge_pmd_anonymous_page()`).
    func hugeAnonymousFault(_ vma: VMA, _ va: VirtualAddress, _ pmd: PageTable, _ index: Int,
                            _ settings: TransparentHugepageSettings, _ fault: inout FaultContext) -> HugeFaultResult {
        let access = fault.access
        guard hugeRangeFits(vma, va) else { return .fallback }
        let haddr = va.alignedDown(PageGeometry.pmdSize)
        if !khugepagedRegistered.load(ordering: .relaxed) { khugepagedEnter(vma) }
        guard let deposit = kernel.allocateTable(&fault.reclaim) else { return .done(.outOfMemory) }
        let lock = pmdLock(pmd)
        if access != .write && settings.useZeroPage {
            guard let zero = kernel.getHugeZeroPage(&fault) else {
                kernel.freeTable(deposit)
                fault.gaveBack(pages: 1)
                kernel.vmstat.count(.thpFaultFallback)
                return .fallback
            }
            guard chargeTable(deposit, mayReclaim: true) else {
                kernel.putHugeZeroPage(zero)
                kernel.freeTable(deposit)
                return .done(.outOfMemory)
            }
            let entry = PageTableEntry(pfn: zero, bits: PageTableEntry.userBits(vma.flags.protection)
                | PageTableEntry.hugeBit | PageTableEntry.specialBit | PageTableEntry.accessedBit)
            lock.spinLock()
            guard pmd[index].isNone else {
                lock.spinUnlock()
                kernel.putHugeZeroPage(zero)
                kernel.freeTable(deposit)
                fault.gaveBack(pages: 1)
                return .done(.handled)
            }
            depositTable(deposit, in: pmd)
            pmd.set(index, entry)
            lock.spinUnlock()
            fault.mapped = .pmd
            fault.resolution = .mapped
            return .done(.handled)
        }
        var preZeroed = false
        let defrag = settings.faultDefrag(madvised: vma.flags.contains(.hugepage))
        guard let head = kernel.hugeFaultTakesPreZeroed()
                ? kernel.allocatePreZeroedHugePage(defrag: defrag, &fault.compaction, preZeroed: &preZeroed)
                : kernel.allocateHugePage(zeroed: kernel.zeroesAtFault(order: PageGeometry.pmdOrder), defrag: defrag,
                                          &fault.compaction) else {
            kernel.freeTable(deposit)
            fault.gaveBack(pages: 1)
            kernel.vmstat.count(.thpFaultFallback)
            kernel.mthpStats.count(PageGeometry.pmdOrder.rawValue, .anonFaultFallback)
            return .fallback
        }
        guard charge(head, order: PageGeometry.pmdOrder) else {
            // Linux: `THP_FAULT_FALLBACK_CHARGE`; the folio goes back uncharged and 4 KiB pages follow.
            kernel.putPage(head)
            kernel.freeTable(deposit)
            fault.gaveBack(pages: 1)
            kernel.vmstat.count(.thpFaultFallback)
            kernel.vmstat.count(.thpFaultFallbackCharge)
            kernel.mthpStats.count(PageGeometry.pmdOrder.rawValue, .anonFaultFallback)
            return .fallback
        }
        // The deposited table is charged after the folio, as Linux charges the folio in
        // `vma_alloc_anon_folio_pmd()` and then the table in `pte_alloc_one()`: a THP that fits with no
        // page to spare makes the table's charge reclaim, or call the OOM killer (`VM_FAULT_OOM`).
        guard chargeTable(deposit, mayReclaim: true) else {
            kernel.putPage(head)
            kernel.freeTable(deposit)
            return .done(.outOfMemory)
        }
        var bits = PageTableEntry.userBits(vma.flags.protection) | PageTableEntry.hugeBit
            | PageTableEntry.accessedBit | PageTableEntry.dirtyBit
        if vma.flags.contains(.write) { bits |= PageTableEntry.writableBit }
        lock.spinLock()
        guard pmd[index].isNone else {
            // Another CPU mapped a huge page or a PTE table here first.
            lock.spinUnlock()
            kernel.putPage(head)
            kernel.freeTable(deposit)
            fault.zeroed(pages: PageGeometry.pmdOrder.pages)
            fault.gaveBack(pages: 1)
            return .done(.handled)
        }
        depositTable(deposit, in: pmd)
        mapHugePage(head, at: haddr)
        addNewAnonFolioToLRU(head, vma, at: haddr)
        pmd.set(index, PageTableEntry(pfn: head, bits: bits))
        lock.spinUnlock()
        // Linux 6.12+: every new THP is queued, so that the shrinker can split it if it stays mostly
        // zero (`map_anon_folio_pmd()` → `deferred_split_folio(folio, false)`).
        kernel.deferredSplitFolio(head, partiallyMapped: false)
        kernel.vmstat.count(.thpFaultAlloc)
        countMemcg(.thpFaultAlloc)
        kernel.mthpStats.count(PageGeometry.pmdOrder.rawValue, .anonFaultAlloc)
        if _slowPath(preZeroed) { fault.hugePagePreZeroed() } else { fault.hugePage(copied: false) }
        fault.mapped = .pmd
        fault.resolution = .mapped
        return .done(.handled)
    }

    /// A fault on a huge PMD that the MMU could use: another CPU resolved it, or only A/D bits were
    /// missing; set them under the lock (Linux: `huge_pmd_set_accessed()`).
    func hugeSetAccessed(_ pmd: PageTable, _ index: Int, _ access: MemoryAccess) -> FaultOutcome {
        let lock = pmdLock(pmd)
        lock.spinLock()
        let current = pmd[index]
        if current.isHuge && current.isPresent && !current.isSplitting {
            var updated = current.makingYoung()
            if access == .write && current.isWritable { updated = updated.makingDirty() }
            pmd.set(index, updated)
        }
        lock.spinUnlock()
        return .handled
    }

    /// Waits until the split that marked the PMD at `index` has turned it into a PTE table (Linux
    /// 2.6.38: `wait_split_huge_page()`, which waits on the anon_vma lock the split holds).
    func waitForSplit(_ pmd: PageTable, _ index: Int) {
        while pmd[index].isSplitting { Scheduling.pause() }
    }
}

extension Kernel {
    /// Allocates a zeroed, anonymous 2 MiB folio for a fault and counts it; when none is free, frees an
    /// unused huge zero page and tries once more, then compacts as `defrag` says and tries again
    /// (Linux: `vma_alloc_folio()` with the GFP flags of `vma_thp_gfp_mask()`, the huge zero page's
    /// shrinker under pressure, `__alloc_pages_direct_compact()`). Nil when memory has no free order-9
    /// block.
    /// The direct compaction it does is added to `work`.
    func allocateHugePage(zeroed: Bool = true, defrag: HugeAllocationDefrag = .none,
                          _ work: inout CompactionWork) -> PFN? {
        allocateHugePage(defrag: defrag, &work) { memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous, zeroed: zeroed) }
    }

    /// `allocateHugePage` for a policy whose huge faults take pre-zeroed blocks: `preZeroed` says
    /// whether the page came zeroed ahead (then nothing cleared it now).
    func allocatePreZeroedHugePage(defrag: HugeAllocationDefrag, _ work: inout CompactionWork,
                                   preZeroed: inout Bool) -> PFN? {
        var zeroedAhead = false
        let head = allocateHugePage(defrag: defrag, &work) {
            guard let (head, ahead) = memory.allocateFolioNotingPreZeroed(order: PageGeometry.pmdOrder, kind: .anonymous) else { return nil }
            zeroedAhead = ahead
            return head
        }
        preZeroed = zeroedAhead
        return head
    }

    private func allocateHugePage(defrag: HugeAllocationDefrag, _ work: inout CompactionWork,
                                  _ allocate: () -> PFN?) -> PFN? {
        var head = allocate()
        if head == nil && releaseUnusedHugeZeroPage() {
            head = allocate()
        }
        if head == nil {
            switch defrag {
            case .direct:
                if directCompaction(order: PageGeometry.pmdOrder, &work) {
                    head = allocate()
                }
            case .wakeKcompactd: kcompactd.wake()
            case .none: break
            }
        }
        guard let head else { return nil }
        countAllocation(pages: PageGeometry.pmdOrder.pages)
        memory.frames.insertFlags(head, [.anonExclusive, .swapBacked])
        return head
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
