import VMCore
import Kernel

/// What the kernel did while it handled one page fault, as the cost model counts it: the pages it
/// allocated (zeroed, or copied on copy-on-write), and any direct compaction, direct reclaim and
/// swap-in on the way. Read from the fault's `FaultContext`.
///
/// Linux has no per-fault record of this; on a real kernel the same figures are the `/proc/vmstat`
/// deltas around one fault (`thp_fault_alloc`, `pgalloc_normal`, `compact_*`, `pgsteal_direct`,
/// `pswpout`, `pswpin`).
public struct FaultWork: Sendable, Hashable {
    /// 2 MiB pages allocated for the fault (`thp_fault_alloc`): zeroed, or copied on a huge COW.
    public var hugePages = 0
    /// 4 KiB pages allocated for the faulting address(es) (`FaultContext.basePages`): `pgalloc_normal`
    /// less the huge pages, the page tables kept, compaction's migration targets and swap-ins (a 2.6.38
    /// huge COW that falls back allocates 512 of them).
    public var smallPages = 0
    /// A write to a present, write-protected entry: the pages allocated are copies, not zero-filled.
    public var copyOnWrite = false
    /// `compact_stall`: direct compactions entered.
    public var compactStalls = 0
    /// `compact_migrate_scanned` + `compact_free_scanned`.
    public var compactScanned = 0
    /// Pages compaction migrated (`compact_isolated` counts the page and its target: half of it).
    public var pagesMigrated = 0
    /// Pages direct reclaim freed (Linux: `pgsteal_direct`).
    public var pagesReclaimed = 0
    /// `pswpout`: pages direct reclaim wrote to swap.
    public var pagesSwappedOut = 0
    /// `pswpin`: pages read back from swap (a major fault).
    public var pagesSwappedIn = 0
    /// Of `hugePages`, those zeroed ahead by a pre-zeroing thread: their 512 pages are not zeroed now.
    public var hugePagesPreZeroed = 0

    public init() {}

    /// The work `fault` recorded. A write-protect fault's pages are charged as copies, the zero
    /// page's (zeroed) copy included. Inlined, so that a fault's charge (`CPU.charge`) reads the
    /// context's few fields in place rather than copying the whole context (145 bytes) to call it.
    @inline(__always)
    public init(_ fault: FaultContext) {
        hugePages = fault.hugePages
        smallPages = fault.basePages
        copyOnWrite = fault.isWriteProtectFault
        compactStalls = fault.compaction.stalls
        compactScanned = fault.compaction.scanned
        pagesMigrated = fault.compaction.migrated
        pagesReclaimed = fault.reclaim.reclaimed
        pagesSwappedOut = fault.reclaim.swappedOut
        pagesSwappedIn = fault.pagesSwappedIn
        hugePagesPreZeroed = fault.hugePagesPreZeroed
    }
}

extension TimingParameters {
    /// Cycles to zero one 4 KiB page, as the two fault costs imply: a 2 MiB fault zeroes 511 pages more
    /// than a 4 KiB one.
    public var zeroPageCycles: Double { max(0, (hugeFaultCycles - baseFaultCycles) / 511) }

    /// The latency of a fault that did `work` (docs/machines.md, "Fault latency"):
    ///
    /// ```
    /// fault-2m + (huge − 1) × 512 × zero      a huge fault (zeroing 2 MiB included)
    /// | fault-4k + (small − 1) × zero          a 4 KiB fault (zeroing 4 KiB included)
    /// | fault-minor                            nothing allocated
    /// + pages × (copy-4k − zero)               on copy-on-write, copying instead of zeroing
    /// − pre-zeroed huge × 512 × zero           huge pages a pre-zeroing thread cleared ahead
    /// + stalls × compact-stall + scanned × compact-scan + migrated × migrate-4k
    /// + reclaimed × reclaim-4k + swapped out × swap-out-4k + swapped in × swap-in-4k
    /// ```
    /// Linux: the time between `exc_page_fault()` and its return, which `perf trace --pf` measures.
    /// Inlined: out of line, every fault copied the CPU's parameters (152 bytes) to call it.
    @inline(__always)
    public func faultCycles(_ work: FaultWork) -> Double {
        let zero = zeroPageCycles
        let pages = work.hugePages * PageGeometry.pmdOrder.pages + work.smallPages
        var cycles: Double
        if work.hugePages > 0 {
            cycles = hugeFaultCycles + Double((work.hugePages - 1) * PageGeometry.pmdOrder.pages + work.smallPages) * zero
        } else if work.smallPages > 0 {
            cycles = baseFaultCycles + Double(work.smallPages - 1) * zero
        } else {
            cycles = minorFaultCycles
        }
        if work.copyOnWrite { cycles += Double(pages) * (copyPageCycles - zero) }
        if _slowPath(work.hugePagesPreZeroed > 0) { cycles -= Double(work.hugePagesPreZeroed * PageGeometry.pmdOrder.pages) * zero }
        cycles += Double(work.compactStalls) * compactStallCycles + Double(work.compactScanned) * compactScanCycles
        cycles += Double(work.pagesMigrated) * migratePageCycles + Double(work.pagesReclaimed) * reclaimPageCycles
        cycles += Double(work.pagesSwappedOut) * swapOutPageCycles + Double(work.pagesSwappedIn) * swapInPageCycles
        return max(cycles, 0)
    }
}
