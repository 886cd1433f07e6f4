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
        let policies = Set(results.map(\.cell.policyLabel)).count > 1, machines = Set(results.map(\.cell.machine)).count > 1
        for r in results where seen.insert(r.cell.groupKey).inserted {
            var label = r.cell.workload.label
            if policies { label += " " + r.cell.policyLabel }
            if machines { label += " " + r.cell.machine }
            if !r.cell.tunables.isEmpty { label += " " + r.cell.tunables.map { "\($0.name.replacingOccurrences(of: "khugepaged/", with: ""))=\($0.value)" }.joined(separator: " ") }
            out.append((label, r.cell.groupKey))
        }
        return out
    }

    /// Each policy's line: colour, and a dash pattern and width of its own, so that lines on top of
    /// each other (never and always with the same RSS) both stay visible; the widest is drawn first.
    static func stroke(_ enabled: String, _ i: Int) -> SVGChart.Stroke {
        switch enabled {
        case "never": SVGChart.Stroke(color: color(enabled, i), dash: nil, width: 4)
        case "madvise": SVGChart.Stroke(color: color(enabled, i), dash: "10,5", width: 2.5)
        case "always": SVGChart.Stroke(color: color(enabled, i), dash: "3,3", width: 2)
        default: SVGChart.Stroke(color: color(enabled, i), dash: "12,3,3,3", width: 1.5)
        }
    }

    /// Cell indices as ranges: `0–2, 5`.
    static func ranges(_ indices: [Int]) -> String {
        var parts: [String] = [], i = 0
        while i < indices.count {
            var j = i
            while j + 1 < indices.count && indices[j + 1] == indices[j] + 1 { j += 1 }
            parts.append(j == i ? "\(indices[i])" : j == i + 1 ? "\(indices[i]), \(indices[j])" : "\(indices[i])–\(indices[j])")
            i = j + 1
        }
        return parts.joined(separator: ", ")
    }

    var policies: [String] {
        var seen = Set<String>()
        return results.map(\.cell.enabled).filter { seen.insert($0).inserted }
    }

    /// The page. Each chart is an `<svg class="chart">`; a small script counts the marks the browser
    /// laid out and records it on `<body data-marks-drawn>` (or the error on `data-script-error`).
    public var html: String {
        let e = SVGChart.escape
        let groups = self.groups, policies = self.policies, notes = footnotes
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
            var rss: [(name: String, stroke: SVGChart.Stroke, points: [(Double, Double)])] = []
            var huge: [(name: String, stroke: SVGChart.Stroke, points: [(Double, Double)])] = []
            var cdfs: [(name: String, stroke: SVGChart.Stroke, points: [(Double, Double)])] = []
            for (k, p) in policies.enumerated() {
                guard let r = cell(g.key, p) else { continue }
                let stroke = Self.stroke(p, k)
                let name = r.completed ? p : p + " (killed)"
                rss.append((name, stroke, r.memoryOverTime.map { (Double($0.accesses) / 1e6, Double($0.anonBytes) / 1048576) }))
                huge.append((name, stroke, r.memoryOverTime.map { (Double($0.accesses) / 1e6, Double($0.anonHugeBytes) / 1048576) }))
                var total = 0.0, points: [(Double, Double)] = []
                let count = Double(r.faults.histogram.reduce(0) { $0 + ($1.count == 2 ? $1[1] : 0) })
                // A step at each bucket: the fraction rises at the bucket's latency and stays until the next.
                for b in r.faults.histogram where b.count == 2 && count > 0 {
                    let us = Double(b[0]) / r.frequencyGHz / 1000
                    points.append((us, total / count))
                    total += Double(b[1])
                    points.append((us, total / count))
                }
                cdfs.append((name, stroke, points))
            }
            let half = SVGChart.width * 0.76
            overTime.append("<div class=\"pair\">"
                + SVGChart.lines(name: "rss-over-time-\(i)", title: "\(g.label): RSS (AnonPages)",
                                 xLabel: "accesses (millions)", yLabel: "MiB", series: rss, width: half)
                + SVGChart.lines(name: "huge-over-time-\(i)", title: "\(g.label): AnonHugePages",
                                 xLabel: "accesses (millions)", yLabel: "MiB", series: huge, width: half)
                + "</div>")
            latency.append(SVGChart.lines(name: "fault-latency-\(i)", title: "\(g.label): fault latency, fraction of faults at or below",
                                          xLabel: "latency (µs, log scale)", yLabel: "fraction of faults", series: cdfs,
                                          logX: true, yMax: 1))
        }

        // Simulated time on many CPUs: the scaling curves, and each many-CPU cell's figures.
        let scaling = timeCharts
        var scalingSection = ""
        if hasManyCPUs {
            scalingSection = "<h2>Simulated time on many CPUs</h2>\n<p>Elapsed: the slowest CPU's simulated clock; CPUs run in "
                + "simulated-time order and pay for the locks, cache lines and memory bandwidth they share (docs/concurrency.md).</p>\n"
                + scaling.joined(separator: "\n")
                + "\n<pre class=\"time\">" + e(timeLines.dropFirst(2).joined(separator: "\n")) + "</pre>"
        }

        var rows = ""
        for r in results {
            let what = [r.cell.workload.label, r.cell.policyLabel, r.cell.machine]
                + r.cell.tunables.map { "\($0.name.replacingOccurrences(of: "khugepaged/", with: ""))=\($0.value)" }
            let status = notes.isEmpty ? "" : "<td class=\"status\">\(e(notes.marker(r)))</td>"
            rows += "<tr\(r.completed ? "" : " class=\"killed\"")><td class=\"what\">\(what.map(e).joined(separator: "<br/>"))</td>"
                + "<td>\(e(r.cell.enabled))</td>\(status)"
                + Self.textValues(r).map { "<td>\(e($0))</td>" }.joined() + "</tr>\n"
        }
        let head = "<th>cell</th><th>enabled</th>" + (notes.isEmpty ? "" : "<th>status</th>")
            + Self.textColumns.map { "<th>\($0.top.isEmpty ? "" : e($0.top) + "<br/>")\(e($0.bottom))</th>" }.joined()
        var noteItems = ""
        for (i, t) in notes.texts.enumerated() { noteItems += "<li value=\"\(i + 1)\">\(e(t))</li>\n" }
        let killed = results.filter { !$0.completed }.count
        let warning = killed == 0 ? "" : "<p class=\"warning\">\(killed) of \(results.count) cells did not complete: a process was killed (see the status column and the notes below the results). Their figures cover the run until then, and no speedup is computed with them.</p>"

        // The settings each run started with besides `enabled` (a column of the results): one column
        // per distinct set, naming its cells.
        var sets: [(settings: [String: String], cells: [Int])] = []
        for r in results {
            let settings = r.settings.filter { $0.key != "enabled" }
            if let i = sets.firstIndex(where: { $0.settings == settings }) { sets[i].cells.append(r.cell.index) } else { sets.append((settings, [r.cell.index])) }
        }
        var settingsRows = ""
        if sets.count > 1 {
            settingsRows += "<tr><th>tunable</th>" + sets.map { "<th>cells \(e(Self.ranges($0.cells)))</th>" }.joined() + "</tr>"
        }
        for k in Set(sets.flatMap(\.settings.keys)).sorted() {
            let values = sets.map { $0.settings[k] ?? "" }
            let differs = Set(values).count > 1
            settingsRows += "<tr\(differs ? " class=\"differs\"" : "")><td>\(e(k))</td>" + values.map { "<td>\(e($0))</td>" }.joined() + "</tr>"
        }
        let seeds = Set(results.compactMap(\.seed)).sorted().map(String.init).joined(separator: ", ")
        let traces = Set(results.compactMap(\.cell.workload.trace)).sorted().joined(separator: ", ")
        var inputs: [String] = []
        if !seeds.isEmpty { inputs.append("seeds: " + seeds) }
        if !traces.isEmpty { inputs.append("traces (replayed as recorded, no seed): " + traces) }
        let shardText = shard.map { " (shard \($0.index)/\($0.count))" } ?? ""

        return HTMLPage.render(title: "thpsim experiment report", style: """
            body { max-width: 1400px; }
            table { font-size: 0.72em; }
            td, th { padding: 2px 3px; text-align: right; }
            th { font-weight: 600; vertical-align: bottom; }
            table.results td:nth-child(-n+3), table.results th:nth-child(-n+3) { text-align: left; }
            table.results td, table.results th { white-space: nowrap; }
            table.results td.what { white-space: normal; overflow-wrap: anywhere; min-width: 7em; max-width: 12em; }
            table.settings td, table.settings th { text-align: left; }
            tr.killed td { background: #fde8e8; } tr.differs td { background: #fff6d6; }
            .table-wrap { max-width: 100%; overflow-x: auto; }
            div.pair { display: flex; flex-wrap: wrap; gap: 0 16px; }
            """, bodyAttributes: [("data-charts", "\(charts.count + 2 * overTime.count + latency.count + scaling.count)")], body: """
        <h1>thpsim experiment report</h1>
        <p>thpsim \(e(thpsimVersion)), report schema \(schema): \(results.count) of \(cellCount) cells\(e(shardText)).
        Designs: \(e(Set(results.map(\.cell.design)).sorted().joined(separator: ", "))); policies:
        \(e(Set(results.map(\.cell.policyName)).sorted().joined(separator: ", "))); machines:
        \(e(Set(results.map { "\($0.cell.machine) (\($0.machineSource))" }).sorted().joined(separator: ", ")))\(inputs.isEmpty ? "" : "; " + e(inputs.joined(separator: "; "))).
        Every count covers the whole run, set-up included; the steady speedup covers the measured accesses alone (set-up
        and first touch excluded). Cycles are the model's estimate (docs/report-format.md).</p>
        \(warning)
        <h2>Policies side by side</h2>
        \(charts.joined(separator: "\n"))
        <h2>RSS and huge pages over the run</h2>
        \(overTime.joined(separator: "\n"))
        <h2>Fault latency distributions</h2>
        \(latency.joined(separator: "\n"))
        \(scalingSection)
        <h2 id="results">Results</h2>
        <div class="table-wrap"><table class="results">
        <tr>\(head)</tr>
        \(rows)</table></div>
        \(noteItems.isEmpty ? "" : "<ol class=\"notes\">\n" + noteItems + "</ol>")
        <p>dTLB L1 miss/1K: accesses per 1,000 that missed every L1 data TLB; STLB miss/1K: those that missed the
        second-level TLB too (a page walk). vs never: enabled=never's estimated cycles over this row's, for the whole
        run (first-touch faults included) and the steady state (the measured accesses alone).</p>
        <h2>Settings at the start of each run</h2>
        <table class="settings">\(settingsRows)</table>
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
            // How wide the page needs to be (its scroll width, or a table's or chart's right edge: a
            // table scrolls inside its box rather than widen the page, and this still sees it), and
            // the width the window shows.
            var width = document.documentElement.scrollWidth, boxes = document.querySelectorAll("table, svg.chart");
            var margin = parseFloat(window.getComputedStyle(document.body).marginRight) || 0;
            for (var j = 0; j < boxes.length; j++) width = Math.max(width, Math.ceil(boxes[j].getBoundingClientRect().right + margin));
            document.body.setAttribute("data-content-width", String(width));
            document.body.setAttribute("data-view-width", String(document.documentElement.clientWidth));
          } catch (err) {
            document.body.setAttribute("data-script-error", String(err));
          }
        })();
        //]]>
        </script>
        """)
    }
}
