#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Which per-CPU slot the calling thread uses for per-CPU data (counters, caches): a number given to
/// each host thread on first use, modulo the slot count (Linux: `smp_processor_id()`).
public enum CPUStripe {
    private static let next = Atomic<Int>(0)
    nonisolated(unsafe) private static var key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// The calling thread's slot in 0..<8.
    @inline(__always) public static var current: Int {
        if let value = pthread_getspecific(key) { return (Int(bitPattern: value) - 1) & 7 }
        let assigned = next.wrappingAdd(1, ordering: .relaxed).oldValue
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: assigned + 1))
        return assigned & 7
    }
}
