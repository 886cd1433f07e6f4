import Testing
import VMCore
import Kernel
import TestSupport
@testable import Scenarios
import Simulation
import Workloads

/// A declared machine costs the host what a run touches, not what it declares; what the host cannot
/// hold is refused up front, naming the option, the memory needed and the limit.
@Suite("Host memory follows what a run touches")
struct HostMemoryTests {
    /// Growth of this process's resident size allowed for a tiny run on a 1 TiB machine: its tables
    /// alone would be 8 GiB if the model filled them (16-byte records and 16-byte LRU nodes per frame).
    /// Other suites run beside this one, so the bound is loose.
    static let bound: UInt64 = 256 << 20

    @Test("a 1 TiB machine in metadata mode runs a small workload in bounded host memory")
    func terabyteWorkload() throws {
        let before = try #require(HostProcess.residentBytes)
        var setup = SystemBuilder()
        setup.memoryBytes = 1 << 40
        setup.enabled = .always
        var executor = try setup.makeExecutor()
        SyntheticWorkload.seq.generate(SyntheticParameters(size: 64 << 20, accesses: 10_000), into: &executor)
        let report = executor.finish()
        let after = try #require(HostProcess.residentBytes)
        #expect(report.signals.isEmpty)
        #expect(executor.machine.kernel.memory.freePages < executor.machine.kernel.memory.totalPages)
        #expect(after &- before < Self.bound || after < before, "grew by \(ByteCount.human(after &- before))")
    }

    @Test("a scenario declaring memory 1024G runs in data mode in bounded host memory")
    func terabyteScenario() throws {
        let text = """
            memory 1024G
            set enabled=always
            mmap P 4M
            write P 4M
            fork child
            on child
            write P 8K
            expect data P 4M
            on parent
            expect data P 4M
            """
        let scenario = try ScenarioParser.parse(text, file: "terabyte.scen")
        let before = try #require(HostProcess.residentBytes)
        let report = ScenarioRunner.run(scenario, on: "model") { () throws(ScenarioError) in
            try makeModelScenarioBackend(design: nil, memoryBytes: scenario.memoryBytes)
        }
        let after = try #require(HostProcess.residentBytes)
        #expect(report.passed, "\(report.text)")
        #expect(after &- before < Self.bound || after < before, "grew by \(ByteCount.human(after &- before))")
    }

    @Test("the physical invariants of a 1 TiB machine are checked in memory the run used")
    func terabyteInvariants() throws {
        let kernel = TestMachine.kernel(memory: 1 << 40, mode: .metadata)
        let before = try #require(HostProcess.residentBytes)
        let mm = try #require(kernel.createAddressSpace())
        let start = try mm.mmap(length: 1 << 20, protection: .readWrite, flags: .private)
        for page in 0..<256 { _ = mm.access(start + UInt64(page) * PageGeometry.pageSize, .write) }
        #expect(kernel.memory.checkPhysicalInvariants().isEmpty)
        #expect(kernel.memory.buddy.untouchedFrames == (kernel.memory.totalPages - 1024))
        let after = try #require(HostProcess.residentBytes)
        #expect(after &- before < Self.bound || after < before, "grew by \(ByteCount.human(after &- before))")
    }

    @Test("a limit on address space refuses the reservation, naming the request, the need and the limit")
    func addressSpaceRefusal() throws {
        let configuration = KernelConfiguration(memoryBytes: 1 << 40, mode: .data)
        let limit = HostLimits.Limit(bytes: 8 << 30, name: "ulimit -v (RLIMIT_AS)")
        let shortfall = try #require(HostLimits.shortfall("memory 1T", reserved: configuration.hostReservation,
                                                          resident: configuration.hostResident(touching: 0),
                                                          addressSpace: limit, available: nil))
        #expect(shortfall.addressSpace && shortfall.needed > 1 << 40 && shortfall.limit == 8 << 30)
        #expect(shortfall.description == "memory 1T needs about 1.0T of host address space, more than the 8G that ulimit -v (RLIMIT_AS) leaves")
        #expect(HostLimits.shortfall("memory 1G", reserved: KernelConfiguration(memoryBytes: 1 << 30).hostReservation,
                                     resident: 0, addressSpace: limit, available: nil) == nil)
    }

    @Test("a run that would touch more than the host has is refused; one that touches little is not")
    func residentRefusal() throws {
        let available = HostLimits.Limit(bytes: 4 << 30, name: "MemAvailable in /proc/meminfo")
        let metadata = KernelConfiguration(memoryBytes: 2 << 40, mode: .metadata)
        let shortfall = try #require(HostLimits.shortfall("--size 1T", reserved: 0, resident: metadata.hostResident(touching: 1 << 40),
                                                          addressSpace: nil, available: available))
        #expect(!shortfall.addressSpace && shortfall.needed > 12 << 30)
        #expect(shortfall.description.hasPrefix("--size 1T needs about 12."))
        // Touching 64 MiB of the same declared machine costs about 32 MiB + 48 bytes a page.
        #expect(HostLimits.shortfall("--size 64M", reserved: 0, resident: metadata.hostResident(touching: 64 << 20),
                                     addressSpace: nil, available: available) == nil)
        // A size larger than memory touches at most memory.
        #expect(KernelConfiguration(memoryBytes: 1 << 30, mode: .metadata).hostResident(touching: 1 << 40)
                == KernelConfiguration(memoryBytes: 1 << 30, mode: .metadata).hostResident(touching: 1 << 30))
    }
}
