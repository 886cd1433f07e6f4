#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import HostIntrinsics

/// A value behind a spin lock, for the model's short leaf critical sections (free lists, slot lists,
/// mapping lists): nothing that can wait or switch simulated CPUs runs while it is held.
///
/// It is built on an atomic word rather than a futex so that its acquire/release ordering is visible
/// to Thread Sanitizer and so that it never puts a host thread to sleep (which would stall the
/// deterministic scheduler); a waiter spins, then yields its thread (`SpinBackoff`).
public final class SpinLocked<Value>: @unchecked Sendable {
    private let word = Atomic<UInt32>(0)
    @exclusivity(unchecked) private var value: Value

    public init(_ value: Value) { self.value = value }

    @inline(__always)
    public func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        while !word.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
            var backoff = SpinBackoff()
            while word.load(ordering: .relaxed) != 0 { backoff.wait() }
        }
        defer { word.store(0, ordering: .releasing) }
        return try body(&value)
    }
}

extension UnsafeMutablePointer where Pointee == Atomic<UInt32> {
    /// Takes the leaf spin lock stored in this word (0 free, 1 held), spinning, then yielding
    /// (`SpinBackoff`), while another thread holds it. For locks that live in host memory of their
    /// own rather than in a `SpinLocked` (per-CPU stacks, huge-mapping slots).
    @inlinable public func acquireLeafLock() {
        while !pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
            var backoff = SpinBackoff()
            while pointee.load(ordering: .relaxed) != 0 { backoff.wait() }
        }
    }

    /// Releases the leaf spin lock stored in this word.
    @inlinable public func releaseLeafLock() { pointee.store(0, ordering: .releasing) }
}

/// How a spinning waiter waits: a few spin-wait hints first, because the holder of a short critical
/// section on another core is about to release it, then yielding the host thread, because the holder
/// may not be running at all (more host threads than cores). Yielding at once costs a system call
/// per wait, several times the critical sections the model's locks guard (docs/performance.md,
/// concurrent huge faults).
public struct SpinBackoff {
    /// Spin-wait hints before the first yield: about as long as a system call.
    public static let spins = 64
    private var waited = 0

    public init() {}

    @inline(__always) public mutating func wait() {
        if waited < Self.spins {
            waited += 1
            thpsim_cpu_relax()
        } else {
            sched_yield()
        }
    }
}
