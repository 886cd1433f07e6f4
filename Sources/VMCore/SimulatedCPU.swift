#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import HostIntrinsics

/// The simulated CPU executing the calling code (Linux: `smp_processor_id()`): the index of every
/// per-CPU structure (per-CPU page lists, the LRU's add stage, vmstat's counters, page-table slot
/// caches).
///
/// It is a word of the calling host thread, set by whoever runs code on behalf of a CPU when it
/// switches to it, so reading it is one load, whatever drives the simulated CPUs:
/// - one host thread interleaving them (the replay executor): the executor switches when it moves a
///   workload thread onto a CPU, and the CPU's fault entry switches to itself;
/// - each on a host thread of its own (stress runs, concurrent tests and benchmarks): a thread running
///   a CPU switches to it once, and its faults switch to it again;
/// - kernel threads (khugepaged, kswapd, kcompactd) run on the CPU the kernel's configuration names.
///
/// A host thread that never switched is a CPU of its own: it takes the lowest number no other such
/// thread holds and gives it back when it exits, so threads working at once (tests that call the
/// kernel from many threads) still use different per-CPU slots. Such numbers may coincide with a
/// switched thread's CPU; per-CPU data is locked or atomic, so sharing a slot costs only contention.
///
/// A per-CPU structure has as many slots as the kernel has CPUs (`KernelConfiguration.cpus`) and
/// finds the slot of a CPU with `slot(_:of:)`.
public enum SimulatedCPU {
    /// The most CPUs a kernel may have.
    public static let maxCount = 1024
    /// How many per-CPU slots a structure built without a CPU count has.
    public static let defaultCount = 16
    /// Numbers held by live threads that never switched, one bit each.
    private static let held = Atomic<UInt64>(0)
    /// Round-robin for such threads beyond 64, which share.
    private static let next = Atomic<Int>(0)
    /// A key whose destructor gives a thread's number back when it exits.
    nonisolated(unsafe) private static let releaseKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { value in
            let slot = Int(bitPattern: value) - 1
            if slot >= 0 { SimulatedCPU.held.bitwiseAnd(~(UInt64(1) << UInt64(slot)), ordering: .relaxed) }
        }
        return key
    }()

    /// The CPU executing the calling code, in 0..<maxCount (Linux: `smp_processor_id()`).
    @inlinable @inline(__always) public static var current: Int {
        let value = thpsim_cpu_slot()
        if value != 0 { return value &- 1 }
        return assign()
    }

    /// Makes the calling host thread execute `cpu` from now on (Linux: the context switch that puts a
    /// task on a CPU). The one way the executing CPU changes.
    @inlinable public static func switchTo(_ cpu: Int) {
        precondition(cpu >= 0 && cpu < maxCount, "CPU \(cpu) is not in 0..<\(maxCount)")
        thpsim_set_cpu_slot(cpu &+ 1)
    }

    /// Runs `body` as code of `cpu`, then switches the thread back to what it executed before.
    @inlinable public static func run<T, E: Error>(on cpu: Int, _ body: () throws(E) -> T) throws(E) -> T {
        let previous = thpsim_cpu_slot()
        switchTo(cpu)
        defer { thpsim_set_cpu_slot(previous) }
        return try body()
    }

    /// The slot of `cpu` in a per-CPU structure of `count` slots: `cpu` itself when the structure has
    /// it (always, for the CPUs of a machine whose kernel sized the structure); otherwise CPUs share.
    @inlinable @inline(__always) public static func slot(_ cpu: Int, of count: Int) -> Int {
        cpu < count ? cpu : cpu % count
    }

    /// Gives a thread that never switched the lowest free number.
    @usableFromInline static func assign() -> Int {
        var bits = held.load(ordering: .relaxed)
        while bits != .max {
            let slot = (~bits).trailingZeroBitCount
            let (exchanged, original) = held.compareExchange(expected: bits, desired: bits | UInt64(1) << UInt64(slot),
                                                             ordering: .relaxed)
            if exchanged {
                thpsim_set_cpu_slot(slot + 1)
                pthread_setspecific(releaseKey, UnsafeRawPointer(bitPattern: slot + 1))
                return slot
            }
            bits = original
        }
        let shared = next.wrappingAdd(1, ordering: .relaxed).oldValue & 63
        thpsim_set_cpu_slot(shared + 1)
        return shared
    }
}
