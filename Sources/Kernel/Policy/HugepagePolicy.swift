import VMCore

/// The decisions a hugepage policy makes, which the kernel's one mechanism asks for at fixed points:
/// what to allocate at a fault, which ranges to promote (khugepaged, MADV_COLLAPSE), when to split a
/// large folio later (the deferred-split queue and its underused shrinker), and how new huge pages are
/// zeroed. The mechanism keeps what makes an answer safe (a huge page must fit the VMA, shared memory
/// gets no huge pages, a design without multi-size THP gets none): a policy chooses among what the
/// design can do.
///
/// Linux's own policies are `Linux2_6_38Policy` and `Linux6_18Policy`, which the kernel calls without
/// an existential; a kernel built with `KernelConfiguration.policy` calls that one instead, through one
/// existential call per decision (one per fault that reaches an empty PMD, one per write fault at an
/// empty PTE where the design has multi-size THP).
///
/// Linux: the answers of `thp_vma_allowable_orders()` (`TVA_PAGEFAULT`, `TVA_KHUGEPAGED`,
/// `TVA_FORCED_COLLAPSE`), `deferred_split_folio()`'s callers and `thp_underused()`'s switch.
public protocol HugepagePolicy: Sendable {
    /// Which of `candidates` a fault at `address` in the private anonymous `vma` may allocate, largest
    /// tried first: `FolioOrders.pmd` maps a huge PMD, smaller ones a multi-size THP; an empty set maps
    /// a 4 KiB page. The kernel asks about `.pmd` at an empty PMD and about `.belowPMD` at a write to an
    /// empty PTE, so a policy need only look at what is asked (Linux:
    /// `thp_vma_allowable_orders(vma, vm_flags, TVA_PAGEFAULT, orders)`).
    func faultOrders(in vma: VMA, at address: VirtualAddress, among candidates: FolioOrders,
                     settings: TransparentHugepageSettings) -> FolioOrders

    /// Whether khugepaged registers a process at a huge fault in `vma` and may collapse the VMA's
    /// aligned 2 MiB ranges (Linux: `thp_vma_allowable_order(vma, …, TVA_KHUGEPAGED, PMD_ORDER)`).
    func khugepagedMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool

    /// Whether MADV_COLLAPSE may collapse ranges of `vma`; when not, madvise fails with EINVAL (Linux:
    /// `madvise_collapse()` → `thp_vma_allowable_order(…, TVA_FORCED_COLLAPSE, PMD_ORDER)`).
    func madviseMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool

    /// Whether a large folio goes on the deferred-split queue, for a shrinker to split it under memory
    /// pressure: `partiallyMapped` when part of it was unmapped, otherwise a new THP watched in case it
    /// stays mostly zero (Linux: `deferred_split_folio()` in `folio_remove_rmap_ptes()` and, 6.12+,
    /// `map_anon_folio_pmd()`). Asked only where the design splits folios apart from PMDs.
    func defersSplit(partiallyMapped: Bool) -> Bool

    /// Whether the deferred-split shrinker splits a fully mapped THP with more than `max_ptes_none`
    /// zero-filled pages (Linux 6.12+: `thp_underused()`, behind `shrink_underused`).
    func splitsUnderused(settings: TransparentHugepageSettings) -> Bool

    /// How a fault's new folio of `order` is zeroed.
    func zeroing(order: PageOrder) -> PageZeroing

    /// How the first touch of a 4 KiB page at `address` in the private anonymous `vma` is served when
    /// the policy reserves physical memory ahead of faults, or nil to allocate one page at a time as
    /// Linux does (FreeBSD: `vm_reserv_alloc_page()`; `Reservations.swift`). Asked at an empty PTE.
    func reservation(in vma: VMA, at address: VirtualAddress, settings: TransparentHugepageSettings) -> ReservationRules?

    /// Whether the policy makes reservations at all (for counting the ones broken).
    var reservesPages: Bool { get }

    /// The period of the policy's own kernel thread in nanoseconds of simulated time, or nil for none;
    /// the thread runs like khugepaged, on the clock (`PolicyDaemon.swift`).
    var daemonInterval: UInt64? { get }

    /// One wake-up of the policy's kernel thread.
    func daemonWakeUp(_ kernel: Kernel)
}

extension HugepagePolicy {
    /// Linux zeroes every new anonymous folio at the fault (`folio_zero_user()`).
    public func zeroing(order: PageOrder) -> PageZeroing { .atFault }

    /// Linux allocates anonymous memory a page (or a THP) at a time: no reservations.
    public func reservation(in vma: VMA, at address: VirtualAddress,
                            settings: TransparentHugepageSettings) -> ReservationRules? { nil }

    public var reservesPages: Bool { false }

    /// Linux's policies have no thread of their own (khugepaged is the mechanism's).
    public var daemonInterval: UInt64? { nil }

    public func daemonWakeUp(_ kernel: Kernel) {}
}

/// What a reservation-based policy does with the 2 MiB block it reserved at the first fault in an
/// aligned range (FreeBSD's `vm_reserv`; `Reservations.swift`).
public struct ReservationRules: Sendable, Hashable {
    /// Whether the range is remapped by one PMD, in place, once all 512 pages are populated (FreeBSD:
    /// `pmap_promote_pde()`, behind `vm.pmap.pg_ps_enabled`).
    public var promotes: Bool
    /// Sync-N: when a fault brings the population to this many pages, it fills the rest of the
    /// reservation and maps the whole 2 MiB (Quicksilver: `sync_popthreshold`); nil never fills.
    public var fillAt: Int?

    public init(promotes: Bool, fillAt: Int? = nil) {
        self.promotes = promotes
        self.fillAt = fillAt
    }
}

/// How the pages of a new anonymous folio are cleared.
public enum PageZeroing: Sendable, Hashable {
    /// By the faulting CPU, before the folio is mapped (Linux: `vma_alloc_zeroed_movable_folio()`,
    /// `folio_zero_user()` for a THP).
    case atFault
}

/// A set of folio orders from 1 to 15, as a bit mask (Linux: the `unsigned long orders` of
/// `thp_vma_allowable_orders()`); a trivial value, so the fault path passes it in a register.
public struct FolioOrders: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The one order `order`.
    @inlinable public init(order: UInt8) {
        precondition(order > 0 && order < 16)
        rawValue = 1 << order
    }

    /// The PMD's order: a huge page mapped by one PMD.
    public static let pmd = FolioOrders(order: PageGeometry.pmdOrder.rawValue)
    /// The orders below the PMD's that anonymous memory may take (Linux: `THP_ORDERS_ALL_ANON` without
    /// `PMD_ORDER`).
    public static let belowPMD = FolioOrders(rawValue: (FolioOrders.pmd.rawValue - 1) & ~0b11)
    /// Every order anonymous memory may take, 16 KiB to 2 MiB (Linux: `THP_ORDERS_ALL_ANON`).
    public static let anonymous: FolioOrders = [.pmd, .belowPMD]

    /// Whether `order` is in the set.
    @inlinable public func contains(order: UInt8) -> Bool { order < 16 && rawValue & (1 << order) != 0 }
}

/// Linux's hugepage policies, as the designs name them: a plain enum, so the kernel calls the two
/// implementations directly (`Kernel+Policy.swift`).
public enum LinuxHugepagePolicy: Sendable, Hashable {
    case linux2_6_38
    case linux6_18

    /// The policy's implementation.
    public var implementation: any HugepagePolicy {
        switch self {
        case .linux2_6_38: Linux2_6_38Policy()
        case .linux6_18: Linux6_18Policy()
        }
    }
}

extension TransparentHugepageSettings {
    /// Whether `enabled` (or `hugepages-<size>kB/enabled` of `order`) and the VMA's flags let a private
    /// anonymous `vma` have folios of `order`: never for `MADV_NOHUGEPAGE` or shared memory (shmem's
    /// `shmem_enabled` is not modelled); `always` everywhere else; `madvise` where `MADV_HUGEPAGE` was
    /// given (Linux 2.6.38: `transparent_hugepage_enabled()`; 6.18: `__thp_vma_allowable_orders()`).
    public func allowsHugepages(in vma: VMA, order: UInt8 = PageGeometry.pmdOrder.rawValue) -> Bool {
        if vma.isShared || vma.flags.contains(.noHugepage) { return false }
        switch mode(order: order) {
        case .always: return true
        case .madvise: return vma.flags.contains(.hugepage)
        case .never: return false
        }
    }
}
