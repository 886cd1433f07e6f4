import Testing
import VMCore
import Kernel
@testable import Machine
import TestSupport

@Suite("Split locks' timelines are kept down to their last reservation once it ends by the horizon")
struct SplitLockCompactionTests {
    @Test("a compacted timeline answers requests at or after the horizon as the whole one does",
          arguments: [1, 2, 3])
    func compactedAnswersAlike(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var compactions = 0
        // Rounds short enough that the whole timeline never passes its capacity (so it forgets nothing).
        for round in 0..<40 {
            let whole = Timeline(), compacted = Timeline()
            var horizon = 0.0
            for step in 0..<200 {
                // Requests from the horizon to a little past it, by 8 CPUs; the horizon creeps forward,
                // and now and then leaps past every reservation.
                let t = horizon + Double.random(in: 0..<600, using: &rng)
                let cpu = Int.random(in: 0..<8, using: &rng)
                let hold = Double.random(in: 10..<300, using: &rng)
                let a = whole.reserve(at: t, horizon: horizon, cpu: cpu) { _, _ in hold }
                let b = compacted.reserve(at: t, horizon: horizon, cpu: cpu) { _, _ in hold }
                #expect(a == b, "round \(round), step \(step)")
                if a != b { return }
                horizon += step % 10 == 9 ? 2_000 : Double.random(in: 0..<200, using: &rng)
                let before = compacted.storageBytes
                if compacted.compact(horizon: horizon) && compacted.storageBytes < before { compactions += 1 }
            }
        }
        #expect(compactions > 400, "\(compactions) compactions")
    }

    @Test("compacting keeps only the last reservation, and only when every reservation ended by the horizon")
    func compactsOnlyWhatEnded() {
        let t = Timeline()
        for i in 0..<100 { _ = t.reserve(at: Double(i) * 100, cpu: i % 3) { _, _ in 50 } }
        let early = t.compact(horizon: 9_949)
        #expect(!early, "the last reservation ends at 9,950")
        #expect(t.storageBytes >= 100 * 24)
        let compacted = t.compact(horizon: 9_950)
        #expect(compacted)
        // Room for two: each an interval (24 bytes), its gap and the holder before it (4 and 4).
        #expect(t.storageBytes <= 2 * 32)
        // The next holder's transfer is from CPU 99 % 3 = 0; a request for an earlier time waits for what was dropped.
        #expect(t.reserve(at: 10_000, cpu: 1) { _, _ in 10 } == (10_000, 0))
        #expect(t.reserve(at: 0, cpu: 2) { _, _ in 10 }.start >= 9_850)
    }

    @Test("host memory for split locks follows the page tables in use, not every table made")
    func memoryFollowsLiveTables() throws {
        let kernel = TestMachine.kernel(memory: 2 << 30, mode: .metadata)
        let mm = kernel.createAddressSpace()!
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 2, simulatedTime: true)
        let time = try #require(m.simulatedTime)
        for cpu in m.cpus { cpu.switchTo(mm) }
        let tables = 1_000, pagesPerTable = 16
        let va = try anon(mm, UInt64(tables) << 21)
        // Each CPU fills its own tables, 16 pages of each, in time order; the horizon follows.
        for table in 0..<tables {
            let cpu = table % 2
            for page in 0..<pagesPerTable {
                if case .failure(let f) = m.cpus[cpu].access(va + UInt64(table) << 21 + UInt64(page) * 4096, .write) {
                    Issue.record("\(f)"); return
                }
            }
            time.advanceHorizon(to: min(m.clock(of: 0), m.clock(of: 1)))
        }
        let counts = time.splitLockCounts
        #expect(counts.all == tables)
        #expect(counts.active < 600, "\(counts.active) of \(counts.all) still active")
        // Uncompacted, each table's timeline holds 16 reservations.
        let whole = tables * pagesPerTable * 24
        #expect(time.splitLockStorageBytes < whole / 2, "\(time.splitLockStorageBytes) bytes against \(whole)")
    }
}
