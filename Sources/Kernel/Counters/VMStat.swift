import Synchronization

/// The event counters of `/proc/vmstat` that the model keeps, with Linux's names and order
/// (Linux: `enum vm_event_item` in `include/linux/vm_event_item.h`, names in `mm/vmstat.c`).
///
/// Every `thp_*` event of Linux 6.18 is here, at zero until the paths that move it exist.
public enum VMEvent: Int, CaseIterable, Sendable {
    case pswpin, pswpout
    case pgallocNormal, pgfree, pgfault, pgmajfault
    case thpMigrationSuccess, thpMigrationFail, thpMigrationSplit
    case compactMigrateScanned, compactFreeScanned, compactIsolated, compactStall, compactFail, compactSuccess
    case compactDaemonWake
    case thpFaultAlloc, thpFaultFallback, thpFaultFallbackCharge
    case thpCollapseAlloc, thpCollapseAllocFailed
    case thpFileAlloc, thpFileFallback, thpFileFallbackCharge, thpFileMapped
    case thpSplitPage, thpSplitPageFailed, thpDeferredSplitPage, thpUnderusedSplitPage, thpSplitPMD
    case thpScanExceedNonePTE, thpScanExceedSwapPTE, thpScanExceedSharePTE
    case thpSplitPUD, thpZeroPageAlloc, thpZeroPageAllocFailed, thpSwpout, thpSwpoutFallback

    /// The name `/proc/vmstat` prints.
    public var name: String {
        switch self {
        case .pswpin: "pswpin"
        case .pswpout: "pswpout"
        case .pgallocNormal: "pgalloc_normal"
        case .pgfree: "pgfree"
        case .pgfault: "pgfault"
        case .pgmajfault: "pgmajfault"
        case .thpMigrationSuccess: "thp_migration_success"
        case .thpMigrationFail: "thp_migration_fail"
        case .thpMigrationSplit: "thp_migration_split"
        case .compactMigrateScanned: "compact_migrate_scanned"
        case .compactFreeScanned: "compact_free_scanned"
        case .compactIsolated: "compact_isolated"
        case .compactStall: "compact_stall"
        case .compactFail: "compact_fail"
        case .compactSuccess: "compact_success"
        case .compactDaemonWake: "compact_daemon_wake"
        case .thpFaultAlloc: "thp_fault_alloc"
        case .thpFaultFallback: "thp_fault_fallback"
        case .thpFaultFallbackCharge: "thp_fault_fallback_charge"
        case .thpCollapseAlloc: "thp_collapse_alloc"
        case .thpCollapseAllocFailed: "thp_collapse_alloc_failed"
        case .thpFileAlloc: "thp_file_alloc"
        case .thpFileFallback: "thp_file_fallback"
        case .thpFileFallbackCharge: "thp_file_fallback_charge"
        case .thpFileMapped: "thp_file_mapped"
        case .thpSplitPage: "thp_split_page"
        case .thpSplitPageFailed: "thp_split_page_failed"
        case .thpDeferredSplitPage: "thp_deferred_split_page"
        case .thpUnderusedSplitPage: "thp_underused_split_page"
        case .thpSplitPMD: "thp_split_pmd"
        case .thpScanExceedNonePTE: "thp_scan_exceed_none_pte"
        case .thpScanExceedSwapPTE: "thp_scan_exceed_swap_pte"
        case .thpScanExceedSharePTE: "thp_scan_exceed_share_pte"
        case .thpSplitPUD: "thp_split_pud"
        case .thpZeroPageAlloc: "thp_zero_page_alloc"
        case .thpZeroPageAllocFailed: "thp_zero_page_alloc_failed"
        case .thpSwpout: "thp_swpout"
        case .thpSwpoutFallback: "thp_swpout_fallback"
        }
    }

    public init?(name: String) {
        guard let e = VMEvent.allCases.first(where: { $0.name == name }) else { return nil }
        self = e
    }
}

/// The page-state counters of `/proc/vmstat` (Linux: `enum node_stat_item`, `enum zone_stat_item`).
public enum VMState: Int, CaseIterable, Sendable {
    case nrFreePages, nrAnonPages, nrShmem, nrAnonTransparentHugepages, nrPageTablePages

    public var name: String {
        switch self {
        case .nrFreePages: "nr_free_pages"
        case .nrAnonPages: "nr_anon_pages"
        case .nrShmem: "nr_shmem"
        case .nrAnonTransparentHugepages: "nr_anon_transparent_hugepages"
        case .nrPageTablePages: "nr_page_table_pages"
        }
    }
}

/// The kernel's event and state counters, atomics so that simulated CPUs count concurrently
/// (Linux: `count_vm_event()`, `mod_node_page_state()`; per-CPU there, shared atomics here).
public final class VMStat: @unchecked Sendable {
    private let events: UnsafeMutablePointer<Atomic<Int>>
    private let states: UnsafeMutablePointer<Atomic<Int>>

    public init() {
        events = .allocate(capacity: VMEvent.allCases.count)
        for i in 0..<VMEvent.allCases.count { (events + i).initialize(to: Atomic(0)) }
        states = .allocate(capacity: VMState.allCases.count)
        for i in 0..<VMState.allCases.count { (states + i).initialize(to: Atomic(0)) }
    }

    deinit {
        events.deinitialize(count: VMEvent.allCases.count); events.deallocate()
        states.deinitialize(count: VMState.allCases.count); states.deallocate()
    }

    /// Linux: `count_vm_events()`.
    @inlinable public func count(_ event: VMEvent, _ n: Int = 1) { add(event, n) }
    @usableFromInline func add(_ event: VMEvent, _ n: Int) { events[event.rawValue].wrappingAdd(n, ordering: .relaxed) }
    public subscript(event: VMEvent) -> Int { events[event.rawValue].load(ordering: .relaxed) }

    /// Linux: `mod_node_page_state()`.
    public func modify(_ state: VMState, _ delta: Int) { states[state.rawValue].wrappingAdd(delta, ordering: .relaxed) }
    public subscript(state: VMState) -> Int { states[state.rawValue].load(ordering: .relaxed) }
}
