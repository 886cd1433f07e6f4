import VMCore

extension AddressSpace {
    /// Clears the accessed ("young") bit of every present PTE and huge PMD in `[start, start + length)`
    /// and flushes those translations, so that the next access sets it again; returns how many entries
    /// were young. Reclaim's aging and khugepaged's "is any PTE young" test read the bit (Linux:
    /// writing `/sys/kernel/mm/page_idle/bitmap`, which clears it through `folio_test_clear_young()`
    /// → `ptep_clear_young_notify()`).
    @discardableResult
    public func clearYoung(_ start: VirtualAddress, length: UInt64) -> Int {
        mmapLock.withReadLock {
            let end = start + length
            var cleared = 0
            for vma in vmas.areas where vma.end > start && vma.start < end {
                forEachPTETable(max(vma.start, start), min(vma.end, end), huge: { pmd, index, _, _ in
                    let lock = pmdLock(pmd)
                    lock.spinLock()
                    let entry = pmd[index]
                    if entry.isHuge && !entry.isSplitting && entry.isAccessed {
                        pmd.set(index, entry.makingOld())
                        cleared += 1
                    }
                    lock.spinUnlock()
                    return entry.isSplitting ? .retry : .handled
                }) { table, from, to in
                    let lock = kernel.splitLock(table)
                    lock.spinLock()
                    var va = from
                    while va < to {
                        let i = va.tableIndex(.pte)
                        let entry = table[i]
                        if entry.isMapped && entry.isAccessed {
                            table.set(i, entry.makingOld())
                            cleared += 1
                        }
                        va = va + PageGeometry.pageSize
                    }
                    lock.spinUnlock()
                    return true
                }
            }
            kernel.flushTLB(self, start, end)
            return cleared
        }
    }
}
