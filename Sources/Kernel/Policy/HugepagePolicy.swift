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

    // Policies with state (research policies): every hook below has a default that does nothing, so
    // Linux's policies keep their behaviour, and the kernel calls them only for a custom policy.

    /// The state this policy keeps in one kernel (population counts, queues, knobs), made once when the
    /// kernel boots and handed back at every hook; nil for a stateless policy. The state guards itself
    /// with its own leaf lock, as khugepaged's slot list does, so hooks may run on any CPU.
    func makeState() -> (any HugepagePolicyState)?

    /// A fault mapped a 4 KiB page at `address` of the private anonymous `vma`: a new zeroed page at a
    /// write, or the zero page at a read (Linux: the end of `do_anonymous_page()`). Called with the mmap
    /// lock held for reading and no page-table lock.
    func anonymousFaultMapped(_ mm: AddressSpace, _ vma: VMA, at address: VirtualAddress,
                              state: (any HugepagePolicyState)?)

    /// `[start, end)` of `mm` was unmapped (munmap, MADV_DONTNEED, exit) (Linux: `zap_page_range()`).
    /// Called with the mmap lock held.
    func rangeUnmapped(_ mm: AddressSpace, from start: VirtualAddress, to end: VirtualAddress,
                       state: (any HugepagePolicyState)?)

    /// The next range khugepaged should collapse before it scans, taken off the policy's queue; nil
    /// when the queue is empty. Called by khugepaged with no lock held.
    func nextQueuedCollapse(state: (any HugepagePolicyState)?) -> (mm: AddressSpace, address: VirtualAddress)?

    /// Whether ranges wait on the policy's queue for khugepaged. While some do, khugepaged does not
    /// sleep between wake-ups (Ingens: `khugepaged_wait_work()` returns at once while
    /// `khugepaged_has_deferred_work()`). Called by khugepaged with no lock held.
    func hasQueuedCollapses(state: (any HugepagePolicyState)?) -> Bool

    /// The registered mm (by pid, among `pids`, in khugepaged's slot order) that khugepaged's scan should
    /// go to next, or nil to go on where it is (Ingens: `osa_khugepaged_schedule_mm_slot()` with
    /// fairness). Asked when the queue is empty, before each mm the scan enters or resumes.
    func khugepagedScanTarget(among pids: [Int], state: (any HugepagePolicyState)?) -> Int?

    /// Whether khugepaged's regular scan may collapse the 2 MiB range at `haddr` of `mm` (the queue's
    /// ranges are not asked). Called by khugepaged with no lock held.
    func khugepagedMayCollapse(_ mm: AddressSpace, range haddr: VirtualAddress, state: (any HugepagePolicyState)?) -> Bool

    /// What khugepaged's attempt at the range `haddr` of `mm` came to; `queued` when it came off the
    /// policy's queue.
    func khugepagedAttempted(_ mm: AddressSpace, range haddr: VirtualAddress, queued: Bool, result: CollapseResult,
                             state: (any HugepagePolicyState)?)

    /// When the policy's own kernel threads (samplers, pre-zeroing) want to run next, in simulated
    /// nanoseconds; nil while none waits on a timer. The clock runs them beside khugepaged.
    func nextThreadWakeup(state: (any HugepagePolicyState)?) -> UInt64?

    /// Runs the policy's kernel threads whose wake-up is due at `kernel.clock.now`, on the kernel
    /// threads' CPU with no lock held.
    func runThreads(_ kernel: Kernel, state: (any HugepagePolicyState)?)

    /// The deferred-split shrinker splits a fully mapped THP (when `splitsUnderused`) with more
    /// zero-filled pages than this; Linux's limit is `max_ptes_none` (`thp_underused()`).
    func underusedZeroPages(maxPtesNone: Int) -> Int

    // Reservation-based policies (FreeBSD, Quicksilver) and a policy thread of their own.

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

    public func makeState() -> (any HugepagePolicyState)? { nil }
    public func anonymousFaultMapped(_ mm: AddressSpace, _ vma: VMA, at address: VirtualAddress,
                                     state: (any HugepagePolicyState)?) {}
    public func rangeUnmapped(_ mm: AddressSpace, from start: VirtualAddress, to end: VirtualAddress,
                              state: (any HugepagePolicyState)?) {}
    public func nextQueuedCollapse(state: (any HugepagePolicyState)?) -> (mm: AddressSpace, address: VirtualAddress)? { nil }
    public func hasQueuedCollapses(state: (any HugepagePolicyState)?) -> Bool { false }
    public func khugepagedScanTarget(among pids: [Int], state: (any HugepagePolicyState)?) -> Int? { nil }
    public func khugepagedMayCollapse(_ mm: AddressSpace, range haddr: VirtualAddress,
                                      state: (any HugepagePolicyState)?) -> Bool { true }
    public func khugepagedAttempted(_ mm: AddressSpace, range haddr: VirtualAddress, queued: Bool,
                                    result: CollapseResult, state: (any HugepagePolicyState)?) {}
    public func nextThreadWakeup(state: (any HugepagePolicyState)?) -> UInt64? { nil }
    public func runThreads(_ kernel: Kernel, state: (any HugepagePolicyState)?) {}
    public func underusedZeroPages(maxPtesNone: Int) -> Int { maxPtesNone }

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

/// What a policy keeps in one kernel (`HugepagePolicy.makeState()`): its knobs, which `--set` and the
/// sysfs writer reach by name (`ingens/util_threshold`), and its counters, which `/proc/vmstat` prints
/// after Linux's. A final class that guards its fields with its own leaf lock.
public protocol HugepagePolicyState: AnyObject, Sendable {
    /// The knobs' names, `policy/knob`.
    var knobNames: [String] { get }
    /// The knob's value as `cat` prints it; nil for an unknown name.
    func knobText(_ name: String) -> String?
    /// Sets a knob from its text; returns what is wrong with the name or the value, or nil.
    func setKnob(_ name: String, to text: String) -> String?
    /// The policy's counters, `/proc/vmstat` style (`ingens_ranges_queued`), in a fixed order.
    var counters: [(name: String, value: Int)] { get }
}

/// How the pages of a new anonymous folio are cleared.
public enum PageZeroing: Sendable, Hashable {
    /// By the faulting CPU, before the folio is mapped (Linux: `vma_alloc_zeroed_movable_folio()`,
    /// `folio_zero_user()` for a THP).
    case atFault
    /// A huge page from a free block a pre-zeroing thread cleared ahead is mapped as it is; any other
    /// is zeroed at the fault (HawkEye: `__do_huge_pmd_anonymous_page()` skips `clear_huge_page()` for
    /// a `PageZeroed` page). Asked for the PMD's order only; smaller folios are zeroed at the fault.
    case aheadWhenAvailable
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
    @inlinable public static var pmd: FolioOrders { FolioOrders(rawValue: 1 << PageGeometry.pmdOrder.rawValue) }
    /// The orders below the PMD's that anonymous memory may take (Linux: `THP_ORDERS_ALL_ANON` without
    /// `PMD_ORDER`).
    @inlinable public static var belowPMD: FolioOrders { FolioOrders(rawValue: (FolioOrders.pmd.rawValue &- 1) & ~0b11) }
    /// Every order anonymous memory may take, 16 KiB to 2 MiB (Linux: `THP_ORDERS_ALL_ANON`).
    @inlinable public static var anonymous: FolioOrders { FolioOrders(rawValue: FolioOrders.pmd.rawValue | FolioOrders.belowPMD.rawValue) }

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
