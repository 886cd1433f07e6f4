import Testing
import VMCore
import Kernel
import Machine
import Workloads
import Simulation
import Experiments

/// munmap through the replay executor in simulated time: charged for what it did, after the call.
@Suite("Zaps in simulated time, through the executor")
struct ZapInSimulatedTimeTests {
    /// Two threads on two CPUs each write `pages` pages of a buffer of their own, in time order; then
    /// thread 0 unmaps its buffer while thread 1 writes 64 more pages of its own. Thread 1's CPU's
    /// wait for the mmap lock, in nanoseconds, and the run's report.
    static func run(pages: Int) throws -> (mmapWait: UInt64, work: UInt64, report: ReplayReport) {
        var setup = SystemBuilder()
        setup.cpus = 2
        setup.enabled = .never   // 4 KiB pages: a PTE entry and a page freed each
        setup.simulatedTime = true
        setup.memoryBytes = 128 << 20
        let executor = try setup.makeExecutor()
        executor.event(thread: 0, .spawn(thread: 1))
        let a: UInt64 = 1 << 40, b: UInt64 = 1 << 41, length: UInt64 = 16 << 20
        executor.event(thread: 0, .mmap(address: a, length: length, protection: .readWrite, shared: false))
        executor.event(thread: 1, .mmap(address: b, length: length, protection: .readWrite, shared: false))
        for page in 0..<UInt64(pages) {
            executor.access(thread: 0, address: a + page << 12, kind: .store, count: 1)
            executor.access(thread: 1, address: b + page << 12, kind: .store, count: 1)
        }
        // An ordering point: the writes run (in time order) before the waits are read.
        executor.event(thread: 1, .idle(milliseconds: 0))
        let before = executor.machine.simulatedTime!.waitCycles[LockClass.mmapLock.rawValue]
        executor.event(thread: 0, .munmap(address: a, length: length))
        for page in 0..<64 as Range<UInt64> {
            executor.access(thread: 1, address: b + (UInt64(pages) + page) << 12, kind: .store, count: 1)
        }
        let report = executor.finish()
        #expect(report.failedCalls.isEmpty)
        let time = executor.machine.simulatedTime!
        let waited = time.waitCycles[LockClass.mmapLock.rawValue] - before
        // The call's own work: each entry cleared and each page freed.
        let work = Double(pages) * (time.parameters.zapEntryCycles + time.parameters.freeFolioCycles)
        let ghz = executor.machine.machineDescription.frequencyGHz
        return (UInt64(waited / ghz), UInt64(work / ghz), report)
    }

    @Test("unmapping 2,048 written pages holds the mmap lock longer than unmapping 16: the other CPU's faults wait longer")
    func bigUnmapWaits() throws {
        let small = try Self.run(pages: 16)
        let big = try Self.run(pages: 2_048)
        #expect(big.mmapWait > small.mmapWait)
        // The other CPU's next fault waits for most of the big call's work (2,048 entries cleared and
        // pages freed, 160 cycles each: 130 µs); the small call holds the lock about 2 µs.
        #expect(big.mmapWait > big.work / 2 && small.mmapWait < 5_000)
    }
}

@Suite("khugepaged's collapses in simulated time, through the executor")
struct CollapseInSimulatedTimeTests {
    /// Thread 0 writes 512 pages of a 2 MiB range and advises it (`advice`), which wakes khugepaged
    /// on CPU 0; thread 1, on CPU 1, having written 448, behind it in simulated time, then writes 256
    /// more of its own buffer in the same mm, passing thread 0's clock while the collapse holds the
    /// mmap lock. Thread 1's wait for the mmap lock in cycles after the advice, and how many ranges
    /// khugepaged collapsed by then.
    static func run(_ advice: MadviseAdvice) throws -> (mmapWait: Double, collapsed: Int) {
        var setup = SystemBuilder()
        setup.cpus = 2
        setup.enabled = .madvise
        setup.simulatedTime = true
        setup.memoryBytes = 128 << 20
        let executor = try setup.makeExecutor()
        executor.event(thread: 0, .spawn(thread: 1))
        let a: UInt64 = 1 << 40, b: UInt64 = 1 << 41
        executor.event(thread: 0, .mmap(address: a, length: 2 << 20, protection: .readWrite, shared: false))
        executor.event(thread: 1, .mmap(address: b, length: 4 << 20, protection: .readWrite, shared: false))
        // Thread 1 does less, so thread 0's clock is the kernel's when it advises: the kernel's clock
        // moves with it and khugepaged runs then (`advanceClock()`).
        for page in 0..<512 as Range<UInt64> {
            executor.access(thread: 0, address: a + page << 12, kind: .store, count: 1)
            if page < 448 { executor.access(thread: 1, address: b + page << 12, kind: .store, count: 1) }
        }
        executor.event(thread: 1, .idle(milliseconds: 0))
        let time = executor.machine.simulatedTime!
        let before = time.waitCycles[LockClass.mmapLock.rawValue]
        executor.event(thread: 0, .madvise(address: a, length: 2 << 20, advice: advice))
        // The advice waits in thread 0's queue for its turn; an ordering point runs it now, and the
        // kernel's clock moves after it, as the test needs.
        executor.event(thread: 0, .idle(milliseconds: 0))
        let collapsed = executor.machine.kernel.khugepaged.pagesCollapsed
        for page in 448..<704 as Range<UInt64> {
            executor.access(thread: 1, address: b + page << 12, kind: .store, count: 1)
        }
        let report = executor.finish()
        #expect(report.failedCalls.isEmpty)
        return (time.waitCycles[LockClass.mmapLock.rawValue] - before, collapsed)
    }

    @Test("MADV_HUGEPAGE wakes khugepaged, whose collapse holds the mm's mmap lock: the other CPU's faults wait for it")
    func collapseHoldsTheMM() throws {
        let advised = try Self.run(.hugepage)
        let not = try Self.run(.noHugepage)
        #expect(advised.collapsed == 1 && not.collapsed == 0)
        // Thread 1's faults come, in simulated time, while the collapse holds the mmap lock for
        // writing: they wait for it, whose copy alone is 512 × 500 cycles. (Were thread 1's clock far
        // behind, its faults would come before the collapse asked for the lock, and not wait.)
        #expect(advised.mmapWait - not.mmapWait > 512 * 500)
    }
}
