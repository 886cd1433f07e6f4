import ArgumentParser
import Foundation
import Workloads
import Simulation

/// `thpsim replay TRACE`: drives a trace (docs/trace-format.md) through the kernel model and a
/// simulated machine, and reports counters, TLB figures, estimated cycles and memory.
/// Exit status: 0 after a replay (even one in which the program got a signal), 2 for a bad trace.
struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Replay a trace through the kernel model and a simulated machine."
    )

    @Argument(help: "Trace file (thpsim workload --out, or thpsim import).")
    var trace: String

    @Option(help: "Simulated CPUs; thread t runs on CPU t mod cpus.")
    var cpus: Int = 1

    @OptionGroup var options: ReplayMachineOptions

    func run() throws {
        guard (1...64).contains(cpus) else { throw ValidationError("--cpus must be 1 to 64") }
        let setup = try options.setup(cpus: cpus, defaultMemory: SystemBuilder.defaultMemoryBytes(footprint: nil))
        if let shortfall = setup.hostShortfall("--memory \(options.memory ?? "8G")", touching: 0) {
            FileHandle.standardError.write(Data("error: \(shortfall)\n".utf8))
            throw ExitCode(1)
        }
        let executor = try setup.makeExecutor()
        let records: Int
        switch Result(catching: { () throws(TraceError) -> Int in
            var reader = try TraceReader(input: try TraceFile(path: trace, mode: .read))
            return try reader.replay(on: executor)
        }) {
        case .success(let n): records = n
        case .failure(let error):
            FileHandle.standardError.write(Data("\(trace): error: \(error)\n".utf8))
            throw ExitCode(2)
        }
        var report = executor.finish()
        report.records = records
        options.print(report)
    }
}
