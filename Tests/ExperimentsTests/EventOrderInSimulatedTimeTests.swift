import Testing
import VMCore
import Kernel
import Machine
import Workloads
import Simulation
import Experiments

/// System calls wait their turn in simulated time, as accesses do: on a machine of many CPUs a call
/// that changes VMAs runs at its thread's clock, not where the workload emitted it, and a spawned
/// thread starts at its parent's clock at the spawn.
@Suite("Events in simulated-time order")
struct EventOrderInSimulatedTimeTests {
    static let a: UInt64 = 1 << 40, b: UInt64 = 1 << 41, r: UInt64 = 1 << 42

    /// An executor of two CPUs in simulated-time order, THP off, 128 MiB.
    static func twoCPUs() throws -> MachineExecutor {
        var setup = SystemBuilder()
        setup.cpus = 2
        setup.enabled = .never
        setup.simulatedTime = true
        setup.memoryBytes = 128 << 20
        return try setup.makeExecutor()
    }

    /// Two threads of one process on two CPUs; thread 0 writes 1,024 pages of its buffer first, so its
    /// clock is far ahead of thread 1's when `then` runs.
    static func afterThreadZeroRanAhead(_ then: (MachineExecutor) -> Void) throws -> (MachineExecutor, ReplayReport) {
        let executor = try Self.twoCPUs()
        executor.event(thread: 0, .spawn(thread: 1))
        executor.event(thread: 0, .mmap(address: a, length: 8 << 20, protection: .readWrite, shared: false))
        for page in 0..<1_024 as Range<UInt64> { executor.access(thread: 0, address: a + page << 12, kind: .store, count: 1) }
        executor.event(thread: 0, .idle(milliseconds: 0))
        #expect(executor.machine.clock(of: 0) > 100 * executor.machine.clock(of: 1))
        then(executor)
        return (executor, executor.finish())
    }

    @Test("a mapping made later in the workload's order but earlier in simulated time is there for the other CPU's fault")
    func mmapBeforeALaterFault() throws {
        let (executor, report) = try Self.afterThreadZeroRanAhead { e in
            // Thread 0, far ahead, writes where thread 1 — behind it — maps next.
            e.access(thread: 0, address: Self.r, kind: .store, count: 1)
            e.event(thread: 1, .mmap(address: Self.r, length: 2 << 20, protection: .readWrite, shared: false))
        }
        // Emitted first, the write would find nothing mapped and kill the process (SIGSEGV).
        #expect(report.signals.isEmpty)
        #expect(report.failedCalls.isEmpty && report.droppedAccesses == 0 && report.droppedEvents == 0)
        #expect(report.total.faults == 1_025)
        #expect(executor.machine.kernel.meminfo()["AnonPages"] == 1_025 * 4_096)
    }

    @Test("an unmapping made earlier in the workload's order but later in simulated time comes after the other CPU's write")
    func munmapAfterAnEarlierWrite() throws {
        let (_, report) = try Self.afterThreadZeroRanAhead { e in
            // Thread 0, far ahead, unmaps its buffer; thread 1, behind it, writes there first.
            e.event(thread: 0, .munmap(address: Self.a, length: 8 << 20))
            e.access(thread: 1, address: Self.a + 4_096, kind: .store, count: 1)
            e.access(thread: 1, address: Self.a + 8 << 20 - 4_096, kind: .store, count: 1)
        }
        #expect(report.signals.isEmpty)
        #expect(report.failedCalls.isEmpty && report.droppedAccesses == 0)
        // Thread 1's second write faulted its page in before the munmap took it away.
        #expect(report.total.faults == 1_025)
        #expect(report.anonBytes == 0)
    }

    @Test("a spawned thread's accesses queued before its spawn ran are made, and not before its parent's clock at the spawn")
    func spawnedThreadStartsAtItsParentsClock() throws {
        let executor = try Self.twoCPUs()
        executor.event(thread: 0, .mmap(address: Self.a, length: 8 << 20, protection: .readWrite, shared: false))
        for page in 0..<1_024 as Range<UInt64> { executor.access(thread: 0, address: Self.a + page << 12, kind: .store, count: 1) }
        // No ordering point from here to the end: the child's writes wait in its queue with the spawn
        // in its parent's, behind the parent's 1,024 faults.
        executor.event(thread: 0, .spawn(thread: 1))
        executor.event(thread: 1, .mmap(address: Self.b, length: 2 << 20, protection: .readWrite, shared: false))
        for page in 0..<8 as Range<UInt64> { executor.access(thread: 1, address: Self.b + page << 12, kind: .store, count: 1) }
        let report = executor.finish()
        #expect(report.droppedAccesses == 0 && report.droppedEvents == 0 && report.failedCalls.isEmpty && report.signals.isEmpty)
        #expect(report.total.faults == 1_032)
        // Thread 0 did nothing after the spawn: its clock is its clock then, with the spawn's cost.
        // The child's CPU started there and added its mmap and 8 faults.
        let parentAtSpawn = executor.machine.clock(of: 0)
        #expect(parentAtSpawn > 1_024 * 1_000)
        #expect(executor.machine.clock(of: 1) > parentAtSpawn)
        #expect(executor.machine.clock(of: 1) < parentAtSpawn + 1_024 * 1_000 / 4)
    }

    @Test("a spawn dropped with its parent's process takes its thread's queued accesses with it")
    func droppedSpawnDropsTheChild() throws {
        let executor = try Self.twoCPUs()
        // Thread 0's write to nothing kills the process before its spawn runs.
        executor.access(thread: 0, address: Self.r, kind: .store, count: 1)
        executor.event(thread: 0, .spawn(thread: 1))
        executor.access(thread: 1, address: Self.r + 4_096, kind: .store, count: 3)
        let report = executor.finish()
        #expect(report.signals.count == 1)
        #expect(report.events == 0 && report.droppedEvents == 1)
        #expect(report.droppedAccesses == 3)
        #expect(report.accesses == [0, 1, 0])
    }
}
