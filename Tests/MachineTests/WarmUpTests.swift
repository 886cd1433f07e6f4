import Testing
import VMCore
import Kernel
@testable import Machine
import TestSupport

@Suite("Warm-up of the next CPU's TLB sets")
struct WarmUpTests {
    @Test("the table holds each CPU's 4 KiB arrays and PMD cache, at their own buffers and sets", arguments: MachineDescription.presetNames)
    func tableCoversTheArrays(_ name: String) throws {
        let preset = try #require(MachineDescription.presets[name])
        let (m, _) = machine(preset, cpus: 3)
        let table = TLBWarmUpTable(m.cpus)
        defer { table.free() }
        for (c, cpu) in m.cpus.enumerated() {
            let expected = (Array(cpu.tlb.l1Data) + Array(cpu.tlb.l2)).filter { !$0.wide && $0.pageSizes.contains(.size4K) }
                + (cpu.pageWalkCache.pd.wide ? [] : [cpu.pageWalkCache.pd])
            #expect(table.perCPU == expected.count)
            for (i, a) in expected.enumerated() {
                let set = table.sets[c * table.perCPU + i]
                #expect(set.tags == a.tags && set.stamps == a.stamps, "CPU \(c) array \(i): another CPU's or array's buffers")
                #expect(set.setMask == a.setMask && set.ways == a.ways)
                #expect(set.shift == (a === cpu.pageWalkCache.pd ? 21 : 12))
            }
        }
    }

    @Test("warming up changes nothing simulated: translations, counters and answers stay as they were")
    func changesNothing() throws {
        let (m, mm) = machine(.skylakeSP, cpus: 4)
        for c in 1..<4 { m.cpus[c].switchTo(mm) }
        let va = try anon(mm, 8 << 20)
        for c in 0..<4 { touchPages(m.cpus[c], va + UInt64(c) * (2 << 20), 1 << 20, .write) }
        let before = m.cpus.map { $0.counters }
        let cached = m.cpus.map { cpu in (0..<512).map { cpu.cachedTranslation(va + UInt64($0) * 4096)?.frame } }
        var rng = SplitMix64(seed: 7)
        for _ in 0..<10_000 { m.warmUp(cpu: Int(rng.next() % 4), for: rng.next() & 0x7FFF_FFFF_FFFF) }
        #expect(m.cpus.map { $0.counters } == before)
        #expect(m.cpus.map { cpu in (0..<512).map { cpu.cachedTranslation(va + UInt64($0) * 4096)?.frame } } == cached)
    }

    @Test("a machine of one CPU has no table: warming up is a no-op")
    func oneCPU() {
        let (m, _) = machine(.skylakeSP, cpus: 1)
        m.warmUp(cpu: 0, for: 0x7000_0000)
        #expect(m.cpus[0].counters == TranslationCounters())
    }
}
