import Testing
@testable import Simulation
import TestSupport

/// `ClockOrder` must pick, at every step, the thread a scan of every thread's clock picks (the lowest
/// clock, the lowest thread at a tie), while clocks move forward behind its back.
@Suite("The executor's order of threads by clock")
struct ClockOrderTests {
    @Test("taking the first and putting it back at its true clock gives the order a scan of the true clocks gives, ties included")
    func matchesScan() {
        var rng = SplitMix64(seed: 23)
        for round in 0..<20 {
            let threads = 1 + Int(rng.next() % 130)
            let cpus = 1 + Int(rng.next() % UInt64(threads))
            // Clocks on a coarse grid, so ties are common; threads share CPUs when threads > cpus.
            var clock = (0..<cpus).map { _ in Double(rng.next() % 8) * 10 }
            var work = (0..<threads).map { _ in 1 + Int(rng.next() % 6) }
            let order = ClockOrder()
            for t in 0..<threads { order.push(clock: clock[t % cpus], thread: t) }
            var mismatches = 0, repushes = 0
            while let (key, t) = order.first {
                let now = clock[t % cpus]
                if now != key { repushes += 1; order.replaceFirst(clock: now); continue }
                let scan = (0..<threads).filter { work[$0] > 0 }.min { (clock[$0 % cpus], $0) < (clock[$1 % cpus], $1) }!
                if scan != t { mismatches += 1 }
                // The thread runs: its CPU's clock moves; sometimes another CPU's does too (a
                // shootdown's handler, a kernel thread).
                clock[t % cpus] += Double(rng.next() % 4) * 10
                if rng.next() % 4 == 0 { clock[Int(rng.next() % UInt64(cpus))] += 10 }
                work[t] -= 1
                if work[t] > 0 { order.replaceFirst(clock: clock[t % cpus]) } else { order.removeFirst() }
            }
            #expect(mismatches == 0, "round \(round): \(threads) threads on \(cpus) CPUs")
            #expect(work.allSatisfy { $0 == 0 })
            if threads > 20 { #expect(repushes > 0, "round \(round) never met a stale key") }
        }
    }

    @Test("second is the entry that comes second by its key (the lowest thread at a tie), after any pushes, replacements and removals")
    func secondComesSecond() {
        var rng = SplitMix64(seed: 41)
        let order = ClockOrder()
        var keys: [Int: Double] = [:]
        #expect(order.second == nil)
        for step in 0..<5_000 {
            let op = rng.next() % 4
            if op == 0 || keys.isEmpty {
                let t = keys.count + step * 1_000
                let c = Double(rng.next() % 16) * 5
                order.push(clock: c, thread: t)
                keys[t] = c
            } else if op == 1, let (_, t) = order.first {
                let c = keys[t]! + Double(rng.next() % 4) * 5
                order.replaceFirst(clock: c)
                keys[t] = c
            } else if op == 2, let (_, t) = order.first {
                order.removeFirst()
                keys[t] = nil
            }
            let sorted = keys.sorted { ($0.value, $0.key) < ($1.value, $1.key) }
            #expect(order.first?.thread == sorted.first?.key)
            #expect(order.second == (sorted.count > 1 ? sorted[1].key : nil), "step \(step)")
        }
    }
}
