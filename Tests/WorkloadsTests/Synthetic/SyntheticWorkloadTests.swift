import Testing
import VMCore
import Kernel
import Machine
@testable import Workloads
import Simulation

/// Counts what a generator emits, split at `beginMeasurement`.
struct Census: WorkloadSink {
    var setupAccesses = 0, measuredAccesses = 0
    var measuredByKind = [0, 0, 0]
    var measuring = false
    var touchedPages = Set<UInt64>()
    var mapped: [(UInt64, UInt64)] = []
    var events: [WorkloadEvent] = []
    var threads = Set<Int>()
    /// FNV-1a over every access and event, for determinism checks.
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func mix(_ v: UInt64) { hash = (hash ^ v) &* 0x100_0000_01b3 }

    mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) {
        if measuring { measuredAccesses += count; measuredByKind[Int(kind.rawValue)] += count } else { setupAccesses += count }
        touchedPages.insert(address >> 12)
        threads.insert(thread)
        mix(address); mix(UInt64(thread) << 8 | UInt64(kind.rawValue))
    }
    mutating func event(thread: Int, _ event: WorkloadEvent) {
        events.append(event)
        if case .beginMeasurement = event { measuring = true }
        if case .mmap(let a, let l, _, _) = event { mapped.append((a, l)) }
        mix(UInt64(events.count))
    }
    var mappedBytes: UInt64 { mapped.reduce(0) { $0 + $1.1 } }
}

func census(_ w: SyntheticWorkload, size: UInt64 = 8 << 20, accesses: Int = 10_000, threads: Int = 1, seed: UInt64 = 1) -> Census {
    var p = SyntheticParameters(size: size, accesses: accesses, threads: threads, seed: seed)
    p.stride = 4096
    var c = Census()
    w.generate(p, into: &c)
    return c
}

@Suite("Synthetic workloads: footprints, access counts, determinism")
struct SyntheticWorkloadTests {
    @Test("every generator issues exactly the requested measured accesses, after beginMeasurement",
          arguments: SyntheticWorkload.allCases, [1, 3])
    func accessCounts(workload: SyntheticWorkload, threads: Int) {
        let c = census(workload, accesses: 12_345, threads: threads)
        #expect(c.measuredAccesses == 12_345)
        #expect(c.events.contains(.beginMeasurement))
        #expect(c.setupAccesses > 0, "first touch happens during set-up")
    }

    @Test("footprint: the mapped bytes equal --size (kvstore's live bytes do), and accesses stay inside the mappings",
          arguments: SyntheticWorkload.allCases)
    func footprint(workload: SyntheticWorkload) {
        let size: UInt64 = 8 << 20
        let c = census(workload, size: size, threads: 4)
        // kvstore maps a second region for its large values; its live data is --size (KeyValueTests).
        // memscale also maps stacks and arenas, and a page more per buffer (MemscaleLayoutTests).
        if workload != .kvstore && workload != .memscale { #expect(c.mappedBytes == size) }
        for page in c.touchedPages {
            #expect(c.mapped.contains { page << 12 >= $0.0 && page << 12 < $0.0 + $0.1 })
        }
    }

    @Test("array workloads first-touch every page of the size", arguments: [SyntheticWorkload.seq, .stride, .gups, .chase, .zipf, .forkserver])
    func firstTouch(workload: SyntheticWorkload) {
        let c = census(workload, size: 4 << 20, accesses: 0, threads: 2)
        #expect(c.setupAccesses == 1024)
        #expect(c.touchedPages.count == 1024)
    }

    @Test("a sparse stride first-touches one page per stride only: 64K touches one page in 16")
    func sparseStride() {
        var p = SyntheticParameters(size: 4 << 20, accesses: 1000)
        p.stride = 64 << 10
        var c = Census()
        SyntheticWorkload.stride.generate(p, into: &c)
        #expect(c.setupAccesses == 64)
        #expect(c.touchedPages.count == 64)
        #expect(c.touchedPages.allSatisfy { $0 % 16 == (c.touchedPages.min()! % 16) })
    }

    @Test("same seed, same stream; another seed, another stream", arguments: SyntheticWorkload.allCases)
    func determinism(workload: SyntheticWorkload) {
        let a = census(workload, seed: 7), b = census(workload, seed: 7)
        #expect(a.hash == b.hash && a.events == b.events)
        if workload != .seq && workload != .stride {
            #expect(census(workload, seed: 8).hash != a.hash)
        }
    }

    @Test("--advise: the workload advises its memory with MADV_HUGEPAGE, which enabled=madvise acts on",
          arguments: [SyntheticWorkload.gups, .seq, .heap, .forkserver, .idle])
    func advise(w: SyntheticWorkload) throws {
        var p = SyntheticParameters(size: 8 << 20, accesses: 10_000)
        var plain = Census()
        w.generate(p, into: &plain)
        #expect(!plain.events.contains { if case .madvise(_, _, .hugepage) = $0 { true } else { false } })
        p.adviseHugepage = true
        var advised = Census()
        w.generate(p, into: &advised)
        let advice = advised.events.compactMap { e -> (UInt64, UInt64)? in
            if case .madvise(let a, let l, .hugepage) = e { (a, l) } else { nil }
        }
        #expect(advice.count == 1 && advice[0].1 == 8 << 20, "one MADV_HUGEPAGE over the whole footprint")
        guard w == .gups else { return }
        // Under enabled=madvise only the advised run gets huge pages.
        for (adviseIt, huge) in [(false, false), (true, true)] {
            var setup = SystemBuilder(); setup.memoryBytes = 64 << 20; setup.enabled = .madvise
            var executor = try setup.makeExecutor()
            var q = SyntheticParameters(size: 8 << 20, accesses: 1_000)
            q.adviseHugepage = adviseIt
            w.generate(q, into: &executor)
            let report = executor.finish()
            #expect((report.anonHugeBytes > 0) == huge)
        }
    }

    @Test("chase visits every 64-byte line of the size once per cycle", arguments: [UInt64(1) << 20, 3 << 18])
    func chaseIsACyclicPermutation(size: UInt64) {
        struct Lines: WorkloadSink {
            var lines: [UInt64] = []; var measuring = false
            mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) { if measuring { lines.append(address) } }
            mutating func event(thread: Int, _ event: WorkloadEvent) { if event == .beginMeasurement { measuring = true } }
        }
        let lines = Int(size / 64)
        var s = Lines()
        SyntheticWorkload.chase.generate(SyntheticParameters(size: size, accesses: 2 * lines, seed: 3), into: &s)
        let first = s.lines.prefix(lines), second = s.lines.suffix(lines)
        #expect(Set(first).count == lines)
        #expect(Array(first) == Array(second), "the second cycle repeats the first")
        #expect(first.allSatisfy { ($0 - SyntheticLayout.base) % 64 == 0 && $0 - SyntheticLayout.base < size })
    }

    @Test("stride touches one page per access with a 4 KiB stride")
    func stride() {
        let c = census(.stride, size: 4 << 20, accesses: 1024)
        #expect(c.measuredByKind[0] == 1024)
    }

    @Test("gups writes, chase and seq load", arguments: [(SyntheticWorkload.gups, 1), (.chase, 0), (.seq, 0)])
    func kinds(workload: SyntheticWorkload, kind: Int) {
        let c = census(workload)
        #expect(c.measuredByKind[kind] == c.measuredAccesses)
    }

    @Test("zipf is skewed: the hottest 1% of pages take far more than 1% of accesses")
    func zipfSkew() {
        var counts: [UInt64: Int] = [:]
        struct PageCounter: WorkloadSink {
            var counts: [UInt64: Int] = [:]; var measuring = false
            mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) { if measuring { counts[address >> 12, default: 0] += count } }
            mutating func event(thread: Int, _ event: WorkloadEvent) { if event == .beginMeasurement { measuring = true } }
        }
        var s = PageCounter()
        SyntheticWorkload.zipf.generate(SyntheticParameters(size: 64 << 20, accesses: 100_000), into: &s)
        counts = s.counts
        let sorted = counts.values.sorted(by: >)
        let hot = sorted.prefix(16384 / 100).reduce(0, +)
        #expect(Double(hot) / 100_000 > 0.3)
    }
}

@Suite("Synthetic workloads on the machine model", .serialized)
struct SyntheticOnMachineTests {
    func run(_ w: SyntheticWorkload, enabled: TransparentHugepageSettings.Enabled, size: UInt64 = 8 << 20,
             accesses: Int = 20_000, threads: Int = 1) throws -> ReplayReport {
        var setup = SystemBuilder()
        setup.memoryBytes = 256 << 20
        setup.enabled = enabled
        setup.cpus = threads
        var executor = try setup.makeExecutor()
        w.generate(SyntheticParameters(size: size, accesses: accesses, threads: threads), into: &executor)
        return executor.finish()
    }

    @Test("seq under enabled=always maps the region with huge pages; under never it does not")
    func seqHugePages() throws {
        let always = try run(.seq, enabled: .always)
        let never = try run(.seq, enabled: .never)
        #expect(always.vmstat["thp_fault_alloc"] == 4)
        #expect(never.vmstat["thp_fault_alloc"] == nil)
        #expect(always.anonHugeBytes == 8 << 20)
        #expect(always.signals.isEmpty && never.signals.isEmpty)
        #expect(always.measuredCounters.accesses == 20_000)
        #expect(always.measuredCounters.faults == 0, "set-up faulted everything in")
        let atMeasurement = try #require(always.memoryOverTime.first)
        #expect(atMeasurement.accesses == 2048 && atMeasurement.anonHugeBytes == 8 << 20)
    }

    @Test("gups over 8 MiB walks far more with 4 KiB pages than with huge pages")
    func gupsWalks() throws {
        let always = try run(.gups, enabled: .always)
        let never = try run(.gups, enabled: .never)
        #expect(never.measuredCounters.walks > 10 * max(1, always.measuredCounters.walks))
    }

    @Test("every generator runs on the machine without signals or failed calls", arguments: SyntheticWorkload.allCases)
    func runsClean(workload: SyntheticWorkload) throws {
        let r = try run(workload, enabled: .always, threads: 2)
        #expect(r.signals.isEmpty)
        #expect(r.failedCalls.isEmpty)
        #expect(r.droppedAccesses == 0 && r.droppedEvents == 0)
        #expect(r.accesses.reduce(0, +) >= 20_000)
    }

    @Test("forkserver: the parent's writes after fork copy pages the child still shares")
    func forkserverCopies() throws {
        let r = try run(.forkserver, enabled: .never)
        #expect((r.vmstatMeasured["pgfault"] ?? 0) > 100)
        // RSS: 8 MiB after set-up; after the fork, the parent's writes copy pages, and the child's
        // exit gives its share back.
        let peak = r.memoryOverTime.map(\.anonBytes).max() ?? 0
        #expect(r.memoryOverTime.first?.anonBytes == 8 << 20 && peak > 8 << 20)
    }

    @Test("stacks: a guard page mprotect inside a huge page splits it")
    func stacksSplit() throws {
        let r = try run(.stacks, enabled: .always, size: 32 << 20, threads: 4)
        #expect((r.vmstat["thp_fault_alloc"] ?? 0) > 0)
        #expect((r.vmstat["thp_split_pmd"] ?? r.vmstat["thp_split_page"] ?? 0) > 0)
    }
}
