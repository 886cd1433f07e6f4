import Testing
import TestSupport
@testable import Machine
import Kernel
import VMCore

@Suite("The specialized STLB-miss path")
struct MissPathTests {
    /// A machine over a kernel with THP `enabled=madvise`: a 2 MiB-aligned region of 24 MiB whose
    /// first 4 MiB are advised huge, the rest 4 KiB pages; `general`: the CPU takes only the general
    /// miss path.
    func setUp(_ preset: MachineDescription, general: Bool) throws -> (Machine, AddressSpace, VirtualAddress) {
        let kernel = TestMachine.kernel(memory: 128 << 20, mode: .metadata, enabled: .madvise)
        let mm = kernel.createAddressSpace()!
        let m = Machine(kernel: kernel, description: preset)
        m.cpus[0].switchTo(mm)
        if general { m.cpus[0].missPathShape = .none }
        let va = try mm.mmap(length: 26 << 20, protection: .readWrite, flags: .private).alignedUp(2 << 20)
        try mm.madvise(va, length: 4 << 20, advice: .hugepage)
        try mm.madvise(va + (4 << 20), length: 20 << 20, advice: .noHugepage)
        return (m, mm, va)
    }

    /// Everything the miss path writes in one array: tags, payloads, LRU stamps and the use clock.
    func state(_ a: TLBArray) -> [UInt64] {
        (0..<a.entries).flatMap { [a.tags[$0], a.payloads[$0], a.stamps[$0]] } + [a.clock]
    }

    func state(_ cpu: CPU) -> [[UInt64]] {
        (cpu.tlb.l1Data + cpu.tlb.l1Instruction + cpu.tlb.l2).map(state)
            + [cpu.pageWalkCache.pml4, cpu.pageWalkCache.pdpt, cpu.pageWalkCache.pd].map(state)
    }

    /// What a run of the stream leaves: each access's result, and every 1,000 accesses the counters,
    /// the TLB and paging-structure-cache state and the cache model's write-backs.
    struct Trace: Equatable {
        var results: [Result<PFN, AccessFault>] = []
        var counters: [TranslationCounters] = []
        var states: [[[UInt64]]] = []
        var writebacks: [Int] = []
        /// Accesses made while both TLB levels held only 4 KiB entries of their first arrays.
        var onlyFirst4K = 0
    }

    /// 30,000 random reads and writes, in phases of 3,000 from empty TLBs: the 4 KiB pages, and in odd
    /// phases one access in 16 to the huge region (a 2 MiB entry in a level sends its misses down the
    /// general path until it is flushed). From the fifth phase on, 2 MiB of the 4 KiB region are
    /// read-only (writes there: protection faults) and 1 MiB is unmapped.
    func run(_ preset: MachineDescription, general: Bool) throws -> Trace {
        let (m, mm, va) = try setUp(preset, general: general)
        let cpu = m.cpus[0]
        var rng = SplitMix64(seed: 37)
        var trace = Trace()
        for step in 0..<30_000 {
            let r = rng.next()
            let hugePhase = (step / 3000) % 2 == 1
            if step % 3000 == 0 { cpu.flushTranslations() }
            if step == 12_000 {
                try m.run(on: 0) {
                    try mm.mprotect(va + (8 << 20), length: 2 << 20, protection: .read)
                    try mm.munmap(va + (12 << 20), length: 1 << 20)
                }
            }
            let offset = hugePhase && r % 16 == 0 ? (r >> 8) % (4 << 20) : (4 << 20) + (r >> 8) % (20 << 20)
            let kind: MemoryAccess = (r >> 4) % 3 == 0 ? .write : .read
            if cpu.tlb.dataLevels.l1.holdsOnlyFirst4K && cpu.tlb.dataLevels.l2.holdsOnlyFirst4K { trace.onlyFirst4K += 1 }
            trace.results.append(cpu.access(va + offset, kind))
            if step % 1000 == 999 {
                trace.counters.append(cpu.counters)
                trace.states.append(state(cpu))
                trace.writebacks.append(cpu.cache.writebacks)
            }
        }
        return trace
    }

    @Test("random reads and writes over 4 KiB, huge, read-only and unmapped pages leave the same results, counters, TLB and paging-structure-cache state, LRU stamps and cache-model write-backs as the general path",
          arguments: ["skylake-sp", "icelake-sp"])
    func sameAsGeneralPath(preset: String) throws {
        let d = try #require(MachineDescription.presets[preset])
        #expect(try setUp(d, general: false).0.cpus[0].missPathShape != .none, "the preset takes the specialized path")
        let fast = try run(d, general: false)
        let slow = try run(d, general: true)
        #expect(fast.results == slow.results)
        #expect(fast.counters == slow.counters)
        #expect(fast.states == slow.states)
        #expect(fast.writebacks == slow.writebacks)
        let c = try #require(fast.counters.last)
        // The stream made every kind of miss: STLB hits, walks, faults (protection faults among them).
        #expect(c.l2Hits > 100 && c.walks > 1000 && c.faults > 1000)
        #expect(fast.results.contains { if case .failure = $0 { true } else { false } })
        #expect(fast.onlyFirst4K > 10_000, "accesses while both levels held only 4 KiB entries")
    }

    /// Random reads and writes in batches of 100 records through `CPU.run(_:)`, whose look-ahead
    /// keeps the PMD tables it found for the walks, or access by access
    /// through `CPU.access(_:_:)` (no look-ahead): each fault's index, and every 1,000 accesses the
    /// counters and TLB and paging-structure-cache state. The 4 KiB accesses go to eight pages in each
    /// of 120 2 MiB ranges, more than the PDE cache holds, so that walks start at PDPTE-cache hits
    /// too; they are written first, so that most walks find their pages (a fault empties what the
    /// look-ahead kept). In odd phases of 3,000 one access in 16 goes to a 4 MiB huge region, first
    /// touched there; from access 12,000 on 8 MiB are read-only and 2 MiB unmapped.
    /// All of it runs as code of CPU 0 (`SimulatedCPU`): a host thread that never switched takes a
    /// CPU number free at the time, whose per-CPU page lists would give the two runs different
    /// frames when other tests run at once.
    func runBatched(_ preset: MachineDescription, batched: Bool) throws -> (faults: [Int], counters: [TranslationCounters], states: [[[UInt64]]]) {
        try SimulatedCPU.run(on: 0) { try runBatchedOnCPU0(preset, batched: batched) }
    }

    func runBatchedOnCPU0(_ preset: MachineDescription, batched: Bool) throws -> (faults: [Int], counters: [TranslationCounters], states: [[[UInt64]]]) {
        let kernel = TestMachine.kernel(memory: 512 << 20, mode: .metadata, enabled: .madvise)
        let mm = kernel.createAddressSpace()!
        let m = Machine(kernel: kernel, description: preset)
        let cpu = m.cpus[0]
        cpu.switchTo(mm)
        let va = try mm.mmap(length: 246 << 20, protection: .readWrite, flags: .private).alignedUp(2 << 20)
        try mm.madvise(va, length: 4 << 20, advice: .hugepage)
        try mm.madvise(va + (4 << 20), length: 240 << 20, advice: .noHugepage)
        func small(_ r: UInt64) -> UInt64 { (4 << 20) + (r % 120) * (2 << 20) + ((r >> 7) % 8) * 4096 + (r >> 10) % 4096 }
        for r in 0..<UInt64(120 * 8) { _ = cpu.access(va + (small(r % 120 | (r / 120) << 7) & ~4095), .write) }
        var rng = SplitMix64(seed: 41)
        var faults: [Int] = []
        var counters: [TranslationCounters] = []
        var states: [[[UInt64]]] = []
        var records: [AccessRecord] = []
        for step in 0..<30_000 {
            let r = rng.next()
            let hugePhase = (step / 3000) % 2 == 1
            let offset = hugePhase && r % 16 == 0 ? (r >> 8) % (4 << 20) : small(r >> 8)
            let kind: MemoryAccess = (r >> 4) % 3 == 0 ? .write : .read
            records.append(AccessRecord(address: (va + offset).rawValue, count: 1, kind: kind))
        }
        for start in stride(from: 0, to: records.count, by: 100) {
            if start == 12_000 {
                try m.run(on: 0) {
                    try mm.mprotect(va + (20 << 20), length: 8 << 20, protection: .read)
                    try mm.munmap(va + (40 << 20), length: 2 << 20)
                }
            }
            if batched {
                var next = start
                while next < start + 100 {
                    let (done, fault) = records[next..<(start + 100)].withUnsafeBufferPointer { cpu.run($0) }
                    if fault != nil { faults.append(next + done) }
                    next += fault == nil ? done : done + 1
                }
            } else {
                for i in start..<(start + 100) {
                    if case .failure = cpu.access(VirtualAddress(records[i].address), records[i].kind) { faults.append(i) }
                }
            }
            if (start + 100) % 1000 == 0 {
                counters.append(cpu.counters)
                states.append(state(cpu))
            }
        }
        return (faults, counters, states)
    }

    @Test("batches through CPU.run, whose walks take the PMD tables its look-ahead found, leave the same faults, counters and TLB and paging-structure-cache state as accesses one by one",
          arguments: ["skylake-sp", "icelake-sp"])
    func batchesSameAsOneByOne(preset: String) throws {
        let d = try #require(MachineDescription.presets[preset])
        let batched = try runBatched(d, batched: true)
        let single = try runBatched(d, batched: false)
        #expect(batched.faults == single.faults)
        #expect(batched.counters == single.counters)
        #expect(batched.states == single.states)
        let c = try #require(batched.counters.last)
        // Walks from PDE-cache and PDPTE-cache hits, faults inside batches (first touches and the
        // protection faults after the mprotect), and faults the kernel could not resolve.
        #expect(c.walks > 10_000 && c.pageWalkCacheHits > 10_000 && c.faults > 500)
        #expect(!batched.faults.isEmpty)
    }
}
