import Synchronization
import VMCore
import PhysicalMemory

extension AddressSpace {
    /// Clears every entry mapping `[start, end)`, dropping the mapped pages' mapcounts and references;
    /// the tables themselves stay (Linux: `unmap_page_range()` → `zap_pte_range()`).
    /// - Precondition: the mmap lock is held; the range lies in one VMA or in a gap.
    func zap(_ start: VirtualAddress, _ end: VirtualAddress) {
        var address = start
        while address < end {
            let next = min((address + 1).alignedUp(PageGeometry.pmdSize), end)
            defer { address = next }
            guard let (pmd, pmdIndex) = walk(address, to: .pmd, allocate: false) else { continue }
            let pmdEntry = pmd[pmdIndex]
            if pmdEntry.isNone { continue }
            precondition(!pmdEntry.isHuge, "huge PMDs are not mapped by this design yet")
            let table = kernel.table(at: pmdEntry)
            let lock = kernel.splitLock(table)
            lock.spinLock()
            var va = address
            while va < next {
                let old = table.exchange(va.tableIndex(.pte), .none)
                if old.isMapped && !old.isSpecial { unmapPage(old.pfn) }
                va = va + PageGeometry.pageSize
            }
            lock.spinUnlock()
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
