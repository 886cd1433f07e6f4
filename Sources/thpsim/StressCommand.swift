import ArgumentParser
import Kernel
import Workloads
import Simulation

/// `thpsim stress`: concurrent random operations on the kernel model with invariant and byte checks.
struct StressCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stress",
        abstract: "Run random faults, unmaps, splits, pins, DMA, forks and secondary-MMU faults from several simulated CPUs at once, checking every invariant and byte after each round."
    )

    @Option(name: .long, help: "How long to run, in seconds.")
    var seconds: Double = 5

    @Option(name: .long, help: "Simulated CPUs (threads) operating at once.")
    var threads: Int = 2

    @Option(name: .long, help: "Seed of the operations (and, with --deterministic, of the interleaving).")
    var seed: UInt64 = 1

    @Option(name: .long, help: "The design: \(KernelDesign.all.map(\.name).joined(separator: " or ")).")
    var design: String = SystemBuilder.defaultDesign.name

    @Option(name: .long, help: "The lock that guards PMDs: mm (page_table_lock) or pmd (split PMD locks).")
    var lock: String = "mm"

    @Flag(name: .long, help: "Run one CPU at a time under the seeded scheduler, so the run replays exactly.")
    var deterministic = false

    func run() throws {
        guard seconds >= 0, seconds <= 86_400 else { throw ValidationError("--seconds: \(seconds) is not between 0 and 86400") }
        guard (1...64).contains(threads) else { throw ValidationError("--threads: \(threads) is not between 1 and 64") }
        guard var chosen = KernelDesign.named(design) else {
            throw ValidationError("--design: no design '\(design)' (known: \(KernelDesign.all.map(\.name).joined(separator: ", ")))")
        }
        switch lock {
        case "mm": chosen.pmdLock = .pageTableLock
        case "pmd": chosen.pmdLock = .splitPMDLock
        default: throw ValidationError("--lock: '\(lock)' is not mm or pmd")
        }
        var options = StressRun.Options()
        options.seconds = seconds
        options.threads = threads
        options.seed = seed
        options.design = chosen
        options.deterministic = deterministic
        let report = StressRun(options).run()
        // 2.6.38 reads ahead too, but has no counter for it (`swap_ra` came in 4.14).
        let readAhead = chosen.swapReadahead == .adaptive ? "(read ahead \(report.pagesReadAhead))" : "(read-ahead pages not counted by \(design))"
        print("thpsim stress: design \(design), PMD lock \(lock), \(threads) CPUs, \(deterministic ? "deterministic" : "parallel"), seed \(seed)")
        print("  rounds \(report.rounds), operations \(report.operations), invariant checks passed \(report.invariantChecks - (report.failure == nil ? 0 : 1)), pages verified \(report.pagesVerified), pages swapped in \(report.pagesSwappedIn) \(readAhead)")
        if let failure = report.failure {
            print("FAILED: \(failure)")
            print("reproduce: thpsim stress --seed \(seed) --threads \(threads) --lock \(lock)\(deterministic ? " --deterministic" : "") --seconds \(seconds)")
            throw ExitCode(1)
        }
        print("passed")
    }
}
