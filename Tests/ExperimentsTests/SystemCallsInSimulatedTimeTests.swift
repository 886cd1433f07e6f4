import Testing
import VMCore
import Kernel
import Machine
import Workloads
import Simulation
import Experiments

/// System calls other than munmap through the replay executor in simulated time: each charged for what
/// the kernel recorded doing, after the call.
@Suite("System calls in simulated time, through the executor")
struct SystemCallsInSimulatedTimeTests {
    /// Two threads on two CPUs of one process write 1,024 and 960 pages of a buffer of their own, in
    /// time order; then thread 0 makes `call` on its buffer, and thread 1, behind it in simulated time,
    /// writes 256 more pages of its own, passing thread 0's clock while the call holds the mmap lock.
    /// Thread 1's CPU's wait for the mmap lock in cycles after the call, and the report.
    static func run(_ call: (UInt64) -> WorkloadEvent?) throws -> (mmapWait: Double, report: ReplayReport) {
        var setup = SystemBuilder()
        setup.cpus = 2
        setup.enabled = .never
        setup.simulatedTime = true
        setup.memoryBytes = 128 << 20
        let executor = try setup.makeExecutor()
        executor.event(thread: 0, .spawn(thread: 1))
        let a: UInt64 = 1 << 40, b: UInt64 = 1 << 41, length: UInt64 = 8 << 20
        executor.event(thread: 0, .mmap(address: a, length: length, protection: .readWrite, shared: false))
        executor.event(thread: 1, .mmap(address: b, length: length, protection: .readWrite, shared: false))
        for page in 0..<1_024 as Range<UInt64> {
            executor.access(thread: 0, address: a + page << 12, kind: .store, count: 1)
            if page < 960 { executor.access(thread: 1, address: b + page << 12, kind: .store, count: 1) }
        }
        executor.event(thread: 1, .idle(milliseconds: 0))
        let time = executor.machine.simulatedTime!
        let before = time.waitCycles[LockClass.mmapLock.rawValue]
        if let event = call(a) { executor.event(thread: 0, event) }
        // A VMA change waits in thread 0's queue for its turn; an ordering point runs it now, before
        // thread 1's writes below (a quantum of them could otherwise pass the whole hold first).
        executor.event(thread: 0, .idle(milliseconds: 0))
        for page in 960..<1_216 as Range<UInt64> {
            executor.access(thread: 1, address: b + page << 12, kind: .store, count: 1)
        }
        let report = executor.finish()
        #expect(report.failedCalls.isEmpty)
        return (time.waitCycles[LockClass.mmapLock.rawValue] - before, report)
    }

    @Test("mprotect, fork and MADV_COLLAPSE of 1,024 written pages make the other CPU's faults of the mm wait for their work; MADV_NOHUGEPAGE's flat hold is short")
    func callsHoldTheMM() throws {
        let flat = try Self.run { .madvise(address: $0, length: 8 << 20, advice: .noHugepage) }
        let none = try Self.run { _ in nil }
        let mprotect = try Self.run { .mprotect(address: $0, length: 8 << 20, protection: .read) }
        let fork = try Self.run { _ in .fork(child: 2) }
        let collapse = try Self.run { .madvise(address: $0, length: 4 << 20, advice: .collapse) }
        let p = ContentionParameters.preset(named: "skylake-sp")
        // A VMA change without page work: at most its flat hold (and the count line).
        #expect(flat.mmapWait - none.mmapWait < p.mmapWriteHoldCycles + p.systemCallCycles + 2_000)
        // 1,024 entries changed, copied and write-protected; two 2 MiB ranges copied (512 × 500 cycles each).
        #expect(mprotect.mmapWait - none.mmapWait > 1_024 * p.protectEntryCycles / 2)
        #expect(fork.mmapWait - none.mmapWait > 1_024 * p.forkEntryCycles / 2)
        #expect(collapse.mmapWait - none.mmapWait > 512 * 500)
        #expect(collapse.report.vmstatFinal["thp_collapse_alloc", default: 0] == 2)
    }

    @Test("exit is charged on its CPU for its teardown: the other process's CPU sees no mmap_lock wait")
    func exitIsCharged() throws {
        var setup = SystemBuilder()
        setup.cpus = 2
        setup.enabled = .never
        setup.simulatedTime = true
        setup.memoryBytes = 128 << 20
        let executor = try setup.makeExecutor()
        let a: UInt64 = 1 << 40
        executor.event(thread: 0, .fork(child: 1))
        executor.event(thread: 0, .mmap(address: a, length: 8 << 20, protection: .readWrite, shared: false))
        for page in 0..<2_048 as Range<UInt64> { executor.access(thread: 0, address: a + page << 12, kind: .store, count: 1) }
        executor.event(thread: 1, .idle(milliseconds: 0))
        let time = executor.machine.simulatedTime!
        let before = executor.machine.clock(of: 0)
        let released = time.acquisitions[LockClass.lruLock.rawValue] + time.acquisitions[LockClass.zoneLock.rawValue]
        executor.event(thread: 0, .exit)
        // The teardown: 2,048 entries cleared and pages freed, under lru_lock and zone->lock.
        #expect(executor.machine.clock(of: 0) - before > 2_048 * time.parameters.freeFolioCycles)
        #expect(time.acquisitions[LockClass.lruLock.rawValue] + time.acquisitions[LockClass.zoneLock.rawValue] > released + 100)
        _ = executor.finish()
    }
}
