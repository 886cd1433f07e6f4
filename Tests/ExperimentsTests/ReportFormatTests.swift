import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import Experiments

/// Every key path of a JSON value: objects descend (except the maps named in `opaque`), arrays of
/// objects descend as `key[]`.
func keyPaths(_ value: Any, _ prefix: String = "", opaque: Set<String>) -> Set<String> {
    var out = Set<String>()
    if let object = value as? [String: Any] {
        for (k, v) in object {
            let path = prefix.isEmpty ? k : prefix + "." + k
            out.insert(path)
            if !opaque.contains(path) { out.formUnion(keyPaths(v, path, opaque: opaque)) }
        }
    } else if let array = value as? [Any] {
        for element in array where element is [String: Any] {
            out.formUnion(keyPaths(element, prefix + "[]", opaque: opaque))
        }
    }
    return out
}

@Suite("Report formats")
struct ReportFormatTests {
    /// The keys docs/report-format.md documents: the first backticked word of each table row of its
    /// "Keys" section; `(optional)` in the row marks keys absent when they have no value.
    static func documentedKeys() throws -> (all: Set<String>, optional: Set<String>) {
        let text = try String(contentsOf: Small.packageRoot.appendingPathComponent("docs/report-format.md"), encoding: .utf8)
        var all = Set<String>(), optional = Set<String>()
        var inKeys = false
        for line in text.split(separator: "\n") {
            if line.hasPrefix("## ") { inKeys = line.hasPrefix("## Keys") }
            guard inKeys, line.hasPrefix("| `") else { continue }
            let key = line.dropFirst(3).prefix { $0 != "`" }
            all.insert(String(key))
            if line.contains("(optional)") { optional.insert(String(key)) }
        }
        return (all, optional)
    }

    static let opaque: Set<String> = ["results[].vmstat", "results[].meminfo", "results[].settings", "results[].failedCalls"]

    @Test("JSON: every key is documented in docs/report-format.md, every required documented key is there, and it round-trips")
    func jsonKeys() throws {
        let report = Small.report
        let object = try JSONSerialization.jsonObject(with: Data(report.json.utf8))
        let actual = keyPaths(object, opaque: Self.opaque)
        let (documented, optional) = try Self.documentedKeys()
        #expect(documented.count > 50)
        #expect(actual.subtracting(documented).isEmpty, "undocumented keys: \(actual.subtracting(documented).sorted())")
        let missing = documented.subtracting(optional).subtracting(actual).filter { !$0.hasPrefix("shard") }
        #expect(missing.isEmpty, "documented keys missing: \(missing.sorted())")
        let decoded = try ExperimentReport.decode(Data(report.json.utf8))
        #expect(decoded == report)
        #expect(decoded.json == report.json)
        // The maps use Linux's names.
        let first = try #require((object as? [String: Any])?["results"] as? [[String: Any]]).first!
        let vmstat = try #require(first["vmstat"] as? [String: Int])
        for name in ["pgfault", "thp_fault_alloc", "thp_split_page", "compact_stall", "nr_anon_transparent_hugepages"] {
            #expect(vmstat[name] != nil, "vmstat has \(name)")
        }
        let meminfo = try #require(first["meminfo"] as? [String: Int])
        #expect(meminfo["AnonPages"] != nil && meminfo["AnonHugePages"] != nil && meminfo["MemTotal"] == 64 << 20)
        let estimated = try #require(first["estimatedCycles"] as? Double)
        let fault = try #require(first["faultCycles"] as? Double), access = try #require(first["accessCycles"] as? Double)
        #expect(abs(estimated - fault - access) < 1e-6 * estimated)
    }

    @Test("a report written before the steady state and kills existed still decodes and merges")
    func olderReport() throws {
        var object = try #require(try JSONSerialization.jsonObject(with: Data(Small.report.json.utf8)) as? [String: Any])
        var results = try #require(object["results"] as? [[String: Any]])
        for i in results.indices {
            for key in ["steady", "steadySpeedupVsNever", "kills", "droppedAccesses"] { results[i][key] = nil }
        }
        object["results"] = results
        let old = try ExperimentReport.decode(try JSONSerialization.data(withJSONObject: object))
        #expect(old.results.allSatisfy { $0.completed && $0.steady == nil && $0.status == "ok" })
        let merged = try ExperimentReport.merge([("old.json", old)])
        #expect(merged.results.allSatisfy { $0.steadySpeedupVsNever == nil } && merged.results[0].speedupVsNever == 1)
        #expect(merged.text.contains("—") && !merged.csv.isEmpty && !merged.html.isEmpty)
    }

    @Test("a report that is not JSON, or lacks keys, is refused with the reason")
    func invalidJSON() {
        #expect(throws: ExperimentError.self) { try ExperimentReport.decode(Data("{".utf8)) }
        do {
            _ = try ExperimentReport.decode(Data(#"{"schema": 1, "thpsimVersion": "x"}"#.utf8))
            Issue.record("decoded a report without results")
        } catch {
            #expect(error.description.contains("missing key"))
        }
    }

    @Test("CSV: the documented header, one row per cell, as many fields in each row")
    func csv() throws {
        let report = Small.report
        let lines = report.csv.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(lines.first.map(String.init) == ExperimentReport.csvColumns.joined(separator: ","))
        #expect(lines.count == report.results.count + 1)
        for line in lines { #expect(line.split(separator: ",", omittingEmptySubsequences: false).count == ExperimentReport.csvColumns.count) }
        let doc = try String(contentsOf: Small.packageRoot.appendingPathComponent("docs/report-format.md"), encoding: .utf8)
        #expect(doc.contains(ExperimentReport.csvColumns.joined(separator: ",")), "docs/report-format.md shows the CSV header")
        #expect(ExperimentReport.csvField("a,b") == "\"a,b\"" && ExperimentReport.csvField("say \"x\"") == "\"say \"\"x\"\"\"")
    }

    @Test("HTML: well-formed XML with the bar, over-time and latency charts")
    func html() throws {
        let report = Small.report
        let page = report.html
        final class Collector: NSObject, XMLParserDelegate {
            var charts: [String] = [], marks = 0, svgs = 0
            /// Per chart, its lines: stroke, dash pattern, width and x coordinates.
            var lines: [String: [(stroke: String, dash: String?, width: String, xs: [Double])]] = [:]
            func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                        attributes: [String: String] = [:]) {
                if name == "svg" { svgs += 1; if let c = attributes["data-chart"] { charts.append(c) } }
                if attributes["class"] == "mark" { marks += 1 }
                if name == "polyline", let chart = charts.last {
                    let xs = (attributes["points"] ?? "").split(separator: " ").compactMap { Double($0.split(separator: ",")[0]) }
                    lines[chart, default: []].append((attributes["stroke"] ?? "", attributes["stroke-dasharray"], attributes["stroke-width"] ?? "", xs))
                }
            }
        }
        let parser = XMLParser(data: Data(page.utf8))
        let collector = Collector()
        parser.delegate = collector
        #expect(parser.parse(), "the page parses as XML: \(String(describing: parser.parserError))")
        let groups = report.groups.count
        #expect(groups == 3)
        #expect(collector.charts.contains("estimated-cycles") && collector.charts.contains("tlb-misses")
                && collector.charts.contains("memory") && collector.charts.contains("fault-latency-p99"))
        #expect(collector.charts.filter { $0.hasPrefix("rss-over-time-") }.count == groups)
        #expect(collector.charts.filter { $0.hasPrefix("huge-over-time-") }.count == groups)
        #expect(collector.charts.filter { $0.hasPrefix("fault-latency-") && $0 != "fault-latency-p99" }.count == groups)
        #expect(collector.svgs == 4 + 3 * groups)
        // Bars: two per cell in each of the four bar charts; lines: RSS, AnonHugePages and latency, one per cell each.
        #expect(collector.marks == report.results.count * (4 * 2 + 3))
        #expect(!page.contains("http://") || !page.contains("src=\"http"), "nothing is fetched")

        // Policies' lines differ in dash pattern and width, not only colour (never and always can overlap).
        let rss = try #require(collector.lines["rss-over-time-0"])
        #expect(rss.count == 3)
        #expect(Set(rss.map { "\($0.dash ?? "solid") \($0.width)" }).count == 3, "\(rss.map { ($0.dash, $0.width) })")
        // The latency distributions start a decade below the fastest fault: no line on the y axis.
        for i in 0..<groups {
            let cdf = try #require(collector.lines["fault-latency-\(i)"])
            let minX = try #require(cdf.flatMap(\.xs).min())
            #expect(minX > SVGChart.left + 0.2 * (SVGChart.width - SVGChart.left - SVGChart.right), "fault-latency-\(i) starts at x=\(minX)")
        }
    }

    /// The table's lines from the header's second line to the last row, and the header's first line.
    static func tableLines(_ text: String) -> (top: String, rows: [String]) {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let header = lines.firstIndex { $0.contains("accesses") && $0.contains("collapses") }!
        let end = lines[header...].firstIndex(of: "")!
        return (lines[header - 1], lines[header..<end].filter { !$0.contains(" — ") })
    }

    @Test("the text table: TLB columns named as such, columns aligned with gaps of two spaces, never's speedups 1")
    func text() throws {
        let report = Small.report
        let t = report.text
        for r in report.results { #expect(t.contains(r.cell.workload.label)) }
        #expect(t.components(separatedBy: "\n  never").count - 1 == 3)
        for r in report.results where r.cell.enabled == "never" { #expect(r.speedupVsNever == 1 && r.steadySpeedupVsNever == 1) }
        let (top, rows) = Self.tableLines(t)
        #expect(top.contains("dTLB L1") && top.contains("STLB") && !t.contains("L1 miss/1K"))
        #expect(rows.count == 1 + report.results.count)
        // Every value and the header above it end in the same column, and two spaces or more part them.
        func ends(_ line: String) -> [Int] {
            var out: [Int] = [], i = 0, chars = Array(line)
            while i < chars.count {
                if chars[i] != " " && (i + 1 == chars.count || (chars[i + 1] == " " && (i + 2 >= chars.count || chars[i + 2] == " "))) { out.append(i) }
                i += 1
            }
            return out
        }
        let headerEnds = ends(rows[0])
        #expect(headerEnds.count == ExperimentReport.textColumns.count)
        for row in rows.dropFirst() {
            let e = ends(row)
            #expect(Array(e.suffix(headerEnds.count)) == headerEnds, "\(row)")
        }
        for line in rows { #expect(line.count == rows[0].count) }
    }

    @Test("the footer names each cell's settings: a --set axis with all its values, defaults per design; traces instead of seeds")
    func footer() throws {
        var grid = Small.grid(["gups"], accesses: 1_000, enabled: ["never", "always"],
                              tunables: [TunableAxis(name: "khugepaged/max_ptes_none", values: ["0", "511"])])
        grid.designs = ["linux-2.6.38", "linux-6.18"]
        let t = try Small.run(grid).text
        #expect(t.contains("khugepaged/max_ptes_none=0,511"), "\(t)")
        #expect(t.contains("defrag: linux-2.6.38 always, linux-6.18 madvise"), "\(t)")
        #expect(t.contains("seed 1") && !t.contains("traces"))

        let trace = try RunTests.sparseThenAdviseTrace()
        let traced = try Small.run(ExperimentGrid(workloads: [.trace(trace)], enabled: ["never"], memoryBytes: 64 << 20)).text
        #expect(traced.contains("traces replayed as recorded (no seed): \(trace)"), "\(traced)")
        #expect(!traced.contains("seed 1") && !traced.contains("seeds"), "\(traced)")
    }

    @Test("the whole-run and steady speedups differ where first touch dominates, and both are in JSON and CSV")
    func steadySpeedup() throws {
        let report = try Small.run(Small.grid(["gups"], size: 32 << 20, accesses: 50_000, enabled: ["never", "always"]))
        let always = report.results[1]
        let whole = try #require(always.speedupVsNever), steady = try #require(always.steadySpeedupVsNever)
        let s = try #require(always.steady)
        #expect(s.setUpExcluded && s.accesses == 50_000 && s.faults == 0)
        #expect(whole > steady && steady > 1, "whole \(whole), steady \(steady)")
        #expect(abs(steady - report.results[0].steady!.estimatedCycles / s.estimatedCycles) < 1e-12)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as? [String: Any])
        let results = try #require(object["results"] as? [[String: Any]])
        let jsonSteady = try #require(results[1]["steadySpeedupVsNever"] as? Double), jsonWhole = try #require(results[1]["speedupVsNever"] as? Double)
        #expect(abs(jsonSteady - steady) < 1e-12 && abs(jsonWhole - whole) < 1e-12)
        let csv = report.csv.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        let column = try #require(ExperimentReport.csvColumns.firstIndex(of: "steady_speedup_vs_never"))
        #expect(abs(try #require(Double(csv[2][column])) - steady) < 1e-12)
    }
}
