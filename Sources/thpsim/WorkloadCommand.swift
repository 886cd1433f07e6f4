import ArgumentParser
import Foundation
import VMCore
import Workloads
import Simulation

/// `thpsim workload NAME`: runs a synthetic workload on the kernel model and a simulated machine,
/// or writes it as a trace with `--out`.
struct WorkloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workload",
        abstract: "Run a synthetic workload (\(SyntheticWorkload.allCases.map(\.rawValue).joined(separator: ", "))), or write it as a trace."
    )

    @Argument(help: "Workload: \(SyntheticWorkload.allCases.map(\.rawValue).joined(separator: ", ")).")
    var name: String

    @Option(parsing: .unconditional, help: "Footprint (e.g. 4G), a multiple of 4K.")
    var size: String = "256M"

    @Option(parsing: .unconditional, help: "Accesses of the measured phase (e.g. 20M = 20 000 000).")
    var accesses: String = "1M"

    @Option(help: "Threads (1 to 64); each runs on its own simulated CPU.")
    var threads: Int = 1

    @Option(parsing: .unconditional, help: "Random seed.")
    var seed: UInt64 = 1

    @Option(parsing: .unconditional, help: "Bytes between accesses of the stride workload.")
    var stride: String = "4K"

    @Flag(help: "The synthetic workloads advise their memory with MADV_HUGEPAGE (what enabled=madvise acts on).")
    var advise = false

    @Option(parsing: .unconditional, help: "Simulated time the synthetic workloads sleep after set-up, before the measured accesses (e.g. 30s, 500ms; default 0): khugepaged and the policies' threads act meanwhile.")
    var settle: String = "0"

    @Option(help: "Write the workload as a trace file instead of running it.")
    var out: String?

    @OptionGroup var options: ReplayMachineOptions

    func run() throws {
        guard let workload = SyntheticWorkload(rawValue: name) else {
            throw ValidationError("unknown workload '\(name)' (one of \(SyntheticWorkload.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let bytes = try parseSize(size, option: "--size"), strideBytes = try parseSize(stride, option: "--stride")
        var p = SyntheticParameters(size: bytes, accesses: try parseCount(accesses, option: "--accesses"), threads: threads, seed: seed)
        p.stride = strideBytes
        p.adviseHugepage = advise
        p.settleMilliseconds = try parseMilliseconds(settle, option: "--settle")
        if let problem = p.problem { throw ValidationError(problem) }

        if let out {
            let written = Result(catching: { () throws(TraceError) -> Int in
                let file = try TraceFile(path: out, mode: .write)
                var writer = try TraceWriter(output: file)
                workload.generate(p, into: &writer)
                _ = try writer.finish()
                try file.close()
                return writer.records
            })
            switch written {
            case .success(let records): print("\(out): \(records) records")
            case .failure(let error):
                FileHandle.standardError.write(Data("\(out): error: \(error)\n".utf8))
                throw ExitCode(1)
            }
            return
        }
        let setup = try options.setup(cpus: threads, defaultMemory: SystemBuilder.defaultMemoryBytes(footprint: bytes))
        if let shortfall = setup.hostShortfall("--size \(size)", touching: bytes) {
            FileHandle.standardError.write(Data("error: \(shortfall)\n".utf8))
            throw ExitCode(1)
        }
        var executor = try setup.makeExecutor()
        workload.generate(p, into: &executor)
        options.print(executor.finish())
    }
}
