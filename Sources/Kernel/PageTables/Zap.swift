import Synchronization
import VMCore
import PhysicalMemory

extension AddressSpace {
    /// Clears every entry mapping `[start, end)`, dropping the mapped pages' mapcounts and references;
    /// the tables themselves stay. A huge PMD the range covers whole is unmapped whole; one it covers
    /// in part is split first (Linux: `unmap_page_range()` → `zap_pmd_range()` → `zap_huge_pmd()` or
    /// `split_huge_pmd()`, then `zap_pte_range()`).
    ///
    /// The pages' references are dropped only after the TLB flush, which also waits for lockless
    /// walkers, so gup-fast never takes a reference on a page being freed (Linux: the `mmu_gather` of
    /// `tlb_gather_mmu()` … `tlb_finish_mmu()`).
    /// - Precondition: the mmap lock is held; the range lies in one VMA or in a gap.
    func zap(_ start: VirtualAddress, _ end: VirtualAddress) {
        var record = ZapRecord()
        zap(start, end, recording: &record)
    }

    /// `zap`, adding what it did to `record`: each PTE table locked and its entries cleared, each huge
    /// PMD cleared, the references dropped and the folios freed.
    func zap(_ start: VirtualAddress, _ end: VirtualAddress, recording record: inout ZapRecord) {
        var gathered: [PFN] = []
        invalidatingSecondaryMMUs(start, end) { zapRange(start, end, &gathered, &record) }
        record.referencesDropped += gathered.count
        for pfn in gathered {
            // A page in the swap cache that nothing maps any more gives its slot back (Linux:
            // `free_pages_and_swap_cache()` → `free_swap_cache()`).
            kernel.freeSwapCacheIfUnmapped(pfn)
            record.freed = record.freed + kernel.putPage(pfn)
        }
        kernel.policyNoteUnmap(self, start, end)
    }

    private func zapRange(_ start: VirtualAddress, _ end: VirtualAddress, _ gathered: inout [PFN],
                          _ record: inout ZapRecord) {
        forEachPTETable(start, end, huge: { pmd, index, haddr, whole in
            guard whole else {
                record.pmdSplits.append(haddr.rawValue)
                return .split
            }
            guard zapHugePMD(pmd, index, haddr, &gathered) == .handled else { return .retry }
            record.hugePMDs.append(haddr.rawValue)
            return .handled
        }) { table, from, to in
            let lock = kernel.splitLock(table)
            lock.spinLock()
            var cleared = 0
            var va = from
            while va < to {
                let old = table.exchange(va.tableIndex(.pte), .none)
                if old.isMapped && !old.isSpecial {
                    removeMapping(old.pfn)
                    gathered.append(old.pfn)
                    cleared += 1
                } else if old.isSwapEntry {
                    kernel.swapFree(old.swapSlot)
                    cleared += 1
                } else if old.isMapped {
                    cleared += 1   // the zero page: cleared, nothing to release
                }
                va = va + PageGeometry.pageSize
            }
            lock.spinUnlock()
            record.pteTables.append(ZapRecord.Table(range: from.rawValue >> 21, entries: cleared))
            return true
        }
        kernel.flushTLB(self, start, end)
    }

    /// Drops one mapping of a page and its reference (Linux: `folio_remove_rmap_pte()` and the
    /// `tlb_remove_page()` that puts its reference).
    /// - Precondition: the entry that mapped it is gone and flushed.
    func unmapPage(_ pfn: PFN) {
        removeMapping(pfn)
        kernel.putPage(pfn)
    }
}
