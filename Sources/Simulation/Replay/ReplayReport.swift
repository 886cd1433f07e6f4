import Foundation
import Kernel
import Machine
import Workloads

/// What a replay (or a synthetic workload run) did: accesses by kind, signals, failed calls, the
/// translation counters and estimated cycles of the measured phase, vmstat and memory.
public struct ReplayReport: Sendable, Equatable {
    /// A process killed by an access the kernel could not resolve (Linux: `force_sig_fault()`).
    public struct Signal: Sendable, Hashable {
        public var thread: Int
        public var process: Int
        public var fault: AccessFault
    }

    /// Accesses by `AccessKind` (loads, stores, fetches), counting every access of a run.
    public var accesses = [Int](repeating: 0, count: 3)
    public var events = 0
    public var signals: [Signal] = []
    /// The workload's memory cgroup at the end, when it ran in one (`--cgroup`).
    public var cgroup: CgroupReport?
    /// Processes the system-wide OOM killer killed when a fault found the machine out of memory
    /// (Linux: "Out of memory: Killed process …"), the faulting one or another; not in `signals`.
    public var oomKills: [CgroupReport.OOMKillRecord] = []

    /// The workload's memory cgroup: its files, events, statistics and OOM kills.
    public struct CgroupReport: Sendable, Equatable {
        /// A process killed by the cgroup's OOM killer (Linux: "Memory cgroup out of memory: Killed
        /// process …").
        public struct OOMKillRecord: Sendable, Hashable {
            /// The process's index, as `signals` number them (-1 if not the workload's).
            public var process: Int
            public var pid: Int
            /// Resident bytes at death (Linux: `anon-rss`).
            public var rssBytes: UInt64
            public var swapBytes: UInt64
            public var simulatedNanoseconds: UInt64
        }
        /// `memory.max`, `memory.high`, `memory.swap.max`, `memory.current`, `memory.peak` as Linux prints them,
        /// and `memory.min`, `memory.low` when they are set (not 0).
        public var files: [String: String] = [:]
        /// `memory.events`.
        public var events: [String: Int] = [:]
        /// `memory.stat` (the lines the model has).
        public var stat: [String: Int] = [:]
        public var oomKills: [OOMKillRecord] = []

        public init() {}

        /// The cgroup `cgroup` of `kernel` now; `pids` are the workload's processes by index.
        public init(kernel: Kernel, cgroup memcg: MemoryCgroup, pids: [Int]) {
            for file in ["memory.max", "memory.high", "memory.swap.max", "memory.current", "memory.peak"] {
                files[file] = (try? kernel.readCgroupFile(memcg.name, file))?.trimmingCharacters(in: .newlines)
            }
            // Shown only when set: the protections and the group kill when not 0, swap.high when not max.
            for file in ["memory.min", "memory.low", "memory.oom.group", "memory.swap.high"] {
                if let value = (try? kernel.readCgroupFile(memcg.name, file))?.trimmingCharacters(in: .newlines),
                   value != (file == "memory.swap.high" ? "max" : "0") {
                    files[file] = value
                }
            }
            events = Dictionary(uniqueKeysWithValues: MemoryCgroup.Event.allCases.map { ($0.name, memcg.value(of: $0)) })
            stat = Dictionary(uniqueKeysWithValues: kernel.memoryStat(memcg).map { ($0.name, $0.value) })
            oomKills = kernel.memoryCgroups.oomKills.filter { $0.cgroup == memcg.name }.map { kill in
                OOMKillRecord(process: pids.firstIndex(of: kill.pid) ?? -1, pid: kill.pid, rssBytes: kill.rssBytes,
                              swapBytes: kill.swapBytes, simulatedNanoseconds: kill.nanoseconds)
            }
        }

        /// Lines for the text report.
        var lines: [String] {
            var s: [String] = []
            for kill in oomKills {
                s.append("process \(kill.process) OOM-killed by its cgroup: anon-rss \(kill.rssBytes >> 10) kB, swap \(kill.swapBytes >> 10) kB at \(kill.simulatedNanoseconds / 1_000_000) ms")
            }
            let optional = ["memory.swap.high", "memory.min", "memory.low", "memory.oom.group"]
            let shown = ["memory.max", "memory.high", "memory.swap.max", "memory.swap.high", "memory.min", "memory.low", "memory.oom.group",
                         "memory.current", "memory.peak"]
                .filter { files[$0] != nil || !optional.contains($0) }
            s.append("cgroup: " + shown.map { "\($0) \(files[$0] ?? "?")" }.joined(separator: ", "))
            s.append("cgroup memory.events: " + MemoryCgroup.Event.allCases.map { "\($0.name) \(events[$0.name] ?? 0)" }.joined(separator: ", "))
            return s
        }

        /// The JSON object (docs/report-format.md).
        var json: [String: Any] {
            ["files": files, "events": events, "stat": stat,
             "oom_kills": oomKills.map { ["process": $0.process, "pid": $0.pid, "rss_bytes": $0.rssBytes,
                                          "swap_bytes": $0.swapBytes, "simulated_ns": $0.simulatedNanoseconds] }]
        }
    }
    /// Failed system calls by errno name.
    public var failedCalls: [String: Int] = [:]
    /// Accesses and events of threads that do not exist (never created, or their process died).
    public var droppedAccesses = 0
    public var droppedEvents = 0
    public var idleMilliseconds: UInt64 = 0
    /// Whether the workload marked the end of its set-up; if not, "measured" means the whole run.
    public var measured = false
    public var total = TranslationCounters()
    public var measuredCounters = TranslationCounters()
    /// Non-zero vmstat counters at the end, and their change over the measured phase.
    public var vmstat: [String: Int] = [:]
    public var vmstatMeasured: [String: Int] = [:]
    public var anonBytes: UInt64 = 0
    public var anonHugeBytes: UInt64 = 0
    public var pageTableBytes: UInt64 = 0
    public var frequencyGHz = 1.0
    /// RSS at one moment of the run.
    public struct MemorySample: Sendable, Hashable {
        /// Accesses made so far (all kinds, every access of a run).
        public var accesses: Int
        public var anonBytes: UInt64
        public var anonHugeBytes: UInt64
        /// Bytes of the pages written and still mapped (`MachineExecutor.touchedBytes`).
        public var touchedBytes: UInt64 = 0
    }
    /// RSS every `MachineExecutor.sampleInterval` accesses and at forks, exits, idles, the start of
    /// the measured phase, and the end.
    public var memoryOverTime: [MemorySample] = []
    /// Trace records read (replay only).
    public var records = 0
    /// Every vmstat counter at the end, zero or not, and `/proc/meminfo` at the end (bytes).
    public var vmstatFinal: [String: Int] = [:]
    public var meminfoFinal: [String: UInt64] = [:]
    /// `khugepaged/pages_collapsed` at the end.
    public var pagesCollapsed = 0
    /// Bytes of the distinct 4 KiB pages the program wrote and still maps (by virtual address, all processes).
    public var touchedBytes: UInt64 = 0
    /// Each page fault's latency in cycles (the whole run).
    public var faultLatency = FaultLatencyHistogram()
    /// Simulated time at the end (the kernel's clock).
    public var simulatedNanoseconds: UInt64 = 0
    /// Each CPU's simulated time, the elapsed time and what sharing cost (`SimulatedTimeReport`).
    public var time = SimulatedTimeReport()
    /// The sample with the largest `AnonPages` (the RSS peak; the first such sample).
    public var peakSample: MemorySample? {
        memoryOverTime.reduce(nil) { best, s in (best.map { s.anonBytes > $0.anonBytes } ?? true) ? s : best }
    }

    public init() {}

    static let interestingEvents = ["pgfault", "thp_fault_alloc", "thp_fault_fallback", "thp_split_page",
                                    "thp_split_pmd", "thp_zero_page_alloc", "thp_collapse_alloc", "nr_anon_transparent_hugepages"]

    /// The report as text, one figure per line.
    public var text: String {
        var s: [String] = []
        s.append("accesses: \(accesses[0]) loads, \(accesses[1]) stores, \(accesses[2]) fetches\(records > 0 ? " (\(records) trace records)" : "")")
        for sig in signals {
            s.append("process \(sig.process) (thread \(sig.thread)) killed: \(sig.fault)")
        }
        for kill in oomKills {
            s.append("process \(kill.process) OOM-killed, the machine out of memory: anon-rss \(kill.rssBytes >> 10) kB, swap \(kill.swapBytes >> 10) kB at \(kill.simulatedNanoseconds / 1_000_000) ms")
        }
        if let cgroup { s.append(contentsOf: cgroup.lines) }
        if !failedCalls.isEmpty {
            s.append("failed system calls: " + failedCalls.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
        }
        if droppedAccesses + droppedEvents > 0 {
            s.append("dropped (thread without a live process): \(droppedAccesses) accesses, \(droppedEvents) events")
        }
        if idleMilliseconds > 0 { s.append("idle: \(idleMilliseconds) ms (simulated time in which khugepaged, kswapd and kcompactd may act)") }
        let c = measuredCounters
        s.append("\(measured ? "measured phase" : "whole run"): \(c.accesses) accesses, L1 TLB misses \(c.accesses - c.l1Hits), STLB hits \(c.l2Hits), walks \(c.walks), walk refs \(c.walkReferences) (\(c.walkReferencesFromMemory) from DRAM), faults \(c.faults)")
        s.append(String(format: "estimated cycles: %.0f (%.2f per access; tlb %.0f, walk %.0f, data %.0f, fault %.0f, flush %.0f) = %.3f ms",
                        c.cycles, c.accesses == 0 ? 0 : c.cycles / Double(c.accesses), c.tlbCycles, c.walkCycles,
                        c.dataCycles, c.faultCycles, c.flushCycles, c.cycles / frequencyGHz / 1e6))
        s.append("whole run: \(total.accesses) accesses, \(total.walks) walks, \(total.faults) faults")
        s.append("vmstat: " + Self.interestingEvents.map { "\($0) \(vmstat[$0] ?? 0)" }.joined(separator: ", "))
        let l = faultLatency
        if l.count > 0 {
            func us(_ cycles: UInt64) -> String { String(format: "%.2f µs", Double(cycles) / frequencyGHz / 1e3) }
            s.append("fault latency (whole run, \(l.count) faults): p50 \(us(l.percentile(50))), p99 \(us(l.percentile(99))), max \(us(l.max))")
        }
        if memoryOverTime.count > 1 {
            let shown = memoryOverTime.count <= 12 ? memoryOverTime : Array(memoryOverTime.prefix(6) + memoryOverTime.suffix(6))
            s.append("RSS over time (accesses: AnonPages/AnonHugePages MiB): " + shown.map {
                "\($0.accesses): \($0.anonBytes >> 20)/\($0.anonHugeBytes >> 20)"
            }.joined(separator: ", ") + (shown.count < memoryOverTime.count ? " (\(memoryOverTime.count) samples; all in --json)" : ""))
        }
        s.append("memory at end: AnonPages \(anonBytes >> 10) kB, AnonHugePages \(anonHugeBytes >> 10) kB, PageTables \(pageTableBytes >> 10) kB")
        s.append("bloat at end: \((Int64(anonBytes) - Int64(touchedBytes)) / 1024) kB (AnonPages minus the \(touchedBytes >> 10) kB of pages written and still mapped)")
        if time.cpuNanoseconds.count > 1 { s.append(contentsOf: time.lines) }
        return s.joined(separator: "\n")
    }

    /// The report as a JSON object (stable keys, for scripts).
    public var json: String {
        func counters(_ c: TranslationCounters) -> [String: Any] {
            ["accesses": c.accesses, "l1_hits": c.l1Hits, "l2_hits": c.l2Hits, "walks": c.walks,
             "walk_references": c.walkReferences, "walk_references_from_memory": c.walkReferencesFromMemory,
             "faults": c.faults, "cycles": c.cycles, "tlb_cycles": c.tlbCycles, "walk_cycles": c.walkCycles,
             "data_cycles": c.dataCycles, "fault_cycles": c.faultCycles, "flush_cycles": c.flushCycles]
        }
        var object: [String: Any] = [
            "records": records,
            "accesses": ["loads": accesses[0], "stores": accesses[1], "fetches": accesses[2]],
            "signals": signals.map { ["process": $0.process, "thread": $0.thread, "address": $0.fault.address.rawValue,
                                      "signal": $0.fault.outcome.description] },
            "oom_kills": oomKills.map { ["process": $0.process, "pid": $0.pid, "rss_bytes": $0.rssBytes,
                                         "swap_bytes": $0.swapBytes, "simulated_ns": $0.simulatedNanoseconds] },
            "failed_calls": failedCalls, "dropped_accesses": droppedAccesses, "dropped_events": droppedEvents,
            "idle_ms": idleMilliseconds, "measured": measured,
            "measured_counters": counters(measuredCounters), "total_counters": counters(total),
            "vmstat": vmstat, "vmstat_measured": vmstatMeasured,
            "memory_over_time": memoryOverTime.map { ["accesses": $0.accesses, "anon_bytes": $0.anonBytes, "anon_huge_bytes": $0.anonHugeBytes] },
            "memory": ["anon_bytes": anonBytes, "anon_huge_bytes": anonHugeBytes, "page_table_bytes": pageTableBytes,
                       "touched_bytes": touchedBytes, "bloat_bytes": Int64(anonBytes) - Int64(touchedBytes)],
            "fault_latency_cycles": ["count": faultLatency.count, "p50": faultLatency.percentile(50),
                                     "p99": faultLatency.percentile(99), "max": faultLatency.max],
        ]
        if let cgroup { object["cgroup"] = cgroup.json }
        if time.cpuNanoseconds.count > 1 {
            object["simulated_time"] = ["elapsed_ns": time.elapsedNanoseconds, "cpu_ns": time.cpuNanoseconds,
                                        "lock_wait_ns": time.lockWaitNanoseconds, "lock_acquisitions": time.lockAcquisitions,
                                        "lock_contended": time.lockContended, "transfer_ns": time.transferNanoseconds,
                                        "bandwidth_stall_ns": time.bandwidthStallNanoseconds, "system_calls": time.systemCalls,
                                        "shootdowns_sent": time.shootdownsSent, "shootdowns_received": time.shootdownsReceived]
        }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
        return String(decoding: data, as: UTF8.self)
    }
}
