import VMCore

/// A folio whose last reference a `putPage` dropped, given back to the allocator (Linux: what
/// `release_pages()` / `folios_put_refs()` frees).
public struct FolioRelease: Sendable, Hashable {
    /// 4 KiB pages given back (0 when no folio was freed).
    public var pages = 0
    /// Folios freed: one per order-0 page, one per larger folio.
    public var folios = 0
    /// Of those, the folios of order > 0 (each goes to the buddy lists under `zone->lock` on its own).
    public var largeFolios = 0
    /// Of the folios, those that were on an LRU list (taking them off takes `lru_lock`).
    public var onLRU = 0

    public init() {}

    static func + (a: FolioRelease, b: FolioRelease) -> FolioRelease {
        var r = a
        r.pages += b.pages; r.folios += b.folios; r.largeFolios += b.largeFolios; r.onLRU += b.onLRU
        return r
    }
}

/// What one zap did — munmap's or MADV_DONTNEED's clearing of a range's entries and release of its
/// pages — recorded as it went, for whoever charges its cost (simulated time, `SimulatedTime.chargeZap`),
/// as `FaultContext` records a fault (Linux keeps no such record: `unmap_region()` → `unmap_vmas()` →
/// `zap_pte_range()` / `zap_huge_pmd()`, then `tlb_finish_mmu()` → `free_pages_and_swap_cache()`).
///
/// ```
///  zap [start, end) ──► per PTE table: its lock, entries cleared       → pteTables
///                   ──► per huge PMD: the PMD lock, the PMD cleared     → hugePMDs
///                   ──► per huge PMD covered in part: its split        → pmdSplits
///                   ──► after the flush: references dropped, folios freed → released, freed
/// ```
public struct ZapRecord: Sendable, Hashable {
    /// One PTE table whose entries the zap cleared under the table's split lock.
    public struct Table: Sendable, Hashable {
        /// The table's 2 MiB range: the address of its first entry, shifted right by 21.
        public var range: UInt64
        /// Entries cleared (present pages and swap entries).
        public var entries: Int
    }

    /// The PTE tables the zap took the lock of, in the order it took them (empty ones included: the
    /// lock is taken before the entries are looked at).
    public internal(set) var pteTables: [Table] = []
    /// The huge PMDs it cleared whole, by the address of their 2 MiB range (`zap_huge_pmd()`).
    public internal(set) var hugePMDs: [UInt64] = []
    /// The huge PMDs the range covered only in part, split before their PTEs were zapped, by the
    /// address of their 2 MiB range (`split_huge_pmd()`; 2.6.38 `split_huge_page_pmd()`).
    public internal(set) var pmdSplits: [UInt64] = []
    /// Page references dropped after the flush (the pages `tlb_remove_page()` gathered).
    public internal(set) var referencesDropped = 0
    /// The folios whose last reference went with them.
    public internal(set) var freed = FolioRelease()

    public init() {}

    /// Entries cleared in PTE tables, over all of them.
    public var entriesCleared: Int { pteTables.reduce(0) { $0 + $1.entries } }
}
