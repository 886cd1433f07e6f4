import VMCore
import PhysicalMemory

/// The PTE tables kept beside huge PMDs.
///
/// When a fault maps a huge PMD it also allocates an empty PTE table and deposits it, so that a later
/// `split_huge_page()` never has to allocate — it withdraws the table, fills in 512 PTEs and points the
/// PMD at it, which is why a split cannot fail. Each huge PMD has exactly one deposited table while it
/// is huge; zapping the PMD frees it. Linux 2.6.38 kept one list per mm (`mm->pmd_huge_pte`); since
/// split PMD locks it is one list per PMD table, under that table's PMD lock. The model keeps the
/// later layout for both designs: a deposited table is interchangeable with any other, so where it
/// hangs is invisible except through the lock that guards it, which `pmdLock` chooses by design.
///
/// ```
///  PMD table frame            deposited PTE table frames
///  word 2 ──────────────────► [ table ] word 2 ──► [ table ] word 2 ──► nil
/// ```
extension AddressSpace {
    /// Puts `table` on the deposit list of `pmdTable` (Linux: `pgtable_trans_huge_deposit()`).
    /// - Precondition: the PMD lock of `pmdTable` is held; `table` is empty and linked nowhere.
    func depositTable(_ table: PageTable, in pmdTable: PageTable) {
        let frames = kernel.memory.frames
        frames.setDepositLink(table.pfn, frames.depositLink(pmdTable.pfn))
        frames.setDepositLink(pmdTable.pfn, table.pfn)
    }

    /// Takes a table off the deposit list of `pmdTable` (Linux: `pgtable_trans_huge_withdraw()`).
    /// - Precondition: the PMD lock is held and a huge PMD of `pmdTable` deposited a table.
    func withdrawTable(from pmdTable: PageTable) -> PageTable {
        let frames = kernel.memory.frames
        guard let pfn = frames.depositLink(pmdTable.pfn) else {
            preconditionFailure("no PTE table deposited in PMD table \(pmdTable.pfn)")
        }
        frames.setDepositLink(pmdTable.pfn, frames.depositLink(pfn))
        frames.setDepositLink(pfn, nil)
        return kernel.table(at: PageTableEntry(pfn: pfn, bits: tablePointerBits))
    }

    /// The tables deposited in `pmdTable`, for the invariant checker.
    func depositedTables(in pmdTable: PageTable) -> [PFN] {
        var out = [PFN]()
        var next = kernel.memory.frames.depositLink(pmdTable.pfn)
        while let pfn = next, out.count <= PageGeometry.entriesPerTable {
            out.append(pfn)
            next = kernel.memory.frames.depositLink(pfn)
        }
        return out
    }
}
