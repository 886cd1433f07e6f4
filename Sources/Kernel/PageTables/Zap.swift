import Synchronization
import VMCore
import PhysicalMemory

extension AddressSpace {
    /// Clears every entry mapping `[start, end)`, dropping the mapped pages' mapcounts and references;
    /// the tables themselves stay. A huge PMD the range covers whole is unmapped whole; one it covers
    /// in part is split first (Linux: `unmap_page_range()` → `zap_pmd_range()` → `zap_huge_pmd()` or
    /// `split_huge_pmd()`, then `zap_pte_range()`).
    /// - Precondition: the mmap lock is held; the range lies in one VMA or in a gap.
    func zap(_ start: VirtualAddress, _ end: VirtualAddress) {
        invalidatingSecondaryMMUs(start, end) { zapRange(start, end) }
    }

    private func zapRange(_ start: VirtualAddress, _ end: VirtualAddress) {
        forEachPTETable(start, end, huge: { pmd, index, haddr, whole in
            guard whole else { return .split }
            return zapHugePMD(pmd, index, haddr) == .handled ? .handled : .retry
        }) { table, from, to in
            let lock = kernel.splitLock(table)
            lock.spinLock()
            var va = from
            while va < to {
                let old = table.exchange(va.tableIndex(.pte), .none)
                if old.isMapped && !old.isSpecial { unmapPage(old.pfn) }
                else if old.isSwapEntry { kernel.swapDevice.release(old.swapSlot) }
                va = va + PageGeometry.pageSize
            }
            lock.spinUnlock()
            return true
        }
        kernel.flushTLB(self, start, end)
    }

    /// Drops one mapping of a page (Linux: `folio_remove_rmap_pte()` and the `tlb_remove_page()` that
    /// puts its reference).
    func unmapPage(_ pfn: PFN) {
        let frames = kernel.memory.frames
        if frames.addMapcount(pfn, -1) == 0, frames.kind(pfn) == .anonymous {
            kernel.vmstat.modify(.nrAnonPages, -1)
        }
        kernel.putPage(pfn)
    }

    /// Records one more mapping of a page (Linux: `folio_add_anon_rmap_pte()`, `folio_add_new_anon_rmap()`).
    @inline(__always) func mapPage(_ pfn: PFN) {
        let frames = kernel.memory.frames
        if frames.addMapcount(pfn, 1) == 1, frames.kind(pfn) == .anonymous {
            kernel.vmstat.modify(.nrAnonPages, 1)
        }
    }
}
