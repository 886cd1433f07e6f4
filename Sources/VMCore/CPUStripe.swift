#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import HostIntrinsics

/// Which per-CPU slot the calling thread uses for per-CPU data (counters, caches): a simulated CPU is
/// a host thread, and each thread holds a slot of its own while it lives (Linux: `smp_processor_id()`).
///
/// A thread takes the lowest free slot on first use and gives it back when it exits, so the threads
/// running at once hold different slots, whatever threads came and went before them (a benchmark
/// process starts many). Only when more threads than slots touch per-CPU data at once do several share
/// a slot, which stays correct (per-CPU data is locked or atomic) but costs their sharing. The slot
/// is the thread's, not the host core's, so that a seeded single-threaded run uses one slot wherever
/// the host schedules it, and replays.
public enum CPUStripe {
    /// How many slots there are.
    public static let count = 8
    /// Slots held by live threads, one bit each.
    private static let held = Atomic<UInt64>(0)
    /// Round-robin for the threads beyond `count`, which share.
    private static let next = Atomic<Int>(0)
    /// A key whose destructor gives a thread's slot back when it exits.
    nonisolated(unsafe) private static let releaseKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { value in
            let slot = Int(bitPattern: value) - 1
            if slot >= 0 { CPUStripe.held.bitwiseAnd(~(UInt64(1) << UInt64(slot)), ordering: .relaxed) }
        }
        return key
    }()

    /// The calling thread's slot in 0..<count.
    @inlinable public static var current: Int {
        let value = thpsim_cpu_slot()
        if value != 0 { return value - 1 }
        return assign()
    }

    @usableFromInline static func assign() -> Int {
        let all = UInt64(1) << UInt64(count) - 1
        var bits = held.load(ordering: .relaxed)
        while bits & all != all {
            let slot = (~bits & all).trailingZeroBitCount
            let (exchanged, original) = held.compareExchange(expected: bits, desired: bits | UInt64(1) << UInt64(slot),
                                                             ordering: .relaxed)
            if exchanged {
                thpsim_set_cpu_slot(slot + 1)
                pthread_setspecific(releaseKey, UnsafeRawPointer(bitPattern: slot + 1))
                return slot
            }
            bits = original
        }
        let shared = next.wrappingAdd(1, ordering: .relaxed).oldValue & (count - 1)
        thpsim_set_cpu_slot(shared + 1)
        return shared
    }
}

/// Counters kept per CPU stripe and summed when read (Linux: per-CPU counters such as
/// `vm_event_states`). Each stripe starts on its own cache line, so CPUs counting at once write
/// different lines. A value of this type is a view: copying it copies the address, with no reference
/// count for concurrent CPUs to fight over; its owner calls `release()` once, when it goes.
public struct PerCPUCounters: @unchecked Sendable {
    public let count: Int
    /// Counters per stripe, rounded up to whole cache lines.
    @usableFromInline let stride: Int
    @usableFromInline let counters: UnsafeMutablePointer<Atomic<Int>>

    public init(count: Int) {
        self.count = count
        stride = (count + 7) / 8 * 8
        let total = CPUStripe.count * stride
        counters = UnsafeMutableRawPointer.allocate(byteCount: total * MemoryLayout<Int>.stride, alignment: 64)
            .bindMemory(to: Atomic<Int>.self, capacity: total)
        for i in 0..<total { (counters + i).initialize(to: Atomic(0)) }
    }

    /// Frees the counters; no copy of this view may be used afterwards.
    public func release() {
        counters.deinitialize(count: CPUStripe.count * stride)
        UnsafeMutableRawPointer(counters).deallocate()
    }

    /// Adds `n` to counter `index` of the calling CPU's stripe.
    @inlinable public func add(_ index: Int, _ n: Int) {
        (counters + (CPUStripe.current &* stride &+ index)).pointee.wrappingAdd(n, ordering: .relaxed)
    }

    /// Counter `index` summed over the stripes.
    public func sum(_ index: Int) -> Int {
        var total = 0
        for stripe in 0..<CPUStripe.count { total &+= counters[stripe * stride + index].load(ordering: .relaxed) }
        return total
    }
}
