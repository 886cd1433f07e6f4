/// Simulated time in the reports: for cells that ran on more than one CPU, the elapsed simulated time
/// (the slowest CPU), lock waits by Linux's names and shootdowns; and, when a grid has a `--threads`
/// axis, the scaling curve — elapsed time against CPUs — per `enabled` and tunable combination
/// (docs/concurrency.md, "Simulated time").
extension ExperimentReport {
    /// A curve: the cells that differ only in their thread count, one series per `enabled` and tunables.
    struct TimeCurve {
        var label: String
        var series: [(name: String, enabled: String, points: [(threads: Int, elapsedMs: Double)])]
    }

    /// Whether any cell ran on more than one CPU.
    var hasManyCPUs: Bool { results.contains { ($0.time?.cpuNanoseconds.count ?? 0) > 1 } }

    /// The scaling curves of the grid: only for workloads run with more than one thread count.
    var timeCurves: [TimeCurve] {
        var order: [String] = []
        var byGroup: [String: [CellResult]] = [:]
        for r in results where r.elapsedSimulatedNanoseconds != nil {
            var w = r.cell.workload
            w.threads = 1
            let key = [w.label, r.cell.policyLabel, r.cell.machine].joined(separator: ", ")
            if byGroup[key] == nil { order.append(key) }
            byGroup[key, default: []].append(r)
        }
        return order.compactMap { key in
            let cells = byGroup[key]!
            guard Set(cells.map(\.cell.workload.threads)).count > 1 else { return nil }
            var names: [String] = []
            var points: [String: [(Int, Double)]] = [:]
            var enabledOf: [String: String] = [:]
            for r in cells {
                let name = ([r.cell.enabled] + r.cell.tunables.map { "\($0.name)=\($0.value)" }).joined(separator: " ")
                if points[name] == nil { names.append(name); enabledOf[name] = r.cell.enabled }
                points[name, default: []].append((r.cell.workload.threads, Double(r.elapsedSimulatedNanoseconds!) / 1e6))
            }
            return TimeCurve(label: key, series: names.map { n in
                (n, enabledOf[n]!, points[n]!.sorted { $0.0 < $1.0 }.map { (threads: $0.0, elapsedMs: $0.1) })
            })
        }
    }

    /// The text section: the curves as tables, then each many-CPU cell's lock waits and shootdowns.
    var timeLines: [String] {
        guard hasManyCPUs else { return [] }
        var lines = ["", "Simulated time (elapsed: the slowest CPU's clock; CPUs run in simulated-time order and pay for what they share):"]
        for curve in timeCurves {
            lines.append("")
            lines.append("  \(curve.label): elapsed simulated ms by CPUs (= threads)")
            let threads = Array(Set(curve.series.flatMap { $0.points.map(\.threads) })).sorted()
            let nameWidth = curve.series.map(\.name.count).max() ?? 0
            let widths = threads.map { t in
                max(String(t).count, curve.series.compactMap { s in s.points.first { $0.threads == t }.map { Format.fixed($0.elapsedMs, 2).count } }.max() ?? 0)
            }
            lines.append("    " + Format.pad("CPUs", nameWidth, left: true) + zip(threads, widths).map { "  " + Format.pad(String($0), $1) }.joined())
            for s in curve.series {
                let values = zip(threads, widths).map { t, w in
                    "  " + Format.pad(s.points.first { $0.threads == t }.map { Format.fixed($0.elapsedMs, 2) } ?? "—", w)
                }
                lines.append("    " + Format.pad(s.name, nameWidth, left: true) + values.joined())
            }
        }
        lines.append("")
        for r in results {
            guard let t = r.time, t.cpuNanoseconds.count > 1 else { continue }
            let what = ([r.cell.workload.label, r.cell.policyLabel, r.cell.enabled] + r.cell.tunables.map { "\($0.name)=\($0.value)" })
                .joined(separator: ", ")
            let waits = t.lockWaitNanoseconds.filter { $0.value > 0 }.sorted { $0.value > $1.value }
                .map { "\($0.key) \(Format.fixed(Double($0.value) / 1e6, 3)) ms" }
            lines.append("  \(what): elapsed \(Format.fixed(Double(t.elapsedNanoseconds) / 1e6, 3)) ms on \(t.cpuNanoseconds.count) CPUs, "
                         + "CPU time \(Format.fixed(Double(t.totalCPUNanoseconds) / 1e6, 2)) ms; lock waits: \(waits.isEmpty ? "none" : waits.joined(separator: ", ")); "
                         + "transfers \(Format.fixed(Double(t.transferNanoseconds) / 1e6, 3)) ms, bandwidth stalls \(Format.fixed(Double(t.bandwidthStallNanoseconds) / 1e6, 3)) ms; "
                         + "shootdowns \(t.shootdownsSent.reduce(0, +)) sent, \(t.shootdownsReceived.reduce(0, +)) received")
        }
        return lines
    }

    /// The HTML charts: one line chart per curve, elapsed simulated time against CPUs.
    var timeCharts: [String] {
        timeCurves.enumerated().map { i, curve in
            SVGChart.lines(name: "scaling-\(i)", title: "\(curve.label): elapsed simulated time by CPUs",
                           xLabel: "CPUs (= threads)", yLabel: "elapsed ms",
                           series: curve.series.enumerated().map { k, s in
                               (s.name, Self.stroke(s.enabled, k), s.points.map { (Double($0.threads), $0.elapsedMs) })
                           })
        }
    }
}
