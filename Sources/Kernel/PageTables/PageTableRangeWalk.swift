import VMCore

/// What a range walk's caller does with a huge PMD it meets.
enum HugePMDAction {
    /// The caller handled it at PMD level (zap, change, copy, read it).
    case handled
    /// The caller cannot handle it: split it and give the caller its PTE table.
    case split
    /// Look at the PMD again (it changed under the caller).
    case retry
    /// Stop the walk (out of memory).
    case stop
}

extension AddressSpace {
    /// Calls `body(table, from, to)` for each PTE table that maps part of `[start, end)`, with the part
    /// of the range it covers; PMDs with no table are skipped. A huge PMD goes to `huge(pmd, index,
    /// haddr, whole)` first, where `whole` says whether the range covers all of its 2 MiB; when that
    /// answers `.split` (the default), the walk splits the PMD and goes on with its new table (Linux:
    /// the `pmd_addr_end()` loops of `zap_pmd_range()`, `change_pmd_range()`, `copy_pmd_range()`,
    /// `walk_pmd_range()`, with their `pmd_trans_huge()` branches). A PMD that another path is
    /// splitting is waited for. Either closure returns false / `.stop` to end the walk, and the walk
    /// returns whether it ran to the end.
    /// - Precondition: the mmap lock is held.
    @discardableResult
    func forEachPTETable(_ start: VirtualAddress, _ end: VirtualAddress,
                         huge: (PageTable, Int, VirtualAddress, Bool) -> HugePMDAction = { _, _, _, _ in .split },
                         _ body: (PageTable, VirtualAddress, VirtualAddress) -> Bool) -> Bool {
        var address = start
        while address < end {
            let next = min((address + 1).alignedUp(PageGeometry.pmdSize), end)
            defer { address = next }
            guard let (pmd, pmdIndex) = walk(address, to: .pmd, allocate: false) else { continue }
            examine: while true {
                let pmdEntry = pmd[pmdIndex]
                if pmdEntry.isNone { break examine }
                if !pmdEntry.isHuge {
                    if !body(kernel.table(at: pmdEntry), address, next) { return false }
                    break examine
                }
                if pmdEntry.isSplitting {
                    waitForSplit(pmd, pmdIndex)
                    continue examine
                }
                let haddr = address.alignedDown(PageGeometry.pmdSize)
                let whole = address == haddr && next == haddr + PageGeometry.pmdSize
                switch huge(pmd, pmdIndex, haddr, whole) {
                case .handled: break examine
                case .retry: continue examine
                case .stop: return false
                case .split: splitHugePMD(pmd, pmdIndex, haddr)
                }
            }
        }
        return true
    }
}
