import Testing
import VMCore
@testable import PhysicalMemory
@testable import Kernel
import TestSupport

/// The kernel's per-CPU state (the LRU's add stages, vmstat's counters, per-CPU page lists) is the
/// executing simulated CPU's, sized by `KernelConfiguration.cpus`.
@Suite("Kernel: per-CPU state belongs to the simulated CPU")
struct PerCPUStateTests {
    func kernel(cpus: Int, kernelThreadCPU: Int = 0, enabled: TransparentHugepageSettings.Enabled = .never) -> Kernel {
        var settings = KernelDesign.linux2_6_38.defaultSettings
        settings.enabled = enabled
        var configuration = KernelConfiguration(memoryBytes: 32 << 20, mode: .data, watermarks: .zero,
                                                hugepageSettings: settings)
        configuration.cpus = cpus
        configuration.kernelThreadCPU = kernelThreadCPU
        return Kernel(configuration)
    }

    @Test("faults on two CPUs interleaved on one host thread stage their folios on their own CPU's LRU stage and count there; a drain links every stage")
    func lruStagesAndCounters() throws {
        let kernel = kernel(cpus: 2)
        let mm = kernel.createAddressSpace()!
        let va = try mm.mmap(length: 1 << 20, protection: .readWrite, flags: .private)
        SimulatedCPU.run(on: 1) { _ = mm.handleFault(at: va, access: .write) }
        SimulatedCPU.run(on: 0) {
            _ = mm.handleFault(at: va + 4096, access: .write)
            _ = mm.handleFault(at: va + 2 * 4096, access: .write)
        }
        #expect(kernel.lru.stagedCount(cpu: 1) == 1 && kernel.lru.stagedCount(cpu: 0) == 2)
        #expect(kernel.vmstat.count(.pgfault, cpu: 1) == 1 && kernel.vmstat.count(.pgfault, cpu: 0) == 2)
        #expect(kernel.vmstat[.pgfault] == 3)
        // An operation on the lists first links every CPU's stage (lru_add_drain_all()).
        kernel.lru.lockFlushed()
        kernel.lru.lock.unlock()
        #expect(kernel.lru.stagedCount(cpu: 0) == 0 && kernel.lru.stagedCount(cpu: 1) == 0)
        #expect(kernel.vmstatState(.nrInactiveAnon) + kernel.vmstatState(.nrActiveAnon) == 3)
        expectClean(kernel)
    }

    @Test("the configured CPU count sizes the per-CPU state", arguments: [1, 2, 40])
    func sized(cpus: Int) {
        let kernel = kernel(cpus: cpus)
        #expect(kernel.lru.cpus == cpus)
        #expect(kernel.memory.buddy.perCPU.cpus == cpus)
    }

    @Test("a CPU count outside 1...1024, or kernel threads on a CPU the kernel lacks, is refused with a reason")
    func validation() {
        #expect(KernelConfiguration.problem(withCPUs: 1) == nil && KernelConfiguration.problem(withCPUs: 1024) == nil)
        #expect(KernelConfiguration.problem(withCPUs: 0) == "0 CPUs: a kernel has 1 to 1024")
        #expect(KernelConfiguration.problem(withCPUs: 1025) != nil)
        var configuration = KernelConfiguration()
        configuration.cpus = 2
        configuration.kernelThreadCPU = 2
        #expect(configuration.cpuProblem == "kernel threads on CPU 2: the kernel has CPUs 0 to 1")
        configuration.kernelThreadCPU = 1
        #expect(configuration.cpuProblem == nil)
    }

    @Test("kernel threads run on the configured CPU, and the caller's CPU is back afterwards")
    func kernelThreadsCPU() throws {
        let kernel = kernel(cpus: 2, kernelThreadCPU: 1, enabled: .madvise)
        let mm = kernel.createAddressSpace()!
        SimulatedCPU.switchTo(0)
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a, pattern(3, 4096)).get()
        try mm.madvise(a, length: 2 * .MiB, advice: .hugepage)
        kernel.advanceTime(by: 0)
        #expect(isHuge(mm, a))
        #expect(kernel.vmstat.count(.thpCollapseAlloc, cpu: 1) == 1 && kernel.vmstat.count(.thpCollapseAlloc, cpu: 0) == 0)
        #expect(SimulatedCPU.current == 0)
        expectClean(kernel)
    }
}
