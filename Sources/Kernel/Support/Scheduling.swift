#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import VMCore

/// Where simulated CPUs may be switched: every lock acquisition, every spin, and the explicit points
/// the kernel marks inside its lockless protocols.
///
/// Normally a point costs one relaxed load, and a spinning waiter yields its host thread. While a
/// `DeterministicScheduler` runs, only one simulated CPU runs at a time and each point hands the CPU
/// to one chosen by the scheduler's seeded generator, so the same seed replays the same interleaving.
public enum Scheduling {
    nonisolated(unsafe) static var scheduler: DeterministicScheduler?
    static let active = Atomic<Bool>(false)
    /// Marks the threads the scheduler runs; other threads (other tests, say) are never switched.
    nonisolated(unsafe) static var managedKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// Whether this thread is a simulated CPU of the running deterministic scheduler.
    static var isManagedThread: Bool {
        active.load(ordering: .relaxed) && pthread_getspecific(managedKey) != nil
    }

    /// A point where another simulated CPU may run (a preemption point).
    @inline(__always) public static func point() {
        if active.load(ordering: .relaxed) && isManagedThread { scheduler?.switchPoint() }
    }

    /// Called by a waiter that cannot make progress until another CPU does (a spin iteration).
    @inline(__always) public static func pause() {
        if active.load(ordering: .relaxed) && isManagedThread { scheduler?.switchPoint(waiting: true) } else { sched_yield() }
    }

    /// A spin iteration of a lock waiter: in the deterministic mode it hands the CPU over at once (only
    /// one simulated CPU runs, so the holder cannot release otherwise); on real threads it waits as
    /// `backoff` says, spinning before it yields.
    @inline(__always) public static func pause(_ backoff: inout SpinBackoff) {
        if active.load(ordering: .relaxed) && isManagedThread { scheduler?.switchPoint(waiting: true) } else { backoff.wait() }
    }
}

/// Runs tasks as simulated CPUs, one at a time, switching at `Scheduling` points by a seeded choice
/// (the deterministic mode of ARCHITECTURE.md). Task `i` runs as simulated CPU `i`
/// (`SimulatedCPU.current`), so its per-CPU state is the same in every run. A failing seed replays
/// exactly.
public final class DeterministicScheduler: @unchecked Sendable {
    private var rng: UInt64
    private var turn = -1
    private var finished: [Bool] = []
    private var conditions: [UnsafeMutablePointer<pthread_cond_t>] = []
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    /// How many switch points the run passed (a measure of how much interleaving it explored).
    public private(set) var points = 0
    /// Consecutive waiting points without progress; a run that only waits is deadlocked.
    private var idleWaits = 0
    public private(set) var deadlocked = false

    public init(seed: UInt64) {
        rng = seed &+ 0x9E37_79B9_7F4A_7C15
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    private func next() -> UInt64 {
        rng &+= 0x9E37_79B9_7F4A_7C15
        var z = rng
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// One deterministic run at a time in a process; others wait their turn.
    nonisolated(unsafe) private static var exclusive: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        m.initialize(to: pthread_mutex_t())
        pthread_mutex_init(m, nil)
        return m
    }()

    /// Runs every task to completion on its own thread, one at a time. Runs from different threads of
    /// the process take turns.
    public func run(_ tasks: [@Sendable () -> Void]) {
        pthread_mutex_lock(Self.exclusive)
        defer { pthread_mutex_unlock(Self.exclusive) }
        precondition(Scheduling.scheduler == nil, "a deterministic scheduler is already running")
        finished = Array(repeating: false, count: tasks.count)
        conditions = tasks.map { _ in
            let c = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
            c.initialize(to: pthread_cond_t())
            pthread_cond_init(c, nil)
            return c
        }
        Scheduling.scheduler = self
        Scheduling.active.store(true, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(mutex)
        turn = Int(next() % UInt64(tasks.count))
        pthread_mutex_unlock(mutex)
        var threads: [pthread_t] = []
        for (i, task) in tasks.enumerated() {
            let box = Unmanaged.passRetained(TaskBox(index: i, scheduler: self, body: task))
            var thread = pthread_t()
            pthread_create(&thread, nil, { raw in
                let box = Unmanaged<TaskBox>.fromOpaque(raw!).takeRetainedValue()
                pthread_setspecific(Scheduling.managedKey, UnsafeRawPointer(bitPattern: 1))
                SimulatedCPU.switchTo(box.index % SimulatedCPU.maxCount)
                box.scheduler.waitForTurn(box.index)
                box.body()
                box.scheduler.finish(box.index)
                return nil
            }, box.toOpaque())
            threads.append(thread)
        }
        for t in threads { pthread_join(t, nil) }
        Scheduling.active.store(false, ordering: .sequentiallyConsistent)
        Scheduling.scheduler = nil
        for c in conditions { pthread_cond_destroy(c); c.deallocate() }
        conditions = []
    }

    private final class TaskBox {
        let index: Int
        let scheduler: DeterministicScheduler
        let body: @Sendable () -> Void
        init(index: Int, scheduler: DeterministicScheduler, body: @escaping @Sendable () -> Void) {
            self.index = index; self.scheduler = scheduler; self.body = body
        }
    }

    /// The index of the task on this thread, found by whose turn it is (only the running one calls).
    private func waitForTurn(_ index: Int) {
        pthread_mutex_lock(mutex)
        while turn != index { pthread_cond_wait(conditions[index], mutex) }
        pthread_mutex_unlock(mutex)
    }

    /// Picks the next task to run among those not finished, hands over, and waits for our turn again.
    func switchPoint(waiting: Bool = false) {
        pthread_mutex_lock(mutex)
        let me = turn
        points += 1
        idleWaits = waiting ? idleWaits + 1 : 0
        if idleWaits > 1_000_000 { deadlocked = true; preconditionFailure("deterministic run made no progress in a million waits (deadlock)") }
        let live = finished.indices.filter { !finished[$0] }
        let chosen = live[Int(next() % UInt64(live.count))]
        if chosen != me {
            turn = chosen
            pthread_cond_signal(conditions[chosen])
            while turn != me { pthread_cond_wait(conditions[me], mutex) }
        }
        pthread_mutex_unlock(mutex)
    }

    private func finish(_ index: Int) {
        pthread_mutex_lock(mutex)
        finished[index] = true
        idleWaits = 0
        let live = finished.indices.filter { !finished[$0] }
        if let chosen = live.isEmpty ? nil : live[Int(next() % UInt64(live.count))] {
            turn = chosen
            pthread_cond_signal(conditions[chosen])
        }
        pthread_mutex_unlock(mutex)
    }
}

