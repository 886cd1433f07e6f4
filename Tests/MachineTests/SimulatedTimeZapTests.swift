import Testing
import VMCore
import Kernel
@testable import Machine
import TestSupport

/// munmap and MADV_DONTNEED in simulated time: charged for what their zaps did, under the locks Linux
/// takes for it.
@Suite("Simulated time: zaps")
struct SimulatedTimeZapTests {
    /// CPU 0 writes `pages` 4 KiB pages, then unmaps them (`writer`) or drops them with MADV_DONTNEED at
    /// its clock; CPU 1 faults a page of another part of the same mm 500 cycles later. Returns CPU 1's
    /// wait for the mmap lock and CPU 0's clock across the call.
    func faultDuringZap(pages: Int, writer: Bool, design: KernelDesign = .linux2_6_38) throws
        -> (faultWait: Double, callCycles: Double, time: SimulatedTime) {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata, design: design)
        let mm = try #require(kernel.createAddressSpace())
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 2, simulatedTime: true)
        let time = try #require(m.simulatedTime)
        for cpu in m.cpus { cpu.switchTo(mm) }
        let region = try anon(mm, 8 << 20)
        let other = try anon(mm, 1 << 20)
        touchPages(m.cpus[0], region, UInt64(pages) * 4096, .write)
        let before = m.clock(of: 0)
        var zap = ZapRecord()
        if writer {
            try mm.munmap(region, length: 8 << 20, recording: &zap)
        } else {
            try mm.madvise(region, length: 8 << 20, advice: .dontNeed, recording: &zap)
        }
        #expect(zap.entriesCleared == pages)
        time.chargeZap(zap, cpu: 0, pid: mm.pid, design: design, now: before, writer: writer, flushCycles: 0)
        let callCycles = m.clock(of: 0) - before
        // CPU 1 comes to the mm 500 cycles into the call.
        time.charge(cpu: 1, cycles: before + 500 - m.clock(of: 1))
        let waited = time.waitCycles[LockClass.mmapLock.rawValue]
        _ = m.cpus[1].access(other, .write)
        return (time.waitCycles[LockClass.mmapLock.rawValue] - waited, callCycles, time)
    }

    @Test("a big munmap on one CPU makes a fault of the same mm on another CPU wait longer than a small one does")
    func bigMunmapDelaysFaults() throws {
        let small = try faultDuringZap(pages: 16, writer: true)
        let big = try faultDuringZap(pages: 2_048, writer: true)
        #expect(big.faultWait > small.faultWait)
        // The big call's work — 2,048 entries cleared under four PTE locks, 2,048 pages freed — is
        // most of its length, and the fault waits for nearly all of it.
        let p = big.time.parameters
        let work = 2_048 * (p.zapEntryCycles + p.freeFolioCycles)
        #expect(big.callCycles > work && big.faultWait > work - 500)
        #expect(small.callCycles < work / 10)
        #expect(big.time.acquisitions[LockClass.ptl.rawValue] >= 4)
        #expect(big.time.acquisitions[LockClass.lruLock.rawValue] + big.time.acquisitions[LockClass.zoneLock.rawValue] > 0)
    }

    @Test("MADV_DONTNEED holds the mmap lock for reading: a concurrent fault does not wait for its whole duration")
    func dontNeedDoesNotBlockFaults() throws {
        let munmap = try faultDuringZap(pages: 2_048, writer: true)
        let dontNeed = try faultDuringZap(pages: 2_048, writer: false)
        // The same work...
        #expect(abs(dontNeed.callCycles - munmap.callCycles) < munmap.callCycles / 10)
        // ...but the fault waits at most for the count line, not for the call.
        #expect(dontNeed.faultWait < 1_000 && dontNeed.faultWait < dontNeed.callCycles / 20)
        #expect(munmap.faultWait > dontNeed.callCycles / 2)
    }

    @Test("a munmap of huge PMDs takes the PMD lock once per PMD: page_table_lock, or the split PMD lock")
    func hugePMDZap() throws {
        for lock in [KernelDesign.PMDLockGranularity.pageTableLock, .splitPMDLock] {
            var design = KernelDesign.linux2_6_38
            design.pmdLock = lock
            let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata, design: design, enabled: .always)
            let mm = try #require(kernel.createAddressSpace())
            let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 2, simulatedTime: true)
            let time = try #require(m.simulatedTime)
            let region = try mm.mmap(address: VirtualAddress(0x4000_0000), length: 8 << 20, protection: .readWrite,
                                     flags: [.private, .fixed])
            m.cpus[0].switchTo(mm)
            for i in 0..<4 { _ = m.cpus[0].access(region + UInt64(i) << 21, .write) }
            let lockClass = lock == .splitPMDLock ? LockClass.pmdPTL : .pageTableLock
            let taken = time.acquisitions[lockClass.rawValue]
            var zap = ZapRecord()
            try mm.munmap(region, length: 8 << 20, recording: &zap)
            #expect(zap.hugePMDs.count == 4 && zap.freed.largeFolios == 4)
            let zoneTaken = time.acquisitions[LockClass.zoneLock.rawValue]
            time.chargeZap(zap, cpu: 0, pid: mm.pid, design: design, now: m.clock(of: 0), writer: true, flushCycles: 0)
            #expect(time.acquisitions[lockClass.rawValue] == taken + 4)
            #expect(time.acquisitions[LockClass.zoneLock.rawValue] == zoneTaken + 4)
        }
    }

    @Test("a munmap of half a huge page splits its PMD under the PMD lock; 2.6.38 splits the page, under page_table_lock twice and lru_lock",
          arguments: [KernelDesign.linux2_6_38, .linux6_18])
    func partialHugeUnmap(design: KernelDesign) throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata, design: design, enabled: .always)
        let mm = try #require(kernel.createAddressSpace())
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 2, simulatedTime: true)
        let time = try #require(m.simulatedTime)
        let region = try mm.mmap(address: VirtualAddress(0x4000_0000), length: 2 << 20, protection: .readWrite,
                                 flags: [.private, .fixed])
        m.cpus[0].switchTo(mm)
        _ = m.cpus[0].access(region, .write)
        var zap = ZapRecord()
        try mm.munmap(region, length: 1 << 20, recording: &zap)
        #expect(zap.pmdSplits == [0x4000_0000] && zap.hugePMDs.isEmpty)
        #expect(zap.entriesCleared == 256)
        let pmdClass = design.pmdLock == .splitPMDLock ? LockClass.pmdPTL : .pageTableLock
        let pmd = time.acquisitions[pmdClass.rawValue], lru = time.acquisitions[LockClass.lruLock.rawValue]
        let before = m.clock(of: 0)
        time.chargeZap(zap, cpu: 0, pid: mm.pid, design: design, now: before, writer: true, flushCycles: 0)
        let splitsPage = design.splitPMDSplitsPage
        #expect(time.acquisitions[pmdClass.rawValue] == pmd + (splitsPage ? 2 : 1))
        #expect(time.acquisitions[LockClass.lruLock.rawValue] >= lru + (splitsPage ? 1 : 0))
        // The 512 entries written are in the call's length.
        #expect(m.clock(of: 0) - before > 512 * time.parameters.splitEntryCycles)
    }
}
