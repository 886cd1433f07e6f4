import Foundation
import Machine
@testable import Experiments

/// Small grids that run in a fraction of a second in a debug build.
enum Small {
    static let machines = ["skylake-sp": MachineDescription.skylakeSP, "zen4": MachineDescription.presets["zen4"]!]

    static func grid(_ workloads: [String] = ["gups", "heap", "forkserver"], size: UInt64 = 8 << 20, accesses: Int = 20_000,
                     enabled: [String] = ["never", "madvise", "always"], tunables: [TunableAxis] = []) -> ExperimentGrid {
        ExperimentGrid(workloads: workloads.map { .synthetic($0, size: size, accesses: accesses) },
                       enabled: enabled, tunables: tunables, memoryBytes: 64 << 20)
    }

    static func run(_ grid: ExperimentGrid, jobs: Int = 1, shard: ExperimentReport.Shard? = nil) throws(ExperimentError) -> ExperimentReport {
        var runner = ExperimentRunner(grid: grid, machines: machines)
        runner.jobs = jobs
        let cells = shard.map { grid.cells(shard: $0.index, of: $0.count) }
        return try runner.run(cells: cells, shard: shard)
    }

    /// A report of the default three workloads, small, computed once for the format tests.
    static let report: ExperimentReport = try! run(grid())

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

/// The built `thpsim` executable beside the test bundle, if there is one (as in ScenarioNativeTests).
enum Binary {
    static var thpsim: URL? {
        let candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent(),
                          URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        return candidates.map { $0.appendingPathComponent("thpsim") }.first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// Runs thpsim; returns its exit status, whether a signal ended it, stdout and stderr.
    static func run(_ arguments: [String], in directory: String? = nil) throws -> (status: Int32, crashed: Bool, out: String, err: String) {
        let p = Process()
        p.executableURL = thpsim
        p.arguments = arguments
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, p.terminationReason == .uncaughtSignal, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }
}

func temporaryFile(_ name: String) -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("thpsim-tests-\(getpid())")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent(name).path
}
