import Testing
import Kernel
@testable import Simulation

@Suite("thpsim stress: concurrent random operations with invariant and byte checks", .serialized)
struct StressTests {
    /// A run of `threads` CPUs on `design` from `seed`: one CPU at a time under the seeded scheduler
    /// for `rounds` rounds, or parallel threads for `seconds` when `rounds` is nil.
    static func run(design: KernelDesign = StressRun.Options().design, threads: Int, seed: UInt64,
                    rounds: Int? = nil, seconds: Double = 0) -> StressRun.Report {
        var options = StressRun.Options()
        options.design = design
        options.threads = threads
        options.seed = seed
        options.deterministic = rounds != nil
        options.rounds = rounds
        options.seconds = seconds
        return StressRun(options).run()
    }

    @Test("deterministic rounds with 3 simulated CPUs pass, for each lock", arguments: [KernelDesign.PMDLockGranularity.pageTableLock, .splitPMDLock])
    func deterministic(lock: KernelDesign.PMDLockGranularity) {
        var design = StressRun.Options().design
        design.pmdLock = lock
        for seed in UInt64(1)...3 {
            let report = Self.run(design: design, threads: 3, seed: seed, rounds: 1)
            #expect(report.failure == nil, "seed \(seed): \(report.failure ?? "")")
            #expect(report.rounds == 1 && report.operations == 450 && report.pagesVerified > 0)
        }
    }

    @Test("linux-6.18, eight deterministic rounds of seed 7: swap readahead interleaved with reclaim, pageout and faults")
    func readaheadRounds() {
        // Found by this run: read-ahead took the LRU lock (a scheduling point) inside the swap
        // device's leaf lock, and another CPU spun on the device lock forever.
        var design = KernelDesign.linux6_18
        design.pmdLock = .pageTableLock   // `thpsim stress`'s default, `--lock mm`
        let report = Self.run(design: design, threads: 3, seed: 7, rounds: 8)
        #expect(report.failure == nil, "\(report.failure ?? "")")
        #expect(report.rounds == 8 && report.pagesReadAhead > 0)
    }

    @Test("two parallel CPUs for two seconds pass, with the split PMD lock")
    func parallel() {
        var design = StressRun.Options().design
        design.pmdLock = .splitPMDLock
        let report = Self.run(design: design, threads: 2, seed: 7, seconds: 2)
        #expect(report.failure == nil, "\(report.failure ?? "")")
        #expect(report.invariantChecks >= 1 && report.pagesVerified > 0)
    }

    @Test("linux-6.18: deterministic rounds and two parallel CPUs pass (PTE-mapped THPs, folio splits, FOLL_PIN, swap readahead)")
    func today() {
        var readAhead = 0
        for seed in UInt64(1)...3 {
            let report = Self.run(design: .linux6_18, threads: 3, seed: seed, rounds: 1)
            #expect(report.failure == nil, "seed \(seed): \(report.failure ?? "")")
            #expect(report.rounds == 1 && report.pagesVerified > 0)
            readAhead += report.pagesReadAhead
        }
        // Reclaim frees pages MADV_PAGEOUT left in the swap cache, so touches read the device and
        // read ahead, interleaved with the other CPUs' operations.
        #expect(readAhead > 0)
        let report = Self.run(design: .linux6_18, threads: 2, seed: 11, seconds: 2)
        #expect(report.failure == nil, "\(report.failure ?? "")")
        #expect(report.invariantChecks >= 1 && report.pagesVerified > 0)
    }
}
