import Machine
import Workloads
import Simulation

/// What one cell of an experiment measured. Counters cover the whole run (set-up included), since
/// that is where faults and their latency fall. The keys are documented in docs/report-format.md;
/// they only ever grow.
public struct CellResult: Sendable, Equatable, Codable {
    public var cell: ExperimentCell
    /// Every `/sys/kernel/mm/transparent_hugepage/` tunable as the run started (Linux's names).
    public var settings: [String: String]
    public var seed: UInt64?
    /// Where the machine's figures come from, and its clock.
    public var machineSource: String
    public var frequencyGHz: Double
    public var memoryBytes: UInt64

    public struct Accesses: Sendable, Equatable, Codable {
        public var loads: Int, stores: Int, fetches: Int, total: Int
    }
    public var accesses: Accesses

    /// TLB and walker figures (Linux PMU: `dtlb_load_misses.*`, `dtlb_store_misses.*`).
    public struct TLB: Sendable, Equatable, Codable {
        public var accesses: Int
        /// Accesses that missed the L1 TLBs; of those, the ones that missed the second level too.
        public var l1Misses: Int
        public var l2Misses: Int
        /// Per 1,000 accesses.
        public var l1MissesPerKilo: Double
        public var l2MissesPerKilo: Double
        public var walks: Int
        public var walkReferences: Int
        public var walkReferencesFromMemory: Int
        public var walkCycles: Double
        public var tlbCycles: Double
    }
    public var tlb: TLB

    /// `faultCycles + accessCycles`; `accessCycles` is everything else (pipeline share, TLB, walks,
    /// data, shootdowns).
    public var estimatedCycles: Double
    public var faultCycles: Double
    public var accessCycles: Double
    /// `estimatedCycles` at `frequencyGHz`, in seconds.
    public var estimatedSeconds: Double
    /// The `never` cell's estimated cycles over this one's (same workload, design, machine, tunables):
    /// the whole run, first-touch faults included. Nil when the grid has no such cell, or either
    /// cell's program was killed.
    public var speedupVsNever: Double?

    /// The measured accesses alone (the steady state): the run after the workload's set-up and first
    /// touch. Optional only so that reports written before it existed still decode.
    public var steady: Steady?
    /// As `speedupVsNever`, over the steady state's estimated cycles.
    public var steadySpeedupVsNever: Double?
    /// Instructions the recorded program executed (QEMU's count; `thpsim record --replay` only).
    public var instructions: Int?

    public struct Steady: Sendable, Equatable, Codable {
        /// False when the workload marked no end of set-up (a trace without one): then the steady
        /// state is the whole run.
        public var setUpExcluded: Bool
        public var accesses: Int
        /// `faultCycles` plus everything else, as for the whole run; faults of the measured phase
        /// (copy-on-write after fork, a heap's growth) stay in.
        public var estimatedCycles: Double
        public var faultCycles: Double
        public var faults: Int
        public var l1MissesPerKilo: Double
        public var l2MissesPerKilo: Double
        public var walkCycles: Double
    }

    public struct Memory: Sendable, Equatable, Codable {
        /// Peak `AnonPages` (RSS of anonymous memory, huge pages included), as sampled.
        public var rssBytes: UInt64
        /// At the RSS peak: bytes of the distinct 4 KiB pages written ("touched") and not unmapped or
        /// discarded since (by virtual address, over every process). Reads of memory never written map
        /// the zero page and take no memory, so they do not count.
        public var touchedBytes: UInt64
        /// `rssBytes - touchedBytes`, or 0 when fewer bytes are resident than were touched (reclaim
        /// swapped touched pages out): memory resident beyond what the program touched (untouched
        /// parts of huge pages, and copies copy-on-write made of pages both processes hold).
        public var bloatBytes: Int64
        /// `AnonPages`, `AnonHugePages` and `PageTables` at the end, and their ratio (THP coverage).
        public var anonBytes: UInt64
        public var anonHugeBytes: UInt64
        public var pageTableBytes: UInt64
        public var thpCoverage: Double
    }
    public var memory: Memory

    public struct Faults: Sendable, Equatable, Codable {
        public var count: Int
        /// `thp_fault_alloc`, `thp_fault_fallback`.
        public var huge: Int
        public var fallback: Int
        /// Latency in cycles, to HdrHistogram's three significant digits.
        public var p50Cycles: UInt64
        public var p99Cycles: UInt64
        public var maxCycles: UInt64
        public var meanCycles: Double
        /// The distribution: `[value, count]` per non-empty bucket, value the bucket's highest.
        public var histogram: [[UInt64]]

        public var latency: FaultLatencyHistogram {
            FaultLatencyHistogram(buckets: histogram.compactMap { $0.count == 2 ? ($0[0], $0[1]) : nil })
        }
    }
    public var faults: Faults

    /// `thp_split_page`, `thp_split_pmd`, `khugepaged/pages_collapsed`, `thp_collapse_alloc`, `compact_stall`.
    public var splits: Int
    public var splitPMDs: Int
    public var collapses: Int
    public var collapseAllocations: Int
    public var compactStalls: Int

    /// Every `/proc/vmstat` counter at the end, and `/proc/meminfo` at the end (bytes, Linux's names).
    public var vmstat: [String: Int]
    public var meminfo: [String: UInt64]

    public struct Sample: Sendable, Equatable, Codable {
        public var accesses: Int
        public var anonBytes: UInt64
        public var anonHugeBytes: UInt64
        public var touchedBytes: UInt64
    }
    /// RSS, `AnonHugePages` and bytes touched during the run.
    public var memoryOverTime: [Sample]

    /// Processes killed (SIGSEGV/SIGBUS, or the OOM killer) and failed system calls by errno.
    public var signals: Int
    public var failedCalls: [String: Int]

    /// A process the kernel killed: by a signal for an access it could not resolve (Linux:
    /// `force_sig_fault()`), or by the OOM killer when a fault found no memory (`VM_FAULT_OOM`).
    public struct Kill: Sendable, Equatable, Codable {
        /// `SIGSEGV`, `SIGBUS` or `SIGKILL`.
        public var signal: String
        /// `SEGV_MAPERR`, `SEGV_ACCERR`, `BUS_ADRERR` or `OOM`.
        public var reason: String
        public var address: UInt64
        public var process: Int
        public var thread: Int

        /// Resident bytes at death, for a kill by a memory cgroup's OOM killer (Linux: `anon-rss`).
        public var rssBytes: UInt64?

        public init(signal: String, reason: String, address: UInt64, process: Int, thread: Int, rssBytes: UInt64? = nil) {
            self.signal = signal; self.reason = reason; self.address = address; self.process = process; self.thread = thread
            self.rssBytes = rssBytes
        }

        /// A kill by the workload cgroup's OOM killer (`memory.events` `oom_kill`).
        init(_ k: ReplayReport.CgroupReport.OOMKillRecord) {
            self.init(signal: "SIGKILL", reason: "OOM_MEMCG", address: 0, process: k.process, thread: -1, rssBytes: k.rssBytes)
        }

        init(_ s: ReplayReport.Signal) {
            let (signal, reason): (String, String) = switch s.fault.outcome {
            case .segv(.mapErr): ("SIGSEGV", "SEGV_MAPERR")
            case .segv(.accErr): ("SIGSEGV", "SEGV_ACCERR")
            case .sigbus: ("SIGBUS", "BUS_ADRERR")
            case .outOfMemory: ("SIGKILL", "OOM")
            case .handled: ("none", "handled")
            }
            self.init(signal: signal, reason: reason, address: s.fault.address.rawValue, process: s.process, thread: s.thread)
        }
    }
    /// Each process killed, in order (`signals` counts them). Optional only so that older reports decode.
    public var kills: [Kill]?
    /// Accesses the workload asked for that were not made because their process had died.
    public var droppedAccesses: Int?
    /// The workload cgroup's `memory.events` at the end, when the cell ran in one (`--cgroup`).
    public var cgroupEvents: [String: Int]?

    /// Whether every process ran to its end: none was killed. A run that did not complete covers the
    /// program only until then, so no speedup is computed for it.
    public var completed: Bool { signals == 0 && (kills ?? []).isEmpty }

    /// `ok`, `killed` (a process was), or `calls failed` (none was killed, but system calls failed).
    public var status: String { !completed ? "killed" : failedCalls.isEmpty ? "ok" : "calls failed" }
    /// Trace records read (traces only).
    public var records: Int
    /// The kernel's simulated clock at the end.
    public var simulatedNanoseconds: UInt64
    /// The run's elapsed simulated time: the slowest CPU's clock (idle time excluded). Optional only
    /// so that older reports decode.
    public var elapsedSimulatedNanoseconds: UInt64?
    /// Per-CPU time, lock waits by Linux's names, shootdowns per CPU (`SimulatedTimeReport`).
    public var time: SimulatedTimeReport?
}

extension CellResult {
    /// The result of `cell` from a finished run's report.
    init(cell: ExperimentCell, report r: ReplayReport, settings: [String: String], machine: MachineDescription,
         memoryBytes: UInt64) {
        self.cell = cell
        self.settings = settings
        seed = cell.workload.seed
        machineSource = machine.source
        frequencyGHz = machine.frequencyGHz
        self.memoryBytes = memoryBytes
        accesses = Accesses(loads: r.accesses[0], stores: r.accesses[1], fetches: r.accesses[2],
                            total: r.accesses.reduce(0, +))
        let c = r.total
        let perKilo = { (n: Int) in c.accesses == 0 ? 0 : Double(n) * 1000 / Double(c.accesses) }
        let l1Misses = c.accesses - c.l1Hits, l2Misses = c.accesses - c.l1Hits - c.l2Hits
        tlb = TLB(accesses: c.accesses, l1Misses: l1Misses, l2Misses: l2Misses,
                  l1MissesPerKilo: perKilo(l1Misses), l2MissesPerKilo: perKilo(l2Misses), walks: c.walks,
                  walkReferences: c.walkReferences, walkReferencesFromMemory: c.walkReferencesFromMemory,
                  walkCycles: c.walkCycles, tlbCycles: c.tlbCycles)
        estimatedCycles = c.cycles
        faultCycles = c.faultCycles
        accessCycles = c.cycles - c.faultCycles
        estimatedSeconds = c.cycles / machine.frequencyGHz / 1e9
        speedupVsNever = nil
        let m = r.measuredCounters
        let mPerKilo = { (n: Int) in m.accesses == 0 ? 0 : Double(n) * 1000 / Double(m.accesses) }
        steady = Steady(setUpExcluded: r.measured, accesses: m.accesses, estimatedCycles: m.cycles, faultCycles: m.faultCycles,
                        faults: m.faults, l1MissesPerKilo: mPerKilo(m.accesses - m.l1Hits),
                        l2MissesPerKilo: mPerKilo(m.accesses - m.l1Hits - m.l2Hits), walkCycles: m.walkCycles)
        steadySpeedupVsNever = nil
        let peak = r.peakSample
        let rss = peak?.anonBytes ?? 0, touched = peak?.touchedBytes ?? 0
        let anon = r.meminfoFinal["AnonPages"] ?? 0, huge = r.meminfoFinal["AnonHugePages"] ?? 0
        memory = Memory(rssBytes: rss, touchedBytes: touched, bloatBytes: max(0, Int64(rss) - Int64(touched)),
                        anonBytes: anon, anonHugeBytes: huge, pageTableBytes: r.meminfoFinal["PageTables"] ?? 0,
                        thpCoverage: anon == 0 ? 0 : Double(huge) / Double(anon))
        // Percentiles of the histogram as the report carries it (its buckets), so a report read back
        // (thpsim merge) computes the same figures from `histogram`.
        let h = FaultLatencyHistogram(buckets: r.faultLatency.buckets)
        faults = Faults(count: c.faults, huge: r.vmstatFinal["thp_fault_alloc"] ?? 0,
                        fallback: r.vmstatFinal["thp_fault_fallback"] ?? 0,
                        p50Cycles: h.percentile(50), p99Cycles: h.percentile(99), maxCycles: h.max,
                        meanCycles: h.count == 0 ? 0 : h.mean, histogram: h.buckets.map { [$0.value, $0.count] })
        splits = r.vmstatFinal["thp_split_page"] ?? 0
        splitPMDs = r.vmstatFinal["thp_split_pmd"] ?? 0
        collapses = r.pagesCollapsed
        collapseAllocations = r.vmstatFinal["thp_collapse_alloc"] ?? 0
        compactStalls = r.vmstatFinal["compact_stall"] ?? 0
        vmstat = r.vmstatFinal
        meminfo = r.meminfoFinal
        memoryOverTime = r.memoryOverTime.map { Sample(accesses: $0.accesses, anonBytes: $0.anonBytes, anonHugeBytes: $0.anonHugeBytes, touchedBytes: $0.touchedBytes) }
        let allKills = r.signals.map(Kill.init) + (r.cgroup?.oomKills ?? []).map(Kill.init)
            + r.oomKills.map { Kill(signal: "SIGKILL", reason: "OOM", address: 0, process: $0.process, thread: -1, rssBytes: $0.rssBytes) }
        signals = allKills.count
        failedCalls = r.failedCalls
        kills = allKills
        cgroupEvents = r.cgroup?.events
        droppedAccesses = r.droppedAccesses
        records = r.records
        simulatedNanoseconds = r.simulatedNanoseconds
        elapsedSimulatedNanoseconds = r.time.elapsedNanoseconds
        time = r.time
    }
}
