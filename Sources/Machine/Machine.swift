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
    var cpumasks: [Int: CPUMask] = [:]
    public internal(set) var flushCounters = TLBFlushCounters()
    /// Shootdowns each CPU sent (flushes that interrupted other CPUs) and IPIs each received.
    public internal(set) var shootdownsSent: [Int]
    public internal(set) var shootdownsReceived: [Int]
    /// What sharing cost each CPU (locks, shared lines, bandwidth, system calls), when the machine was
    /// built with `simulatedTime` and has more than one CPU; nil otherwise (each CPU's time is its cycles).
    public let simulatedTime: SimulatedTime?
    /// The most CPUs a machine may have.
    public static let maxCPUs = CPUMask.capacity
    /// Where each CPU's TLB sets lie, for `warmUp(cpu:for:)`; on a machine of more than one CPU.
    private let warmUpTable: TLBWarmUpTable?

    /// - Precondition: the description has no problems; 1 ≤ `cpuCount` ≤ `maxCPUs`, and the kernel has per-CPU
    ///   state for as many (`KernelConfiguration.cpus`).
    ///   `simulatedTime` turns on the contention timeline (`SimulatedTime`) on a machine of more than one CPU.
    public init(kernel: Kernel, description: MachineDescription, cpuCount: Int = 1, simulatedTime: Bool = false) {
        precondition(description.problems.isEmpty, "machine description: \(description.problems)")
        precondition((1...Self.maxCPUs).contains(cpuCount), "1 to \(Self.maxCPUs) CPUs")
        precondition(cpuCount <= kernel.configuration.cpus,
                     "\(cpuCount) CPUs on a kernel configured for \(kernel.configuration.cpus)")
        self.kernel = kernel
        machineDescription = description
        let sharedLastLevels = simulatedTime && cpuCount > 1 ? Self.socketCaches(description, cpuCount: cpuCount) : []
        cpus = (0..<cpuCount).map { id in
            CPU(id: id, description: description,
                sharedLastLevel: sharedLastLevels.isEmpty ? nil : sharedLastLevels[id / description.contention.cpusPerSocket])
        }
        shootdownsSent = Array(repeating: 0, count: cpuCount)
        shootdownsReceived = Array(repeating: 0, count: cpuCount)
        self.simulatedTime = simulatedTime && cpuCount > 1 ? SimulatedTime(cpuCount: cpuCount, description: description) : nil
        warmUpTable = cpuCount > 1 ? TLBWarmUpTable(cpus) : nil
        for cpu in cpus {
            cpu.machine = self
            cpu.simulatedTime = self.simulatedTime
        }
        kernel.tlb = FlushForwarder(self)
        SimulatedCPU.switchTo(0)
    }

    deinit { warmUpTable?.free() }

    /// Asks the host to bring into its caches the TLB sets `cpu`'s next access, to `address`, will
    /// look up and fill (`TLBWarmUpTable`): for the thread that runs next on a machine of many CPUs,
    /// while another runs. A hint; nothing simulated changes. Nothing on a machine of one CPU.
    @inline(__always)
    public func warmUp(cpu: Int, for address: UInt64) {
        warmUpTable?.warmUp(cpu: cpu, for: address)
    }

    /// One last-level cache per socket (`ContentionParameters.cpusPerSocket`, CPUs numbered socket by
    /// socket), which the socket's CPUs share as hardware does; none (each CPU keeps a last level of
    /// its own) when the description has fewer than three cache levels, whose last is then a core's
    /// own. Only a machine in simulated-time order shares: one host thread drives all its CPUs, while
    /// other machines' CPUs may run on several.
    static func socketCaches(_ description: MachineDescription, cpuCount: Int) -> [SharedCacheLevel] {
        guard description.caches.count >= 3, let last = description.caches.last else { return [] }
        let perSocket = description.contention.cpusPerSocket
        return (0..<(cpuCount + perSocket - 1) / perSocket).map { _ in SharedCacheLevel(last) }
    }

    /// Whether CPUs `a` and `b` share their last-level cache.
    public func shareLastLevelCache(_ a: Int, _ b: Int) -> Bool {
        guard let shared = cpus[a].cache.sharedLastLevel else { return a == b }
        return shared === cpus[b].cache.sharedLastLevel
    }

    /// The cache model every CPU uses (`CacheModel.Kind`: `full` by default, `sampled` faster);
    /// setting it empties the CPUs' caches.
    public var cacheModel: CacheModel.Kind {
        get { cpus[0].cache.kind }
        set { for cpu in cpus { cpu.cache.use(newValue); cpu.chargedWritebacks = 0 } }
    }

    /// Whether the CPU runs its cache model on a second host thread (`CachePipeline`; same answers,
    /// bit for bit). Only a machine of one CPU not in simulated-time order has one; `off` by default.
    public var cacheThread = CacheThreadMode.off {
        didSet {
            let allowed = cacheThread.wantsThread && cpus.count == 1 && simulatedTime == nil
                && cpus[0].cacheModel.sharedLastLevel == nil
            for cpu in cpus { cpu.cacheThreadAllowed = allowed }
        }
    }

    /// Runs `body` as kernel code on `cpu` (e.g. a system call the process on it makes), so that
    /// flushes it causes are local there and remote elsewhere.
    public func run<T, E: Error>(on cpu: Int, _ body: () throws(E) -> T) throws(E) -> T {
        precondition(cpu >= 0 && cpu < cpus.count, "CPU \(cpu) of \(cpus.count)")
        return try SimulatedCPU.run(on: cpu, body)
    }

    func noteRunning(_ cpu: CPU, _ mm: AddressSpace) {
        cpumasks[mm.pid, default: CPUMask()].insert(cpu.id)
    }

    /// `cpu`'s simulated clock in cycles: its counters' cycles plus what sharing cost it.
    /// The CPU is reached unretained: the executor asks for clocks about once per access quantum, and
    /// a retain and release around the read were most of the call's cost.
    public func clock(of cpu: Int) -> Double {
        let cycles = unretainedCPU(cpu)._withUnsafeGuaranteedRef { $0.counters.cycles }
        return cycles + (simulatedTime?.extraCycles[cpu] ?? 0)
    }

    /// CPU `cpu`, unretained (`cpus` keeps it alive): for callers that reach a CPU at every turn of a
    /// thread, whose retain and release would cost about what the rest of the turn's bookkeeping does.
    @inline(__always)
    public func unretainedCPU(_ cpu: Int) -> Unmanaged<CPU> {
        cpus.withUnsafeBufferPointer { Unmanaged.passUnretained($0[cpu]) }
    }

    /// Makes `cpu` run `mm` unless it runs it already (`CPU.switchTo(_:)`, Linux: `switch_mm()`), with
    /// no reference counting on the way. Returns whether it switched.
    @discardableResult
    public func load(_ mm: Unmanaged<AddressSpace>, on cpu: Int) -> Bool {
        unretainedCPU(cpu)._withUnsafeGuaranteedRef { c in
            guard c.loadedMM?.toOpaque() != mm.toOpaque() else { return false }
            mm._withUnsafeGuaranteedRef { c.switchTo($0) }
            return true
        }
    }

    /// The run's elapsed simulated time in cycles: the slowest CPU's clock.
    public var elapsedCycles: Double {
        var m = 0.0
        for i in cpus.indices { m = max(m, clock(of: i)) }
        return m
    }

    /// The CPUs that may hold translations of `mm` (Linux: `mm_cpumask()`).
    public func cpusThatRan(_ mm: AddressSpace) -> [Int] {
        let mask = cpumasks[mm.pid] ?? CPUMask()
        return (0..<cpus.count).filter { mask.contains($0) }
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

/// A set of CPUs of a machine, one bit each (Linux: `struct cpumask`).
struct CPUMask: Hashable {
    static let capacity = 256
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    var isEmpty: Bool { words.0 | words.1 | words.2 | words.3 == 0 }

    @inline(__always) func contains(_ cpu: Int) -> Bool {
        let bit = UInt64(1) << UInt64(cpu & 63)
        switch cpu >> 6 {
        case 0: return words.0 & bit != 0
        case 1: return words.1 & bit != 0
        case 2: return words.2 & bit != 0
        default: return words.3 & bit != 0
        }
    }

    @inline(__always) mutating func insert(_ cpu: Int) {
        let bit = UInt64(1) << UInt64(cpu & 63)
        switch cpu >> 6 {
        case 0: words.0 |= bit
        case 1: words.1 |= bit
        case 2: words.2 |= bit
        default: words.3 |= bit
        }
    }

    @inline(__always) mutating func remove(_ cpu: Int) {
        let bit = ~(UInt64(1) << UInt64(cpu & 63))
        switch cpu >> 6 {
        case 0: words.0 &= bit
        case 1: words.1 &= bit
        case 2: words.2 &= bit
        default: words.3 &= bit
        }
    }

    static func == (a: CPUMask, b: CPUMask) -> Bool { a.words == b.words }
    func hash(into h: inout Hasher) { h.combine(words.0); h.combine(words.1); h.combine(words.2); h.combine(words.3) }
}
