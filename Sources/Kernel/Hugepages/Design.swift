/// A design of the huge-page mechanism: the choices in which Linux versions differ, as values that
/// the one mechanism consults (ARCHITECTURE.md: mechanism and policy apart).
///
/// `linux-2.6.38` is Andrea Arcangeli's 2010 design: huge pages are mapped by PMDs only, each huge
/// PMD has a PTE table deposited beside it so that `split_huge_page()` can never fail, GUP pins on
/// tail pages are counted in the tail and serialized against splitting by `compound_lock`, and
/// `page_table_lock` guards every huge PMD.
///
/// `linux-6.18` is today's design: a folio may be mapped by a PMD and by PTEs at once, so splitting a
/// PMD (`split_huge_pmd()`, which cannot fail) and splitting the folio (`split_huge_page()`, which
/// fails while pins exist) are separate; pins live in the folio only; a partially unmapped folio waits
/// on the deferred-split queue; fork copies pages that may be pinned; a write to a shared THP copies
/// 4 KiB (5.8+); large anonymous mappings are aligned to 2 MiB (6.7+).
public struct KernelDesign: Sendable, Hashable, CustomStringConvertible {
    /// The designs there are (a plain enum, so that the design is a trivial value the fault path reads
    /// without reference counting).
    public enum Identifier: String, Sendable, Hashable, CaseIterable {
        case linux2_6_38 = "linux-2.6.38"
        case linux6_18 = "linux-6.18"
    }
    public let id: Identifier
    /// The name scenarios and the CLI use.
    public var name: String { id.rawValue }
    /// Which lock guards a PMD entry. The 2010 design used `page_table_lock`; split PMD locks (3.13)
    /// can be chosen for it to measure what they changed.
    public var pmdLock: PMDLockGranularity
    /// `get_page()`/`put_page()` on a tail page also count in the tail, so a split can hand each
    /// subpage its own pins (2010); otherwise pins live in the folio's head only.
    public let tailPagePins: Bool
    /// When a write fault may reuse a write-protected anonymous huge page in place.
    public let hugeCOWReuse: HugeCOWReuse
    /// What a write fault on a shared huge page does.
    public let hugeCOWCopy: HugeCOWCopy
    /// Whether `nr_anon_pages` counts the 512 pages of each PMD-mapped huge page (Linux 4.8+'s
    /// `NR_ANON_MAPPED`) or only small pages, with meminfo's `AnonPages` adding the huge pages back
    /// (Linux 2.6.38: `NR_ANON_PAGES` and `NR_ANON_TRANSPARENT_HUGEPAGES` kept apart).
    public let anonPagesCountHugePages: Bool
    /// Where mappings of a large folio are counted.
    public let mapcounts: FolioMapcounts
    /// Whether splitting a huge PMD also splits the page it maps (2010), or only turns the PMD into
    /// 512 PTEs of the same folio (Linux 4.5+: `split_huge_pmd()` apart from `split_huge_page()`).
    public let splitPMDSplitsPage: Bool
    /// Whether a partially unmapped large folio is queued for a later split (Linux 3.16+/4.5:
    /// `deferred_split_folio()`), and split by a shrinker under memory pressure.
    public let deferredSplit: Bool
    /// Whether `pin_user_pages()` pins are visible in the folio (FOLL_PIN, Linux 5.7+), so that fork
    /// copies pages that may be pinned instead of sharing them (Linux 5.9+: `copy_present_page()`).
    public let pinsAreVisible: Bool
    /// Whether anonymous mmaps whose length is a multiple of 2 MiB are placed 2 MiB-aligned (Linux
    /// 6.7+: `thp_get_unmapped_area()` for anonymous mappings).
    public let alignsLargeAnonymousMappings: Bool
    /// How the anonymous LRU lists treat new and referenced pages (`Reclaim/LRU.swift`).
    public let anonLRU: AnonLRUPolicy
    /// The settings at boot.
    public let defaultSettings: TransparentHugepageSettings

    /// The anonymous LRU's policy, which Linux 5.9 changed ("mm/vmscan: protect the workingset on
    /// anonymous LRU"): before it, new anonymous pages started on the active list and one reference
    /// found by reclaim activated an inactive one; since, they start inactive and need two.
    public struct AnonLRUPolicy: Sendable, Hashable {
        /// New anonymous folios go on the active list (Linux 2.6.38: `page_add_new_anon_rmap()` →
        /// `lru_cache_add_lru(page, LRU_ACTIVE_ANON)`), or the inactive one (5.9+:
        /// `folio_add_lru_vma()` → `lru_add()` of an inactive folio).
        public let newPagesActive: Bool
        /// A referenced inactive anonymous folio is activated at the first reference reclaim sees
        /// (2.6.38: `page_check_references()` returns `PAGEREF_ACTIVATE` for `PageAnon`), or only once
        /// it also has `PG_referenced` from an earlier look or several mappings are young (5.9+:
        /// `folio_check_references()`; the first look sets `PG_referenced` and keeps it inactive).
        public let activateOnFirstReference: Bool
        /// `inactive_is_low()`'s ratio comes from the zone's size (2.6.38: `zone->inactive_ratio`,
        /// set at boot by `calculate_zone_inactive_ratio()`), or from the lists' size now (4.10+).
        public let ratioFromZoneSize: Bool
    }

    public enum PMDLockGranularity: Sendable, Hashable {
        /// The mm's `page_table_lock` (Linux before 3.13).
        case pageTableLock
        /// One lock per PMD table (Linux 3.13+: split PMD locks, `pmd_lockptr()`).
        case splitPMDLock
    }

    public enum HugeCOWReuse: Sendable, Hashable {
        /// Reuse when one PMD maps the page (Linux 2.6.38: `page_mapcount(page) == 1`).
        case mapcountOne
        /// Reuse when the page is marked exclusive to this process, or when every reference to the
        /// folio is this PMD's (Linux 5.19+: `PageAnonExclusive`, `do_huge_pmd_wp_page()`).
        case anonExclusive
    }

    public enum HugeCOWCopy: Sendable, Hashable {
        /// Copy into a new huge page; if none can be allocated, into 512 small pages (Linux 2.6.38:
        /// `do_huge_pmd_wp_page()` and `do_huge_pmd_wp_page_fallback()`).
        case copyWholeHugePage
        /// Split the PMD and let the 4 KiB path copy the one page written (Linux 5.8+:
        /// `do_huge_pmd_wp_page()` → `__split_huge_pmd()`, `VM_FAULT_FALLBACK`).
        case splitPMDCopyPage
    }

    public enum FolioMapcounts: Sendable, Hashable {
        /// A compound page's head counts the PMDs that map it; its pages are never mapped by PTEs
        /// while it is compound (Linux 2.6.38: `page_mapcount()` of the head).
        case compoundHead
        /// Each page counts the PTEs that map it; the folio's *entire mapcount*, kept in its first
        /// tail, counts the PMDs (Linux 6.18: `page->_mapcount`, `folio->_entire_mapcount`,
        /// `folio->_nr_pages_mapped`).
        case perPage
    }

    /// Andrea Arcangeli's design as merged in Linux 2.6.38, with the huge zero page of 3.8 available
    /// behind `use_zero_page` (2.6.38's defaults: `enabled=always`, `defrag=always`; `use_zero_page`
    /// is off by default here so that read faults allocate huge pages as 2.6.38 did).
    public static let linux2_6_38 = KernelDesign(
        id: .linux2_6_38, pmdLock: .pageTableLock, tailPagePins: true,
        hugeCOWReuse: .mapcountOne, hugeCOWCopy: .copyWholeHugePage, anonPagesCountHugePages: false,
        mapcounts: .compoundHead, splitPMDSplitsPage: true, deferredSplit: false, pinsAreVisible: false,
        alignsLargeAnonymousMappings: false,
        anonLRU: AnonLRUPolicy(newPagesActive: true, activateOnFirstReference: true, ratioFromZoneSize: true),
        defaultSettings: TransparentHugepageSettings(enabled: .always, defrag: .always, useZeroPage: false))

    /// Linux 6.18, as this machine's kernel runs it: split PMD locks, PTE-mapped folios, deferred
    /// split, FOLL_PIN, COW of 4 KiB in a THP, aligned large mmaps. Boot settings are those of the
    /// distribution kernel here (`enabled=madvise`, `defrag=madvise`, `use_zero_page=1`).
    public static let linux6_18 = KernelDesign(
        id: .linux6_18, pmdLock: .splitPMDLock, tailPagePins: false,
        hugeCOWReuse: .anonExclusive, hugeCOWCopy: .splitPMDCopyPage, anonPagesCountHugePages: true,
        mapcounts: .perPage, splitPMDSplitsPage: false, deferredSplit: true, pinsAreVisible: true,
        alignsLargeAnonymousMappings: true,
        anonLRU: AnonLRUPolicy(newPagesActive: false, activateOnFirstReference: false, ratioFromZoneSize: false),
        defaultSettings: TransparentHugepageSettings(enabled: .madvise, defrag: .madvise, useZeroPage: true))

    /// Every design the model has.
    public static let all = [linux2_6_38, linux6_18]

    /// The design called `name`, or nil.
    public static func named(_ name: String) -> KernelDesign? { all.first { $0.name == name } }

    public var description: String { name }
}
