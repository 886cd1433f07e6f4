import VMCore
import Synchronization

/// The event counters of `/proc/vmstat` that the model keeps, with Linux's names and order
/// (Linux: `enum vm_event_item` in `include/linux/vm_event_item.h`, names in `mm/vmstat.c`).
///
/// Every `thp_*` event of Linux 6.18 is here, at zero until the paths that move it exist.
///
/// Units as Linux prints them: `pgpgin`/`pgpgout` are KiB read from and written to the swap device
/// (Linux counts 512-byte sectors at `submit_bio()` and halves them when printing), so with no file
/// I/O in the model `pgpgout = 4 × pswpout`. `pgscan_*` count the pages reclaim looked at for
/// eviction and `pgsteal_*` those it freed, attributed to kswapd or to the allocating task (direct
/// reclaim, which also counts one `allocstall_normal` per entry); MADV_PAGEOUT counts neither, as in
/// Linux (`reclaim_pages()` bypasses `shrink_inactive_list()`). `pgactivate` and `pgdeactivate` count
/// pages moved between the anonymous LRU lists, `pgrefill` pages the active list's scan looked at.
public enum VMEvent: Int, CaseIterable, Sendable {
    case pgpgin, pgpgout, pswpin, pswpout
    case pgallocNormal, allocstallNormal, pgfree, pgactivate, pgdeactivate, pgfault, pgmajfault, pgrefill
    case pgstealKswapd, pgstealDirect, pgscanKswapd, pgscanDirect, pgscanAnon, pgstealAnon
    /// Processes the OOM killer killed (a memory cgroup's; Linux counts the system-wide one's too).
    case oomKill
    case thpMigrationSuccess, thpMigrationFail, thpMigrationSplit
    case compactMigrateScanned, compactFreeScanned, compactIsolated, compactStall, compactFail, compactSuccess
    case compactDaemonWake
    case thpFaultAlloc, thpFaultFallback, thpFaultFallbackCharge
    case thpCollapseAlloc, thpCollapseAllocFailed
    case thpFileAlloc, thpFileFallback, thpFileFallbackCharge, thpFileMapped
    case thpSplitPage, thpSplitPageFailed, thpDeferredSplitPage, thpUnderusedSplitPage, thpSplitPMD
    case thpScanExceedNonePTE, thpScanExceedSwapPTE, thpScanExceedSharePTE
    case thpSplitPUD, thpZeroPageAlloc, thpZeroPageAllocFailed, thpSwpout, thpSwpoutFallback
    /// Zero-filled pages swapped in and out through the swap device's zero map, without I/O (Linux
    /// 6.12+: `SWPIN_ZERO`, `SWPOUT_ZERO`).
    case swpinZero, swpoutZero
    /// Pages swap readahead read beyond the faulting one, and faults that found one of them in the swap
    /// cache (Linux 4.14+: `SWAP_RA`, `SWAP_RA_HIT`; 2.6.38 counts neither).
    case swapRA, swapRAHit
    /// Not Linux's: the work of reservation-based policies (FreeBSD's `vm.reserv.*` sysctls and
    /// `vm.pmap.pde.promotions`; `Reservations.swift`): reservations made, broken, promoted.
    case thpReservAlloc, thpReservBroken, thpReservPromote
    /// Quicksilver's: reservations filled at a fault (Sync-N), by its thread (Async-N), pages its
    /// thread zeroed ahead of use.
    case thpReservFill, thpReservPrepopulate, thpReservPrezero
    /// Quicksilver's defragmentation: inactive reservations evicted, pages it migrated out of them.
    case thpReservEvict, thpReservEvictMigrated

    /// The name `/proc/vmstat` prints.
    public var name: String {
        switch self {
        case .pgpgin: "pgpgin"
        case .pgpgout: "pgpgout"
        case .pswpin: "pswpin"
        case .pswpout: "pswpout"
        case .pgallocNormal: "pgalloc_normal"
        case .allocstallNormal: "allocstall_normal"
        case .pgfree: "pgfree"
        case .pgactivate: "pgactivate"
        case .pgdeactivate: "pgdeactivate"
        case .pgfault: "pgfault"
        case .pgmajfault: "pgmajfault"
        case .pgrefill: "pgrefill"
        case .pgstealKswapd: "pgsteal_kswapd"
        case .pgstealDirect: "pgsteal_direct"
        case .pgscanKswapd: "pgscan_kswapd"
        case .pgscanDirect: "pgscan_direct"
        case .pgscanAnon: "pgscan_anon"
        case .pgstealAnon: "pgsteal_anon"
        case .oomKill: "oom_kill"
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
        case .swpinZero: "swpin_zero"
        case .swpoutZero: "swpout_zero"
        case .swapRA: "swap_ra"
        case .swapRAHit: "swap_ra_hit"
        case .thpReservAlloc: "reserv_alloc"
        case .thpReservBroken: "reserv_broken"
        case .thpReservPromote: "reserv_promote"
        case .thpReservFill: "reserv_sync_fill"
        case .thpReservPrepopulate: "reserv_async_fill"
        case .thpReservPrezero: "reserv_async_prezero"
        case .thpReservEvict: "reserv_evict"
        case .thpReservEvictMigrated: "reserv_evict_migrated"
        }
    }

    public init?(name: String) {
        guard let e = VMEvent.allCases.first(where: { $0.name == name }) else { return nil }
        self = e
    }
}

/// The page-state counters of `/proc/vmstat` (Linux: `enum node_stat_item`, `enum zone_stat_item`).
/// `nr_free_pages`, `nr_inactive_anon` and `nr_active_anon` are kept by their owners (the allocator,
/// the LRU lists) and read through `Kernel.vmstatState(_:)`, not counted here.
public enum VMState: Int, CaseIterable, Sendable {
    case nrFreePages, nrInactiveAnon, nrActiveAnon, nrAnonPages, nrShmem, nrAnonTransparentHugepages, nrPageTablePages

    public var name: String {
        switch self {
        case .nrFreePages: "nr_free_pages"
        case .nrInactiveAnon: "nr_inactive_anon"
        case .nrActiveAnon: "nr_active_anon"
        case .nrAnonPages: "nr_anon_pages"
        case .nrShmem: "nr_shmem"
        case .nrAnonTransparentHugepages: "nr_anon_transparent_hugepages"
        case .nrPageTablePages: "nr_page_table_pages"
        }
    }
}

/// The kernel's event and state counters, kept per CPU so that simulated CPUs counting at once do not
/// fight over one cache line, and summed when read (Linux: `count_vm_event()` on per-CPU
/// `vm_event_states`, `mod_node_page_state()` with per-CPU diffs). Each simulated CPU counts in its
/// own slot (`SimulatedCPU.current`), one per configured CPU. A view of counters the kernel owns (see
/// `PerCPUCounters`).
public struct VMStat: @unchecked Sendable {
    private static let eventCount = VMEvent.allCases.count
    private let counters: PerCPUCounters

    init(cpus: Int) {
        counters = PerCPUCounters(count: VMEvent.allCases.count + VMState.allCases.count, cpus: cpus)
    }

    /// Frees the counters, when the kernel goes.
    func release() { counters.release() }

    /// Linux: `count_vm_events()`.
    @inline(__always) public func count(_ event: VMEvent, _ n: Int = 1) {
        counters.add(event.rawValue, n)
    }
    public subscript(event: VMEvent) -> Int { counters.sum(event.rawValue) }
    /// The count of `event` on CPU `cpu` alone (Linux: `per_cpu(vm_event_states, cpu)`).
    public func count(_ event: VMEvent, cpu: Int) -> Int { counters.value(event.rawValue, cpu: cpu) }

    /// Linux: `mod_node_page_state()`.
    @inline(__always) public func modify(_ state: VMState, _ delta: Int) {
        counters.add(Self.eventCount + state.rawValue, delta)
    }
    public subscript(state: VMState) -> Int {
        precondition(![.nrFreePages, .nrInactiveAnon, .nrActiveAnon].contains(state),
                     "\(state.name) is kept by its owner: read it with Kernel.vmstatState(_:)")
        return counters.sum(Self.eventCount + state.rawValue)
    }
}
