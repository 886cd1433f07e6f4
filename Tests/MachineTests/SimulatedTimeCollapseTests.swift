import Testing
import VMCore
import Kernel
@testable import Machine
import TestSupport

/// khugepaged's collapses in simulated time: on the kernel thread's CPU, under the target mm's mmap
/// lock held for writing and the PMD and PTE locks.
@Suite("Simulated time: collapses")
struct SimulatedTimeCollapseTests {
    /// khugepaged collapses 512 written 4 KiB pages of one mm; the collapse is charged on CPU 0 at
    /// its clock, and CPU 1 faults a page of the same mm (`sameMM`) or of another 500 cycles later.
    /// CPU 1's wait for the mmap lock, the collapse's length, and the simulated time.
    func faultDuringCollapse(sameMM: Bool, pmdLock: KernelDesign.PMDLockGranularity = .pageTableLock) throws
        -> (faultWait: Double, collapseCycles: Double, time: SimulatedTime) {
        var design = KernelDesign.linux2_6_38
        design.pmdLock = pmdLock
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata, design: design, enabled: .madvise)
        let mm = try #require(kernel.createAddressSpace()), other = try #require(kernel.createAddressSpace())
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 2, simulatedTime: true)
        let time = try #require(m.simulatedTime)
        let region = try mm.mmap(address: VirtualAddress(0x4000_0000), length: 2 << 20, protection: .readWrite,
                                 flags: [.private, .fixed])
        let target = sameMM ? mm : other
        let elsewhere = try target.mmap(address: VirtualAddress(0x8000_0000), length: 2 << 20, protection: .readWrite,
                                        flags: [.private, .fixed])
        m.cpus[0].switchTo(mm)
        touchPages(m.cpus[0], region, 2 << 20, .write)
        kernel.recordCollapses(true)
        try mm.madvise(region, length: 2 << 20, advice: .hugepage)
        #expect(kernel.setKhugepagedKnob("khugepaged/pages_to_scan", to: "512") == nil)
        kernel.advanceTime(by: 0)
        let records = kernel.takeCollapseRecords()
        #expect(records.count == 1)
        let collapse = try #require(records.first)
        #expect(collapse.pid == mm.pid && collapse.address == 0x4000_0000)
        #expect(collapse.pagesCopied == 512 && collapse.freed.folios == 512)

        let copy = 512 * m.machineDescription.timing.copyPageCycles
        let before = m.clock(of: 0)
        let pmdClass = pmdLock == .splitPMDLock ? LockClass.pmdPTL : .pageTableLock
        let pmdTaken = time.acquisitions[pmdClass.rawValue]
        time.chargeCollapse(collapse, cpu: 0, design: design, now: before, copyCycles: copy)
        // pmdp_clear_flush() and set_pmd_at(), each under the PMD lock.
        #expect(time.acquisitions[pmdClass.rawValue] == pmdTaken + 2)
        let collapseCycles = m.clock(of: 0) - before
        time.charge(cpu: 1, cycles: before + 500 - m.clock(of: 1))
        m.cpus[1].switchTo(target)
        let waited = time.waitCycles[LockClass.mmapLock.rawValue]
        _ = m.cpus[1].access(elsewhere, .write)
        return (time.waitCycles[LockClass.mmapLock.rawValue] - waited, collapseCycles, time)
    }

    @Test("a collapse on khugepaged's CPU delays another CPU's fault of the same mm, and the wait is mmap_lock's",
          arguments: [KernelDesign.PMDLockGranularity.pageTableLock, .splitPMDLock])
    func collapseDelaysFaultsOfItsMM(pmdLock: KernelDesign.PMDLockGranularity) throws {
        let same = try faultDuringCollapse(sameMM: true, pmdLock: pmdLock)
        let other = try faultDuringCollapse(sameMM: false, pmdLock: pmdLock)
        let isolate = 512 * same.time.parameters.zapEntryCycles   // a lower bound on the work under the lock
        // The fault of the collapsing mm waits for the collapse: the copy and the rest are under the
        // mmap lock held for writing.
        #expect(same.collapseCycles > 512 * 500)
        #expect(same.faultWait > same.collapseCycles - 1_000 && same.faultWait > isolate)
        // Another mm's fault does not.
        #expect(other.faultWait < 1_000)
        // The isolation took lru_lock for each page.
        #expect(same.time.acquisitions[LockClass.lruLock.rawValue] >= 512)
    }

    @Test("reclaim's isolation takes lru_lock once per 32 pages; a CPU holding it makes the kernel thread wait")
    func isolationBatches() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata)
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 2, simulatedTime: true)
        let time = try #require(m.simulatedTime)
        time.chargeLRUIsolation(pages: 100, cpu: 0, design: kernel.design, now: 0, workPerPage: 1_000)
        #expect(time.acquisitions[LockClass.lruLock.rawValue] == 4)
        #expect(m.clock(of: 0) == 0, "alone, the isolation's work is the kernel thread's cycles, charged elsewhere")
        // CPU 1 isolates 320 pages from the same time: it waits for CPU 0's batches.
        time.chargeLRUIsolation(pages: 100, cpu: 0, design: kernel.design, now: 100_000, workPerPage: 1_000)
        time.chargeLRUIsolation(pages: 320, cpu: 1, design: kernel.design, now: 100_000, workPerPage: 1_000)
        #expect(time.acquisitions[LockClass.lruLock.rawValue] == 18)
        #expect(m.clock(of: 1) > 0 && time.waitCycles[LockClass.lruLock.rawValue] > 0)
    }
}
