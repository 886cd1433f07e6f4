import VMCore
import Kernel

/// A simulated machine: CPUs of one described core type in front of one kernel model. It installs
/// itself as the kernel's TLB-flush interface, so every translation the kernel weakens is shot down
/// on the CPUs that may cache it.
///
/// ```
///   program accesses ─► CPU 0 … CPU n-1 (TLBs, PWCs, walker) ─► page faults ─► Kernel
///                         ▲                                                    │
///                         └────────── flushRange / flushAll (shootdowns) ◄─────┘
/// ```
public final class Machine: @unchecked Sendable {
    public let kernel: Kernel
    public let machineDescription: MachineDescription
    public let cpus: [CPU]
    /// The CPU whose code the calling host thread is running, the initiator of shootdowns (Linux:
    /// `smp_processor_id()`): `SimulatedCPU.current`, which also picks the kernel's per-CPU state. A
    /// CPU's fault entry switches to the CPU; whoever runs a CPU on a host thread or interleaves
    /// CPUs on one switches with `SimulatedCPU.switchTo(_:)`; system calls made from outside an
    /// access run on a CPU with `run(on:_:)`. The thread that builds a machine runs CPU 0 (the boot
    /// CPU) until it switches.
    public var executingCPU: Int { SimulatedCPU.current }
    /// Which CPUs ran each address space since they last dropped its translations, by pid
    /// (Linux: `mm_cpumask()`).
    var cpumasks: [Int: UInt64] = [:]
    public internal(set) var flushCounters = TLBFlushCounters()

    /// - Precondition: the description has no problems; 1 ≤ `cpuCount` ≤ 64, and the kernel has per-CPU
    ///   state for as many (`KernelConfiguration.cpus`).
    public init(kernel: Kernel, description: MachineDescription, cpuCount: Int = 1) {
        precondition(description.problems.isEmpty, "machine description: \(description.problems)")
        precondition((1...64).contains(cpuCount), "1 to 64 CPUs")
        precondition(cpuCount <= kernel.configuration.cpus,
                     "\(cpuCount) CPUs on a kernel configured for \(kernel.configuration.cpus)")
        self.kernel = kernel
        machineDescription = description
        cpus = (0..<cpuCount).map { CPU(id: $0, description: description) }
        for cpu in cpus { cpu.machine = self }
        kernel.tlb = FlushForwarder(self)
        SimulatedCPU.switchTo(0)
    }

    /// The cache model every CPU uses (`CacheModel.Kind`: `full` by default, `sampled` faster);
    /// setting it empties the CPUs' caches.
    public var cacheModel: CacheModel.Kind {
        get { cpus[0].cache.kind }
        set { for cpu in cpus { cpu.cache.use(newValue); cpu.chargedWritebacks = 0 } }
    }

    /// Runs `body` as kernel code on `cpu` (e.g. a system call the process on it makes), so that
    /// flushes it causes are local there and remote elsewhere.
    public func run<T, E: Error>(on cpu: Int, _ body: () throws(E) -> T) throws(E) -> T {
        precondition(cpu >= 0 && cpu < cpus.count, "CPU \(cpu) of \(cpus.count)")
        return try SimulatedCPU.run(on: cpu, body)
    }

    func noteRunning(_ cpu: CPU, _ mm: AddressSpace) {
        cpumasks[mm.pid, default: 0] |= 1 << UInt64(cpu.id)
    }

    /// The CPUs that may hold translations of `mm` (Linux: `mm_cpumask()`).
    public func cpusThatRan(_ mm: AddressSpace) -> [Int] {
        let mask = cpumasks[mm.pid] ?? 0
        return (0..<cpus.count).filter { mask & (1 << UInt64($0)) != 0 }
    }

    /// Counters and cycles summed over every CPU.
    /// The fault latencies of every CPU together.
    public var faultLatency: FaultLatencyHistogram {
        var h = FaultLatencyHistogram()
        for c in cpus { h.add(c.faultLatency) }
        return h
    }

    public var totals: TranslationCounters {
        var t = TranslationCounters()
        for c in cpus {
            let n = c.counters
            t.accesses += n.accesses; t.l1Hits += n.l1Hits; t.l2Hits += n.l2Hits; t.walks += n.walks
            t.walkReferences += n.walkReferences; t.walkReferencesFromMemory += n.walkReferencesFromMemory; t.pageWalkCacheHits += n.pageWalkCacheHits
            t.dirtyAssists += n.dirtyAssists; t.faults += n.faults; t.writebacks += n.writebacks
            t.baseCycles += n.baseCycles; t.tlbCycles += n.tlbCycles; t.walkCycles += n.walkCycles
            t.dataCycles += n.dataCycles; t.faultCycles += n.faultCycles; t.flushCycles += n.flushCycles
        }
        return t
    }
}

/// The kernel holds its TLB interface strongly; this forwarder holds the machine weakly, so a machine
/// and its kernel do not keep each other alive.
final class FlushForwarder: TLBFlushInterface, @unchecked Sendable {
    weak var machine: Machine?
    init(_ machine: Machine) { self.machine = machine }
    func flushRange(_ mm: AddressSpace, start: VirtualAddress, end: VirtualAddress) {
        machine?.flushRange(mm, start: start, end: end)
    }
    func flushAll(_ mm: AddressSpace) { machine?.flushAll(mm) }
}
