import Testing
import VMCore
import Kernel
import Machine
import Workloads
import Simulation

/// `WorkloadSink.accesses` (issue 23): gups and chase hand the sink a quantum of addresses at once,
/// and `MachineExecutor` queues those before its next tick in one loop. It must give exactly what
/// the same accesses give one `access` call each: every counter and cycle, ticks and memory samples,
/// signals, drops and vmstat.
@Suite("Access quanta count as the same accesses one by one")
struct AccessQuantumTests {
    typealias Setup = PageRunTests.Setup

    /// Passes everything on, a quantum whole (where `PageRunTests.OneByOne` splits it).
    struct Whole<Base: WorkloadSink>: WorkloadSink {
        var base: Base
        var quanta = 0, quantumAccesses = 0
        mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) {
            base.access(thread: thread, address: address, kind: kind, count: count)
        }
        mutating func event(thread: Int, _ event: WorkloadEvent) { base.event(thread: thread, event) }
        mutating func accessRun(thread: Int, address: UInt64, stride: UInt64, count: Int, kind: AccessKind) {
            base.accessRun(thread: thread, address: address, stride: stride, count: count, kind: kind)
        }
        mutating func accesses(thread: Int, addresses: UnsafeBufferPointer<UInt64>, kind: AccessKind) {
            quanta += 1; quantumAccesses += addresses.count
            base.accesses(thread: thread, addresses: addresses, kind: kind)
        }
    }

    /// Both fingerprints of one stream: whole quanta, and one access at a time.
    static func both(_ s: Setup, _ stream: (inout Whole<MachineExecutor>) -> Void,
                     _ same: (inout PageRunTests.OneByOne<MachineExecutor>) -> Void) throws -> (whole: String, single: String, quanta: Int) {
        SimulatedCPU.switchTo(0)
        var whole = Whole(base: try s.executor())
        stream(&whole)
        let w = PageRunTests.fingerprint(whole.base)
        SimulatedCPU.switchTo(0)
        var single = PageRunTests.OneByOne(base: try s.executor())
        same(&single)
        return (w, PageRunTests.fingerprint(single.base), whole.quanta)
    }

    @Test("gups and chase: every counter equal", arguments: PageRunTests.setups)
    func synthetic(_ s: Setup) throws {
        for (workload, threads) in [(SyntheticWorkload.gups, 1), (.gups, 3), (.chase, 1), (.chase, 2)] {
            // More accesses than a tick interval, so that ticks fall inside quanta.
            let p = SyntheticParameters(size: 4 << 20, accesses: MachineExecutor.tickInterval * 2 + 1_000, threads: threads)
            let (whole, single, quanta) = try Self.both(s, { workload.generate(p, into: &$0) }, { workload.generate(p, into: &$0) })
            #expect(whole == single, "\(s) \(workload) T\(threads)")
            #expect(quanta > 0)
        }
    }

    /// Quanta of odd lengths across batches and ticks, thread switches inside them, stores that
    /// fault, and a quantum whose store kills its process halfway (the rest is dropped).
    static func script(_ sink: inout some WorkloadSink) {
        let base = PageRunTests.scriptSetUp(&sink)
        var addresses = [UInt64](repeating: 0, count: 700)
        var x: UInt64 = 12345
        for i in 0..<400 {
            let n = 1 + (i * 131) % 700
            for j in 0..<n {
                x = x &* 6364136223846793005 &+ 1442695040888963407
                addresses[j] = base + (x >> 20) % (8 << 20) / 8 * 8
            }
            let kind: AccessKind = i % 3 == 0 ? .store : .load
            addresses.withUnsafeBufferPointer {
                sink.accesses(thread: i % 5 == 0 ? 1 : 0, addresses: UnsafeBufferPointer(rebasing: $0[0..<n]), kind: kind)
            }
            if i == 200 { sink.event(thread: 0, .madvise(address: base, length: 1 << 20, advice: .dontNeed)) }
        }
        // A store into the read-only mapping halfway through a quantum kills the process.
        addresses[150] = base + (16 << 20) + 64
        addresses.withUnsafeBufferPointer {
            sink.accesses(thread: 1, addresses: UnsafeBufferPointer(rebasing: $0[0..<300]), kind: .store)
        }
        addresses.withUnsafeBufferPointer {
            sink.accesses(thread: 0, addresses: UnsafeBufferPointer(rebasing: $0[0..<50]), kind: .load)
        }
    }

    @Test("stores, faults, a killed process, ticks: every counter equal", arguments: PageRunTests.setups)
    func scripted(_ s: Setup) throws {
        let (whole, single, quanta) = try Self.both(s, { Self.script(&$0) }, { Self.script(&$0) })
        #expect(whole == single, "\(s)")
        #expect(quanta == 402)
        #expect(whole.contains("dropped=0/") == false, "the killed process's accesses are dropped")
    }
}
