/// The comparison table `thpsim run` prints: one block per workload (and design, machine,
/// tunables), one row per `enabled` policy.
extension ExperimentReport {
    static let textColumns: [(title: String, width: Int)] = [
        ("accesses", 9), ("L1 miss/1K", 11), ("L2 miss/1K", 11), ("walk Mcyc", 10), ("est. Mcyc", 10),
        ("vs never", 9), ("THP", 5), ("RSS", 7), ("bloat", 7), ("faults", 8), ("huge", 6),
        ("p50 µs", 8), ("p99 µs", 8), ("max µs", 8), ("split pg/pmd", 13), ("collapses", 10),
    ]

    public var text: String {
        var lines: [String] = []
        let cells = "\(results.count) of \(cellCount) cells" + (shard.map { " (shard \($0.index)/\($0.count))" } ?? "")
        lines.append("thpsim \(thpsimVersion) — \(cells); every count covers the whole run, set-up included")
        let header = Format.pad("", 10, left: true) + Self.textColumns.map { Format.pad($0.title, $0.width) }.joined()
        lines.append("")
        lines.append(header)
        var lastGroup: String?
        for r in results {
            if r.cell.groupKey != lastGroup {
                lastGroup = r.cell.groupKey
                var title = "\(r.cell.workload.label) — \(r.cell.design), \(r.cell.machine)"
                if !r.cell.tunables.isEmpty { title += ", " + r.cell.tunables.map { "\($0.name)=\($0.value)" }.joined(separator: " ") }
                lines.append(title)
            }
            lines.append(Format.pad("  " + r.cell.enabled, 10, left: true) + Self.textRow(r))
        }
        lines.append("")
        let ghz = Set(results.map(\.frequencyGHz)).sorted().map { Format.fixed($0, 1) }.joined(separator: "/")
        lines.append("miss/1K: TLB misses per 1,000 accesses (L2: missed both levels, a page walk); Mcyc: million cycles,")
        lines.append("estimated = faults + accesses (TLB, walks, data); vs never: speedup over enabled=never; THP: AnonHugePages/AnonPages")
        lines.append("at the end; RSS: peak AnonPages; bloat: RSS − bytes touched; fault latency at \(ghz) GHz (docs/report-format.md).")
        var seeds = Set<UInt64>(), traces = Set<String>()
        for r in results { if let s = r.seed { seeds.insert(s) }; if let t = r.cell.workload.trace { traces.insert(t) } }
        var repro = "seeds \(seeds.sorted().map(String.init).joined(separator: ","))"
        if !traces.isEmpty { repro += "; traces " + traces.sorted().joined(separator: ", ") }
        // The settings besides `enabled`, once per design when the designs boot differently.
        let shown = ["defrag", "use_zero_page", "khugepaged/max_ptes_none", "khugepaged/scan_sleep_millisecs"]
        var described: [String] = []
        for r in results {
            let text = shown.compactMap { k in r.settings[k].map { "\(k)=\(Self.selected($0))" } }.joined(separator: " ")
            if !described.contains(where: { $0.hasSuffix(text) }) { described.append(text) }
        }
        if described.count > 1 {
            described = []
            for design in Set(results.map(\.cell.design)).sorted() {
                guard let r = results.first(where: { $0.cell.design == design }) else { continue }
                described.append(design + ": " + shown.compactMap { k in r.settings[k].map { "\(k)=\(Self.selected($0))" } }.joined(separator: " "))
            }
        }
        if !described.isEmpty { repro += "; " + described.joined(separator: "; ") }
        lines.append(repro)
        return lines.joined(separator: "\n")
    }

    /// `always [madvise] never` → `madvise`: the selected value of a sysfs choice.
    static func selected(_ sysfs: String) -> String {
        guard let open = sysfs.firstIndex(of: "["), let close = sysfs.firstIndex(of: "]"), open < close else { return sysfs }
        return String(sysfs[sysfs.index(after: open)..<close])
    }

    static func textRow(_ r: CellResult) -> String {
        zip(textValues(r), textColumns).map { Format.pad($0, $1.width) }.joined()
    }

    /// The table's figures for one cell, one string per column of `textColumns`.
    static func textValues(_ r: CellResult) -> [String] {
        let ghz = r.frequencyGHz
        return [
            Format.count(r.accesses.total),
            Format.fixed(r.tlb.l1MissesPerKilo, 1),
            Format.fixed(r.tlb.l2MissesPerKilo, 1),
            Format.fixed(r.tlb.walkCycles / 1e6, 1),
            Format.fixed(r.estimatedCycles / 1e6, 1),
            r.speedupVsNever.map { Format.fixed($0, 2) + "×" } ?? "-",
            "\(Int((r.memory.thpCoverage * 100).rounded()))%",
            Format.bytes(r.memory.rssBytes),
            Format.signedBytes(r.memory.bloatBytes),
            Format.count(r.faults.count),
            Format.count(r.faults.huge),
            Format.micros(r.faults.p50Cycles, ghz),
            Format.micros(r.faults.p99Cycles, ghz),
            Format.micros(r.faults.maxCycles, ghz),
            Format.count(r.splits) + "/" + Format.count(r.splitPMDs),
            Format.count(r.collapses),
        ]
    }
}
