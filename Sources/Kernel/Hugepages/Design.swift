/// A design of the huge-page mechanism: the choices in which Linux versions differ, as values that
/// the one mechanism consults (ARCHITECTURE.md: mechanism and policy apart).
///
/// `linux-2.6.38` is Andrea Arcangeli's 2010 design: huge pages are mapped by PMDs only, each huge
/// PMD has a PTE table deposited beside it so that `split_huge_page()` can never fail, GUP pins on
/// tail pages are counted in the tail and serialized against splitting by `compound_lock`, and
/// `page_table_lock` guards every huge PMD. Today's design (`linux-6.18`) is not built yet.
public struct KernelDesign: Sendable, Hashable, CustomStringConvertible {
    /// The designs there are (a plain enum, so that the design is a trivial value the fault path reads
    /// without reference counting).
    public enum Identifier: String, Sendable, Hashable, CaseIterable {
        case linux2_6_38 = "linux-2.6.38"
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
    /// The settings at boot.
    public let defaultSettings: TransparentHugepageSettings

    public enum PMDLockGranularity: Sendable, Hashable {
        /// The mm's `page_table_lock` (Linux before 3.13).
        case pageTableLock
        /// One lock per PMD table (Linux 3.13+: split PMD locks, `pmd_lockptr()`).
        case splitPMDLock
    }

    public enum HugeCOWReuse: Sendable, Hashable {
        /// Reuse when one PMD maps the page (Linux 2.6.38: `page_mapcount(page) == 1`).
        case mapcountOne
    }

    public enum HugeCOWCopy: Sendable, Hashable {
        /// Copy into a new huge page; if none can be allocated, into 512 small pages (Linux 2.6.38:
        /// `do_huge_pmd_wp_page()` and `do_huge_pmd_wp_page_fallback()`).
        case copyWholeHugePage
    }

    /// Andrea Arcangeli's design as merged in Linux 2.6.38, with the huge zero page of 3.8 available
    /// behind `use_zero_page` (2.6.38's defaults: `enabled=always`, `defrag=always`; `use_zero_page`
    /// is off by default here so that read faults allocate huge pages as 2.6.38 did).
    public static let linux2_6_38 = KernelDesign(
        id: .linux2_6_38, pmdLock: .pageTableLock, tailPagePins: true,
        hugeCOWReuse: .mapcountOne, hugeCOWCopy: .copyWholeHugePage, anonPagesCountHugePages: false,
        defaultSettings: TransparentHugepageSettings(enabled: .always, defrag: .always, useZeroPage: false))

    /// Every design the model has.
    public static let all = [linux2_6_38]

    /// The design called `name`, or nil.
    public static func named(_ name: String) -> KernelDesign? { all.first { $0.name == name } }

    public var description: String { name }
}
