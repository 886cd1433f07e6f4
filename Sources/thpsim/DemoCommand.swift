import ArgumentParser
import VMCore
import PhysicalMemory
import Experiments
import Simulation

/// `thpsim demo`: a guided demonstration of the 2010 design's huge pages (fault, huge zero page,
/// fork and copy-on-write, a split by partial munmap) with the Linux-format counters after it.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the built-in demonstration and print /proc-format counters."
    )

    @Option(name: .long, help: "Simulated physical memory (e.g. 512M, 4G).")
    var memory: String = "1G"

    @Option(name: .long, help: "Storage mode: data (frames hold bytes) or metadata (16 bytes per frame).")
    var mode: String = "data"

    @Option(name: .long, help: "Size of the demonstration's mapping (e.g. 64M).")
    var region: String = "64M"

    func run() throws {
        guard let memoryBytes = ByteCount.parse(memory) else {
            throw ValidationError("--memory: '\(memory)' is not a size (use a number with K, M or G, e.g. 4G)")
        }
        if let problem = PhysicalMemory.problem(withSize: memoryBytes) { throw ValidationError("--memory: \(problem)") }
        guard let storage = PhysicalMemory.Mode(rawValue: mode) else {
            throw ValidationError("--mode: '\(mode)' is not a mode (data or metadata)")
        }
        guard let regionBytes = ByteCount.parse(region), regionBytes >= 16384, regionBytes % 4096 == 0 else {
            throw ValidationError("--region: '\(region)' is not a multiple of 4K of at least 16K")
        }
        let demonstration = Demonstration(memoryBytes: memoryBytes, mode: storage, regionBytes: regionBytes)
        let report: Demonstration.Report
        do {
            report = try demonstration.run()
        } catch {
            throw ValidationError(error.description)
        }
        let boot = demonstration.system.bootSettings
        print("thpsim demonstration (design: \(demonstration.design), enabled=\(boot.enabled.rawValue) use_zero_page=\(boot.useZeroPage ? 1 : 0);"
              + " memory \(memory), \(mode) mode)\n")
        for (i, step) in report.steps.enumerated() { print("  \(i + 1). \(step)") }
        print("\n== /proc/PID/smaps (parent) ==")
        print(report.smaps, terminator: "")
        print("\n== /proc/meminfo ==")
        print(report.meminfo, terminator: "")
        print("\n== /proc/vmstat (non-zero) ==")
        for line in report.vmstat.split(separator: "\n") where !line.hasSuffix(" 0") { print(line) }
        if !report.problems.isEmpty {
            print("\nINVARIANT VIOLATIONS:")
            for p in report.problems { print("  \(p)") }
            throw ExitCode(1)
        }
    }
}
