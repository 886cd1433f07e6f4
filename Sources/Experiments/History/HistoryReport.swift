import Foundation

/// The landmarks' results as text, JSON and a self-contained HTML page (`thpsim history`).
public struct HistoryReport: Sendable, Codable {
    public var thpsimVersion: String
    public var results: [HistoryResult]

    public init(thpsimVersion: String, results: [HistoryResult]) {
        self.thpsimVersion = thpsimVersion
        self.results = results
    }

    /// Every landmark's model numbers go the reported way.
    public var agrees: Bool { results.allSatisfy(\.agrees) }

    /// Each landmark: source, setup, a table of reported against modelled, the verdict and notes.
    public var text: String {
        var out: [String] = []
        for r in results {
            out.append("\(r.title) [\(r.name)]")
            out += Format.wrap("source: " + r.source, width: 100, indent: "  ").map { "  " + $0.drop { $0 == " " } }
            out += Format.wrap("model:  " + r.setup, width: 100, indent: "  ").map { "  " + $0.drop { $0 == " " } }
            let labelWidth = r.figures.map(\.label.count).max() ?? 0
            let reportedWidth = min(48, max(8, r.figures.map(\.reported.count).max() ?? 0))
            out.append("  " + Format.pad("", labelWidth, left: true) + "  " + Format.pad("reported", reportedWidth, left: true) + "  model")
            for f in r.figures {
                out.append("  " + Format.pad(f.label, labelWidth, left: true) + "  " + Format.pad(f.reported, reportedWidth, left: true) + "  " + f.modelled)
            }
            out.append("  direction: \(r.direction): \(r.agrees ? "the model agrees" : "THE MODEL DISAGREES")")
            for note in r.notes { out += Format.wrap("note: " + note, width: 100, indent: "  ").map { "  " + $0.drop { $0 == " " } } }
            out.append("")
        }
        return out.joined(separator: "\n")
    }

    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(self) else { preconditionFailure("a history report always encodes") }
        return String(decoding: data, as: UTF8.self)
    }

    /// One bar chart per landmark and unit (reported beside modelled), the tables, the notes.
    public var html: String {
        let e = SVGChart.escape
        var sections: [String] = []
        var chartCount = 0
        for r in results {
            var charts = ""
            var units: [String] = []
            for f in r.figures where !f.unit.isEmpty && !units.contains(f.unit) { units.append(f.unit) }
            for (u, unit) in units.enumerated() {
                let figures = r.figures.filter { $0.unit == unit }
                guard figures.contains(where: { $0.modelledValue != nil }) else { continue }
                chartCount += 1
                charts += SVGChart.bars(name: "\(r.name)-\(u)", title: "\(r.title): \(unit)", unit: unit,
                                        groups: figures.map(\.label),
                                        series: [("reported", "#6b6b6b"), ("model", "#1f77b4")],
                                        values: figures.map { [$0.reportedValue, $0.modelledValue] },
                                        format: { Format.fixed($0, $0 < 10 ? 2 : 0) })
            }
            if !r.series.isEmpty {
                chartCount += 1
                let strokes = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
                charts += SVGChart.lines(name: "\(r.name)-over-time", title: "\(r.title): over time",
                                         xLabel: r.seriesXLabel, yLabel: r.seriesYLabel,
                                         series: r.series.enumerated().map { i, s in
                                             (s.name, SVGChart.Stroke(color: strokes[i % strokes.count], dash: i == 0 ? nil : "6,3", width: 2),
                                              Array(zip(s.x, s.y)))
                                         })
            }
            var rows = ""
            for f in r.figures { rows += "<tr><td>\(e(f.label))</td><td>\(e(f.reported))</td><td>\(e(f.modelled))</td></tr>\n" }
            let notes = r.notes.map { "<p class=\"note\">\(e($0))</p>" }.joined()
            sections.append("""
            <h2 id="\(e(r.name))">\(e(r.title))</h2>
            <p><b>Source.</b> \(e(r.source))</p>
            <p><b>Model.</b> \(e(r.setup))</p>
            \(charts)
            <table class="figures"><tr><th>setup</th><th>reported</th><th>model</th></tr>
            \(rows)</table>
            <p class="\(r.agrees ? "agrees" : "warning")"><b>Direction.</b> \(e(r.direction)): \(r.agrees ? "the model agrees" : "the model disagrees").</p>
            \(notes)
            """)
        }
        return HTMLPage.render(title: "thpsim history report", style: """
            body { max-width: 1100px; }
            table { font-size: 0.8em; }
            td, th { padding: 2px 4px; text-align: left; }
            .agrees { background: #eaf6ea; padding: 0.6em 1em; }
            """, bodyAttributes: [("data-charts", "\(chartCount)")], body: """
            <h1>thpsim history report</h1>
            <p>thpsim \(e(thpsimVersion)): \(results.count) landmark results of Linux's THP history, the reported figures beside
            the model's (docs/history.md). Grey bars: reported; blue: the model.</p>
            \(sections.joined(separator: "\n"))
            """)
    }
}
