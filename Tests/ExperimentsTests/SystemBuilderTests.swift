import Testing
import PhysicalMemory
import Kernel
import Machine
import Simulation
@testable import Scenarios
@testable import Experiments

/// Every command builds its system with `SystemBuilder`; each keeps the defaults it had before there
/// was one place (issue 19): design, memory, storage mode, watermarks, THP settings, CPUs.
@Suite("One system builder, each command's defaults")
struct SystemBuilderTests {
    struct Expected {
        var design = KernelDesign.linux2_6_38
        var memory: UInt64
        var mode: PhysicalMemory.Mode
        var watermarks: Watermarks?
        var settings: TransparentHugepageSettings
        /// As many as the machine has (one), unless a command says otherwise.
        var kernelCPUs = 1
    }

    func check(_ s: SystemBuilder, _ e: Expected, sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        let c = s.configuration
        #expect(c.design == e.design, sourceLocation: sourceLocation)
        #expect(c.memoryBytes == e.memory, sourceLocation: sourceLocation)
        #expect(c.mode == e.mode, sourceLocation: sourceLocation)
        #expect(c.watermarks == e.watermarks, sourceLocation: sourceLocation)
        #expect(c.hugepageSettings == e.settings, sourceLocation: sourceLocation)
        #expect(c.cpus == e.kernelCPUs, sourceLocation: sourceLocation)
    }

    static let boot2010 = TransparentHugepageSettings(enabled: .always, defrag: .always, useZeroPage: false)

    @Test("one default design, and one default-memory rule (footprint × 2 + 512 MiB, rounded to 1 GiB; 8 GiB for a trace)")
    func defaults() {
        #expect(SystemBuilder.defaultDesign == .linux2_6_38)
        #expect(SystemBuilder.defaultMemoryBytes(footprint: nil) == 8 << 30)
        #expect(SystemBuilder.defaultMemoryBytes(footprint: 64 << 20) == 1 << 30)
        #expect(SystemBuilder.defaultMemoryBytes(footprint: 1 << 30) == 3 << 30)
        #expect(SystemBuilder.defaultMemoryBytes(footprint: 256 << 20) == 1 << 30)
        #expect(SystemBuilder.defaultMemoryBytes(footprint: (256 << 20) + 4096) == 2 << 30)
    }

    @Test("replay, workload and run: metadata, 8 GiB or the footprint rule, the design's boot settings, one Skylake-SP CPU")
    func replay() {
        let s = SystemBuilder()
        check(s, Expected(memory: 8 << 30, mode: .metadata, settings: Self.boot2010))
        #expect(s.machine == .skylakeSP)
        #expect(s.cpus == 1)
        let grid = ExperimentGrid(workloads: [.synthetic("seq", size: 64 << 20, accesses: 1000)])
        #expect(grid.designs == ["linux-2.6.38"])
        #expect(grid.workloads[0].defaultMemoryBytes == 1 << 30)
    }

    @Test("scenarios: data mode, 1 GiB, the design's boot settings")
    func scenario() {
        check(ModelScenarioBackend.system(design: .linux2_6_38, memoryBytes: nil, swap: nil),
              Expected(memory: 1 << 30, mode: .data, settings: Self.boot2010))
        check(ModelScenarioBackend.system(design: .linux6_18, memoryBytes: 256 << 20, swap: nil),
              Expected(design: .linux6_18, memory: 256 << 20, mode: .data, settings: KernelDesign.linux6_18.defaultSettings))
    }

    @Test("stress: data mode, 256 MiB, no watermarks, enabled=always, one kernel CPU per thread")
    func stress() {
        var o = StressRun.Options()
        o.threads = 3
        var settings = Self.boot2010
        settings.enabled = .always
        check(o.system, Expected(memory: 256 << 20, mode: .data, watermarks: .zero, settings: settings, kernelCPUs: 3))
        o.design = .linux6_18
        settings = KernelDesign.linux6_18.defaultSettings
        settings.enabled = .always
        check(o.system, Expected(design: .linux6_18, memory: 256 << 20, mode: .data, watermarks: .zero, settings: settings, kernelCPUs: 3))
    }

    @Test("demo: data mode, 1 GiB, use_zero_page=1")
    func demo() {
        var settings = Self.boot2010
        settings.useZeroPage = true
        check(Demonstration().system, Expected(memory: 1 << 30, mode: .data, settings: settings))
    }

    @Test("calibrate: metadata, the region + 256 MiB rounded to 1 GiB, no watermarks, enabled=madvise")
    func calibrate() {
        let t = TranslationCost(machine: .skylakeSP, placement: .virtualMachine(hostTHP: true))
        var settings = Self.boot2010
        settings.enabled = .madvise
        check(t.system(bytes: 64 << 20), Expected(memory: 1 << 30, mode: .metadata, watermarks: .zero, settings: settings))
        check(t.hostSystem(bytes: 64 << 20), Expected(memory: (1 << 30) + (256 << 20), mode: .metadata, watermarks: .zero, settings: settings))
        check(t.system(bytes: 1 << 30), Expected(memory: 2 << 30, mode: .metadata, watermarks: .zero, settings: settings))
    }

    @Test("tunables are written through the kernel's sysfs after boot; --set refuses what a grid design lacks")
    func tunables() throws {
        var s = SystemBuilder()
        s.memoryBytes = 64 << 20
        s.enabled = .never
        s.tunables = [.init(name: "enabled", value: "madvise"), .init(name: "khugepaged/max_ptes_none", value: "7")]
        let kernel = try s.makeKernel()
        #expect(kernel.hugepageSettings.enabled == .madvise)
        #expect(kernel.khugepaged.settings.maxPtesNone == 7)
        s.tunables = [.init(name: "hugepages-64kB/enabled", value: "always")]
        #expect(throws: SysfsError.self) { try s.makeKernel() }
        var grid = ExperimentGrid(workloads: [.synthetic("seq", size: 64 << 20, accesses: 1000)],
                                  tunables: [TunableAxis(name: "hugepages-64kB/enabled", values: ["always"])])
        #expect(grid.problems.contains { $0.contains("no multi-size THP") })
        grid.designs = ["linux-6.18"]
        #expect(grid.problems.isEmpty)
    }
}
