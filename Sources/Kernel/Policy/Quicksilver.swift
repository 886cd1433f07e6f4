import VMCore

/// Quicksilver (Zhu, Cox and Rixner, "A Comprehensive Analysis of Superpage Management Mechanisms and
/// Policies", USENIX ATC 2020; `rice-systems/quicksilver`, a patch to FreeBSD 11.2's `vm_reserv.c`):
/// FreeBSD's reservations (`FreeBSDPolicy`, `Reservations.swift`) with utilization-threshold
/// preparation of the whole 2 MiB.
///
/// - **Sync-N** (`sync_n`, default 64; 0 off): 4 KiB at a time until a reservation's population
///   reaches N; the fault that brings it there zeroes and maps the rest and the range is promoted
///   (Quicksilver: `sync_popthreshold`).
/// - **Async-N** (`async_n`, default 0 off; the paper's Async-64 sets 64 and `sync_n` 0): a kernel
///   thread wakes every `async_interval_ms` (1000) and, from the most recently changed reservation
///   back, fills and promotes up to `async_budget` reservations (200000, the paper's configuration)
///   whose population is at least N (Quicksilver: the `asyncpromo` thread, `vm_reserv_scan_partpopq()`
///   under `pop_threshold`, `pop_budget`, `wakeup_frequency`).
/// - Everything else is FreeBSD's: no huge page at a fault, no khugepaged, promotion in place of a full
///   reservation, the least recently changed partly populated reservation broken under pressure;
///   `enabled` chooses where reservations are made.
/// - **Defragmentation** (`defrag`, default 1): at each wake-up the thread evicts partly populated
///   reservations whose population has not changed for `inactive_ms` (5000): it breaks them and
///   migrates their pages out, within `migrate_budget` pages (262144) per wake-up, so that their 2 MiB
///   blocks are free for new reservations (Quicksilver: `vm_reserv_evict_inactive()`,
///   `vm_page_reclaim_run()`, `inactive_thre`, `migrate_budget`, `enable_compact`).
public struct QuicksilverPolicy: ReservationPolicy {
    /// Sync-N's threshold in pages; 0 turns Sync-N off.
    public var syncN: Int
    /// Async-N's threshold in pages; 0 turns the thread off.
    public var asyncN: Int
    /// Reservations the thread may fill per wake-up.
    public var asyncBudget: Int
    /// The thread's period in milliseconds of simulated time.
    public var asyncIntervalMilliseconds: Int
    /// Whether the thread evicts inactive reservations (Quicksilver: `enable_compact`).
    public var defrag: Bool
    /// How long a reservation's population must stay unchanged before it is evicted, in milliseconds
    /// (Quicksilver: `inactive_thre`).
    public var inactiveMilliseconds: Int
    /// Pages the thread may migrate per wake-up (Quicksilver: `migrate_budget`).
    public var migrateBudget: Int

    public init(syncN: Int = 64, asyncN: Int = 0, asyncBudget: Int = 200_000, asyncIntervalMilliseconds: Int = 1000,
                defrag: Bool = true, inactiveMilliseconds: Int = 5000, migrateBudget: Int = 262_144) {
        precondition((0...512).contains(syncN) && (0...512).contains(asyncN) && asyncBudget > 0 && asyncIntervalMilliseconds > 0
                      && inactiveMilliseconds > 0 && migrateBudget > 0)
        self.syncN = syncN
        self.asyncN = asyncN
        self.asyncBudget = asyncBudget
        self.asyncIntervalMilliseconds = asyncIntervalMilliseconds
        self.defrag = defrag
        self.inactiveMilliseconds = inactiveMilliseconds
        self.migrateBudget = migrateBudget
    }

    public func reservation(in vma: VMA, at address: VirtualAddress,
                            settings: TransparentHugepageSettings) -> ReservationRules? {
        settings.allowsHugepages(in: vma) ? ReservationRules(promotes: true, fillAt: syncN > 0 ? syncN : nil) : nil
    }

    public var daemonInterval: UInt64? {
        asyncN > 0 || defrag ? UInt64(asyncIntervalMilliseconds) * SimulatedClock.nanosecondsPerMillisecond : nil
    }

    public func daemonWakeUp(_ kernel: Kernel) {
        if asyncN > 0 { kernel.prepopulateReservations(threshold: asyncN, budget: asyncBudget, promotes: true) }
        if defrag {
            kernel.evictInactiveReservations(inactiveFor: UInt64(inactiveMilliseconds) * SimulatedClock.nanosecondsPerMillisecond,
                                             budget: migrateBudget)
        }
    }
}
