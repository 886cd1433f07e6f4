import Synchronization
import HostIntrinsics

/// Which per-CPU slot the calling thread uses for per-CPU data (counters, caches): a number given to
/// each host thread on first use, modulo the slot count (Linux: `smp_processor_id()`).
public enum CPUStripe {
    @usableFromInline static let next = Atomic<Int>(0)
    /// How many slots there are.
    public static let count = 8

    /// The calling thread's slot in 0..<count.
    @inlinable public static var current: Int {
        let value = thpsim_cpu_slot()
        if value != 0 { return (value - 1) & (count - 1) }
        return assign()
    }

    @usableFromInline static func assign() -> Int {
        let assigned = next.wrappingAdd(1, ordering: .relaxed).oldValue
        thpsim_set_cpu_slot(assigned + 1)
        return assigned & (count - 1)
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
