#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A value behind a spin lock, for the model's short leaf critical sections (free lists, slot lists,
/// mapping lists): nothing that can wait or switch simulated CPUs runs while it is held.
///
/// It is built on an atomic word rather than a futex so that its acquire/release ordering is visible
/// to Thread Sanitizer and so that it never puts a host thread to sleep (which would stall the
/// deterministic scheduler); a waiter yields its thread while it spins.
public final class SpinLocked<Value>: @unchecked Sendable {
    private let word = Atomic<UInt32>(0)
    private var value: Value

    public init(_ value: Value) { self.value = value }

    @inline(__always)
    public func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        while !word.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
            while word.load(ordering: .relaxed) != 0 { sched_yield() }
        }
        defer { word.store(0, ordering: .releasing) }
        return try body(&value)
    }
}
