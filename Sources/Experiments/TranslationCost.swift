import VMCore
import Kernel
import Machine
import Simulation

/// The calibration experiment of issue 7: the same three access patterns the native program
/// `Benchmarks/Calibration/tlbcal.c` times, run on the model, with THP asked for (MADV_HUGEPAGE) or
/// refused (MADV_NOHUGEPAGE), natively or inside a virtual machine whose host may use THP itself.
/// The answer is predicted time per access, from the machine's timing model.
public struct TranslationCost {
    public enum Pattern: String, Sendable, CaseIterable {
        /// Random read-modify-write of 8-byte words; independent, so misses overlap.
        case gups
        /// Random dependent loads, one per 64-byte line.
        case chase
        /// Sequential 8-byte reads.
        case seq
    }

    /// Where the model runs the pattern.
    public enum Placement: Sendable, Hashable, CustomStringConvertible {
        case native
        /// Inside a VM; the host region backing guest memory has MADV_HUGEPAGE when `hostTHP`.
        case virtualMachine(hostTHP: Bool)
        public var description: String {
            switch self {
            case .native: "native"
            case .virtualMachine(let h): "VM, host \(h ? "THP" : "4K")"
            }
        }
    }

    public struct Prediction: Sendable {
        public var pattern: Pattern
        public var bytes: UInt64
        public var hugepages: Bool
        public var nanosecondsPerAccess: Double
        /// Share of the region the kernel model mapped with 2 MiB entries (AnonHugePages / size).
        public var hugeShare: Double
        public var counters: TranslationCounters
    }

    public var machine: MachineDescription
    public var placement: Placement
    /// Accesses measured after warming up (the same number again).
    public var accesses: Int
    /// The CPU's cache model (`SystemBuilder.cacheModel`).
    public var cacheModel: CacheModel.Kind

    public init(machine: MachineDescription, placement: Placement, accesses: Int = 1 << 20, cacheModel: CacheModel.Kind = .full) {
        self.machine = machine; self.placement = placement; self.accesses = accesses; self.cacheModel = cacheModel
    }

    /// The system a case over `bytes` runs on (in a VM, the guest): memory for the region plus 256 MiB,
    /// rounded up to 1 GiB; no watermarks, so nothing reclaims; THP as on the calibration machine,
    /// `enabled=madvise`, so the advice decides.
    public func system(bytes: UInt64) -> SystemBuilder {
        var s = SystemBuilder()
        s.memoryBytes = (bytes + (256 << 20)).alignedUpToGiB
        s.watermarks = .zero
        s.enabled = .madvise
        s.machine = machine
        s.cacheModel = cacheModel
        return s
    }

    /// The kernel under a VM's guest: 256 MiB more than the guest's memory.
    func hostSystem(bytes: UInt64) -> SystemBuilder {
        var s = system(bytes: bytes)
        s.memoryBytes += 256 << 20
        return s
    }

    /// Why the host cannot hold a case over `bytes`, which faults in every page of the region (in a
    /// VM, the guest's and the host's kernel both); nil when it can.
    public func hostShortfall(bytes: UInt64) -> HostMemoryShortfall? {
        let memory = system(bytes: bytes).memoryBytes
        let kernel = system(bytes: bytes).configuration
        var reserved = kernel.hostReservation, resident = kernel.hostResident(touching: bytes)
        if case .virtualMachine = placement {
            let host = hostSystem(bytes: bytes).configuration
            reserved += host.hostReservation
            resident += host.hostResident(touching: memory)
        }
        return HostLimits.shortfall("--sizes \(ByteCount.human(bytes))", reserved: reserved, resident: resident)
    }

    /// Runs one case. Throws when the kernel model refuses the setup (e.g. too little memory).
    public func run(_ pattern: Pattern, bytes: UInt64, hugepages: Bool) throws(Errno) -> Prediction {
        let system = system(bytes: bytes)
        let cpu: CPU
        let mm: AddressSpace
        var keepAlive: [AnyObject] = []
        switch placement {
        case .native:
            let machine: Machine
            do throws(SysfsError) { machine = try system.makeMachine() } catch { throw error.errno }
            guard let m = machine.kernel.createAddressSpace() else { throw .ENOMEM }
            keepAlive.append(machine)
            cpu = machine.cpus[0]
            mm = m
        case .virtualMachine(let hostTHP):
            let host: Kernel
            do throws(SysfsError) { host = try hostSystem(bytes: bytes).makeKernel() } catch { throw error.errno }
            guard let vmm = host.createAddressSpace() else { throw .ENOMEM }
            let vm = try system.makeVirtualMachine(hostMM: vmm, hostAdvice: hostTHP ? .hugepage : .noHugepage)
            keepAlive.append(vm)
            guard let m = vm.guest.createAddressSpace() else { throw .ENOMEM }
            cpu = vm.machine.cpus[0]
            mm = m
        }
        cpu.switchTo(mm)
        // Map with 2 MiB alignment (map more and trim), advise, and fault every page in.
        let raw = try mm.mmap(length: bytes + PageGeometry.pmdSize, protection: .readWrite, flags: .private)
        let start = raw.alignedUp(PageGeometry.pmdSize)
        try mm.madvise(start, length: bytes, advice: hugepages ? .hugepage : .noHugepage)
        cpu.cacheModelling = .none
        var va = start
        while va < start + bytes {
            _ = cpu.access(va, .write)
            va = va + PageGeometry.pageSize
        }
        var huge: UInt64 = 0
        va = start
        while va < start + bytes {
            if mm.translate(va)?.level == .pmd { huge += PageGeometry.pmdSize; va = va + PageGeometry.pmdSize }
            else { va = va + PageGeometry.pageSize }
        }

        cpu.cacheModelling = .pageTablesAndData
        cpu.independentAccesses = pattern != .chase
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        var offset: UInt64 = 0
        let words = bytes / 8
        func step() {
            switch pattern {
            case .gups:
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                _ = cpu.access(start + (state % words) * 8, .write)
            case .chase:
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                _ = cpu.access(start + (state % (bytes / 64)) * 64, .read)
            case .seq:
                _ = cpu.access(start + offset, .read)
                offset = (offset + 8) % bytes
            }
        }
        for _ in 0..<accesses { step() }
        cpu.counters = TranslationCounters()
        if let n = cpu.nested { n.hostReferences = 0; n.hostReferencesFromMemory = 0; n.hostLeafReferencesFromMemory = 0 }
        for _ in 0..<accesses { step() }
        let c = cpu.counters
        withExtendedLifetime(keepAlive) {}
        return Prediction(pattern: pattern, bytes: bytes, hugepages: hugepages,
                          nanosecondsPerAccess: c.cycles / Double(c.accesses) / machine.frequencyGHz,
                          hugeShare: Double(huge) / Double(bytes), counters: c)
    }
}

extension UInt64 {
    fileprivate var alignedUpToGiB: UInt64 { (self + (1 << 30) - 1) & ~((1 << 30) - 1) }
}
