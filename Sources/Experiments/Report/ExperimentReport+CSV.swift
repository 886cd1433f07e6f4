/// One row per cell for spreadsheets (RFC 4180: comma-separated, quoted where needed).
extension ExperimentReport {
    /// The CSV columns, in order (docs/report-format.md).
    public static let csvColumns = [
        "index", "workload", "trace", "size_bytes", "accesses_requested", "threads", "seed", "design", "machine",
        "enabled", "tunables", "accesses", "l1_misses", "l2_misses", "l1_misses_per_1k", "l2_misses_per_1k", "walks",
        "walk_cycles", "fault_cycles", "access_cycles", "estimated_cycles", "estimated_seconds", "speedup_vs_never",
        "thp_coverage", "rss_bytes", "touched_bytes", "bloat_bytes", "anon_huge_bytes", "page_table_bytes",
        "faults", "huge_faults", "fault_fallbacks", "fault_p50_cycles", "fault_p99_cycles", "fault_max_cycles",
        "splits", "split_pmds", "collapses", "compact_stalls", "signals", "frequency_ghz", "thpsim_version",
        "status", "killed_by", "failed_calls", "dropped_accesses", "steady_speedup_vs_never", "steady_accesses",
        "steady_estimated_cycles", "steady_fault_cycles", "policy",
    ]

    public var csv: String {
        var lines = [Self.csvColumns.joined(separator: ",")]
        for r in results {
            let c = r.cell
            let fields: [String] = [
                "\(c.index)", c.workload.synthetic ?? "", c.workload.trace ?? "", c.workload.size.map { "\($0)" } ?? "",
                c.workload.accesses.map { "\($0)" } ?? "", "\(c.workload.threads)", r.seed.map { "\($0)" } ?? "",
                c.design, c.machine, c.enabled, c.tunables.map { "\($0.name)=\($0.value)" }.joined(separator: " "),
                "\(r.accesses.total)", "\(r.tlb.l1Misses)", "\(r.tlb.l2Misses)", "\(r.tlb.l1MissesPerKilo)",
                "\(r.tlb.l2MissesPerKilo)", "\(r.tlb.walks)", "\(r.tlb.walkCycles)", "\(r.faultCycles)",
                "\(r.accessCycles)", "\(r.estimatedCycles)", "\(r.estimatedSeconds)", r.speedupVsNever.map { "\($0)" } ?? "",
                "\(r.memory.thpCoverage)", "\(r.memory.rssBytes)", "\(r.memory.touchedBytes)", "\(r.memory.bloatBytes)",
                "\(r.memory.anonHugeBytes)", "\(r.memory.pageTableBytes)", "\(r.faults.count)", "\(r.faults.huge)",
                "\(r.faults.fallback)", "\(r.faults.p50Cycles)", "\(r.faults.p99Cycles)", "\(r.faults.maxCycles)",
                "\(r.splits)", "\(r.splitPMDs)", "\(r.collapses)", "\(r.compactStalls)", "\(r.signals)",
                "\(r.frequencyGHz)", thpsimVersion,
                r.status,
                (r.kills ?? []).map { "\($0.signal) (\($0.reason))" }.joined(separator: "; "),
                r.failedCalls.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "; "),
                "\(r.droppedAccesses ?? 0)", r.steadySpeedupVsNever.map { "\($0)" } ?? "",
                r.steady.map { "\($0.accesses)" } ?? "", r.steady.map { "\($0.estimatedCycles)" } ?? "",
                r.steady.map { "\($0.faultCycles)" } ?? "", c.policyName,
            ]
            lines.append(fields.map(Self.csvField).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func csvField(_ s: String) -> String {
        guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
