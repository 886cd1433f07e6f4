import VMCore
import Kernel
import Machine
import Workloads

/// Runs a workload's events on a `Machine`: accesses go through the CPUs' TLBs and walker into the
/// kernel's faults, system calls into the kernel's `AddressSpace` calls. Thread `t` runs on CPU
/// `t % cpus` (the executor switches the host thread to that simulated CPU, so the kernel's per-CPU
/// state is that CPU's); each process is an address space. A run of `count` accesses to one page costs one
/// access through the MMU and `count - 1` L1 TLB hits (the run keeps one access's TLB state).
/// Accesses reach a CPU in batches of up to 256 through `CPU.run(_:)`, the access path's one entry
/// point, in the order the workload made them; on a machine in simulated time, each thread's accesses
/// and calls in its order, threads interleaved by their clocks (`drainQueues()`), a spawned thread
/// starting at its parent's clock at the spawn.
///
/// What Linux would do with a bad program, the executor does too: an access the kernel cannot
/// resolve kills the process (SIGSEGV/SIGBUS, recorded in `report.signals`); a system call that fails
/// is counted with its errno and the program goes on.
public final class MachineExecutor: WorkloadSink {
    public let machine: Machine
    @exclusivity(unchecked) public var report = ReplayReport()
    /// Per thread: its process (index into `processes`), or -1 for a thread not created yet.
    @exclusivity(unchecked) private var threadProcess = ContiguousArray<Int32>(repeating: -1, count: 1)
    @exclusivity(unchecked) private var processes: [AddressSpace?] = []
    /// `processes` unretained (it keeps each alive), for the checks made per thread switch and per
    /// lookup: an address space is weakly referenced by its kernel, so its reference count lives in a
    /// side table, and each retain and release of it would take the runtime's slow path.
    @exclusivity(unchecked) private var processRefs = ContiguousArray<Unmanaged<AddressSpace>?>()
    private var setupCounters = TranslationCounters()
    private var setupVMStat: [String: Int] = [:]
    private let baseCycles: Double
    private let cpuCount: Int
    /// `machine.simulatedTime` unretained (the machine keeps it), for the charge made at every turn.
    private let timeRef: Unmanaged<SimulatedTime>?
    /// The kernel keeps bytes: stores leave a marker byte in the pages they write first (`writeMarkers`).
    private let writesMarkers: Bool
    /// Thread ids above this are refused (bounded memory whatever a trace says).
    public static let maxThreads = 1 << 16

    /// Each process's pid, by index into `processes` (kept after it dies, for the report).
    private var processPIDs: [Int] = []
    /// The memory cgroup the workload's processes run in, if any.
    public let cgroup: MemoryCgroup?

    /// Starts the first process, in `cgroup` when one is given (its children inherit it).
    /// - Throws: `Errno` when the kernel cannot create the first process.
    public init(machine: Machine, cgroup: MemoryCgroup? = nil) throws(Errno) {
        self.machine = machine
        self.cgroup = cgroup
        // The first process starts on thread 0's CPU, not on whichever the calling host thread ran last.
        SimulatedCPU.switchTo(0)
        guard let mm = machine.kernel.createAddressSpace() else { throw .ENOMEM }
        if let cgroup { try machine.kernel.move(mm, to: cgroup) }
        processes = [mm]
        processRefs = [.passUnretained(mm)]
        processPIDs = [mm.pid]
        threadProcess[0] = 0
        baseCycles = machine.machineDescription.timing.baseCycles
        cpuCount = machine.cpus.count
        writesMarkers = machine.kernel.memory.mode == .data
        timeOrdered = machine.simulatedTime != nil
        timeRef = machine.simulatedTime.map { .passUnretained($0) }
        setupVMStat = machine.kernel.vmstatValues()
    }

    deinit {
        pending.deallocate()
        pendingNewlyTouched.deallocate()
        queues.deinitialize(count: queueCount)
        queues.deallocate()
    }

    /// The CPU that runs `thread` (threads go round the CPUs): no division when there are at least
    /// as many CPUs as threads, the common case.
    @inline(__always)
    private func cpu(of thread: Int) -> Int {
        thread < cpuCount ? thread : thread % cpuCount
    }

    /// The thread whose CPU and address space the last access used; -1 after any event (so a thread
    /// number below 0, which no thread has, never counts as the cached one: `access` checks it).
    @exclusivity(unchecked) private var cachedThread = -1
    /// Its CPU's index in `machine.cpus`.
    @exclusivity(unchecked) private var cachedCPUIndex = 0
    /// Accesses queued for the bound thread's CPU (`flush()`), whether each store marked a page
    /// first, and the thread they belong to.
    private let pending = UnsafeMutablePointer<AccessRecord>.allocate(capacity: MachineExecutor.batchCapacity)
    private let pendingNewlyTouched = UnsafeMutablePointer<Bool>.allocate(capacity: MachineExecutor.batchCapacity)
    @exclusivity(unchecked) private var pendingCount = 0
    @exclusivity(unchecked) private var pendingThread = 0
    /// Accesses handed to the CPU in one call.
    static let batchCapacity = 256
    @exclusivity(unchecked) private var loads = 0
    @exclusivity(unchecked) private var stores = 0
    @exclusivity(unchecked) private var fetches = 0
    /// Accesses left before the next tick (simulated time moves, progress, maybe a memory sample).
    @exclusivity(unchecked) private var untilTick = MachineExecutor.tickInterval
    /// Ticks left before the next memory sample.
    @exclusivity(unchecked) private var ticksUntilSample = 0
    /// Simulated time moves (and kernel threads run) every this many accesses, and at every event.
    public static let tickInterval = 1 << 16
    /// Memory is sampled every this many accesses by default, and at phase changes, forks, exits and idles.
    public static let sampleInterval = 1 << 22
    /// Memory is sampled about every this many accesses (rounded up to a multiple of `tickInterval`).
    public var sampleInterval = MachineExecutor.sampleInterval {
        didSet { ticksUntilSample = min(ticksUntilSample, ticksPerSample) }
    }
    private var ticksPerSample: Int { max(1, (sampleInterval + Self.tickInterval - 1) / Self.tickInterval) }
    /// Called at every tick with the accesses made so far (for progress displays).
    public var progress: ((Int) -> Void)?
    /// Nanoseconds of idle time the workload asked for so far (`WorkloadEvent.idle`).
    private var idleNanoseconds: UInt64 = 0
    /// The pages any process wrote, as bits: 4,096 words (1 GiB of address space) per chunk.
    @exclusivity(unchecked) private var touchedWords = ContiguousArray<UInt64>()
    private var touchedChunks: [UInt64: Int] = [:]
    /// A direct-mapped cache of chunk → word offset, indexed by the chunk's low bits.
    @exclusivity(unchecked) private var chunkCacheKeys = ContiguousArray<UInt64>(repeating: .max, count: 8)
    @exclusivity(unchecked) private var chunkCacheOffsets = ContiguousArray<Int>(repeating: 0, count: 8)

    /// Threads run in simulated-time order (a machine of more than one CPU): each thread's accesses,
    /// and its system calls but fork, exit, idle and beginMeasurement, wait in its queue until an
    /// ordering point (a tick, one of those four events, the end), where `drainQueues()` runs them,
    /// repeatedly giving a quantum to the thread whose clock is lowest.
    private let timeOrdered: Bool
    /// Per thread: the accesses and events it made since the last ordering point, and whether each
    /// store marked its page first. Bounded by `tickInterval` accesses and `maxQueuedEvents` events
    /// over all threads.
    /// A buffer rather than an `Array`: a turn updates its thread's queue in place, without the
    /// uniqueness check each write of an `Array` element makes. `queueCount` are initialized.
    @exclusivity(unchecked) private var queues = UnsafeMutablePointer<ThreadQueue>.allocate(capacity: 0)
    @exclusivity(unchecked) private var queueCount = 0
    @exclusivity(unchecked) private var queueCapacity = 0
    /// Events queued since the last drain; at `maxQueuedEvents` the queues are drained.
    @exclusivity(unchecked) private var queuedEvents = 0
    /// Events queued over all threads before the queues are drained without waiting for a tick (a
    /// workload of calls without accesses).
    static let maxQueuedEvents = 4 * tickInterval
    /// Threads whose queue holds accesses or events.
    @exclusivity(unchecked) private var queuedThreads = ContiguousArray<Int>()
    /// `queuedThreads` by their CPUs' clocks, while `drainQueues` runs them.
    private let clockOrder = ClockOrder()
    /// Accesses a thread runs before the scheduler looks at the clocks again.
    public static let quantum = 64

    /// A queued access and whether it marked its page written first (`markTouched`).
    private struct QueuedAccess {
        var record: AccessRecord
        var newlyTouched: Bool
    }

    private struct ThreadQueue {
        var records = ContiguousArray<QueuedAccess>()
        var head = 0
        /// The thread's system calls that wait their turn in simulated time (`event(thread:_:)`): each
        /// made once the records before its `position` (counted from the queue's start) have run.
        var events = ContiguousArray<QueuedEvent>()
        var eventHead = 0
        /// The written-page bits each queued event cleared when it was queued (`events` index, word of
        /// `touchedWords`, bits), to put back if the event is dropped.
        var cleared = ContiguousArray<(event: Int, word: Int, bits: UInt64)>()
        var isEmpty: Bool { head == records.count && eventHead == events.count }
        /// Records that may run before the next event is due.
        var recordsBeforeEvent: Int { eventHead < events.count ? events[eventHead].position - head : records.count - head }
        /// The address of the next record to run, if one is queued.
        var nextAddress: UInt64? { head < records.count ? records[head].record.address : nil }
        /// The next event, once the records before it have run.
        var dueEvent: WorkloadEvent? {
            eventHead < events.count && events[eventHead].position == head ? events[eventHead].event : nil
        }

        /// Hands `body` the records that run next — up to `limit`, none past the next event — with
        /// their place in the batch, and moves past them. Returns how many.
        @inline(__always)
        mutating func takeRecords(upTo limit: Int, _ body: (Int, QueuedAccess) -> Void) -> Int {
            let n = max(0, min(limit, recordsBeforeEvent))
            let first = head
            records.withUnsafeBufferPointer { r in
                for i in 0..<n { body(i, r[first &+ i]) }
            }
            head = first &+ n
            return n
        }
    }

    private struct QueuedEvent {
        var position: Int
        var event: WorkloadEvent
    }

    /// Per thread: the CPU clock before which it may not run — its parent's clock when the spawn (or
    /// fork) that created it ran (Linux: the child of `clone()` starts once its parent created it) —
    /// or infinity while the spawn that creates it waits in its parent's queue. 0 for the first thread.
    @exclusivity(unchecked) private var startClock = ContiguousArray<Double>(repeating: 0, count: 1)

    /// The clock at which `thread` may run next: its CPU's, or its start if that is later.
    @inline(__always)
    private func turnClock(_ thread: Int) -> Double {
        max(machine.clock(of: cpu(of: thread)), startClock[thread])
    }

    @inline(__always)
    public func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) {
        if thread != cachedThread || thread < 0 {
            if !timeOrdered { flush() }
            // In simulated-time order the access only waits in its thread's queue, and
            // `drainQueues()` binds the CPU when it runs: here it is enough that it may be made.
            if !(timeOrdered ? admits(thread) : bind(thread)) {
                report.droppedAccesses &+= count
                return
            }
        }
        // A store marks its page before the tick, so a memory sample taken there counts it as the
        // huge page it may already have faulted in does.
        var newlyTouched = false
        switch kind {
        case .load: loads &+= count
        case .store: stores &+= count; newlyTouched = markTouched(address)
        case .fetch: fetches &+= count
        }
        untilTick &-= count
        if untilTick <= 0 {
            flush(); tick()
            // The batch just run may have killed this thread's process: the access is not made.
            if _slowPath(!timeOrdered && !isLive(thread)) {
                countAccesses(kind, -count)
                if newlyTouched { clearTouched(address, 1) }
                report.droppedAccesses &+= count
                return
            }
        }
        if timeOrdered {
            enqueue(thread, AccessRecord(address: address, count: count, kind: kind.memoryAccess), newlyTouched)
            return
        }
        let n = pendingCount
        pending[n] = AccessRecord(address: address, count: count, kind: kind.memoryAccess)
        pendingNewlyTouched[n] = newlyTouched
        pendingThread = thread
        pendingCount = n &+ 1
        if n &+ 1 == Self.batchCapacity { flush() }
    }

    /// A page run (`WorkloadSink.accessRun`), queued as one record whose first access goes through
    /// the MMU and whose others are charged as the filter hits they are (`AccessRecord.stride`): the
    /// same counts, ticks and samples as `count` calls of `access(…count: 1)`. A tick falls where it
    /// would between those calls (the run is split there); with threads in simulated-time order
    /// (whose scheduling quantum counts records) the run goes access by access.
    @inline(__always)
    public func accessRun(thread: Int, address: UInt64, stride: UInt64, count: Int, kind: AccessKind) {
        if count == 1 || timeOrdered || stride == 0 || stride > PageGeometry.pageSize {
            var a = address
            for _ in 0..<count {
                access(thread: thread, address: a, kind: kind, count: 1)
                a &+= stride
            }
            return
        }
        var address = address, left = count
        var newlyTouched = false
        while left > 0 {
            // As `access` does for each access: bind the thread (again after a tick that unbound
            // it), and drop what is left when its process is gone.
            if thread != cachedThread || thread < 0 {
                flush()
                if !bind(thread) {
                    report.droppedAccesses &+= left
                    return
                }
            }
            if left == count { newlyTouched = kind == .store && markTouched(address) }
            // The accesses before the next tick, then the one that takes it (counted before the
            // tick, run after it, as `access` does).
            let k = min(left, max(1, untilTick))
            let ticks = k >= untilTick
            let beforeTick = ticks ? k &- 1 : k
            if beforeTick > 0 {
                countAccesses(kind, beforeTick)
                untilTick &-= beforeTick
                queue(thread, AccessRecord(address: address, count: beforeTick, kind: kind.memoryAccess,
                                           stride: UInt32(truncatingIfNeeded: stride)), newlyTouched)
                newlyTouched = false
                address &+= UInt64(truncatingIfNeeded: beforeTick) &* stride
            }
            if ticks {
                countAccesses(kind, 1)
                untilTick &-= 1
                flush(); tick()
                if _slowPath(!isLive(thread)) {
                    // The batch just run killed the process: this access and the rest are not made.
                    countAccesses(kind, -1)
                    if newlyTouched { clearTouched(address, 1) }
                    report.droppedAccesses &+= left &- beforeTick
                    return
                }
                queue(thread, AccessRecord(address: address, count: 1, kind: kind.memoryAccess), newlyTouched)
                newlyTouched = false
                address &+= stride
            }
            left &-= k
        }
    }

    /// Accesses of one kind (`WorkloadSink.accesses`): those before the next tick, while `thread` is
    /// bound and the batch has room, are queued in one loop — the same counts, touched pages and
    /// records as one `access(…count: 1)` each; the access that takes a tick, a thread not bound, and
    /// threads in simulated-time order go through `access` one by one.
    public func accesses(thread: Int, addresses: UnsafeBufferPointer<UInt64>, kind: AccessKind) {
        var i = 0
        let n = addresses.count
        let memoryAccess = kind.memoryAccess
        while i < n {
            guard !timeOrdered && thread == cachedThread && thread >= 0 && untilTick > 1 else {
                access(thread: thread, address: addresses[i], kind: kind, count: 1)
                i &+= 1
                continue
            }
            // None of these takes a tick (`untilTick` stays ≥ 1) or fills the batch before its last.
            let first = pendingCount
            let k = min(n &- i, untilTick &- 1, Self.batchCapacity &- first)
            for j in 0..<k {
                let address = addresses[i &+ j]
                pendingNewlyTouched[first &+ j] = kind == .store && markTouched(address)
                pending[first &+ j] = AccessRecord(address: address, count: 1, kind: memoryAccess)
            }
            countAccesses(kind, k)
            untilTick &-= k
            pendingThread = thread
            pendingCount = first &+ k
            i &+= k
            if first &+ k == Self.batchCapacity { flush() }
        }
    }

    /// Whether the bound `thread`'s process is alive: a batch run at a tick may have killed it.
    @inline(__always)
    private func isLive(_ thread: Int) -> Bool {
        processes[Int(threadProcess[thread])] != nil
    }

    @inline(__always)
    private func countAccesses(_ kind: AccessKind, _ n: Int) {
        switch kind {
        case .load: loads &+= n
        case .store: stores &+= n
        case .fetch: fetches &+= n
        }
    }

    /// Appends a record to the bound thread's batch; runs the batch when it is full.
    @inline(__always)
    private func queue(_ thread: Int, _ record: AccessRecord, _ newlyTouched: Bool) {
        let n = pendingCount
        pending[n] = record
        pendingNewlyTouched[n] = newlyTouched
        pendingThread = thread
        pendingCount = n &+ 1
        if n &+ 1 == Self.batchCapacity { flush() }
    }

    /// Runs the queued accesses on the bound thread's CPU (`CPU.run(_:)`, one call per batch). The
    /// queue is flushed before anything else looks at the machine: a thread switch, a tick, an event,
    /// the end of the run.
    private func flush() {
        if timeOrdered { drainQueues() } else { runPending() }
    }

    /// Runs the queued batch on the bound thread's CPU.
    private func runPending() {
        let n = pendingCount
        guard n > 0 else { return }
        pendingCount = 0
        let (completed, fault) = machine.unretainedCPU(cachedCPUIndex)
            ._withUnsafeGuaranteedRef { $0.run(UnsafeBufferPointer(start: pending, count: n)) }
        if _slowPath(writesMarkers) { writeMarkers(upTo: fault == nil ? n : completed) }
        if let fault { accessFailed(at: completed, of: n, fault) }
    }

    /// In data mode, the stores among the first `count` queued accesses that wrote a page first leave
    /// a byte in it: a workload's stores carry no values, and without one every page it wrote would
    /// read as zero-filled to the kernel's zero-page checks (the underused-THP shrinker, HawkEye's
    /// bloat recovery), which would take them for untouched. The byte, 1, goes at the store's address
    /// through the kernel's own write (the page is mapped: the CPU just stored to it).
    @inline(never)
    private func writeMarkers(upTo count: Int) {
        guard let mm = processes[Int(threadProcess[pendingThread])] else { return }
        for j in 0..<count where pendingNewlyTouched[j] {
            _ = mm.write(VirtualAddress(pending[j].address), CollectionOfOne(UInt8(1)))
        }
    }

    /// Makes queues up to `thread`'s.
    @inline(never)
    private func addQueues(upTo thread: Int) {
        if thread >= queueCapacity {
            let capacity = max(thread + 1, 2 * queueCapacity, 8)
            let grown = UnsafeMutablePointer<ThreadQueue>.allocate(capacity: capacity)
            grown.moveInitialize(from: queues, count: queueCount)
            queues.deallocate()
            queues = grown
            queueCapacity = capacity
        }
        (queues + queueCount).initialize(repeating: ThreadQueue(), count: thread + 1 - queueCount)
        queueCount = thread + 1
    }

    private func enqueue(_ thread: Int, _ record: AccessRecord, _ newlyTouched: Bool) {
        if thread >= queueCount { addQueues(upTo: thread) }
        if queues[thread].isEmpty { queuedThreads.append(thread) }
        queues[thread].records.append(QueuedAccess(record: record, newlyTouched: newlyTouched))
    }

    /// Runs every queued access and event in simulated-time order: the thread whose clock is lowest
    /// (its CPU's, or its start if later: `turnClock`; the lowest thread number at a tie) runs up to
    /// `quantum` accesses, or the accesses before its next event and that event, then the clocks are
    /// read again. A thread whose spawn has not run yet waits out of the order until it does.
    /// Deterministic: it depends only on the workload and the simulated clocks. The kernel's clock
    /// moves after the drain (every caller of `flush()` moves it), not at each event in it.
    private func drainQueues() {
        queuedEvents = 0
        reorderAll()
        var spawned = ContiguousArray<Int>()
        while let (key, best) = clockOrder.first {
            // A thread dropped while it waited (its process was killed) has nothing left.
            guard best < queueCount, !queues[best].isEmpty else {
                clockOrder.removeFirst()
                continue
            }
            let cpu = self.cpu(of: best)
            // Its CPU's clock, read once: binding the thread below switches the CPU's address space
            // at most, which costs no cycles.
            let cpuClock = machine.clock(of: cpu)
            let bestClock = max(cpuClock, startClock[best])
            if bestClock > key {
                // Its clock moved while it waited (`ClockOrder`): to its true place.
                clockOrder.replaceFirst(clock: bestClock)
                continue
            } else if bestClock < key {
                // A clock went back (no path does this today): order every thread again.
                reorderAll()
                continue
            }
            // No CPU with work is behind `bestClock`: lock and line timelines may forget what ended by then.
            timeRef?._withUnsafeGuaranteedRef { $0.advanceHorizon(to: bestClock) }
            if !bind(best) {
                dropQueue(best)
                clockOrder.removeFirst()
                continue
            }
            // A thread created after its CPU's clock: the CPU waits for it until its parent made it.
            if bestClock > cpuClock { timeRef?._withUnsafeGuaranteedRef { $0.charge(cpu: cpu, cycles: bestClock - cpuClock) } }
            // Up to `quantum` accesses, or fewer when an event comes first: an event takes locks other
            // CPUs take (and may change what they see), so the clocks are read again after it.
            let n = takeTurn(best)
            pendingThread = best
            pendingCount = n
            // The thread most likely to run next: its CPU's TLB sets come into the host's caches while
            // this one runs (`Machine.warmUp(cpu:for:)`; a hint, nothing simulated changes).
            if let next = clockOrder.second, next < queueCount, let address = queues[next].nextAddress {
                machine.warmUp(cpu: self.cpu(of: next), for: address)
            }
            // May kill the process, which drops its queues, events included (`dropQueue`).
            runPending()
            if let event = dueEvent(best), let ref = processRefs[Int(threadProcess[best])] {
                queues[best].eventHead += 1
                if ref._withUnsafeGuaranteedRef({ $0.wasOOMKilled }) {
                    // Its cgroup's OOM killer chose it while this thread's accesses ran.
                    dropKilled(event: best)
                } else {
                    ref._withUnsafeGuaranteedRef { mm in
                        if case .getMempolicy(let address) = event {
                            // The common case (a lookup per page in memscale): no charge but the lookup's.
                            lookUpNode(thread: best, mm: mm, address: address)
                        } else {
                            runQueued(event, thread: best, cpu: cpu, mm: mm, spawned: &spawned)
                        }
                    }
                }
            }
            // It stays first in the order until here: nothing run above reorders the threads.
            if queues[best].isEmpty {
                retire(best)
            } else {
                clockOrder.replaceFirst(clock: turnClock(best))
            }
            // Threads just spawned join the order at their start.
            if !spawned.isEmpty { order(spawned: &spawned) }
        }
        precondition(queuedThreads.isEmpty, "a thread's accesses are queued but the spawn that creates it is not")
        cachedThread = -1
    }

    // The rare steps of a turn, out of line so that the turn's code stays small in the host's
    // instruction cache (memscale 80 CPUs takes every turn on a CPU that last ran 79 turns before).

    /// Orders every thread with work again, by its clock now.
    @inline(never)
    private func reorderAll() {
        clockOrder.removeAll()
        for t in queuedThreads where startClock[t] < .infinity { clockOrder.push(clock: turnClock(t), thread: t) }
    }

    /// The due event of `thread`, whose process its cgroup's OOM killer chose, is not made: its
    /// process dies now.
    @inline(never)
    private func dropKilled(event thread: Int) {
        report.events -= 1
        report.droppedEvents += 1
        kill(process: Int(threadProcess[thread]))
    }

    /// Runs `thread`'s due `event` other than a node lookup, on `cpu`; a thread it spawns joins
    /// `spawned` with its CPU's clock as its start.
    @inline(never)
    private func runQueued(_ event: WorkloadEvent, thread: Int, cpu: Int, mm: AddressSpace,
                           spawned: inout ContiguousArray<Int>) {
        run(event, thread: thread, mm: mm, queued: true)
        if case .spawn(let child) = event, child < startClock.count, startClock[child] == .infinity {
            startClock[child] = machine.clock(of: cpu)
            spawned.append(child)
        }
    }

    /// `thread`, first in the order, has nothing left queued: it leaves the order.
    @inline(never)
    private func retire(_ thread: Int) {
        queues[thread].records.removeAll(keepingCapacity: true)
        queues[thread].events.removeAll(keepingCapacity: true)
        queues[thread].cleared.removeAll(keepingCapacity: true)
        queues[thread].head = 0
        queues[thread].eventHead = 0
        if let slot = queuedThreads.firstIndex(of: thread) { queuedThreads.remove(at: slot) }
        clockOrder.removeFirst()
    }

    /// Threads just spawned join the order at their start.
    @inline(never)
    private func order(spawned: inout ContiguousArray<Int>) {
        for child in spawned where child < queueCount && !queues[child].isEmpty {
            clockOrder.push(clock: turnClock(child), thread: child)
        }
        spawned.removeAll(keepingCapacity: true)
    }

    /// Moves the next accesses of `thread`'s queue to the batch (`pending`): up to `quantum`, and none
    /// past its next event. Returns how many.
    @inline(__always)
    private func takeTurn(_ thread: Int) -> Int {
        let pending = pending, pendingNewlyTouched = pendingNewlyTouched
        return queues[thread].takeRecords(upTo: Self.quantum) { i, queued in
            pending[i] = queued.record
            pendingNewlyTouched[i] = queued.newlyTouched
        }
    }

    /// The event of `thread`'s queue due now (its accesses before it have run), if any.
    @inline(__always)
    private func dueEvent(_ thread: Int) -> WorkloadEvent? {
        guard thread < queueCount else { return nil }
        return queues[thread].dueEvent
    }

    /// `get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)` of `address` by `thread` (`AddressSpace.nodeOfPage`),
    /// charged to its CPU at its clock on a machine in simulated time.
    private func lookUpNode(thread: Int, mm: AddressSpace, address: UInt64) {
        switch mm.nodeOfPage(at: VirtualAddress(address)) {
        case .success(let found):
            if let timeRef {
                let cpu = self.cpu(of: thread)
                let now = machine.clock(of: cpu)
                timeRef._withUnsafeGuaranteedRef {
                    $0.chargeNodeLookup(cpu: cpu, pid: mm.pid, address: address, hugePMD: found.hugePMD,
                                        design: machine.kernel.lockDesign, now: now)
                }
            }
        case .failure(let errno):
            report.failedCalls[String(describing: errno), default: 0] += 1
        }
    }

    /// Takes back a queued access that will not be made: its count, and the page it would have
    /// marked written first.
    private func drop(_ r: AccessRecord, newlyTouched: Bool) {
        switch r.kind {
        case .read: loads &-= r.count
        case .write: stores &-= r.count
        case .execute: fetches &-= r.count
        }
        untilTick &+= r.count
        report.droppedAccesses &+= r.count
        if newlyTouched { clearTouched(r.address, 1) }
    }

    /// Drops the queued accesses and events of `thread`, whose process died: they are not made. Taken
    /// back last first, so that what each undoes is what it did when it was queued: an access's count
    /// and its page marked written, an event's count (it becomes a dropped one), the written pages it
    /// cleared, the thread it would have spawned (with that thread's own queue).
    private func dropQueue(_ thread: Int) {
        guard thread < queueCount, !queues[thread].isEmpty else { return }
        let q = queues[thread]
        queues[thread] = ThreadQueue()
        if let slot = queuedThreads.firstIndex(of: thread) { queuedThreads.remove(at: slot) }
        var r = q.records.count - 1, e = q.events.count - 1, c = q.cleared.count - 1
        while r >= q.head || e >= q.eventHead {
            guard e >= q.eventHead, q.events[e].position > r else {
                drop(q.records[r].record, newlyTouched: q.records[r].newlyTouched)
                r -= 1
                continue
            }
            report.events -= 1
            report.droppedEvents += 1
            while c >= 0 && q.cleared[c].event > e { c -= 1 }
            while c >= 0 && q.cleared[c].event == e {
                let (word, bits) = (q.cleared[c].word, q.cleared[c].bits)
                touchedPages += (bits & ~touchedWords[word]).nonzeroBitCount
                touchedWords[word] |= bits
                c -= 1
            }
            if case .spawn(let child) = q.events[e].event, child < startClock.count, startClock[child] == .infinity {
                dropQueue(child)
                threadProcess[child] = -1
                startClock[child] = 0
            }
            e -= 1
        }
    }

    /// The queued access at `index` killed its process (SIGSEGV/SIGBUS): the store that killed it
    /// wrote nothing, and the thread's accesses queued after it are dropped as they would have been
    /// had they come after the kill.
    @inline(never)
    private func accessFailed(at index: Int, of n: Int, _ fault: AccessFault) {
        if pendingNewlyTouched[index] { clearTouched(pending[index].address, 1) }
        // A page run failed at its first access (the others cannot fault): the rest are not made.
        let failed = pending[index]
        if failed.stride != 0 && failed.count > 1 {
            drop(AccessRecord(address: failed.address, count: failed.count &- 1, kind: failed.kind), newlyTouched: false)
        }
        for j in (index + 1)..<n { drop(pending[j], newlyTouched: pendingNewlyTouched[j]) }
        let process = Int(threadProcess[pendingThread])
        // A process an OOM killer chose is reported with the kills, not as a signal.
        if processes[process]?.wasOOMKilled != true {
            report.signals.append(.init(thread: pendingThread, process: process, fault: fault))
        }
        kill(process: process)
    }

    /// Records that the 4 KiB page of `address` was written. Only writes count: a read of memory never
    /// written maps the shared zero page and takes no memory (Linux: `do_anonymous_page()`).
    /// Returns whether the page was not marked before.
    @inline(__always) @discardableResult
    private func markTouched(_ address: UInt64) -> Bool {
        let chunk = address >> 30
        let slot = Int(truncatingIfNeeded: chunk & 7)
        let offset: Int
        if chunkCacheKeys[slot] == chunk {
            offset = chunkCacheOffsets[slot]
        } else {
            offset = chunkOffset(chunk)
            chunkCacheKeys[slot] = chunk
            chunkCacheOffsets[slot] = offset
        }
        let page = Int(truncatingIfNeeded: (address >> 12) & 0x3FFFF)
        let bit: UInt64 = 1 &<< UInt64(page & 63)
        let i = offset &+ (page >> 6)
        guard touchedWords[i] & bit == 0 else { return false }
        touchedWords[i] |= bit
        touchedPages &+= 1
        return true
    }

    /// Forgets the pages of `[address, address + length)`: unmapped or discarded, they no longer hold
    /// what the program wrote (`munmap`, `MADV_DONTNEED`, the old range of `mremap`).
    /// `cleared` is given each word of `touchedWords` changed and the bits cleared in it.
    private func clearTouched(_ address: UInt64, _ length: UInt64, cleared: ((Int, UInt64) -> Void)? = nil) {
        var page = address >> 12
        let end = (address &+ length &+ 4095) >> 12
        while page < end {
            // The pages of one chunk at a time.
            let chunkEnd = min(end, ((page >> 18) + 1) << 18)
            guard let offset = touchedChunks[page >> 18] else {
                page = chunkEnd
                continue
            }
            while page < chunkEnd {
                // The pages of one word at a time.
                let wordEnd = min(chunkEnd, (page | 63) + 1)
                let i = offset + Int((page & 0x3FFFF) >> 6)
                let low = page & 63, count = wordEnd - page
                let mask: UInt64 = (count == 64 ? ~0 : ((1 << count) - 1)) << low
                let bits = touchedWords[i] & mask
                if bits != 0 {
                    touchedWords[i] &= ~bits
                    touchedPages -= bits.nonzeroBitCount
                    cleared?(i, bits)
                }
                page = wordEnd
            }
        }
    }

    @inline(never)
    private func chunkOffset(_ chunk: UInt64) -> Int {
        if let offset = touchedChunks[chunk] { return offset }
        let offset = touchedWords.count
        touchedWords.append(contentsOf: repeatElement(0, count: 4096))
        touchedChunks[chunk] = offset
        return offset
    }

    /// Pages written and not unmapped or discarded since (by virtual address, over every process).
    private var touchedPages = 0
    /// Bytes of the distinct 4 KiB pages written and still mapped (by virtual address, over every
    /// process): what the program needs resident, against which RSS measures bloat.
    public var touchedBytes: UInt64 { UInt64(touchedPages) * PageGeometry.pageSize }

    /// Moves simulated time, reports progress and samples memory when due.
    private func tick() {
        untilTick = Self.tickInterval
        advanceClock()
        progress?(loads + stores + fetches)
        ticksUntilSample -= 1
        if ticksUntilSample <= 0 { sampleMemory() }
    }

    /// Moves the kernel's clock to the simulated time of the run: the busiest CPU's cycles at the
    /// machine's frequency, plus the idle time asked for. Kernel threads whose wake-up falls in
    /// between (khugepaged, kswapd, kcompactd) run now (Linux: timers firing as time passes).
    private func advanceClock() {
        let cycles = machine.elapsedCycles
        let target = idleNanoseconds &+ UInt64(cycles / machine.machineDescription.frequencyGHz)
        let now = machine.kernel.clock.now
        if target > now {
            cachedThread = -1
            guard let time = machine.simulatedTime else {
                machine.kernel.advanceTime(by: target - now)
                return
            }
            // The kernel threads' work shows on the clock of the CPU they run on; khugepaged's collapses
            // with the locks they take (the target mm's mmap lock for writing across the copy).
            machine.kernel.recordCollapses(true)
            let before = kernelThreadWork()
            let scannedBefore = machine.kernel.vmstat[.pgscanKswapd]
            machine.kernel.advanceTime(by: target - now)
            var cycles = Self.kernelThreadCycles(from: before, to: kernelThreadWork(), machine.machineDescription.timing)
            let collapses = machine.kernel.takeCollapseRecords()
            let cpu = machine.kernel.configuration.kernelThreadCPU % cpuCount
            let copy = Double(PageGeometry.pmdOrder.pages) * machine.machineDescription.timing.copyPageCycles
            for collapse in collapses {
                time.chargeCollapse(collapse, cpu: cpu, design: machine.kernel.design, now: machine.clock(of: cpu), copyCycles: copy)
            }
            // kswapd's isolations from the LRU lists, under lru_lock in batches.
            let scanned = machine.kernel.vmstat[.pgscanKswapd] - scannedBefore
            if scanned > 0 {
                time.chargeLRUIsolation(pages: scanned, cpu: cpu, design: machine.kernel.design, now: machine.clock(of: cpu),
                                        workPerPage: machine.machineDescription.timing.reclaimPageCycles)
            }
            // The copies of the collapses charged above are in `kernelThreadCycles` too.
            cycles = max(0, cycles - Double(collapses.count) * copy)
            if cycles > 0 { time.charge(cpu: cpu, cycles: cycles) }
        }
    }

    /// The vmstat events kernel threads' work is counted by, in `kernelThreadCycles`' order.
    private static let kernelThreadEvents: [VMEvent] = [.thpCollapseAlloc, .pgstealKswapd, .pswpout, .compactIsolated,
                                                        .compactMigrateScanned, .compactFreeScanned]

    /// The counts of `kernelThreadEvents` now (read one by one: the whole vmstat is a dictionary).
    private func kernelThreadWork() -> [Int] { Self.kernelThreadEvents.map { machine.kernel.vmstat[$0] } }

    /// What kernel threads (khugepaged, kswapd, kcompactd, policy threads) did between two snapshots of
    /// `kernelThreadEvents`, in cycles: each collapse copies 512 pages (`collapse_huge_page()`), each
    /// page reclaimed, written to swap, migrated or scanned by compaction costs what it costs a fault.
    static func kernelThreadCycles(from a: [Int], to b: [Int], _ t: TimingParameters) -> Double {
        func delta(_ i: Int) -> Double { Double(max(0, b[i] - a[i])) }
        return delta(0) * Double(PageGeometry.pmdOrder.pages) * t.copyPageCycles
            + delta(1) * t.reclaimPageCycles + delta(2) * t.swapOutPageCycles
            + delta(3) / 2 * t.migratePageCycles
            + (delta(4) + delta(5)) * t.compactScanCycles
    }

    /// Makes `thread` the cached one: its CPU runs its address space. False for a thread that does
    /// not exist or whose process died.
    /// Whether `thread` may make accesses, as `bind(_:)` decides, without binding its CPU: the cached
    /// thread of simulated-time order, whose accesses wait in its queue (`cachedThread` is reset
    /// wherever a process may die: a drain, an event, a kill).
    private func admits(_ thread: Int) -> Bool {
        guard thread >= 0, thread < threadProcess.count, threadProcess[thread] >= 0,
              let mm = processRefs[Int(threadProcess[thread])] else { return false }
        if mm._withUnsafeGuaranteedRef({ $0.wasOOMKilled }) {
            kill(process: Int(threadProcess[thread]))
            return false
        }
        cachedThread = thread
        return true
    }

    /// The process of `thread`, unretained, if the thread exists and its process is alive and was not
    /// chosen by an OOM killer.
    @inline(__always)
    private func liveProcess(of thread: Int) -> Unmanaged<AddressSpace>? {
        guard thread >= 0, thread < threadProcess.count, threadProcess[thread] >= 0,
              let ref = processRefs[Int(threadProcess[thread])],
              !ref._withUnsafeGuaranteedRef({ $0.wasOOMKilled }) else { return nil }
        return ref
    }

    private func bind(_ thread: Int) -> Bool {
        guard thread >= 0, thread < threadProcess.count, threadProcess[thread] >= 0,
              let ref = processRefs[Int(threadProcess[thread])] else { return false }
        if ref._withUnsafeGuaranteedRef({ $0.wasOOMKilled }) {
            // Its cgroup's OOM killer chose it while another process faulted: it is gone.
            kill(process: Int(threadProcess[thread]))
            return false
        }
        let cpu = self.cpu(of: thread)
        machine.load(ref, on: cpu)
        SimulatedCPU.switchTo(cpu)
        cachedCPUIndex = cpu
        cachedThread = thread
        return true
    }

    /// A system call or scheduling event of `thread`. In simulated-time order (`timeOrdered`), the calls
    /// that change the caller's VMAs (mmap, munmap, mprotect, madvise, mremap, brk), `spawn` and
    /// `get_mempolicy()`'s page lookup wait in the thread's queue after the accesses before them and run
    /// when the thread's turn comes (`drainQueues()`), charged at its clock then; fork, exit, idle and
    /// beginMeasurement are ordering points: every queue runs first, then the event, at once. Otherwise
    /// every event runs at once, in the workload's order.
    public func event(thread: Int, _ event: WorkloadEvent) {
        if timeOrdered, Self.waitsItsTurn(event) {
            enqueue(thread, event)
            return
        }
        flush()
        if case .getMempolicy(let address) = event, let ref = liveProcess(of: thread) {
            // A question about a page: no VMA changes, no clock to advance, no memory sample.
            SimulatedCPU.switchTo(thread % cpuCount)
            cachedThread = -1
            report.events += 1
            ref._withUnsafeGuaranteedRef { lookUpNode(thread: thread, mm: $0, address: address) }
            return
        }
        guard thread >= 0, thread < threadProcess.count, threadProcess[thread] >= 0,
              let mm = processes[Int(threadProcess[thread])], !mm.wasOOMKilled else {
            if thread >= 0, thread < threadProcess.count, threadProcess[thread] >= 0 { kill(process: Int(threadProcess[thread])) }
            report.droppedEvents += 1
            return
        }
        report.events += 1
        run(event, thread: thread, mm: mm, queued: false)
        advanceClock()
        switch event {
        // A sleep of no time only orders the threads (memscale's set-up, `MemscaleLayout`): no sample.
        case .idle(0): break
        case .fork, .exit, .idle, .beginMeasurement: sampleMemory()
        default: break
        }
    }

    /// Whether `event` waits in its thread's queue in simulated-time order (`event(thread:_:)`).
    private static func waitsItsTurn(_ event: WorkloadEvent) -> Bool {
        switch event {
        case .mmap, .munmap, .mprotect, .madvise, .mremap, .brk, .getMempolicy, .spawn: true
        case .fork, .exit, .idle, .beginMeasurement: false
        }
    }

    /// Queues `event` of `thread` after the accesses it made before it. What depends only on the
    /// workload's order is done now: the event is counted (or dropped, for a thread that does not
    /// exist or whose process died), the pages it unmaps or discards are no longer written
    /// (`clearTouched`, as the accesses after it in the workload see it), and a spawned thread exists
    /// (its accesses may be queued), waiting for the spawn to run before its first turn.
    private func enqueue(_ thread: Int, _ event: WorkloadEvent) {
        // The thread `admits` let in last (an access just before, as in memscale) is still alive:
        // whatever could have killed it since (a drain, kernel threads, an event, a kill) unsets it.
        if thread != cachedThread || thread < 0 {
            guard thread >= 0, thread < threadProcess.count, threadProcess[thread] >= 0,
                  let ref = processRefs[Int(threadProcess[thread])] else {
                report.droppedEvents += 1
                return
            }
            if ref._withUnsafeGuaranteedRef({ $0.wasOOMKilled }) {
                kill(process: Int(threadProcess[thread]))
                report.droppedEvents += 1
                return
            }
        }
        report.events += 1
        if thread >= queueCount { addQueues(upTo: thread) }
        if queues[thread].isEmpty { queuedThreads.append(thread) }
        let index = queues[thread].events.count
        switch event {
        case .munmap(let address, let length), .madvise(let address, let length, .dontNeed),
             .mremap(let address, let length, _, _):
            clearTouched(address, length) { self.queues[thread].cleared.append((index, $0, $1)) }
        case .spawn(let child):
            do throws(Errno) {
                try bind(child, to: Int(threadProcess[thread]))
                startClock[child] = .infinity
            } catch {
                report.failedCalls[String(describing: error), default: 0] += 1
            }
        default: break
        }
        queues[thread].events.append(.init(position: queues[thread].records.count, event: event))
        queuedEvents &+= 1
        if queuedEvents >= Self.maxQueuedEvents { flush() }
    }

    /// Makes `event` of `thread`, whose process is `mm`: the kernel's call and its charge on the
    /// thread's CPU at its clock. A `queued` event was counted, and its touched pages cleared and its
    /// spawned thread bound, when it was queued (`enqueue`).
    private func run(_ event: WorkloadEvent, thread: Int, mm: AddressSpace, queued: Bool) {
        SimulatedCPU.switchTo(thread % cpuCount)
        cachedThread = -1
        // Calls whose page-table work the kernel records are charged after the call, with what it did.
        var zap = ZapRecord()
        var walk = TableWalkRecord()
        var collapses: [CollapseRecord] = []
        let clockBefore = machine.simulatedTime == nil ? 0 : machine.clock(of: thread % cpuCount)
        if let time = machine.simulatedTime { chargeSystemCall(event, thread: thread, pid: mm.pid, time) }
        if case .exit = event { sampleMemory() }   // RSS just before the process's memory goes
        do throws(Errno) {
            switch event {
            case .mmap(let address, let length, let protection, let shared):
                _ = try mm.mmap(address: VirtualAddress(address), length: length, protection: protection,
                                flags: [shared ? .shared : .private, .fixed], recording: &zap)
            case .munmap(let address, let length):
                try mm.munmap(VirtualAddress(address), length: length, recording: &zap)
                if !queued { clearTouched(address, length) }
            case .mprotect(let address, let length, let protection):
                try mm.mprotect(VirtualAddress(address), length: length, protection: protection, recording: &walk)
            case .madvise(let address, let length, let advice):
                try mm.madvise(VirtualAddress(address), length: length, advice: advice, recording: &zap, collapses: &collapses,
                               pageout: &walk)
                if advice == .dontNeed && !queued { clearTouched(address, length) }
            case .mremap(let address, let oldLength, let newLength, let newAddress):
                _ = try mm.mremap(VirtualAddress(address), oldSize: oldLength, newSize: newLength,
                                  flags: [.mayMove, .fixed], newAddress: VirtualAddress(newAddress),
                                  recording: &zap, moved: &walk)
                if !queued { clearTouched(address, oldLength) }
            case .brk(let address):
                _ = mm.setBreak(VirtualAddress(address), recording: &zap)
            case .getMempolicy(let address):
                lookUpNode(thread: thread, mm: mm, address: address)
            case .spawn(let child):
                if !queued { try bind(child, to: Int(threadProcess[thread])) }
            case .fork(let child):
                guard child >= 0, child < Self.maxThreads else { throw .EINVAL }
                let forked = try mm.fork(recording: &walk)
                processes.append(forked)
                processRefs.append(.passUnretained(forked))
                processPIDs.append(forked.pid)
                try bind(child, to: processes.count - 1)
                if timeOrdered { startClock[child] = machine.clock(of: thread % cpuCount) }
            case .exit:
                kill(process: Int(threadProcess[thread]), recording: &zap)
            case .idle(let ms):
                report.idleMilliseconds += ms
                idleNanoseconds &+= ms &* SimulatedClock.nanosecondsPerMillisecond
            case .beginMeasurement:
                setupCounters = machine.totals
                setupVMStat = machine.kernel.vmstatValues()
                report.measured = true
            }
        } catch {
            report.failedCalls[String(describing: error), default: 0] += 1
        }
        if let time = machine.simulatedTime {
            chargeRecorded(event, zap, walk, collapses, thread: thread, pid: mm.pid, clockBefore: clockBefore, time)
        }
    }

    /// Charges the CPU of `thread` the system call `event` makes, at its clock, for the calls whose
    /// page-table work the kernel does not record (the others: `chargeRecorded`, once they are done).
    private func chargeSystemCall(_ event: WorkloadEvent, thread: Int, pid: Int, _ time: SimulatedTime) {
        let changesVMAs: Bool
        switch event {
        case .munmap, .madvise(_, _, .dontNeed), .mmap, .mprotect, .mremap, .brk, .fork, .exit: return
        case .madvise(_, _, .collapse), .madvise(_, _, .pageout): return   // `chargeRecorded`
        case .madvise: changesVMAs = true
        case .spawn: changesVMAs = false
        case .idle, .beginMeasurement: return
        case .getMempolicy: return   // charged with its page-table locks once the lookup is done
        }
        let cpu = self.cpu(of: thread)
        time.chargeSystemCall(cpu: cpu, pid: pid, now: machine.clock(of: cpu), changesVMAs: changesVMAs)
    }

    /// Charges the CPU of `thread` a call whose page-table work the kernel recorded — what its zaps did
    /// (`zap`: munmap, MADV_DONTNEED, a `MAP_FIXED` mmap, brk, mremap, exit) and what its other walks
    /// did (`walk`: mprotect, fork, mremap's move) — from its clock before the call (`clockBefore`);
    /// the TLB flushes the call made are on the CPU's cycles already, and are inside the mmap lock's
    /// hold (`SimulatedTime.chargeZap`, `chargeRemap`, `chargeProtection`, `chargeFork`, `chargePageout`).
    /// MADV_COLLAPSE's collapses (`collapses`) are charged on the caller's CPU as khugepaged's are on
    /// its own (`chargeCollapse`), after the system call.
    private func chargeRecorded(_ event: WorkloadEvent, _ zap: ZapRecord, _ walk: TableWalkRecord,
                                _ collapses: [CollapseRecord], thread: Int, pid: Int, clockBefore: Double,
                                _ time: SimulatedTime) {
        let cpu = self.cpu(of: thread)
        let design = machine.kernel.design
        let flushCycles = max(0, machine.cpus[cpu].counters.cycles + time.extraCycles[cpu] - clockBefore)
        switch event {
        case .munmap, .mmap, .brk:
            time.chargeZap(zap, cpu: cpu, pid: pid, design: design, now: clockBefore, lock: .write, flushCycles: flushCycles)
        case .madvise(_, _, .dontNeed):
            time.chargeZap(zap, cpu: cpu, pid: pid, design: design, now: clockBefore, lock: .read, flushCycles: flushCycles)
        case .exit:
            time.chargeZap(zap, cpu: cpu, pid: pid, design: design, now: clockBefore, lock: .none, flushCycles: flushCycles)
        case .mremap:
            time.chargeRemap(zap, moved: walk, cpu: cpu, pid: pid, design: design, now: clockBefore, flushCycles: flushCycles)
        case .mprotect:
            time.chargeProtection(walk, cpu: cpu, pid: pid, design: design, now: clockBefore, flushCycles: flushCycles)
        case .madvise(_, _, .pageout):
            time.chargePageout(walk, cpu: cpu, pid: pid, design: design, now: clockBefore, flushCycles: flushCycles,
                               swapOutPageCycles: machine.machineDescription.timing.swapOutPageCycles)
        case .madvise(_, _, .collapse):
            time.chargeSystemCall(cpu: cpu, pid: pid, now: clockBefore, changesVMAs: false)
            let copy = Double(PageGeometry.pmdOrder.pages) * machine.machineDescription.timing.copyPageCycles
            for collapse in collapses {
                time.chargeCollapse(collapse, cpu: cpu, design: design, now: machine.clock(of: cpu), copyCycles: copy)
            }
        case .fork:
            time.chargeFork(walk, cpu: cpu, pid: pid, design: design, now: clockBefore, flushCycles: flushCycles,
                            copyPageCycles: machine.machineDescription.timing.copyPageCycles)
        default: return
        }
    }

    private func bind(_ thread: Int, to process: Int) throws(Errno) {
        guard thread >= 0, thread < Self.maxThreads else { throw .EINVAL }
        if thread >= threadProcess.count {
            threadProcess.append(contentsOf: repeatElement(-1, count: thread + 1 - threadProcess.count))
            startClock.append(contentsOf: repeatElement(0, count: thread + 1 - startClock.count))
        }
        guard threadProcess[thread] < 0 else { throw .EEXIST }
        threadProcess[thread] = Int32(process)
    }

    /// Records RSS now (Linux: `AnonPages` and `AnonHugePages` of `/proc/meminfo`).
    private func sampleMemory() {
        ticksUntilSample = ticksPerSample
        let m = machine.kernel.meminfo()
        report.memoryOverTime.append(.init(accesses: loads + stores + fetches, anonBytes: m["AnonPages"] ?? 0,
                                           anonHugeBytes: m["AnonHugePages"] ?? 0, touchedBytes: touchedBytes))
    }

    /// The process ends (Linux: `exit_mmap()` when the last reference goes); its threads stop.
    private func kill(process: Int) {
        var record = ZapRecord()
        kill(process: process, recording: &record)
    }

    /// `kill(process:)`, adding what the teardown's zaps did to `record`.
    private func kill(process: Int, recording record: inout ZapRecord) {
        guard let mm = processes[process] else { return }
        cachedThread = -1
        if timeOrdered {
            for t in threadProcess.indices where Int(threadProcess[t]) == process { dropQueue(t) }
        }
        for cpu in machine.cpus where cpu.mm === mm { cpu.switchTo(nil) }
        mm.exit(recording: &record)
        processRefs[process] = nil
        processes[process] = nil
    }

    /// Fills in the report's end-of-run figures: counters of the measured phase (everything, when
    /// the workload never began measuring), vmstat deltas, memory.
    public func finish() -> ReplayReport {
        flush()
        var r = report
        r.accesses = [loads, stores, fetches]
        advanceClock()
        sampleMemory()
        r.memoryOverTime = report.memoryOverTime
        let now = machine.totals
        r.total = now
        r.measuredCounters = r.measured ? now.subtracting(setupCounters) : now
        let vm = machine.kernel.vmstatValues()
        r.vmstat = vm.filter { $0.value != 0 }
        for (name, value) in vm where value != setupVMStat[name] ?? 0 {
            r.vmstatMeasured[name] = value - (setupVMStat[name] ?? 0)
        }
        let meminfo = machine.kernel.meminfo()
        r.anonBytes = (meminfo["AnonPages"] ?? 0)
        r.anonHugeBytes = meminfo["AnonHugePages"] ?? 0
        r.pageTableBytes = meminfo["PageTables"] ?? 0
        r.frequencyGHz = machine.machineDescription.frequencyGHz
        r.vmstatFinal = vm
        r.meminfoFinal = Dictionary(uniqueKeysWithValues: meminfo.fields.map { ($0.name, $0.bytes) })
        r.pagesCollapsed = machine.kernel.khugepaged.pagesCollapsed
        r.touchedBytes = touchedBytes
        r.faultLatency = machine.faultLatency
        r.simulatedNanoseconds = machine.kernel.clock.now
        r.time = .init(machine)
        if let cgroup { r.cgroup = .init(kernel: machine.kernel, cgroup: cgroup, pids: processPIDs) }
        r.oomKills = machine.kernel.memoryCgroups.oomKills.filter { $0.cgroup.isEmpty }.map { kill in
            .init(process: processPIDs.firstIndex(of: kill.pid) ?? -1, pid: kill.pid, rssBytes: kill.rssBytes,
                  swapBytes: kill.swapBytes, simulatedNanoseconds: kill.nanoseconds)
        }
        return r
    }
}

extension TranslationCounters {
    /// The counts and cycles of `self` minus those of an earlier snapshot.
    public func subtracting(_ o: TranslationCounters) -> TranslationCounters {
        var t = TranslationCounters()
        t.accesses = accesses - o.accesses; t.l1Hits = l1Hits - o.l1Hits; t.l2Hits = l2Hits - o.l2Hits
        t.walks = walks - o.walks; t.walkReferences = walkReferences - o.walkReferences
        t.walkReferencesFromMemory = walkReferencesFromMemory - o.walkReferencesFromMemory
        t.pageWalkCacheHits = pageWalkCacheHits - o.pageWalkCacheHits; t.dirtyAssists = dirtyAssists - o.dirtyAssists
        t.faults = faults - o.faults; t.writebacks = writebacks - o.writebacks
        t.baseCycles = baseCycles - o.baseCycles; t.tlbCycles = tlbCycles - o.tlbCycles; t.walkCycles = walkCycles - o.walkCycles
        t.dataCycles = dataCycles - o.dataCycles; t.faultCycles = faultCycles - o.faultCycles; t.flushCycles = flushCycles - o.flushCycles
        return t
    }
}

extension TraceReader where Input == TraceFile {
    /// Replays into `executor` (a concrete entry point, so the record loop is specialized for it),
    /// reading and decompressing blocks on a second host thread (`replayPipelined`; same results).
    public mutating func replay(on executor: MachineExecutor) throws(TraceError) -> Int {
        var e = executor
        return try replayPipelined(into: &e)
    }
}

extension TraceReader where Input == TraceBytes {
    /// Replays into `executor` (a concrete entry point, so the record loop is specialized for it).
    public mutating func replay(on executor: MachineExecutor) throws(TraceError) -> Int {
        var e = executor
        return try replay(into: &e)
    }
}
