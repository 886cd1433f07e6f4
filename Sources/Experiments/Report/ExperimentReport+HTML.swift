import Foundation

/// A self-contained report page: inline CSS and SVG, nothing fetched. It is well-formed XML
/// (XHTML syntax), so it can be checked with an XML parser as well as shown by a browser.
extension ExperimentReport {
    static func color(_ enabled: String, _ i: Int) -> String {
        switch enabled {
        case "never": "#6b6b6b"
        case "madvise": "#1f77b4"
        case "always": "#d62728"
        default: ["#2ca02c", "#9467bd", "#8c564b", "#e377c2"][i % 4]
        }
    }

    /// The groups of cells that differ only in `enabled`, in order, with a label that names only
    /// what varies in the grid.
    var groups: [(label: String, key: String)] {
        var seen = Set<String>(), out: [(String, String)] = []
        let designs = Set(results.map(\.cell.design)).count > 1, machines = Set(results.map(\.cell.machine)).count > 1
        for r in results where seen.insert(r.cell.groupKey).inserted {
            var label = r.cell.workload.label
            if designs { label += " " + r.cell.design }
            if machines { label += " " + r.cell.machine }
            if !r.cell.tunables.isEmpty { label += " " + r.cell.tunables.map { "\($0.name.replacingOccurrences(of: "khugepaged/", with: ""))=\($0.value)" }.joined(separator: " ") }
            out.append((label, r.cell.groupKey))
        }
        return out
    }

    var policies: [String] {
        var seen = Set<String>()
        return results.map(\.cell.enabled).filter { seen.insert($0).inserted }
    }

    /// The page. Each chart is an `<svg class="chart">`; a small script counts the marks the browser
    /// laid out and records it on `<body data-marks-drawn>` (or the error on `data-script-error`).
    public var html: String {
        let e = SVGChart.escape
        let groups = self.groups, policies = self.policies
        let series = policies.enumerated().map { (name: $0.element, color: Self.color($0.element, $0.offset)) }
        func cell(_ g: String, _ p: String) -> CellResult? { results.first { $0.cell.groupKey == g && $0.cell.enabled == p } }
        func values(_ f: (CellResult) -> Double) -> [[Double?]] { groups.map { g in policies.map { p in cell(g.key, p).map(f) } } }
        let labels = groups.map(\.label)

        var charts: [String] = []
        charts.append(SVGChart.bars(name: "estimated-cycles", title: "Estimated cycles (million): faults solid, accesses pale",
                                    unit: "million cycles", groups: labels, series: series,
                                    values: values { $0.estimatedCycles / 1e6 }, lower: values { $0.faultCycles / 1e6 },
                                    lowerLabel: "fault cycles", format: { Format.fixed($0, $0 < 10 ? 1 : 0) }))
        charts.append(SVGChart.bars(name: "tlb-misses", title: "TLB misses per 1,000 accesses: page walks solid, L1 misses pale",
                                    unit: "per 1,000 accesses", groups: labels, series: series,
                                    values: values(\.tlb.l1MissesPerKilo), lower: values(\.tlb.l2MissesPerKilo),
                                    lowerLabel: "L2 misses (walks)", format: { Format.fixed($0, 0) }))
        charts.append(SVGChart.bars(name: "memory", title: "Peak RSS (pale) and bytes touched (solid): the gap is bloat",
                                    unit: "MiB", groups: labels, series: series,
                                    values: values { Double($0.memory.rssBytes) / 1048576 },
                                    lower: values { Double(min($0.memory.touchedBytes, $0.memory.rssBytes)) / 1048576 },
                                    lowerLabel: "touched", format: { Format.fixed($0, 0) }))
        charts.append(SVGChart.bars(name: "fault-latency-p99", title: "Fault latency, µs: p50 solid, p99 pale",
                                    unit: "µs", groups: labels, series: series,
                                    values: values { Double($0.faults.p99Cycles) / $0.frequencyGHz / 1000 },
                                    lower: values { Double($0.faults.p50Cycles) / $0.frequencyGHz / 1000 },
                                    lowerLabel: "p50", format: { Format.fixed($0, $0 < 10 ? 1 : 0) }))
        var overTime: [String] = [], latency: [String] = []
        for (i, g) in groups.enumerated() {
            var lines: [(name: String, color: String, dashed: Bool, points: [(Double, Double)])] = []
            var cdfs: [(name: String, color: String, dashed: Bool, points: [(Double, Double)])] = []
            for (k, p) in policies.enumerated() {
                guard let r = cell(g.key, p) else { continue }
                let color = Self.color(p, k)
                lines.append((p, color, false, r.memoryOverTime.map { (Double($0.accesses) / 1e6, Double($0.anonBytes) / 1048576) }))
                lines.append((p + " AnonHugePages", color, true, r.memoryOverTime.map { (Double($0.accesses) / 1e6, Double($0.anonHugeBytes) / 1048576) }))
                var total = 0.0, points: [(Double, Double)] = []
                let count = Double(r.faults.histogram.reduce(0) { $0 + ($1.count == 2 ? $1[1] : 0) })
                for b in r.faults.histogram where b.count == 2 && count > 0 {
                    total += Double(b[1])
                    points.append((Double(b[0]) / r.frequencyGHz / 1000, total / count))
                }
                if let first = points.first { points.insert((first.0, 0), at: 0) }
                cdfs.append((p, color, false, points))
            }
            overTime.append(SVGChart.lines(name: "rss-over-time-\(i)", title: "\(g.label): RSS (solid) and AnonHugePages (dashed)",
                                           xLabel: "accesses (millions)", yLabel: "MiB", series: lines))
            latency.append(SVGChart.lines(name: "fault-latency-\(i)", title: "\(g.label): fault latency, fraction of faults at or below",
                                          xLabel: "latency (µs, log scale)", yLabel: "fraction of faults", series: cdfs,
                                          logX: true, yMax: 1))
        }

        var rows = ""
        for r in results {
            let v = [r.cell.workload.label, r.cell.design, r.cell.machine,
                     r.cell.tunables.map { "\($0.name)=\($0.value)" }.joined(separator: " "), r.cell.enabled]
                + Self.textValues(r)
            rows += "<tr>" + v.map { "<td>\(e($0))</td>" }.joined() + "</tr>\n"
        }
        let head = ["workload", "design", "machine", "tunables", "enabled"] + Self.textColumns.map(\.title)
        var settingsRows = ""
        if let s = results.first?.settings {
            for k in s.keys.sorted() { settingsRows += "<tr><td>\(e(k))</td><td>\(e(s[k]!))</td></tr>" }
        }
        let seeds = Set(results.compactMap(\.seed)).sorted().map(String.init).joined(separator: ", ")
        let shardText = shard.map { " (shard \($0.index)/\($0.count))" } ?? ""

        return """
        <!DOCTYPE html>
        <html xmlns="http://www.w3.org/1999/xhtml" lang="en">
        <head>
        <meta charset="utf-8"/>
        <title>thpsim experiment report</title>
        <style>
        body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
        h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
        table { border-collapse: collapse; font-size: 0.85em; }
        td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
        td:nth-child(-n+5), th:nth-child(-n+5) { text-align: left; }
        svg.chart { display: block; margin: 1em 0; background: #fff; }
        .grid { stroke: #e3e3e3; } .tick { font-size: 11px; fill: #444; }
        .axis-label { font-size: 12px; fill: #333; } .chart-title { font-size: 13px; font-weight: 600; }
        </style>
        </head>
        <body data-charts="\(charts.count + overTime.count + latency.count)">
        <h1>thpsim experiment report</h1>
        <p>thpsim \(e(thpsimVersion)), report schema \(schema): \(results.count) of \(cellCount) cells\(e(shardText)).
        Designs: \(e(Set(results.map(\.cell.design)).sorted().joined(separator: ", "))); machines:
        \(e(Set(results.map { "\($0.cell.machine) (\($0.machineSource))" }).sorted().joined(separator: ", "))); seeds: \(e(seeds)).
        Every count covers the whole run, set-up included; cycles are the model's estimate (docs/report-format.md).</p>
        <h2>Policies side by side</h2>
        \(charts.joined(separator: "\n"))
        <h2>RSS and huge pages over the run</h2>
        \(overTime.joined(separator: "\n"))
        <h2>Fault latency distributions</h2>
        \(latency.joined(separator: "\n"))
        <h2>Results</h2>
        <table>
        <tr>\(head.map { "<th>\(e($0))</th>" }.joined())</tr>
        \(rows)</table>
        <h2>Settings at the start of each run</h2>
        <table>\(settingsRows)</table>
        <script>
        //<![CDATA[
        (function () {
          try {
            var marks = document.querySelectorAll("svg.chart .mark"), drawn = 0;
            for (var i = 0; i < marks.length; i++) {
              var b = marks[i].getBBox();
              if (b.width > 0 || b.height > 0) drawn++;
            }
            document.body.setAttribute("data-marks", String(marks.length));
            document.body.setAttribute("data-marks-drawn", String(drawn));
          } catch (err) {
            document.body.setAttribute("data-script-error", String(err));
          }
        })();
        //]]>
        </script>
        </body>
        </html>

        """
    }
}
