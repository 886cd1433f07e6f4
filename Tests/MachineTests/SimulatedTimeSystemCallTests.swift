import Testing
import VMCore
import Kernel
@testable import Machine
import TestSupport

/// The mmap lock as a reader-writer semaphore in simulated time, and the system calls other than
/// munmap and MADV_DONTNEED charged for what the kernel recorded doing.
@Suite("Simulated time: the mmap lock and system calls")
struct SimulatedTimeSystemCallTests {
    /// A kernel of `design`, one mm, a machine of two CPUs in simulated time both running it, and a
    /// region of `pages` 4 KiB pages written by CPU 0 (8 MiB mapped at 1 GiB), plus 1 MiB elsewhere.
    struct Setup {
        let kernel: Kernel
        let mm: AddressSpace
        let m: Machine
        let time: SimulatedTime
        let region: VirtualAddress
        let other: VirtualAddress
    }

    func setup(pages: Int, design: KernelDesign = .linux2_6_38, enabled: TransparentHugepageSettings.Enabled = .never) throws -> Setup {
        let kernel = TestMachine.kernel(memory: 128 << 20, mode: .metadata, design: design, enabled: enabled)
        let mm = try #require(kernel.createAddressSpace())
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 2, simulatedTime: true)
        let time = try #require(m.simulatedTime)
        for cpu in m.cpus { cpu.switchTo(mm) }
        let region = try mm.mmap(address: VirtualAddress(0x4000_0000), length: 8 << 20, protection: .readWrite,
                                 flags: [.private, .fixed])
        let other = try mm.mmap(address: VirtualAddress(0x8000_0000), length: 1 << 20, protection: .readWrite,
                                flags: [.private, .fixed])
        touchPages(m.cpus[0], region, UInt64(pages) * 4096, .write)
        return Setup(kernel: kernel, mm: mm, m: m, time: time, region: region, other: other)
    }

    /// CPU 1 faults a page of `s.other` at `at` (its clock moved there first); returns its wait for the
    /// mmap lock and its clock after the fault.
    func fault(_ s: Setup, at: Double, page: UInt64 = 0) -> (wait: Double, end: Double) {
        let ahead = at - s.m.clock(of: 1)
        precondition(ahead >= 0, "CPU 1 is past \(at)")
        s.time.charge(cpu: 1, cycles: ahead)
        let waited = s.time.waitCycles[LockClass.mmapLock.rawValue]
        _ = s.m.cpus[1].access(s.other + page * 4096, .write)
        return (s.time.waitCycles[LockClass.mmapLock.rawValue] - waited, s.m.clock(of: 1))
    }

    /// Whether a fault of CPU 1 at `before + 500` (a writer on CPU 0 asked at `before` plus a system
    /// call and held until `before + hold`) waited for the writer: it ends after the release, and
    /// most of the hold is counted as a wait for the mmap lock.
    func waitsForWriter(_ s: Setup, before: Double, hold: Double) -> Bool {
        let (wait, end) = fault(s, at: before + 500)
        return end > before + hold && wait > hold - 5_000
    }

    // MARK: The mmap lock's writers as a timeline

    @Test("a fault that in simulated time came before a munmap does not wait for it; one during it does")
    func readerBeforeWriterDoesNotWait() throws {
        let s = try setup(pages: 2_048)
        let before = s.m.clock(of: 0)
        var zap = ZapRecord()
        try s.mm.munmap(s.region, length: 8 << 20, recording: &zap)
        s.time.chargeZap(zap, cpu: 0, pid: s.mm.pid, design: .linux2_6_38, now: before, writer: true, flushCycles: s.m.clock(of: 0) - before)
        let hold = s.m.clock(of: 0) - before
        let p = s.time.parameters
        #expect(hold > 2_048 * (p.zapEntryCycles + p.freeFolioCycles))
        // CPU 1's clock lags: its fault comes 20,000 cycles before the munmap asked for the lock. It
        // waits at most for the count line, not for the writer that came after it.
        #expect(before > 30_000)
        let early = fault(s, at: before - 20_000)
        #expect(early.wait < 1_000 && early.end < before)
        // Its next fault, 1,000 cycles into the munmap's hold, waits for the rest of it.
        let during = fault(s, at: before + p.systemCallCycles + 1_000, page: 1)
        #expect(during.end > before + hold && during.wait > hold - 5_000, "\(during) \(before) \(hold) \(early)")
    }

    @Test("a writer waits for a reader inside at its time: mprotect during another CPU's huge fault waits for its up_read")
    func writerWaitsForReaderInside() throws {
        let s = try setup(pages: 0, enabled: .always)
        // CPU 1 takes a huge fault (its zeroing keeps it inside the read hold for a long time).
        let start = s.m.clock(of: 1)
        _ = s.m.cpus[1].access(s.other + (0 << 20), .write)
        _ = s.m.cpus[1].access(s.region, .write)
        let faultStart = s.m.clock(of: 1)
        _ = s.m.cpus[1].access(s.region + (2 << 20), .write)
        let faultEnd = s.m.clock(of: 1)
        #expect(faultEnd - faultStart > 50_000 && start <= faultStart)
        // CPU 0 asks for the lock for writing a quarter into that fault.
        let asked = faultStart + (faultEnd - faultStart) / 4
        s.time.charge(cpu: 0, cycles: asked - s.time.parameters.systemCallCycles - s.m.clock(of: 0))
        var walk = TableWalkRecord()
        try s.mm.mprotect(s.region + (4 << 20), length: 1 << 20, protection: .read, recording: &walk)
        let waited = s.time.waitCycles[LockClass.mmapLock.rawValue]
        s.time.chargeProtection(walk, cpu: 0, pid: s.mm.pid, design: .linux2_6_38, now: asked - s.time.parameters.systemCallCycles,
                                flushCycles: 0)
        let writerWait = s.time.waitCycles[LockClass.mmapLock.rawValue] - waited
        #expect(writerWait > (faultEnd - asked) - 500)
        #expect(writerWait < (faultEnd - asked) + 2_000)
    }

    @Test("a fault that asks while a writer waits for readers queues behind the writer")
    func readerQueuesBehindWaitingWriter() throws {
        let t = MmapLockTimeline(cpuCount: 3)
        let mm = t.addMM()
        // CPU 2 reads from 0 to 10,000; a writer asks at 1,000 and holds for 5,000 once the reader left.
        t.noteRead(cpu: 2, mm: mm, request: 0, end: 10_000)
        let start = t.writerStarts(mm, at: 1_000)
        #expect(start == 10_000)
        t.noteWrite(mm: mm, request: 1_000, end: 15_000, horizon: -.infinity)
        // A reader asking before the writer asked does not wait for it; one asking while it waits does.
        #expect(t.readerEnters(mm, at: 500) == 500)
        #expect(t.readerEnters(mm, at: 2_000) == 15_000)
        #expect(t.readerEnters(mm, at: 15_000) == 15_000)
        // Another mm's readers and writers are not held back.
        let other = t.addMM()
        #expect(t.readerEnters(other, at: 2_000) == 2_000)
        #expect(t.writerStarts(other, at: 2_000) == 2_000)
        // A second writer asking during the first one's hold goes after it.
        #expect(t.writerStarts(mm, at: 12_000) == 15_000)
    }

    @Test("a writer finds the read hold inside at its time among a CPU's last 1,024, after the ring wrapped")
    func readRingWraps() {
        let t = MmapLockTimeline(cpuCount: 2)
        let mm = t.addMM()
        // CPU 1 holds the lock for reading from 10·i to 10·i + 5, 3,000 times.
        for i in 0..<3_000 { t.noteRead(cpu: 1, mm: mm, request: Double(10 * i), end: Double(10 * i + 5)) }
        #expect(t.writerStarts(mm, at: 29_993) == 29_995)   // inside the last
        #expect(t.writerStarts(mm, at: 29_000) == 29_005)   // inside one 100 back
        #expect(t.writerStarts(mm, at: 29_007) == 29_007)   // between two
        #expect(t.writerStarts(mm, at: 25_002) == 25_005)   // 300 back: still in the ring
        #expect(t.writerStarts(mm, at: 30_001) == 30_001)   // after all of them
    }

    // MARK: System calls charged for what they did

    @Test("mprotect over written pages holds the mmap lock for writing while it changes them: a fault of the mm on another CPU waits, counted under mmap_lock")
    func mprotectDelaysFaults() throws {
        var results: [(waited: Bool, wait: Double, hold: Double)] = []
        for pages in [16, 2_048] {
            let s = try setup(pages: pages)
            let before = s.m.clock(of: 0)
            var walk = TableWalkRecord()
            try s.mm.mprotect(s.region, length: 8 << 20, protection: .read, recording: &walk)
            #expect(walk.entries == pages && walk.hugePMDs.isEmpty)
            let ptl = s.time.acquisitions[LockClass.ptl.rawValue]
            s.time.chargeProtection(walk, cpu: 0, pid: s.mm.pid, design: .linux2_6_38, now: before, flushCycles: s.m.clock(of: 0) - before)
            #expect(s.time.acquisitions[LockClass.ptl.rawValue] == ptl + walk.pteTables.count)
            let hold = s.m.clock(of: 0) - before
            let (wait, end) = fault(s, at: before + 500)
            results.append((end > before + hold, wait, hold))
        }
        let p = ContentionParameters.preset(named: "skylake-sp")
        // The big call's entries are most of its hold, and the fault waits for nearly all of it.
        #expect(results[1].hold > 2_048 * p.protectEntryCycles + p.mmapWriteHoldCycles)
        #expect(results[0].waited && results[1].waited)
        #expect(results[1].wait > results[1].hold - 5_000)
        #expect(results[1].wait > results[0].wait + 2_048 * p.protectEntryCycles / 2)
    }

    @Test("mprotect of a huge PMD takes the PMD lock; of half of one, splits it first",
          arguments: [KernelDesign.linux2_6_38, .linux6_18])
    func mprotectHugePMD(design: KernelDesign) throws {
        let s = try setup(pages: 0, design: design, enabled: .always)
        _ = s.m.cpus[0].access(s.region, .write)
        _ = s.m.cpus[0].access(s.region + (2 << 20), .write)
        var walk = TableWalkRecord()
        try s.mm.mprotect(s.region, length: 3 << 20, protection: .read, recording: &walk)
        #expect(walk.hugePMDs == [0x4000_0000])
        #expect(walk.pmdSplits == [0x4020_0000])
        let pmdClass = design.pmdLock == .splitPMDLock ? LockClass.pmdPTL : .pageTableLock
        let pmd = s.time.acquisitions[pmdClass.rawValue]
        s.time.chargeProtection(walk, cpu: 0, pid: s.mm.pid, design: design, now: s.m.clock(of: 0), flushCycles: 0)
        // The change of the whole one, and the split of the other (2.6.38: twice, around lru_lock).
        #expect(s.time.acquisitions[pmdClass.rawValue] == pmd + 1 + (design.splitPMDSplitsPage ? 2 : 1))
    }

    @Test("fork holds the parent's mmap lock for writing while it copies the page tables and write-protects")
    func forkDelaysParentFaults() throws {
        let s = try setup(pages: 2_048)
        let before = s.m.clock(of: 0)
        var walk = TableWalkRecord()
        let child = try s.mm.fork(recording: &walk)
        #expect(walk.entries >= 2_048 && walk.entriesWriteProtected >= 2_048 && walk.pagesCopied == 0)
        let ptl = s.time.acquisitions[LockClass.ptl.rawValue]
        s.time.chargeFork(walk, cpu: 0, pid: s.mm.pid, design: .linux2_6_38, now: before,
                          flushCycles: s.m.clock(of: 0) - before, copyPageCycles: s.m.machineDescription.timing.copyPageCycles)
        #expect(s.time.acquisitions[LockClass.ptl.rawValue] == ptl + walk.pteTables.count)
        let hold = s.m.clock(of: 0) - before
        let p = s.time.parameters
        #expect(hold > 2_048 * (p.forkEntryCycles + p.atomicCycles))
        #expect(waitsForWriter(s, before: before, hold: hold))
        child.exit()
    }

    @Test("MAP_FIXED over written pages, a shrinking brk and a shrinking mremap are charged for their zaps")
    func unmappingCallsAreCharged() throws {
        for call in ["mmap", "mremap"] {
            let s = try setup(pages: 2_048)
            let before = s.m.clock(of: 0)
            var zap = ZapRecord()
            if call == "mmap" {
                _ = try s.mm.mmap(address: s.region, length: 8 << 20, protection: .readWrite, flags: [.private, .fixed],
                                  recording: &zap)
                #expect(zap.entriesCleared == 2_048)
                s.time.chargeZap(zap, cpu: 0, pid: s.mm.pid, design: .linux2_6_38, now: before, lock: .write, flushCycles: s.m.clock(of: 0) - before)
            } else {
                var moved = TableWalkRecord()
                _ = try s.mm.mremap(s.region, oldSize: 8 << 20, newSize: 4 << 20, recording: &zap, moved: &moved)
                #expect(zap.entriesCleared == 1_024 && moved.entries == 0)
                s.time.chargeRemap(zap, moved: moved, cpu: 0, pid: s.mm.pid, design: .linux2_6_38, now: before, flushCycles: s.m.clock(of: 0) - before)
            }
            let hold = s.m.clock(of: 0) - before
            let p = s.time.parameters
            #expect(hold > Double(zap.entriesCleared) * (p.zapEntryCycles + p.freeFolioCycles))
            #expect(waitsForWriter(s, before: before, hold: hold))
        }
        // brk: the heap shrinks by what was written above the new break.
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata)
        let mm = try #require(kernel.createAddressSpace())
        let base = mm.setBreak(VirtualAddress(0))
        mm.setBreak(base + (4 << 20))
        for i in 0..<1_024 { try mm.write(base + UInt64(i) * 4096, [1]).get() }
        var zap = ZapRecord()
        mm.setBreak(base + (2 << 20), recording: &zap)
        #expect(zap.entriesCleared == 512 && zap.freed.folios == 512)
    }

    @Test("mremap that moves pages records and charges the move under the source tables' locks")
    func mremapMove() throws {
        let s = try setup(pages: 1_024)
        let before = s.m.clock(of: 0)
        var zap = ZapRecord(), moved = TableWalkRecord()
        _ = try s.mm.mremap(s.region, oldSize: 8 << 20, newSize: 8 << 20, flags: [.mayMove, .fixed],
                            newAddress: VirtualAddress(0x1_0000_0000), recording: &zap, moved: &moved)
        #expect(moved.entries == 1_024 && moved.pteTables.map(\.range) == [0x4000_0000 >> 21, 0x4020_0000 >> 21])
        #expect(zap.freed.folios == 0)
        let ptl = s.time.acquisitions[LockClass.ptl.rawValue]
        s.time.chargeRemap(zap, moved: moved, cpu: 0, pid: s.mm.pid, design: .linux2_6_38, now: before, flushCycles: s.m.clock(of: 0) - before)
        #expect(s.time.acquisitions[LockClass.ptl.rawValue] >= ptl + 2)
        #expect(s.m.clock(of: 0) - before > 1_024 * s.time.parameters.moveEntryCycles)
    }

    @Test("exit takes no mmap lock but releases its pages under lru_lock and zone->lock, which other processes' faults take")
    func exitReleasesUnderSharedLocks() throws {
        let s = try setup(pages: 2_048)
        var zap = ZapRecord()
        s.mm.exit(recording: &zap)
        #expect(zap.entriesCleared == 2_048 && zap.freed.folios == 2_048)
        let mmap = s.time.acquisitions[LockClass.mmapLock.rawValue]
        let shared = s.time.acquisitions[LockClass.lruLock.rawValue] + s.time.acquisitions[LockClass.zoneLock.rawValue]
        let before = s.m.clock(of: 0)
        s.time.chargeZap(zap, cpu: 0, pid: s.mm.pid, design: .linux2_6_38, now: before, lock: .none, flushCycles: s.m.clock(of: 0) - before)
        #expect(s.time.acquisitions[LockClass.mmapLock.rawValue] == mmap)
        #expect(s.time.acquisitions[LockClass.lruLock.rawValue] + s.time.acquisitions[LockClass.zoneLock.rawValue] > shared + 2_048 / 14)
        #expect(s.m.clock(of: 0) - before > 2_048 * s.time.parameters.freeFolioCycles)
    }

    @Test("MADV_PAGEOUT holds the mmap lock for reading: it records the pages it swapped out and is charged their writes, and a fault of the mm goes on")
    func pageoutIsChargedAsAReader() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata, swap: SwapConfiguration(slots: 4_096))
        let mm = try #require(kernel.createAddressSpace())
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 2, simulatedTime: true)
        let time = try #require(m.simulatedTime)
        for cpu in m.cpus { cpu.switchTo(mm) }
        let region = try mm.mmap(address: VirtualAddress(0x4000_0000), length: 4 << 20, protection: .readWrite,
                                 flags: [.private, .fixed])
        let other = try mm.mmap(address: VirtualAddress(0x8000_0000), length: 1 << 20, protection: .readWrite,
                                flags: [.private, .fixed])
        touchPages(m.cpus[0], region, 1_024 * 4096, .write)
        let before = m.clock(of: 0)
        var zap = ZapRecord(), collapses: [CollapseRecord] = [], walk = TableWalkRecord()
        try mm.madvise(region, length: 4 << 20, advice: .pageout, recording: &zap, collapses: &collapses, pageout: &walk)
        // Written, the pages stay in the swap cache (the writes are asynchronous): none freed.
        #expect(walk.pagesSwappedOut == 1_024 && walk.entries == 1_024 && walk.freed.folios == 0)
        let swapOut = m.machineDescription.timing.swapOutPageCycles
        time.chargePageout(walk, cpu: 0, pid: mm.pid, design: .linux2_6_38, now: before,
                           flushCycles: m.clock(of: 0) - before, swapOutPageCycles: swapOut)
        let hold = m.clock(of: 0) - before
        #expect(hold > 1_024 * swapOut)
        // CPU 1 faults 500 cycles into the call: it waits at most for the count line.
        time.charge(cpu: 1, cycles: before + 500 - m.clock(of: 1))
        let waited = time.waitCycles[LockClass.mmapLock.rawValue]
        _ = m.cpus[1].access(other, .write)
        #expect(time.waitCycles[LockClass.mmapLock.rawValue] - waited < 1_000)
    }
}
