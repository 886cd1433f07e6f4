import Testing
import VMCore
import Kernel
import Machine
import TestSupport

@Suite("Timing model")
struct TimingTests {
    @Test("an access that hits the L1 TLB costs the base cycles only (no cache model)")
    func l1HitCostsBase() throws {
        let (m, mm) = machine(.skylakeSP)
        let cpu = m.cpus[0]
        cpu.cacheModelling = .none
        let va = try anon(mm, 1 << 20)
        _ = cpu.access(va, .write)
        cpu.counters = TranslationCounters()
        for i in 0..<100 { _ = cpu.access(va + UInt64(i * 8), .read) }
        #expect(cpu.counters.cycles == 100 * m.machineDescription.timing.baseCycles)
    }

    @Test("a walk costs its start plus each reference at the level of the cache model it hit")
    func walkCostsByLevel() throws {
        let (m, mm) = machine(.zen4)
        let d = m.machineDescription
        let cpu = m.cpus[0]
        let va = try anon(mm, 1 << 20)
        _ = cpu.access(va, .write)

        cpu.reset(); cpu.cacheModelling = .none
        _ = cpu.access(va, .read)
        #expect(cpu.counters.tlbCycles == d.timing.l2TLBHitCycles)
        #expect(cpu.counters.walkCycles == d.timing.walkStartCycles + 4 * d.caches[1].latency)

        // Empty cache model: the four entries live in four tables, four lines, all from DRAM.
        cpu.reset(); cpu.cacheModelling = .pageTables
        _ = cpu.access(va, .read)
        #expect(cpu.counters.walkCycles == d.timing.walkStartCycles + 4 * d.memoryLatencyCycles)
        #expect(cpu.counters.dataCycles == 0)
        // The same walk again (TLBs and walk caches emptied, cache model kept): all four lines hit L1D.
        cpu.flushTranslations()
        cpu.counters = TranslationCounters()
        _ = cpu.access(va + 64, .read)
        #expect(cpu.counters.walkCycles == d.timing.walkStartCycles + 4 * d.caches[0].latency)
    }

    @Test("independent accesses overlap their misses: walk and data cycles divide by the memory-level parallelism")
    func independentAccessesOverlap() throws {
        let (m, mm) = machine(.zen4)
        let d = m.machineDescription
        let cpu = m.cpus[0]
        let va = try anon(mm, 1 << 20)
        _ = cpu.access(va, .write)
        func cost(independent: Bool) -> Double {
            cpu.reset()
            cpu.independentAccesses = independent
            _ = cpu.access(va, .read)
            return cpu.counters.walkCycles + cpu.counters.dataCycles
        }
        let dependent = cost(independent: false), overlapped = cost(independent: true)
        #expect(dependent == d.timing.walkStartCycles + 5 * d.memoryLatencyCycles)   // 4 entries + the data line
        #expect(abs(overlapped - dependent / d.timing.memoryLevelParallelism) < 1e-9)
    }

    @Test("a fault adds the kernel's fault latency; shootdowns cost the initiator and every receiver")
    func faultAndFlushCosts() throws {
        let (m, mm) = machine(.zen3, cpus: 2)
        m.cpus[1].switchTo(mm)
        let t = m.machineDescription.timing
        let va = try anon(mm, 1 << 20)
        _ = m.cpus[0].access(va, .write)
        #expect(m.cpus[0].counters.faultCycles == t.baseFaultCycles)
        _ = m.cpus[1].access(va, .read)
        try m.run(on: 0) { try mm.munmap(va, length: 4096) }
        #expect(m.cpus[0].counters.flushCycles == t.invlpgCycles + t.ipiSendCycles)
        #expect(m.cpus[1].counters.flushCycles == t.invlpgCycles + t.ipiReceiveCycles)
    }
}
