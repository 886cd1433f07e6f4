import ArgumentParser
import Foundation
import Scenarios
import Simulation
import Kernel

/// `thpsim scenario FILE...`: runs scenario files on the model, natively, or both (docs/scenarios.md).
///
/// Every file is parsed and checked before any runs. Exit status: 0 if every expectation held
/// (skips do not fail), 1 if one failed or a run stopped, 2 if a file is malformed, unreadable or
/// has no `expect` line.
struct ScenarioCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scenario",
        abstract: "Run scenario files: system calls and touches with expectations, on the model or the live kernel."
    )

    @Argument(help: "Scenario files (.scen).")
    var files: [String]

    @Flag(help: "Run on this machine's kernel with real system calls (needs root).")
    var native = false

    @Flag(help: "Run on the model and natively, and report each expectation side by side.")
    var compare = false

    @Flag(help: "Print a machine-readable JSON report.")
    var json = false

    @Flag(help: "With --compare: print the conformance tables in Markdown (docs/conformance.md).")
    var markdown = false

    @Option(help: "The model's design for files without a `design` line: \(KernelDesign.all.map(\.name).joined(separator: ", ")) (default \(SystemBuilder.defaultDesign.name)).")
    var design: String?

    func validate() throws {
        if native && compare { throw ValidationError("--native and --compare exclude each other") }
        if markdown && (!compare || json) { throw ValidationError("--markdown needs --compare and excludes --json") }
        if let design, KernelDesign.named(design) == nil {
            throw ValidationError("--design: no design '\(design)' (known: \(KernelDesign.all.map(\.name).joined(separator: ", ")))")
        }
    }

    func run() throws {
        var scenarios: [Scenario] = []
        var texts: [String: String] = [:]
        for file in files {
            do {
                let (text, scenario) = try ScenarioParser.load(contentsOf: file)
                texts[file] = text
                scenarios.append(scenario)
            } catch {
                FileHandle.standardError.write(Data("\(error.location?.description ?? file): error: \(error.message)\n".utf8))
                throw ExitCode(2)
            }
        }
        let model: (Scenario) -> () throws(ScenarioError) -> any ScenarioBackend = { scenario in
            { () throws(ScenarioError) in try makeModelScenarioBackend(design: scenario.design ?? design, memoryBytes: scenario.memoryBytes, swap: scenario.swap) }
        }
        let passed: Bool
        if compare {
            let comparisons = scenarios.map {
                ScenarioRunner.compare($0, model: model($0), native: { () throws(ScenarioError) in try makeNativeScenarioBackend() })
            }
            if markdown {
                print(ScenarioComparison.markdown(comparisons, texts: texts))
            } else {
                print(json ? ScenarioJSON.render(comparisons) : comparisons.map(\.text).joined(separator: "\n\n"))
            }
            passed = comparisons.allSatisfy(\.passed)
        } else {
            let reports = scenarios.map { scenario in
                native ? ScenarioRunner.run(scenario, on: "native", makeBackend: { () throws(ScenarioError) in try makeNativeScenarioBackend() })
                       : ScenarioRunner.run(scenario, on: "model", makeBackend: model(scenario))
            }
            print(json ? ScenarioJSON.render(reports, mode: native ? "native" : "model") : reports.map(\.text).joined(separator: "\n\n"))
            passed = reports.allSatisfy(\.passed)
        }
        if !passed { throw ExitCode(1) }
    }
}
