import VMCore
import Kernel
import Machine
import Workloads

/// The kernel and machine a replay or synthetic run drives: metadata-only memory (no page contents),
/// Linux's default watermarks, the design's THP defaults with `enabled` overridden.
public struct ReplaySetup: Sendable {
    public var memoryBytes: UInt64 = 8 << 30
    public var design: KernelDesign = .linux2_6_38
    public var enabled: TransparentHugepageSettings.Enabled?
    public var machine: MachineDescription = .skylakeSP
    public var cpus = 1
    /// Tunables below `/sys/kernel/mm/transparent_hugepage/` set before the program starts, in order
    /// (`enabled`, `defrag`, `use_zero_page`, `khugepaged/max_ptes_none`, …); they override `enabled`.
    public var tunables: [Tunable] = []

    /// One sysfs tunable and the text written to it.
    public struct Tunable: Sendable, Hashable, Codable {
        public var name: String
        public var value: String
        public init(name: String, value: String) { self.name = name; self.value = value }
    }

    public init() {}

    /// What is wrong with a tunable (unknown name, value Linux would refuse), or nil.
    public static func problem(with tunable: Tunable) -> String? {
        if tunable.name.hasPrefix("khugepaged/") {
            var k = KhugepagedSettings()
            return k.set(tunable.name, to: tunable.value)
        }
        var t = KernelDesign.linux2_6_38.defaultSettings
        return t.set(tunable.name, to: tunable.value)
    }

    /// Why the host cannot hold a run on this setup that touches `bytes` of simulated memory, with
    /// `request` naming the option that asks for it (`KernelConfiguration.hostShortfall`); nil if it can.
    public func hostShortfall(_ request: String, touching bytes: UInt64) -> HostMemoryShortfall? {
        KernelConfiguration(memoryBytes: memoryBytes, mode: .metadata, design: design).hostShortfall(request, touching: bytes)
    }

    /// Builds kernel, machine and executor.
    /// - Precondition: every tunable is valid (`problem(with:)` is nil).
    /// - Throws: `Errno.ENOMEM` when the kernel cannot create the first process.
    public func makeExecutor() throws(Errno) -> MachineExecutor {
        var settings = design.defaultSettings
        if let enabled { settings.enabled = enabled }
        for t in tunables where !t.name.hasPrefix("khugepaged/") {
            let problem = settings.set(t.name, to: t.value)
            precondition(problem == nil, problem ?? "")
        }
        let kernel = Kernel(KernelConfiguration(memoryBytes: memoryBytes, mode: .metadata, design: design,
                                                hugepageSettings: settings))
        for t in tunables where t.name.hasPrefix("khugepaged/") {
            let problem = kernel.setKhugepagedKnob(t.name, to: t.value)
            precondition(problem == nil, problem ?? "")
        }
        let machine = Machine(kernel: kernel, description: machine, cpuCount: cpus)
        return try MachineExecutor(machine: machine)
    }
}
