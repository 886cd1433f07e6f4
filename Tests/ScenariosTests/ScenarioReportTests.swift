import Foundation
import Testing
@testable import Scenarios

/// The text and JSON reports: stable keys, failures with file:line, comparisons side by side.
@Suite("Scenario reports")
struct ScenarioReportTests {
    static func sampleReport(backend: String = "model", observed: String = "Rss = 8 kB", status: ExpectationResult.Status = .failed) -> ScenarioReport {
        var report = ScenarioReport(file: "s.scen", backend: backend)
        report.results = [
            ExpectationResult(location: SourceLocation(file: "s.scen", line: 4), index: 0, check: "Rss=12kB",
                              status: status, expected: "Rss = 12 kB", observed: observed),
            ExpectationResult(location: SourceLocation(file: "s.scen", line: 6), index: 0, check: "expect data A 4M",
                              status: .skipped, expected: "", observed: "", reason: "no debugfs"),
        ]
        report.notes = ["a note"]
        return report
    }

    @Test("the text report shows failures with file:line, expected and observed, then skips and a summary")
    func text() {
        let text = Self.sampleReport().text
        #expect(text.contains("s.scen:4: FAIL Rss=12kB\n    expected: Rss = 12 kB\n    observed: Rss = 8 kB"))
        #expect(text.contains("s.scen:6: skipped expect data A 4M: no debugfs"))
        #expect(text.hasSuffix("s.scen [model]: FAIL — 0 passed, 1 failed, 1 skipped"))
    }

    @Test("the JSON report has the documented keys, with null for absent values")
    func json() throws {
        let text = ScenarioJSON.render([Self.sampleReport()], mode: "model")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["mode", "passed", "scenarios"])
        #expect(object["passed"] as? Bool == false)
        let scenario = try #require((object["scenarios"] as? [[String: Any]])?.first)
        #expect(Set(scenario.keys) == ["file", "backend", "passed", "skipped", "attempts", "error", "notes", "counts", "expectations"])
        #expect(scenario["skipped"] is NSNull && scenario["error"] is NSNull)
        #expect((scenario["counts"] as? [String: Int]) == ["passed": 0, "failed": 1, "skipped": 1])
        let check = try #require((scenario["expectations"] as? [[String: Any]])?.first)
        #expect(Set(check.keys) == ["line", "index", "check", "status", "expected", "observed", "reason"])
        #expect(check["line"] as? Int == 4 && check["status"] as? String == "failed")
    }

    @Test("a comparison pairs each check of the model and the kernel and says whether they agree")
    func comparison() throws {
        let comparison = ScenarioComparison(model: Self.sampleReport(),
                                            native: Self.sampleReport(backend: "native", observed: "Rss = 12 kB", status: .passed))
        #expect(!comparison.passed)
        #expect(comparison.rows.count == 2)
        #expect(comparison.text.contains("s.scen:4: Rss=12kB\n    model:  FAIL (expected Rss = 12 kB; observed Rss = 8 kB)\n    kernel: pass (Rss = 12 kB)"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(ScenarioJSON.render([comparison]).utf8)) as? [String: Any])
        #expect(object["mode"] as? String == "compare")
        let scenario = try #require((object["scenarios"] as? [[String: Any]])?.first)
        #expect(Set(scenario.keys) == ["file", "passed", "model", "native", "expectations"])
        let rows = try #require(scenario["expectations"] as? [[String: Any]])
        #expect(rows.map { $0["agree"] as? Bool } == [false, true])
        #expect(Set(rows[0].keys) == ["line", "index", "check", "model", "native", "agree"])
    }

    @Test("errors print as file:line: message")
    func errorDescription() {
        #expect(ScenarioError("bad", at: SourceLocation(file: "x.scen", line: 3)).description == "x.scen:3: bad")
        #expect(ScenarioError.unsupported("why").description == "why")
    }
}
