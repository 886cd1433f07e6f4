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
            func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                        attributes: [String: String] = [:]) {
                if name == "svg" { svgs += 1; if let c = attributes["data-chart"] { charts.append(c) } }
                if attributes["class"] == "mark" { marks += 1 }
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
        #expect(collector.charts.filter { $0.hasPrefix("fault-latency-") && $0 != "fault-latency-p99" }.count == groups)
        #expect(collector.svgs == 4 + 2 * groups)
        // Bars: two per cell in each of the four bar charts; lines: two per cell over time, one per cell of latency.
        #expect(collector.marks == report.results.count * (4 * 2 + 2 + 1))
        #expect(!page.contains("http://") || !page.contains("src=\"http"), "nothing is fetched")
    }

    @Test("the text table has a row per cell and the speedup of never is 1")
    func text() {
        let report = Small.report
        let t = report.text
        for r in report.results { #expect(t.contains(r.cell.workload.label)) }
        #expect(t.components(separatedBy: "\n  never").count - 1 == 3)
        for r in report.results where r.cell.enabled == "never" { #expect(r.speedupVsNever == 1) }
    }
}
