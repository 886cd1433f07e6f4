import VMCore

extension AddressSpace {
    /// Calls `body(table, from, to)` for each PTE table that maps part of `[start, end)`, with the part
    /// of the range it covers; PMDs with no table are skipped. `body` returns false to stop the walk,
    /// and the walk returns whether it ran to the end (Linux: the `pmd_addr_end()` loops of
    /// `zap_pmd_range()`, `change_pmd_range()`, `copy_pmd_range()`, `walk_pmd_range()`).
    /// - Precondition: the mmap lock is held.
    @discardableResult
    func forEachPTETable(_ start: VirtualAddress, _ end: VirtualAddress,
                         _ body: (PageTable, VirtualAddress, VirtualAddress) -> Bool) -> Bool {
        var address = start
        while address < end {
            let next = min((address + 1).alignedUp(PageGeometry.pmdSize), end)
            defer { address = next }
            guard let (pmd, pmdIndex) = walk(address, to: .pmd, allocate: false) else { continue }
            let pmdEntry = pmd[pmdIndex]
            if pmdEntry.isNone { continue }
            precondition(!pmdEntry.isHuge, "huge PMDs are not mapped by this design yet")
            if !body(kernel.table(at: pmdEntry), address, next) { return false }
        }
        return true
    }
}
