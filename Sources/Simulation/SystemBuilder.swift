import VMCore
import PhysicalMemory
import Kernel
import Machine

/// The one place a simulated system is put together: a kernel with its design, memory and THP
/// settings, and the machine of simulated CPUs that runs on it. Every command builds its system here —
/// `run`, `workload`, `replay` and `record --replay` (`ExperimentRunner`, `thpsim replay`), the
/// scenarios' model backend, `stress`, `demo` and `calibrate` — and states only what differs from the
/// defaults below, which are a replay's: the default design, metadata-only memory sized by
/// `defaultMemoryBytes(footprint:)`, Linux's watermarks, the design's boot settings, one Skylake-SP CPU.
///
/// Settings are applied as on a booting Linux: the design's boot settings (Linux: the
/// `CONFIG_TRANSPARENT_HUGEPAGE_*` defaults) with `enabled` and `useZeroPage` overridden, as a kernel
/// command line would (`transparent_hugepage=`), then every tunable written through the kernel's sysfs
/// (`Kernel.transparentHugepageSysfs`), in order, before the first process starts.
public struct SystemBuilder: Sendable {
    /// The design a command runs when it names none.
    public static let defaultDesign = KernelDesign.linux2_6_38

    /// Simulated memory for a run that touches `footprint` bytes: twice the footprint (fork copies)
    /// plus 512 MiB for tables, rounded up to 1 GiB; 8 GiB when the footprint is not known in advance
    /// (a trace).
    public static func defaultMemoryBytes(footprint: UInt64?) -> UInt64 {
        guard let footprint else { return 8 << 30 }
        return (2 * footprint + (512 << 20) + (1 << 30) - 1) & ~((1 << 30) - 1)
    }

    public var design: KernelDesign = defaultDesign
    public var memoryBytes: UInt64 = defaultMemoryBytes(footprint: nil)
    /// Whether frames hold bytes (`.data`, for runs that read what they wrote) or only metadata.
    public var mode: PhysicalMemory.Mode = .metadata
    /// Watermarks; nil for Linux's defaults for the memory size.
    public var watermarks: Watermarks?
    /// The kernel's simulated CPUs (`KernelConfiguration.cpus`); nil for as many as the machine has.
    public var kernelCPUs: Int?
    /// The swap device; nil for the kernel's default (as many slots as memory has pages).
    public var swap: SwapConfiguration?
    /// `enabled` at boot instead of the design's.
    public var enabled: TransparentHugepageSettings.Enabled?
    /// `use_zero_page` at boot instead of the design's.
    public var useZeroPage: Bool?
    /// Files below `/sys/kernel/mm/transparent_hugepage/` written after boot, in order (`enabled`,
    /// `defrag`, `khugepaged/max_ptes_none`, …); they override `enabled` and `useZeroPage`.
    public var tunables: [Tunable] = []
    /// A hugepage policy instead of the design's own (`KernelConfiguration.policy`; ARCHITECTURE.md,
    /// "Designs and policies").
    public var policy: (any HugepagePolicy)?
    /// Files of the memory cgroup a workload's processes run in (`memory.max`, `memory.high`,
    /// `memory.swap.max`), written in order when the cgroup is made; nil runs them in the root
    /// cgroup, uncharged (docs/cgroups.md).
    public var cgroup: [Tunable]?
    /// The name of the workload's cgroup.
    public static let workloadCgroup = "workload"
    /// The machine the CPUs are.
    public var machine: MachineDescription = .skylakeSP
    /// The machine's CPUs (the threads of a workload run on CPU `t % cpus`).
    public var cpus = 1
    /// The CPUs' cache model: `full` (exact, the library's default, which the golden-count tests pin)
    /// or `sampled` (set sampling, the command line's default; docs/machines.md).
    public var cacheModel: CacheModel.Kind = .full
    /// Whether a machine of one CPU runs its cache model on a second host thread (`Machine.cacheThread`:
    /// the same answers, faster on a host with a core to spare); `off` in the library, `auto` on the
    /// command line.
    public var cacheThread = CacheThreadMode.off
    /// Threads run in simulated-time order and what CPUs share costs time (`SimulatedTime`), on a
    /// machine of more than one CPU. Off: threads run in the order the workload gives (the figures
    /// of runs recorded before simulated time).
    public var simulatedTime = false

    /// One sysfs file below `/sys/kernel/mm/transparent_hugepage/` and the text written to it.
    public struct Tunable: Sendable, Hashable, Codable {
        public var name: String
        public var value: String
        public init(name: String, value: String) { self.name = name; self.value = value }
    }

    public init() {}

    /// The THP settings the kernel boots with.
    public var bootSettings: TransparentHugepageSettings {
        var settings = design.defaultSettings
        if let enabled { settings.enabled = enabled }
        if let useZeroPage { settings.useZeroPage = useZeroPage }
        return settings
    }

    /// The kernel's configuration.
    public var configuration: KernelConfiguration {
        var c = KernelConfiguration(memoryBytes: memoryBytes, mode: mode, watermarks: watermarks, design: design,
                                    hugepageSettings: bootSettings)
        c.cpus = kernelCPUs ?? cpus
        if let swap { c.swap = swap }
        if let policy { c.policy = policy }
        return c
    }

    /// What is wrong with writing `tunable` on a kernel of `design` (unknown file, read-only file, a value
    /// Linux refuses), or nil.
    public static func problem(with tunable: Tunable, design: KernelDesign = defaultDesign) -> SysfsError? {
        TransparentHugepageSysfs.problem(writing: tunable.value, to: tunable.name, design: design)
    }

    /// What is wrong with writing `tunable` on a kernel of `design` running `policy` (its knobs, such as
    /// `ingens/util_threshold`, as well as the design's files), or nil.
    public static func problem(with tunable: Tunable, design: KernelDesign, policy: (any HugepagePolicy)?) -> SysfsError? {
        TransparentHugepageSysfs.problem(writing: tunable.value, to: tunable.name, design: design, policy: policy)
    }

    /// What is wrong with writing `setting` to the workload's cgroup (a file the model has no writer
    /// for, a value Linux's parser refuses), as an errno and a message; nil if it is fine.
    public static func problem(withCgroup setting: Tunable) -> String? {
        if setting.name == "memory.oom.group" {
            return setting.value == "0" || setting.value == "1" ? nil : "memory.oom.group=\(setting.value): EINVAL: expected 0 or 1"
        }
        guard ["memory.max", "memory.high", "memory.swap.max", "memory.swap.high", "memory.min", "memory.low"].contains(setting.name) else {
            return "unknown cgroup file '\(setting.name)' (ENOENT): use memory.max, memory.high, memory.swap.max, memory.swap.high, memory.min, memory.low or memory.oom.group (cgroup v2 names)"
        }
        do throws(Errno) { _ = try Kernel.pageCounterMemparse(setting.value) } catch {
            return "\(setting.name)=\(setting.value): \(error): expected max or bytes with an optional K, M or G suffix"
        }
        return nil
    }

    /// Makes the workload's cgroup on `kernel` and writes its files; nil without `cgroup`.
    /// - Precondition: every setting is valid (`problem(withCgroup:)` is nil).
    public func makeCgroup(on kernel: Kernel) -> MemoryCgroup? {
        guard let cgroup else { return nil }
        do throws(Errno) {
            let memcg = try kernel.createMemoryCgroup(Self.workloadCgroup)
            for s in cgroup { try kernel.writeCgroupFile(Self.workloadCgroup, s.name, s.value) }
            return memcg
        } catch {
            preconditionFailure("cgroup setting refused: \(error)")
        }
    }

    /// Why the host cannot hold a run on this system that touches `bytes` of simulated memory, with
    /// `request` naming the option that asks for it (`KernelConfiguration.hostShortfall`); nil if it can.
    public func hostShortfall(_ request: String, touching bytes: UInt64) -> HostMemoryShortfall? {
        configuration.hostShortfall(request, touching: bytes)
    }

    /// Boots the kernel and writes the tunables.
    /// - Precondition: `memoryBytes` is a size `PhysicalMemory` accepts.
    /// - Throws: the first tunable the kernel refuses.
    public func makeKernel() throws(SysfsError) -> Kernel {
        let kernel = Kernel(configuration)
        for t in tunables { try kernel.transparentHugepageSysfs.write(t.name, t.value) }
        return kernel
    }

    /// The kernel and a machine of `cpus` CPUs on it.
    public func makeMachine() throws(SysfsError) -> Machine {
        let m = Machine(kernel: try makeKernel(), description: machine, cpuCount: cpus, simulatedTime: simulatedTime)
        if cacheModel != .full { m.cacheModel = cacheModel }
        if cacheThread != .off { m.cacheThread = cacheThread }
        return m
    }

    /// Kernel, machine and an executor that runs workloads on them (its first process started).
    /// - Precondition: every tunable is valid (`problem(with:design:)` is nil).
    /// - Throws: `Errno.ENOMEM` when the kernel cannot create the first process.
    public func makeExecutor() throws(Errno) -> MachineExecutor {
        // The system boots on CPU 0, whatever CPU the calling host thread executed last (a previous
        // run's): per-CPU page lists and counters, and so the run's answers, must not depend on that.
        SimulatedCPU.switchTo(0)
        let machine: Machine
        do throws(SysfsError) { machine = try makeMachine() } catch { preconditionFailure("\(error)") }
        return try MachineExecutor(machine: machine, cgroup: makeCgroup(on: machine.kernel))
    }

    /// A virtual machine whose guest is this system, its memory mapped in `hostMM` with `hostAdvice`.
    /// - Precondition: every tunable is valid (`problem(with:design:)` is nil).
    public func makeVirtualMachine(hostMM: AddressSpace, hostAdvice: Advice?) throws(Errno) -> VirtualMachine {
        let vm = try VirtualMachine(hostMM: hostMM, guest: configuration, description: machine, cpuCount: cpus,
                                    hostAdvice: hostAdvice)
        if cacheModel != .full { vm.machine.cacheModel = cacheModel }
        for t in tunables {
            do throws(SysfsError) { try vm.guest.transparentHugepageSysfs.write(t.name, t.value) } catch {
                preconditionFailure("\(error)")
            }
        }
        return vm
    }
}

