import Synchronization

/// Counters kept per CPU and summed when read (Linux: per-CPU counters such as `vm_event_states`).
/// Each CPU's start on a cache line of their own, so CPUs counting at once write different lines. A
/// value of this type is a view: copying it copies the address, with no reference count for
/// concurrent CPUs to fight over; its owner calls `release()` once, when it goes.
public struct PerCPUCounters: @unchecked Sendable {
    public let count: Int
    /// CPUs with counters of their own.
    public let cpus: Int
    /// Counters per CPU, rounded up to whole cache lines.
    @usableFromInline let stride: Int
    @usableFromInline let counters: UnsafeMutablePointer<Atomic<Int>>

    /// `count` counters for each of `cpus` CPUs.
    /// - Precondition: 1 ≤ `cpus` ≤ `SimulatedCPU.maxCount`.
    public init(count: Int, cpus: Int = SimulatedCPU.defaultCount) {
        precondition(cpus >= 1 && cpus <= SimulatedCPU.maxCount, "\(cpus) CPUs")
        self.count = count
        self.cpus = cpus
        stride = (count + 7) / 8 * 8
        let total = cpus * stride
        counters = UnsafeMutableRawPointer.allocate(byteCount: total * MemoryLayout<Int>.stride, alignment: 64)
            .bindMemory(to: Atomic<Int>.self, capacity: total)
        for i in 0..<total { (counters + i).initialize(to: Atomic(0)) }
    }

    /// Frees the counters; no copy of this view may be used afterwards.
    public func release() {
        counters.deinitialize(count: cpus * stride)
        UnsafeMutableRawPointer(counters).deallocate()
    }

    /// Adds `n` to counter `index` of the executing CPU.
    @inlinable @inline(__always) public func add(_ index: Int, _ n: Int) {
        let cpu = SimulatedCPU.slot(SimulatedCPU.current, of: cpus)
        (counters + (cpu &* stride &+ index)).pointee.wrappingAdd(n, ordering: .relaxed)
    }

    /// Counter `index` of CPU `cpu` alone.
    public func value(_ index: Int, cpu: Int) -> Int {
        counters[SimulatedCPU.slot(cpu, of: cpus) * stride + index].load(ordering: .relaxed)
    }

    /// Counter `index` summed over the CPUs.
    public func sum(_ index: Int) -> Int {
        var total = 0
        for cpu in 0..<cpus { total &+= counters[cpu * stride + index].load(ordering: .relaxed) }
        return total
    }
}
