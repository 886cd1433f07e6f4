import Testing
import VMCore
import Kernel
import Machine
import TestSupport

@Suite("Shootdowns")
struct ShootdownTests {
    @Test("munmap shoots the range down on every CPU that ran the mm, counted like Linux counts it")
    func munmapReachesEveryCPU() throws {
        let (m, mm) = machine(.zen4, cpus: 3)
        m.cpus[1].switchTo(mm)
        let va = try anon(mm, 1 << 20)
        touchPages(m.cpus[0], va, 8 * 4096, .write)
        touchPages(m.cpus[1], va, 8 * 4096)
        #expect(m.cpus[0].cachedTranslation(va) != nil && m.cpus[1].cachedTranslation(va) != nil)
        #expect(m.cpusThatRan(mm) == [0, 1])
        try m.run(on: 0) { try mm.munmap(va, length: 4 * 4096) }
        for cpu in m.cpus.prefix(2) {
            #expect(cpu.cachedTranslation(va) == nil)
            #expect(cpu.cachedTranslation(va + 3 * 4096) == nil)
            #expect(cpu.cachedTranslation(va + 4 * 4096) != nil)   // outside the range: kept
        }
        #expect(m.flushCounters == TLBFlushCounters(remoteFlush: 1, remoteFlushReceived: 1, localFlushAll: 0, localFlushOne: 4))
        #expect(m.cpus[1].counters.flushCycles > 0 && m.cpus[2].counters.flushCycles == 0)
        #expect(m.cpus[1].access(va, .read) == .failure(AccessFault(at: va, outcome: .segv(.mapErr))))
    }

    @Test("a range above the single-page ceiling becomes a full flush of the mm's ASID only")
    func largeRangesFlushEverything() throws {
        let (m, mm) = machine(.skylakeSP, cpus: 1)
        let other = mm.kernel.createAddressSpace()!
        let va = try anon(mm, 1 << 20)
        let ova = try anon(other, 1 << 20)
        touchPages(m.cpus[0], va, 40 * 4096, .write)
        m.cpus[0].switchTo(other)
        touchPages(m.cpus[0], ova, 4096, .write)
        m.cpus[0].switchTo(mm)
        try m.run(on: 0) { try mm.munmap(va, length: 34 * 4096) }
        #expect(m.flushCounters.localFlushAll == 1 && m.flushCounters.localFlushOne == 0)
        #expect(m.cpus[0].cachedTranslation(va + 39 * 4096) == nil)   // everything of mm went
        m.cpus[0].switchTo(other)
        #expect(m.cpus[0].cachedTranslation(ova) != nil)               // other's translation stayed
    }

    @Test("mprotect read-only takes effect at once: the stale writable TLB entry is gone")
    func mprotectInvalidates() throws {
        let (m, mm) = machine()
        let cpu = m.cpus[0]
        let va = try anon(mm, 1 << 20)
        #expect(cpu.access(va, .write) == .success(mm.translate(va)!.frame))
        try m.run(on: 0) { try mm.mprotect(va, length: 1 << 20, protection: .read) }
        #expect(cpu.access(va, .write) == .failure(AccessFault(at: va, outcome: .segv(.accErr))))
        #expect(cpu.access(va, .read) == .success(mm.translate(va)!.frame))
    }

    @Test("a CPU that switched away gets the flush and leaves the mm's cpumask")
    func switchedAwayCPULeavesCpumask() throws {
        let (m, mm) = machine(.zen3, cpus: 2)
        let other = mm.kernel.createAddressSpace()!
        m.cpus[1].switchTo(mm)
        let va = try anon(mm, 1 << 20)
        touchPages(m.cpus[1], va, 4096, .write)
        m.cpus[1].switchTo(other)
        try m.run(on: 0) { try mm.munmap(va, length: 4096) }
        #expect(m.cpusThatRan(mm) == [0])
        #expect(m.flushCounters.remoteFlush == 1 && m.flushCounters.remoteFlushReceived == 1)
        try m.run(on: 0) { _ = try anon(mm, 4096); try mm.munmap(va + 4096, length: 4096) }
        #expect(m.flushCounters.remoteFlush == 1)   // CPU 1 is no longer interrupted
    }
}

@Suite("Shootdowns of a whole mm")
struct FlushAllTests {
    @Test("flushAll empties the mm's translations on every CPU that ran it and counts one full local flush")
    func flushAllReachesEveryCPU() throws {
        let (m, mm) = machine(.iceLakeSP, cpus: 2)
        m.cpus[1].switchTo(mm)
        let va = try anon(mm, 1 << 20)
        touchPages(m.cpus[0], va, 4 * 4096, .write)
        touchPages(m.cpus[1], va, 4 * 4096)
        m.run(on: 1) { m.flushAll(mm) }
        for cpu in m.cpus {
            #expect(cpu.cachedTranslation(va) == nil)
            #expect(cpu.cachedTranslation(va + 3 * 4096) == nil)
        }
        #expect(m.flushCounters == TLBFlushCounters(remoteFlush: 1, remoteFlushReceived: 1, localFlushAll: 1, localFlushOne: 0))
        #expect(m.flushCounters.vmstatLines == ["nr_tlb_remote_flush 1", "nr_tlb_remote_flush_received 1",
                                                "nr_tlb_local_flush_all 1", "nr_tlb_local_flush_one 0"])
    }
}
