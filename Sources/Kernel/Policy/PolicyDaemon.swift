import Synchronization
import VMCore

/// The kernel thread a custom policy may have (Quicksilver's `asyncpromo`), woken every `interval`
/// nanoseconds of simulated time like khugepaged (`SimulatedClock.swift` runs both): one wake-up calls
/// `HugepagePolicy.daemonWakeUp(_:)` on the kernel threads' CPU. Linux's policies have none.
final class PolicyDaemon: Sendable {
    let interval: UInt64
    private let next: Atomic<UInt64>
    /// What the thread saw of each reservation at its wake-ups, by first frame: the population then and
    /// since when it has not changed (Quicksilver: `rv->timestamp`, the last populate or depopulate).
    /// Only the thread reads and writes it.
    let reservationsSeen = Mutex<[UInt32: (population: Int32, since: UInt64)]>([:])

    init(interval: UInt64) {
        precondition(interval > 0)
        self.interval = interval
        next = Atomic(interval)
    }

    /// When the thread wakes next.
    var nextWakeup: UInt64? { next.load(ordering: .relaxed) }

    /// Runs one wake-up and sets the next one an interval after this (Linux: a timer-driven kthread's
    /// `schedule_timeout()`).
    func wakeUp(_ kernel: Kernel) {
        next.store(kernel.clock.now &+ interval, ordering: .relaxed)
        kernel.customPolicy?.daemonWakeUp(kernel)
    }
}
