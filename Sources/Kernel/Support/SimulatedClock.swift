import Synchronization
import VMCore

/// Simulated time, in nanoseconds since boot, that drives the kernel's own threads: khugepaged on its
/// timer; kswapd and kcompactd as soon as the clock moves after they were woken. Nothing advances it by itself: a test, the scenario runner or the
/// Machine layer calls `Kernel.advanceTime(by:)`, and every kernel thread whose wake-up falls inside the
/// interval runs then, in wake-up order, on the caller's host thread as simulated CPU
/// `KernelConfiguration.kernelThreadCPU` (Linux: `jiffies` and the timers of
/// `wait_event_freezable_timeout()`).
public final class SimulatedClock: Sendable {
    private let nanoseconds = Atomic<UInt64>(0)

    /// Nanoseconds since boot.
    public var now: UInt64 { nanoseconds.load(ordering: .acquiring) }

    /// Moves the clock to `time`, which must not lie in the past.
    func set(_ time: UInt64) {
        precondition(time >= now, "simulated time cannot run backwards (\(time) < \(now))")
        nanoseconds.store(time, ordering: .releasing)
    }

    public static let nanosecondsPerMillisecond: UInt64 = 1_000_000
}

extension Kernel {
    /// Advances simulated time by `nanoseconds`, running every kernel thread whose wake-up falls in the
    /// interval at its wake-up time (khugepaged's scans; kcompactd when it was woken), on the kernel
    /// threads' CPU.
    public func advanceTime(by nanoseconds: UInt64) {
        SimulatedCPU.run(on: configuration.kernelThreadCPU) { runKernelThreads(until: clock.now + nanoseconds) }
    }

    private func runKernelThreads(until target: UInt64) {
        kswapd.runIfWoken(self)
        kcompactd.runIfWoken(self)
        while let (wake, thread) = nextTimer(), wake <= target {
            clock.set(max(wake, clock.now))
            run(thread)
            kswapd.runIfWoken(self)
            kcompactd.runIfWoken(self)
        }
        // A thread's own sleep (khugepaged's alloc_sleep inside a wake-up) may have passed the target.
        clock.set(max(target, clock.now))
    }

    /// Advances simulated time to the next kernel-thread wake-up and runs it; false when no thread is
    /// waiting on a timer (khugepaged with no mm to scan sleeps until one registers). It runs on the
    /// kernel threads' CPU.
    @discardableResult
    public func runNextKernelThreadWakeup() -> Bool {
        SimulatedCPU.run(on: configuration.kernelThreadCPU) { runNextWakeup() }
    }

    private func runNextWakeup() -> Bool {
        if kswapd.isWoken {
            kswapd.runIfWoken(self)
            return true
        }
        if kcompactd.isWoken {
            kcompactd.runIfWoken(self)
            return true
        }
        guard let (wake, thread) = nextTimer() else { return false }
        clock.set(max(wake, clock.now))
        run(thread)
        return true
    }

    /// The kernel threads that wait on a timer.
    private enum TimedThread { case khugepaged, policyThreads, policyDaemon }

    private func run(_ thread: TimedThread) {
        switch thread {
        case .khugepaged: khugepaged.wakeUp(self)
        case .policyThreads: runPolicyThreads()
        case .policyDaemon: policyDaemon!.wakeUp(self)
        }
    }

    /// The earliest timer of a kernel thread: khugepaged's, a custom policy's threads' (`runThreads`)
    /// or its daemon's (`daemonWakeUp`), in that order at a tie; nil when none waits on a timer.
    private func nextTimer() -> (UInt64, TimedThread)? {
        var next: (UInt64, TimedThread)? = khugepaged.nextWakeup().map { ($0, .khugepaged) }
        if let wake = policyThreadWakeup(), next.map({ wake < $0.0 }) ?? true { next = (wake, .policyThreads) }
        if let wake = policyDaemon?.nextWakeup, next.map({ wake < $0.0 }) ?? true { next = (wake, .policyDaemon) }
        return next
    }
}
