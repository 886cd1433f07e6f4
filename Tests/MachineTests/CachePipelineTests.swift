import Foundation
import Testing
import VMCore
import Kernel
@testable import Machine
import TestSupport

/// The cache model on a second host thread (`CachePipeline`) gives the inline path's answers bit for bit.
@Suite("Cache pipeline")
struct CachePipelineTests {
    /// A one-CPU machine on a kernel with huge pages on madvise, its process mapping `bytes` of small
    /// pages and as much again of `MADV_HUGEPAGE` memory; the machine's cache thread `mode`; with
    /// `smallPDECache`, a PDE cache of one set of 4 entries (walks of a few MiB then start at the PDPTE
    /// cache, the fused miss path's common walk).
    static func system(_ kind: CacheModel.Kind, mode: CacheThreadMode, bytes: UInt64, smallPDECache: Bool = false)
        throws -> (Machine, small: VirtualAddress, huge: VirtualAddress) {
        // The kernel's boot allocations go to the per-CPU lists of the CPU the thread runs: CPU 0 for
        // both machines, whichever pool thread runs the test.
        SimulatedCPU.switchTo(0)
        let kernel = TestMachine.kernel(memory: 256 << 20, mode: .metadata, enabled: .madvise)
        let mm = kernel.createAddressSpace()!
        // Skylake-SP with a last level of 1 MiB, so that dirty lines leave it (write-backs) in a short run.
        var d = MachineDescription.skylakeSP
        d.caches = [CacheLevelSpec(bytes: 32 << 10, ways: 8, latency: 5), CacheLevelSpec(bytes: 256 << 10, ways: 16, latency: 14),
                    CacheLevelSpec(bytes: 1 << 20, ways: 16, latency: 70)]
        // A memory-level parallelism of 6 and a memory latency of a fraction of a cycle: charges are
        // not short binary fractions, so sums round and their order shows in the last bits.
        d.timing.memoryLevelParallelism = 6
        d.timing.memoryLatencyNs = 90.1
        if smallPDECache { d.pdCache = TLBArraySpec(.size4K, entries: 4, ways: 4) }
        let m = Machine(kernel: kernel, description: d)
        m.cacheModel = kind
        m.cacheThread = mode
        m.cpus[0].switchTo(mm)
        let small = try anon(mm, bytes)
        let huge = try anon(mm, bytes + (2 << 20))
        try mm.madvise(huge, length: bytes + (2 << 20), advice: .hugepage)
        return (m, small, huge)
    }

    /// Random batches over both regions: single reads and writes, trace-style repeats, page runs of
    /// several strides, and now and then an access to an unmapped page (a fault the kernel cannot
    /// resolve, which ends its batch early).
    static func batches(small: VirtualAddress, huge: VirtualAddress, bytes: UInt64, seed: UInt64,
                        batchCount: Int = 48) -> [[AccessRecord]] {
        var rng = SplitMix64(seed: seed)
        let hugeBase = (huge.rawValue + (2 << 20) - 1) & ~((2 << 20) - 1)
        return (0..<batchCount).map { _ in
            (0..<(1 + Int(rng.next() % 300))).map { _ in
                let r = rng.next()
                let base = r & 1 == 0 ? small.rawValue : hugeBase
                // Half the accesses in a 1 MiB window (TLB and cache hits), half anywhere (walks).
                let span = r & 2 == 0 ? min(bytes, 1 << 20) : bytes
                var address = base + (rng.next() % span)
                let kind: MemoryAccess = r & 4 == 0 ? .write : .read
                switch (r >> 4) % 16 {
                case 0:
                    // The first pages of the address space: nothing is mapped there.
                    return AccessRecord(address: 4096 * (1 + (r >> 8) % 16), count: 1, kind: kind)
                case 1, 2:
                    return AccessRecord(address: address, count: 2 + Int((r >> 8) % 30), kind: kind)
                case 3, 4, 5:
                    let stride: UInt32 = [1, 8, 24, 64, 200][Int((r >> 8) % 5)]
                    address &= ~4095
                    address += (r >> 12) % 512
                    let room = (4096 - (address & 4095) - 1) / UInt64(stride)
                    guard room > 0 else { return AccessRecord(address: address, count: 1, kind: kind) }
                    return AccessRecord(address: address, count: 2 + Int((r >> 20) % room), kind: kind, stride: stride)
                default:
                    return AccessRecord(address: address, count: 1, kind: kind)
                }
            }
        }
    }

    /// Runs `batches` on the machine's CPU, each from its start to its end past faults the kernel
    /// could not resolve; reads the counters every `readEvery` batches (which waits for the cache
    /// thread mid-run) and turns independent accesses on halfway.
    static func replay(_ m: Machine, _ batches: [[AccessRecord]], readEvery: Int) -> (TranslationCounters, [Int], Int) {
        let cpu = m.cpus[0]
        var failures = 0
        for (n, batch) in batches.enumerated() {
            if n == batches.count / 2 { cpu.independentAccesses = true }
            batch.withUnsafeBufferPointer { records in
                var start = 0
                while start < records.count {
                    let (done, fault) = cpu.run(UnsafeBufferPointer(rebasing: records[start...]))
                    if fault == nil { break }
                    failures += 1
                    start += done + 1
                }
            }
            if n % readEvery == readEvery - 1 { _ = cpu.counters }
        }
        return (cpu.counters, cpu.cache.hits, failures)
    }

    /// Every field of `c`, floating-point ones by their bits.
    static func bits(_ c: TranslationCounters) -> [UInt64] {
        [c.accesses, c.l1Hits, c.l2Hits, c.walks, c.walkReferences, c.walkReferencesFromMemory, c.pageWalkCacheHits,
         c.dirtyAssists, c.faults, c.writebacks].map { UInt64(bitPattern: Int64($0)) }
            + [c.baseCycles, c.tlbCycles, c.walkCycles, c.dataCycles, c.faultCycles, c.flushCycles].map(\.bitPattern)
    }

    @Test("the pipelined CPU's counters and cache hits equal the inline CPU's, bit for bit",
          arguments: [CacheModel.Kind.full, .sampled], [1, 5])
    func sameCountersAsInline(kind: CacheModel.Kind, readEvery: Int) throws {
        let bytes: UInt64 = 40 << 20
        let (inline, small, huge) = try Self.system(kind, mode: .off, bytes: bytes)
        let (piped, _, _) = try Self.system(kind, mode: .on, bytes: bytes)
        let batches = Self.batches(small: small, huge: huge, bytes: bytes, seed: 23, batchCount: 200)
        let a = Self.replay(inline, batches, readEvery: readEvery)
        let b = Self.replay(piped, batches, readEvery: readEvery)
        #expect(piped.cpus[0].pipeline != nil, "the cache thread ran")
        #expect(inline.cpus[0].pipeline == nil)
        // The stream exercised what it should: walks, faults, write-backs, fractional cycles.
        #expect(a.0.walks > 1000 && a.0.faults > 100 && a.0.writebacks > 0 && a.2 > 0,
                "walks \(a.0.walks), faults \(a.0.faults), write-backs \(a.0.writebacks), failed accesses \(a.2)")
        #expect(a.0.dataCycles != a.0.dataCycles.rounded())
        #expect(Self.bits(a.0) == Self.bits(b.0), "inline \(a.0)\npipelined \(b.0)")
        #expect(a.1 == b.1)
        #expect(a.2 == b.2)
    }

    @Test("with publications every few words, ops of three words (a walk and its data line) are published whole and the counters stay exact",
          arguments: [4, 5, 7])
    func shortPublishInterval(interval: Int) throws {
        let bytes: UInt64 = 40 << 20
        let (inline, small, _) = try Self.system(.sampled, mode: .off, bytes: bytes, smallPDECache: true)
        let (piped, _, _) = try Self.system(.sampled, mode: .on, bytes: bytes, smallPDECache: true)
        let cpu = piped.cpus[0]
        let pipeline = CachePipeline(cache: cpu.cacheModel, l1Latency: cpu.l1Latency, mlp: cpu.mlp,
                                     walkStartCycles: cpu.walkStartCycles, publishInterval: interval)
        cpu.pipeline = pipeline
        cpu.ops = pipeline.producer()
        // Random reads and writes over the 4 KiB pages only (the fused miss path's `walk4K` ops),
        // some of them repeated (`repeatLine` ops between them).
        var rng = SplitMix64(seed: 41)
        let batches = (0..<120).map { _ in
            (0..<(1 + Int(rng.next() % 300))).map { _ in
                let r = rng.next()
                return AccessRecord(address: small.rawValue + r % bytes, count: r >> 60 == 0 ? 3 : 1,
                                    kind: r & (1 << 50) == 0 ? .write : .read)
            }
        }
        let a = Self.replay(inline, batches, readEvery: 7)
        let b = Self.replay(piped, batches, readEvery: 7)
        #expect(cpu.pipeline === pipeline && cpu.ops.head > 10_000, "the short-interval cache thread ran: \(cpu.ops.head) words")
        #expect(a.0.walks > 1000 && a.0.writebacks > 0)
        #expect(Self.bits(a.0) == Self.bits(b.0), "inline \(a.0)\npipelined \(b.0)")
        #expect(a.1 == b.1)
    }

    @Test("reset, a new cache model and cache modelling changes between batches leave it exact")
    func changesBetweenBatches() throws {
        let bytes: UInt64 = 8 << 20
        let (inline, small, huge) = try Self.system(.sampled, mode: .off, bytes: bytes)
        let (piped, _, _) = try Self.system(.sampled, mode: .on, bytes: bytes)
        let batches = Self.batches(small: small, huge: huge, bytes: bytes, seed: 7)
        var results: [[UInt64]] = []
        for m in [inline, piped] {
            let cpu = m.cpus[0]
            _ = Self.replay(m, Array(batches[..<16]), readEvery: 100)
            cpu.reset()
            _ = Self.replay(m, Array(batches[16..<24]), readEvery: 100)
            m.cacheModel = .full
            _ = Self.replay(m, Array(batches[24..<32]), readEvery: 100)
            cpu.cacheModelling = .pageTables
            _ = Self.replay(m, Array(batches[32..<40]), readEvery: 100)
            cpu.cacheModelling = .pageTablesAndData
            let (c, hits, _) = Self.replay(m, Array(batches[40...]), readEvery: 100)
            results.append(Self.bits(c) + hits.map { UInt64($0) })
        }
        #expect(results[0] == results[1])
    }

    @Test("a machine of several CPUs, or in simulated-time order, keeps the cache model inline")
    func onlyOneCPU() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata)
        let mm = kernel.createAddressSpace()!
        for (cpus, timed) in [(2, false), (2, true)] {
            let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: cpus, simulatedTime: timed)
            m.cacheThread = .on
            m.cpus[0].switchTo(mm)
            let va = try anon(mm, 1 << 20)
            let records = [AccessRecord(address: va.rawValue, count: 1, kind: .write)]
            _ = records.withUnsafeBufferPointer { m.cpus[0].run($0) }
            #expect(m.cpus[0].pipeline == nil && !m.cpus[0].pipelined)
        }
    }

    @Test("turning the cache thread off settles it and ends it")
    func turnOff() throws {
        let (m, small, _) = try Self.system(.full, mode: .on, bytes: 1 << 20)
        let records = (0..<64).map { AccessRecord(address: small.rawValue + UInt64($0) * 4096, count: 1, kind: .write) }
        _ = records.withUnsafeBufferPointer { m.cpus[0].run($0) }
        #expect(m.cpus[0].pipelined)
        m.cacheThread = .off
        #expect(!m.cpus[0].pipelined && m.cpus[0].pipeline == nil)
        #expect(m.cpus[0].counters.walks >= 64 && m.cpus[0].counters.dataCycles > 0)
    }

    @Test("auto reads the host's runnable threads from /proc/loadavg's fourth field; a file it cannot read gives nil")
    func runnableThreads() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("thpsim-loadavg-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "1.25 0.80 0.40 3/412 98765\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(CacheThreadMode.runnableThreads(loadavg: path) == 3)
        try "1.25 0.80 0.40\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(CacheThreadMode.runnableThreads(loadavg: path) == nil)
        try "1.25 0.80 0.40 x/412 98765\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(CacheThreadMode.runnableThreads(loadavg: path) == nil)
        #expect(CacheThreadMode.runnableThreads(loadavg: "/nonexistent/loadavg") == nil)
        // This host's own file parses, and counts at least the thread asking.
        if let here = CacheThreadMode.runnableThreads() { #expect(here >= 1) }
    }
}
