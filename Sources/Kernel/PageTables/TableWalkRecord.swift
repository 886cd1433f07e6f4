import VMCore

/// What a walk that rewrites entries under their page-table locks did, other than a zap — mprotect's
/// change of protection, fork's copy, mremap's move — recorded as it went for whoever charges its cost
/// (simulated time: `SimulatedTime.chargeProtection`, `chargeFork`, `chargeRemap`, `chargePageout`), as `ZapRecord`
/// records a zap. Linux keeps no such record: `change_protection()` → `change_pte_range()` /
/// `change_huge_pmd()`; `copy_page_range()` → `copy_pte_range()` / `copy_huge_pmd()`;
/// `move_page_tables()` → `move_ptes()` / `move_huge_pmd()`; `madvise_pageout()` →
/// `madvise_cold_or_pageout_pte_range()`, `reclaim_pages()`.
///
/// ```
///  walk [start, end) ──► per PTE table: its lock, entries rewritten     → pteTables
///                    ──► per huge PMD: the PMD lock, the PMD rewritten   → hugePMDs
///                    ──► per huge PMD split first                        → pmdSplits
/// ```
public struct TableWalkRecord: Sendable, Hashable {
    /// The PTE tables the walk took the lock of, in the order it took them, with the entries it
    /// rewrote there (mprotect: entries whose protection changed; fork: entries copied into the
    /// child; mremap: entries moved).
    public internal(set) var pteTables: [ZapRecord.Table] = []
    /// The huge PMDs it handled whole under the PMD lock, by the address of their 2 MiB range.
    public internal(set) var hugePMDs: [UInt64] = []
    /// The huge PMDs it split first, by the address of their 2 MiB range (`split_huge_pmd()`; 2.6.38
    /// `split_huge_page_pmd()`).
    public internal(set) var pmdSplits: [UInt64] = []
    /// fork: the parent's entries write-protected for copy-on-write (`ptep_set_wrprotect()`), of those
    /// in `pteTables`.
    public internal(set) var entriesWriteProtected = 0
    /// fork: pages that may be pinned, copied for the child at once (5.8+ `copy_present_page()`).
    public internal(set) var pagesCopied = 0
    /// MADV_PAGEOUT: 4 KiB pages written to swap (those of `pteTables`' entries, and 512 per huge PMD
    /// in `hugePMDs`, swapped out whole).
    public internal(set) var pagesSwappedOut = 0
    /// MADV_PAGEOUT: the folios whose last reference went once their pages were in swap.
    public internal(set) var freed = FolioRelease()

    public init() {}

    /// Entries rewritten in PTE tables, over all of them.
    public var entries: Int { pteTables.reduce(0) { $0 + $1.entries } }
}
