import Foundation
import Testing
@testable import Scenarios

/// Every scenario file in `scenarios/` runs on the model, in process (the model needs no fork), except
/// those in `scenarios/pending/`, which specify behaviour the model does not have yet (each names the
/// issue that builds it); they must still parse.
@Suite("Scenarios on the model")
struct ScenarioModelTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func scenarioFiles() -> [String] {
        let folder = root.appendingPathComponent("scenarios")
        guard let walker = FileManager.default.enumerator(atPath: folder.path) else { return [] }
        return walker.compactMap { $0 as? String }.filter { $0.hasSuffix(".scen") && !$0.hasPrefix("pending/") }.sorted()
            .map { folder.appendingPathComponent($0).path }
    }

    static func pendingFiles() -> [String] {
        let folder = root.appendingPathComponent("scenarios/pending")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { $0.hasSuffix(".scen") }.sorted().map { folder.appendingPathComponent($0).path }
    }

    /// The scenarios where both designs agree with Linux 6.18.
    static func sharedTHPFiles() -> [String] {
        let folder = root.appendingPathComponent("scenarios/thp")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { $0.hasSuffix(".scen") }.sorted().map { folder.appendingPathComponent($0).path }
    }

    @Test("each scenario of scenarios/thp passes on the linux-6.18 design too", arguments: sharedTHPFiles())
    func runOnToday(path: String) throws {
        let scenario = try ScenarioParser.parse(try String(contentsOfFile: path, encoding: .utf8), file: path)
        #expect(scenario.design == nil, "scenarios/thp files name no design")
        let report = ScenarioRunner.run(scenario, on: "model") { () throws(ScenarioError) in
            try makeModelScenarioBackend(design: "linux-6.18", memoryBytes: scenario.memoryBytes, swap: scenario.swap)
        }
        #expect(report.passed, "\(report.text)")
        #expect(report.results.allSatisfy { $0.status != .skipped }, "\(report.text)")
    }

    @Test("pending scenarios parse", arguments: pendingFiles())
    func pendingParse(path: String) throws {
        _ = try ScenarioParser.parse(try String(contentsOfFile: path, encoding: .utf8), file: path)
    }

    @Test("the scenarios folder is not empty")
    func filesExist() { #expect(Self.scenarioFiles().count >= 7) }

    @Test("each scenario passes on the model with nothing skipped", arguments: scenarioFiles())
    func runOnModel(path: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let scenario = try ScenarioParser.parse(text, file: path)
        let report = ScenarioRunner.run(scenario, on: "model") { () throws(ScenarioError) in
            try makeModelScenarioBackend(design: scenario.design, memoryBytes: scenario.memoryBytes, swap: scenario.swap)
        }
        #expect(report.passed, "\(report.text)")
        #expect(report.results.allSatisfy { $0.status != .skipped }, "\(report.text)")
        #expect(!report.results.isEmpty)
    }
}
