/// A design of the huge-page mechanism: the mechanism variants in which Linux versions differ, the
/// hugepage policy that decides what to allocate, promote and split, the settings at boot and the
/// knobs the design has (ARCHITECTURE.md: "Designs and policies").
///
/// Each design is one file of this folder (`Linux2_6_38.swift`, `Linux6_18.swift`) that says all it
/// chooses. Each variant below is read by the kernel in one function, in the file named after the
/// Linux concept (`FolioRmap.swift` for the mapcount scheme, `SplitHugePMD.swift` for what a PMD split
/// does, …); the policy's decisions are taken through `HugepagePolicy` (`Kernel+Policy.swift`).
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

    // MARK: Mechanism variants, each read in one place

    /// Which lock guards a PMD entry (read by `pmdLock(_:)`, `PageTableAllocation.swift`). The 2010
    /// design used `page_table_lock`; split PMD locks (3.13) can be chosen for it to measure what they
    /// changed.
    public var pmdLock: PMDLockGranularity
    /// `get_page()`/`put_page()` on a tail page also count in the tail, so a split can hand each
    /// subpage its own pins (2010); otherwise pins live in the folio's head only (read by
    /// `pinsCountInTailPages`, `CompoundPage.swift`).
    public let tailPagePins: Bool
    /// When a write fault may reuse a write-protected anonymous huge page in place
    /// (`HugeCopyOnWrite.swift`).
    public let hugeCOWReuse: HugeCOWReuse
    /// What a write fault on a shared huge page does (`HugeCopyOnWrite.swift`).
    public let hugeCOWCopy: HugeCOWCopy
    /// Whether `nr_anon_pages` counts the 512 pages of each PMD-mapped huge page (Linux 4.8+'s
    /// `NR_ANON_MAPPED`) or only small pages, with meminfo's `AnonPages` adding the huge pages back
    /// (Linux 2.6.38: `NR_ANON_PAGES` and `NR_ANON_TRANSPARENT_HUGEPAGES` kept apart) (read by
    /// `anonPagesCountHugePages`, `Meminfo.swift`).
    public let anonPagesCountHugePages: Bool
    /// Where mappings of a large folio are counted (read by `mapcountsPerPage`, `FolioRmap.swift`).
    public let mapcounts: FolioMapcounts
    /// Whether splitting a huge PMD also splits the page it maps (2010), or only turns the PMD into
    /// 512 PTEs of the same folio (Linux 4.5+: `split_huge_pmd()` apart from `split_huge_page()`)
    /// (read by `splitsFoliosSeparately`, `SplitHugePMD.swift`).
    public let splitPMDSplitsPage: Bool
    /// Whether anonymous folios of the orders below the PMD's (16 KiB to 1 MiB), mapped by PTEs, exist
    /// (Linux 6.8+: multi-size THP) (read by `supportsMTHP`, `MTHP.swift`).
    /// - Precondition: with per-page mapcounts.
    public let supportsMTHP: Bool
    /// Whether reclaim may write a PMD-mapped THP to swap whole, into a cluster of 512 slots (Linux
    /// 4.13+: `THP_SWAP`, `folio_alloc_swap()`), rather than split it first (read by
    /// `swapsOutTHPWhole`, `Swap.swift`).
    public let swapsOutTHPWhole: Bool
    /// Whether `pin_user_pages()` pins are visible in the folio (FOLL_PIN, Linux 5.7+), so that fork
    /// copies pages that may be pinned instead of sharing them (Linux 5.9+: `copy_present_page()`)
    /// (read by `pinsAreVisible`, `PinUserPages.swift`).
    public let pinsAreVisible: Bool
    /// When a swapped-in page keeps its swap slot, and when a page in the swap cache may be written in
    /// place (read by `swapCacheRules`, `SwapCache.swift`).
    public let swapCacheReuse: SwapCacheReuse
    /// Whether a page that is all zeros goes to swap as a bit in the device's zero map, without a
    /// write, and comes back without a read (Linux 6.12+: `swap_zeromap_folio_set()`,
    /// `swap_read_folio_zeromap()`, counted as `swpout_zero` and `swpin_zero`); only data mode knows
    /// a page's bytes (read by `writeToSwap`, `Reclaim.swift`).
    public let swapsZeroFilledPagesWithoutIO: Bool
    /// Which slots a swap-in fault reads ahead of the one it needs (read by `Kernel.readaheadWindow`,
    /// `SwapReadahead.swift`).
    public let swapReadahead: SwapReadahead
    /// Whether large anonymous mmaps are placed 2 MiB-aligned (Linux 6.7+: `thp_get_unmapped_area()`
    /// for anonymous mappings; which lengths: `alignsOnlyPMDMultiples`) (`Mmap.swift`).
    public var alignsLargeAnonymousMappings: Bool
    /// With `alignsLargeAnonymousMappings`: only lengths that are multiples of 2 MiB are aligned (Linux
    /// 6.12+: "mm, mmap: limit THP alignment of anonymous mappings to PMD-aligned sizes"), or every
    /// length of at least 2 MiB (6.7 to 6.11) (`Mmap.swift`). A variable so that an experiment can
    /// put 6.7's rule back (`thpsim history anon-alignment`).
    public var alignsOnlyPMDMultiples = true
    /// `MAP_STACK` makes the mapping `VM_NOHUGEPAGE` (Linux 6.7+: "mm: mmap: map MAP_STACK to
    /// VM_NOHUGEPAGE", `calc_vm_flag_bits()`), or is ignored (before) (`Mmap.swift`). Set with
    /// `alignsLargeAnonymousMappings`, which came in the same release; a variable so that an
    /// experiment can take the rule out (`thpsim history thread-stacks`).
    public var mapStackDisablesHugepages: Bool
    /// How the anonymous LRU lists treat new and referenced pages (read by `anonLRURules`, `LRU.swift`).
    public let anonLRU: AnonLRUPolicy
    /// How a contended spin lock passes to its next owner (read by `SimulatedTime`'s lock timelines,
    /// Machine/SimulatedTime.swift; the kernel's own locks on host threads are the same either way).
    public var spinLocks: SpinLockKind

    // MARK: Policy, settings and knobs

    /// The Linux hugepage policy of this design; a kernel may be given another
    /// (`KernelConfiguration.policy`).
    public let policy: LinuxHugepagePolicy
    /// The settings at boot.
    public let defaultSettings: TransparentHugepageSettings
    /// The `/sys/kernel/mm/transparent_hugepage/` knobs the design has (read by
    /// `acceptsHugepageKnob(_:)`, `TransparentHugepageSettings.swift`).
    public let knobs: HugepageKnobs

    public init(id: Identifier, pmdLock: PMDLockGranularity, tailPagePins: Bool, hugeCOWReuse: HugeCOWReuse,
                hugeCOWCopy: HugeCOWCopy, anonPagesCountHugePages: Bool, mapcounts: FolioMapcounts,
                splitPMDSplitsPage: Bool, supportsMTHP: Bool, swapsOutTHPWhole: Bool, pinsAreVisible: Bool,
                swapCacheReuse: SwapCacheReuse, swapsZeroFilledPagesWithoutIO: Bool, swapReadahead: SwapReadahead,
                alignsLargeAnonymousMappings: Bool, anonLRU: AnonLRUPolicy, spinLocks: SpinLockKind, policy: LinuxHugepagePolicy,
                defaultSettings: TransparentHugepageSettings, knobs: HugepageKnobs) {
        precondition(!supportsMTHP || mapcounts == .perPage, "PTE-mapped large folios need per-page mapcounts")
        precondition(!swapsOutTHPWhole || !splitPMDSplitsPage, "a THP swapped out whole is not split with its PMD")
        precondition(!knobs.contains(.perSizeEnabled) || supportsMTHP, "hugepages-<size>kB knobs need mTHP")
        self.id = id
        self.pmdLock = pmdLock
        self.tailPagePins = tailPagePins
        self.hugeCOWReuse = hugeCOWReuse
        self.hugeCOWCopy = hugeCOWCopy
        self.anonPagesCountHugePages = anonPagesCountHugePages
        self.mapcounts = mapcounts
        self.splitPMDSplitsPage = splitPMDSplitsPage
        self.supportsMTHP = supportsMTHP
        self.swapsOutTHPWhole = swapsOutTHPWhole
        self.pinsAreVisible = pinsAreVisible
        self.swapCacheReuse = swapCacheReuse
        self.swapsZeroFilledPagesWithoutIO = swapsZeroFilledPagesWithoutIO
        self.swapReadahead = swapReadahead
        self.alignsLargeAnonymousMappings = alignsLargeAnonymousMappings
        self.mapStackDisablesHugepages = alignsLargeAnonymousMappings
        self.anonLRU = anonLRU
        self.spinLocks = spinLocks
        self.policy = policy
        self.defaultSettings = defaultSettings
        self.knobs = knobs
    }

    /// The x86 spin lock of a Linux version.
    public enum SpinLockKind: String, Sendable, Hashable {
        /// Ticket locks (2.6.25–4.1: `__ticket_spin_lock()`, `arch_spin_lock()`): every waiter spins
        /// reading the lock's one line, so a release must reach them all and the next owner's read
        /// waits its turn among theirs — a hand-off grows with the waiters.
        case ticket
        /// Queued spin locks (4.2+: `queued_spin_lock_slowpath()`, an MCS queue): each waiter spins on
        /// its own node, and a release is one line transfer to the next.
        case queued
    }

    /// The groups of `/sys/kernel/mm/transparent_hugepage/` knobs a design may have.
    public struct HugepageKnobs: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// `enabled`.
        public static let enabled = HugepageKnobs(rawValue: 1 << 0)
        /// `defrag`.
        public static let defrag = HugepageKnobs(rawValue: 1 << 1)
        /// `use_zero_page` (Linux 3.8+).
        public static let useZeroPage = HugepageKnobs(rawValue: 1 << 2)
        /// `shrink_underused` (Linux 6.12+).
        public static let shrinkUnderused = HugepageKnobs(rawValue: 1 << 3)
        /// `hugepages-<size>kB/enabled` (Linux 6.8+).
        public static let perSizeEnabled = HugepageKnobs(rawValue: 1 << 4)

        /// The group the knob `name` belongs to, or nil for a name that is none of them.
        public static func group(of name: String) -> HugepageKnobs? {
            switch name {
            case "enabled": .enabled
            case "defrag": .defrag
            case "use_zero_page": .useZeroPage
            case "shrink_underused": .shrinkUnderused
            case _ where name.hasPrefix("hugepages-"): .perSizeEnabled
            default: nil
            }
        }
    }

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

        public init(newPagesActive: Bool, activateOnFirstReference: Bool, ratioFromZoneSize: Bool) {
            self.newPagesActive = newPagesActive
            self.activateOnFirstReference = activateOnFirstReference
            self.ratioFromZoneSize = ratioFromZoneSize
        }
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

    /// Swap readahead around a slot a fault reads: within the aligned cluster of 2^`page-cluster`
    /// slots that holds it (`SwapConfiguration.pageCluster`).
    public enum SwapReadahead: Sendable, Hashable {
        /// The slots in use on both sides of the faulting one, up to the first free one each way, all
        /// of them every time (Linux 2.6.38: `swapin_readahead()` → `valid_swaphandles()`).
        case contiguousSlots
        /// A window sized by how many read-ahead pages faults found since the last read — 1 (none)
        /// with no hits unless the fault follows the last one, the hits plus two rounded up to a power
        /// of two (at least 4) otherwise, never below half the last window: on a rotational device
        /// (this machine's swap file) the aligned cluster of slots of that size, reading the slots swap
        /// entries name (Linux 3.14+: `swap_cluster_readahead()`, `swapin_nr_pages()`); on a
        /// non-rotational one (`SwapConfiguration.clusters`) the faulting VMA's swap entries around the
        /// address, in its PTE table, with the state kept per VMA (Linux 4.14+: `swap_vma_readahead()`,
        /// `swap_vma_ra_win()`). Read-ahead pages a fault finds count `swap_ra_hit`.
        case adaptive
    }

    public enum SwapCacheReuse: Sendable, Hashable {
        /// A page is taken out of the swap cache when a write fault finds it mapped once and named by
        /// no other swap entry, and then written in place; a read fault maps it read-only (Linux
        /// 2.6.38: `do_swap_page()` and `do_wp_page()` → `reuse_swap_page()`, `vm_swap_full()`).
        case reuseSwapPage
        /// A swap-in that finds no other user maps the page exclusive, writable if the VMA is, and keeps
        /// it in the swap cache unless the fault writes or swap is more than half full (the cgroup's
        /// too); a write fault may free the swap of a page nothing else holds and reuse it (Linux 5.19+:
        /// `do_swap_page()` → `should_try_to_free_swap()`, `mem_cgroup_swap_full()`;
        /// `wp_can_reuse_anon_folio()`).
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

    /// Every design the model has.
    public static let all = [linux2_6_38, linux6_18]

    /// The design called `name`, or nil.
    public static func named(_ name: String) -> KernelDesign? { all.first { $0.name == name } }

    public var description: String { name }
}
