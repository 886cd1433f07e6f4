import Testing
import Kernel
@testable import Simulation

@Suite("thpsim stress: concurrent random operations with invariant and byte checks", .serialized)
struct StressTests {
    @Test("deterministic rounds with 3 simulated CPUs pass, for each lock", arguments: [KernelDesign.PMDLockGranularity.pageTableLock, .splitPMDLock])
    func deterministic(lock: KernelDesign.PMDLockGranularity) {
        for seed in UInt64(1)...3 {
            var options = StressRun.Options()
            options.seconds = 0   // one round
            options.threads = 3
            options.seed = seed
            options.deterministic = true
            options.design.pmdLock = lock
            let report = StressRun(options).run()
            #expect(report.failure == nil, "seed \(seed): \(report.failure ?? "")")
            #expect(report.rounds == 1 && report.operations == 450 && report.pagesVerified > 0)
        }
    }

    @Test("linux-6.18, eight deterministic rounds of seed 7: swap readahead interleaved with reclaim, pageout and faults")
    func readaheadRounds() {
        // Found by this run: read-ahead took the LRU lock (a scheduling point) inside the swap
        // device's leaf lock, and another CPU spun on the device lock forever.
        var options = StressRun.Options()
        options.rounds = 8
        options.threads = 3
        options.seed = 7
        options.deterministic = true
        options.design = .linux6_18
        options.design.pmdLock = .pageTableLock   // `thpsim stress`'s default, `--lock mm`
        let report = StressRun(options).run()
        #expect(report.failure == nil, "\(report.failure ?? "")")
        #expect(report.rounds == 8 && report.pagesReadAhead > 0)
    }

    @Test("two parallel CPUs for two seconds pass, with the split PMD lock")
    func parallel() {
        var options = StressRun.Options()
        options.seconds = 2
        options.threads = 2
        options.seed = 7
        options.design.pmdLock = .splitPMDLock
        let report = StressRun(options).run()
        #expect(report.failure == nil, "\(report.failure ?? "")")
        #expect(report.invariantChecks >= 1 && report.pagesVerified > 0)
    }

    @Test("linux-6.18: deterministic rounds and two parallel CPUs pass (PTE-mapped THPs, folio splits, FOLL_PIN, swap readahead)")
    func today() {
        var readAhead = 0
        for seed in UInt64(1)...3 {
            var options = StressRun.Options()
            options.seconds = 0
            options.threads = 3
            options.seed = seed
            options.deterministic = true
            options.design = .linux6_18
            let report = StressRun(options).run()
            #expect(report.failure == nil, "seed \(seed): \(report.failure ?? "")")
            #expect(report.rounds == 1 && report.pagesVerified > 0)
            readAhead += report.pagesReadAhead
        }
        // Reclaim frees pages MADV_PAGEOUT left in the swap cache, so touches read the device and
        // read ahead, interleaved with the other CPUs' operations.
        #expect(readAhead > 0)
        var options = StressRun.Options()
        options.seconds = 2
        options.threads = 2
        options.seed = 11
        options.design = .linux6_18
        let report = StressRun(options).run()
        #expect(report.failure == nil, "\(report.failure ?? "")")
        #expect(report.invariantChecks >= 1 && report.pagesVerified > 0)
    }
}
