import Testing
import Foundation
import VMCore

@Suite("VMCore: the executing simulated CPU")
struct SimulatedCPUTests {
    @Test("switching sets the executing CPU; run(on:) switches back, nested too")
    func switching() {
        SimulatedCPU.switchTo(3)
        #expect(SimulatedCPU.current == 3)
        SimulatedCPU.run(on: 1) {
            #expect(SimulatedCPU.current == 1)
            SimulatedCPU.run(on: 2) { #expect(SimulatedCPU.current == 2) }
            #expect(SimulatedCPU.current == 1)
        }
        #expect(SimulatedCPU.current == 3)
    }

    @Test("a CPU within a structure's count has its own slot; one beyond shares")
    func slots() {
        #expect((0..<4).map { SimulatedCPU.slot($0, of: 4) } == [0, 1, 2, 3])
        #expect(SimulatedCPU.slot(5, of: 4) == 1 && SimulatedCPU.slot(7, of: 1) == 0)
    }

    @Test("host threads that never switched and run at once are different CPUs")
    func unswitchedThreadsDiffer() {
        let seen = Seen()
        let arrived = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        for _ in 0..<3 {
            group.enter()
            Thread {
                let cpu = SimulatedCPU.current
                seen.add(cpu)
                arrived.signal()
                release.wait()   // alive until every thread has its number
                group.leave()
            }.start()
        }
        for _ in 0..<3 { arrived.wait() }
        for _ in 0..<3 { release.signal() }
        group.wait()
        #expect(Set(seen.all).count == 3)
    }

    @Test("per-CPU counters count on the executing CPU and sum over all of them")
    func counters() {
        let counters = PerCPUCounters(count: 2, cpus: 3)
        defer { counters.release() }
        SimulatedCPU.run(on: 0) { counters.add(1, 5) }
        SimulatedCPU.run(on: 2) { counters.add(1, 7) }
        #expect(counters.value(1, cpu: 0) == 5 && counters.value(1, cpu: 1) == 0 && counters.value(1, cpu: 2) == 7)
        #expect(counters.sum(1) == 12 && counters.sum(0) == 0)
    }
}

/// The CPU numbers threads saw, behind a lock.
private final class Seen: @unchecked Sendable {
    private var values: [Int] = []
    private let lock = NSLock()
    func add(_ v: Int) { lock.lock(); values.append(v); lock.unlock() }
    var all: [Int] { lock.lock(); defer { lock.unlock() }; return values }
}
