import Foundation
import Testing
@testable import Scenarios

/// Every scenario file in `scenarios/` runs on the model, in process (the model needs no fork), and
/// passes with nothing skipped. There is no folder of scenarios that are only parsed: a behaviour the
/// model does not have yet is an issue, not a scenario file.
@Suite("Scenarios on the model")
struct ScenarioModelTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func scenarioFiles() -> [String] {
        let folder = root.appendingPathComponent("scenarios")
        guard let walker = FileManager.default.enumerator(atPath: folder.path) else { return [] }
        return walker.compactMap { $0 as? String }.filter { $0.hasSuffix(".scen") }.sorted()
            .map { folder.appendingPathComponent($0).path }
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

    /// The folders docs/scenarios.md describes. The tests above take their files as arguments, and a
    /// test with no arguments runs no case and cannot fail, so a folder that is moved or emptied must
    /// fail here.
    static let folders = ["native-smoke", "thp", "thp-2.6.38", "thp-6.18", "model", "cgroup"]

    @Test("every scenario folder the docs describe holds scenarios, and every scenario is in one of them")
    func filesExist() throws {
        let files = Self.scenarioFiles()
        let folder = Self.root.appendingPathComponent("scenarios").path + "/"
        let relative = files.map { String($0.dropFirst(folder.count)) }
        for name in Self.folders {
            #expect(relative.contains { $0.hasPrefix(name + "/") }, "no scenario in scenarios/\(name)")
        }
        #expect(relative.allSatisfy { path in Self.folders.contains { path.hasPrefix($0 + "/") } }, "\(relative)")
        #expect(Self.sharedTHPFiles().count == relative.count { $0.hasPrefix("thp/") })
    }

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
