import VMCore
import Kernel
import Machine

/// The kernel and machine a replay or synthetic run drives: metadata-only memory (no page contents),
/// Linux's default watermarks, the design's THP defaults with `enabled` overridden.
public struct ReplaySetup: Sendable {
    public var memoryBytes: UInt64 = 8 << 30
    public var design: KernelDesign = .linux2_6_38
    public var enabled: TransparentHugepageSettings.Enabled?
    public var machine: MachineDescription = .skylakeSP
    public var cpus = 1

    public init() {}

    /// Builds kernel, machine and executor.
    /// - Throws: `Errno.ENOMEM` when the kernel cannot create the first process.
    public func makeExecutor() throws(Errno) -> MachineExecutor {
        var settings = design.defaultSettings
        if let enabled { settings.enabled = enabled }
        let kernel = Kernel(KernelConfiguration(memoryBytes: memoryBytes, mode: .metadata, design: design,
                                                hugepageSettings: settings))
        let machine = Machine(kernel: kernel, description: machine, cpuCount: cpus)
        return try MachineExecutor(machine: machine)
    }
}
