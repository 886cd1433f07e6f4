import Testing
import VMCore
import Kernel
import PhysicalMemory
import Machine
import Workloads
import Simulation

/// A page run (`WorkloadSink.accessRun`, issue 23) is taken whole by `MachineExecutor`: one record
/// whose first access goes through the MMU and whose other accesses are charged as the filter hits
/// they are. It must give exactly what the same accesses give one call each: every counter and
/// cycle, the cache model's hits, ticks and memory samples, signals, drops and vmstat.
@Suite("Page runs count as the same accesses one by one")
struct PageRunTests {
    /// Forwards accesses and events only, so a page run reaches `base` access by access (the
    /// protocol's default `accessRun`).
    struct OneByOne<Base: WorkloadSink>: WorkloadSink {
        var base: Base
        var runs = 0
        mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) {
            base.access(thread: thread, address: address, kind: kind, count: count)
        }
        mutating func event(thread: Int, _ event: WorkloadEvent) { base.event(thread: thread, event) }
    }

    /// Counts the page runs a generator makes (and passes them on whole).
    struct RunCounter<Base: WorkloadSink>: WorkloadSink {
        var base: Base
        var runs = 0, runAccesses = 0
        mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) {
            base.access(thread: thread, address: address, kind: kind, count: count)
        }
        mutating func event(thread: Int, _ event: WorkloadEvent) { base.event(thread: thread, event) }
        mutating func accessRun(thread: Int, address: UInt64, stride: UInt64, count: Int, kind: AccessKind) {
            runs += 1; runAccesses += count
            base.accessRun(thread: thread, address: address, stride: stride, count: count, kind: kind)
        }
    }

    struct Setup: Sendable, CustomStringConvertible {
        var machine: MachineDescription = .skylakeSP
        var enabled: TransparentHugepageSettings.Enabled = .never
        var cacheModel: CacheModel.Kind = .full
        var modelling: CacheModelling = .pageTablesAndData
        var independent = false
        var mode: PhysicalMemory.Mode = .metadata
        var cpus = 1
        var description: String {
            "\(machine.name) \(enabled) \(cacheModel) \(modelling) independent=\(independent) \(mode) cpus=\(cpus)"
        }

        func executor() throws -> MachineExecutor {
            var setup = SystemBuilder()
            setup.memoryBytes = 256 << 20
            setup.machine = machine
            setup.enabled = enabled
            setup.cacheModel = cacheModel
            setup.mode = mode
            setup.cpus = cpus
            let e = try setup.makeExecutor()
            for cpu in e.machine.cpus {
                cpu.cacheModelling = modelling
                cpu.independentAccesses = independent
            }
            return e
        }
    }

    /// Everything a run reports that an access could change.
    static func fingerprint(_ e: MachineExecutor) -> String {
        let r = e.finish()
        let hits = e.machine.cpus.map { $0.cache.hits }
        return "total=\(r.total) measured=\(r.measuredCounters) hits=\(hits) accesses=\(r.accesses)"
            + " dropped=\(r.droppedAccesses)/\(r.droppedEvents) events=\(r.events) signals=\(r.signals)"
            + " samples=\(r.memoryOverTime) vmstat=\(r.vmstat.sorted { $0.key < $1.key })"
            + " touched=\(r.touchedBytes) rss=\(r.anonBytes)/\(r.anonHugeBytes) ns=\(r.simulatedNanoseconds)"
            + " cpus=\(e.machine.cpus.map { $0.counters })"
    }

    /// The same stream into an executor whole and one access at a time; returns both fingerprints
    /// and how many page runs of more than one access the stream made.
    /// (Swift closures are not generic: the caller passes the same stream for each sink type.)
    static func both(_ s: Setup, _ stream: (inout RunCounter<MachineExecutor>) -> Void,
                     _ same: (inout RunCounter<OneByOne<MachineExecutor>>) -> Void) throws -> (runs: String, single: String, multi: Int) {
        // Each from the same host-thread state: the simulated CPU the host thread is on decides
        // which per-CPU lists the set-up allocates from.
        SimulatedCPU.switchTo(0)
        var whole = RunCounter(base: try s.executor())
        stream(&whole)
        let runs = fingerprint(whole.base)
        SimulatedCPU.switchTo(0)
        var single = RunCounter(base: OneByOne(base: try s.executor()))
        same(&single)
        #expect(whole.runs == single.runs && whole.runAccesses == single.runAccesses)
        return (runs, fingerprint(single.base.base), whole.runs)
    }

    static let setups: [Setup] = [
        Setup(),
        Setup(cacheModel: .sampled),
        Setup(enabled: .always),
        Setup(machine: .zen4, cacheModel: .sampled, independent: true),
        Setup(modelling: .pageTables),
        Setup(modelling: .none),
        Setup(mode: .data),
        Setup(cpus: 2),
    ]

    @Test("seq and stride: every counter equal", arguments: setups)
    func synthetic(_ s: Setup) throws {
        for (workload, stride, threads) in [(SyntheticWorkload.seq, UInt64(0), 1), (.seq, 0, 2),
                                            (.stride, 24, 1), (.stride, 64, 1), (.stride, 1000, 2), (.stride, 8192, 1)] {
            var p = SyntheticParameters(size: 4 << 20, accesses: 150_000, threads: threads)
            if stride > 0 { p.stride = stride }
            let (runs, single, multi) = try Self.both(s, { workload.generate(p, into: &$0) }, { workload.generate(p, into: &$0) })
            #expect(runs == single, "\(s) \(workload) stride \(stride) T\(threads)")
            #expect(multi > 0)
        }
    }

    /// The set-up both scripts (this one and `AccessQuantumTests.script`) start with: a second thread,
    /// 8 MiB read-write at the returned base and 1 MiB read-only 16 MiB above it.
    static func scriptSetUp(_ sink: inout some WorkloadSink) -> UInt64 {
        let base: UInt64 = 0x7f00_0000_0000
        sink.event(thread: 0, .spawn(thread: 1))
        sink.event(thread: 0, .mmap(address: base, length: 8 << 20, protection: .readWrite, shared: false))
        sink.event(thread: 0, .mmap(address: base + (16 << 20), length: 1 << 20, protection: .read, shared: false))
        return base
    }

    /// Stores, faults inside a run's first access, a failing run (SIGSEGV) and what follows it,
    /// runs across ticks and batches, thread switches, instruction fetches, odd strides.
    static func script(_ sink: inout some WorkloadSink) {
        let base = PageRunTests.scriptSetUp(&sink)
        var a = base
        for i in 0..<3_000 {
            let page = base + UInt64(i % 2048) * 4096
            let kind: AccessKind = i % 3 == 0 ? .store : .load
            let stride: UInt64 = [8, 24, 64, 40, 4096][i % 5]
            let offset = UInt64(i * 8) % 512
            let count = min(Int((4096 - offset) / stride), 1 + (i * 37) % 300)
            sink.accessRun(thread: i % 7 == 0 ? 1 : 0, address: page + offset, stride: stride, count: max(1, count), kind: kind)
            if i == 1_000 { sink.event(thread: 0, .madvise(address: base, length: 1 << 20, advice: .dontNeed)) }
            a = page
        }
        // A run into the read-only mapping's stores: the first access kills thread 1's process
        // (which is thread 0's too); the rest of the run and what follows are dropped.
        sink.accessRun(thread: 1, address: base + (16 << 20), stride: 8, count: 100, kind: .store)
        sink.accessRun(thread: 0, address: a, stride: 8, count: 50, kind: .load)
    }

    @Test("stores, faults, a killed process, ticks: every counter equal", arguments: setups)
    func scripted(_ s: Setup) throws {
        let (runs, single, multi) = try Self.both(s, { Self.script(&$0) }, { Self.script(&$0) })
        #expect(runs == single, "\(s)")
        #expect(multi > 2_000)
        #expect(runs.contains("dropped=0/") == false, "the killed process's accesses are dropped")
    }

    static func fetchScript(_ sink: inout some WorkloadSink) {
        let base: UInt64 = 0x7f00_0000_0000
        sink.event(thread: 0, .mmap(address: base, length: 1 << 20, protection: .readWrite, shared: false))
        sink.accessRun(thread: 0, address: base, stride: 8, count: 512, kind: .store)
        sink.accessRun(thread: 0, address: base + 4096, stride: 16, count: 200, kind: .fetch)
        sink.accessRun(thread: 0, address: base, stride: 8, count: 300, kind: .load)
    }

    @Test("instruction fetches and a run failing on its first access")
    func fetches() throws {
        let (runs, single, _) = try Self.both(Setup(), { Self.fetchScript(&$0) }, { Self.fetchScript(&$0) })
        #expect(runs == single)
        #expect(runs.contains("signals=[]") == false)
    }

    static func tickScript(_ sink: inout some WorkloadSink) {
        let base: UInt64 = 0x7f00_0000_0000
        sink.event(thread: 0, .mmap(address: base, length: 64 << 20, protection: .readWrite, shared: false))
        var page: UInt64 = 0
        var made = 0
        while made < 5 * MachineExecutor.tickInterval {
            // 511 accesses a page, so runs straddle every tick at a different place.
            sink.accessRun(thread: 0, address: base + page * 4096 + 8, stride: 8, count: 511, kind: page % 2 == 0 ? .store : .load)
            made += 511
            page = (page + 1) % 16384
        }
    }

    /// An access that takes a tick right after the batch holding an access that kills its process
    /// (run at that tick): it is dropped, as the accesses after it are, not run on a CPU that has
    /// no address space any more (which stopped the program before).
    static func killThenTick(_ sink: inout some WorkloadSink) {
        let base: UInt64 = 0x7f00_0000_0000
        sink.event(thread: 0, .mmap(address: base, length: 1 << 20, protection: .readWrite, shared: false))
        for i in 0..<(MachineExecutor.tickInterval - 2) {
            sink.access(thread: 0, address: base + UInt64(i % 256) * 4096, kind: i % 2 == 0 ? .store : .load, count: 1)
        }
        sink.access(thread: 0, address: base + (64 << 20), kind: .load, count: 1)   // unmapped: SIGSEGV
        sink.accessRun(thread: 0, address: base + 8, stride: 8, count: 100, kind: .store)   // its first takes the tick
        sink.access(thread: 0, address: base, kind: .load, count: 1)
    }

    @Test("an access taking a tick after its process was killed is dropped")
    func tickAfterKill() throws {
        let (runs, single, _) = try Self.both(Setup(), { Self.killThenTick(&$0) }, { Self.killThenTick(&$0) })
        #expect(runs == single)
        #expect(runs.contains("dropped=101/0"), "\(runs)")
        #expect(runs.contains("SIGSEGV"))
    }

    /// A run that crosses a tick (`MachineExecutor.tickInterval`) splits there: the tick's memory
    /// sample and clock move see what they would see access by access.
    @Test("a tick inside a run falls where it would")
    func tickInsideRun() throws {
        let (runs, single, _) = try Self.both(Setup(), { Self.tickScript(&$0) }, { Self.tickScript(&$0) })
        #expect(runs == single)
        #expect(runs.contains("samples=[]") == false)
    }

    /// The generator's runs are the accesses it made one by one before: the addresses and kinds in
    /// order, from the cursor formula of one access at a time.
    @Test("seq and stride generate the same accesses as runs", arguments: [(UInt64(0), 1), (0, 3), (24, 2), (4096, 1), (12288, 2)])
    func generatorAccesses(_ stride: UInt64, _ threads: Int) {
        struct Addresses: WorkloadSink {
            var list: [(Int, UInt64)] = []
            var measuring = false
            mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) {
                if measuring { list.append((thread, address)) }
            }
            mutating func event(thread: Int, _ event: WorkloadEvent) { if case .beginMeasurement = event { measuring = true } }
        }
        var p = SyntheticParameters(size: 1 << 20, accesses: 100_000, threads: threads)
        if stride > 0 { p.stride = stride }
        var got = Addresses()
        (stride == 0 ? SyntheticWorkload.seq : .stride).generate(p, into: &got)
        // One access at a time, as the generator made them before page runs.
        let step = stride == 0 ? 8 : stride
        let pages = p.size / 4096, per = pages / UInt64(threads)
        var cursors = [UInt64](repeating: 0, count: threads)
        var expected: [(Int, UInt64)] = []
        var remaining = p.accesses, t = 0
        while remaining > 0 {
            let n = min(256, remaining)
            let start = per * UInt64(t) * 4096
            let length = (t == threads - 1 ? pages - per * UInt64(t) : per) * 4096
            for _ in 0..<n {
                expected.append((t, SyntheticLayout.base + start + cursors[t]))
                cursors[t] = (cursors[t] + step) % length
            }
            remaining -= n
            t = (t + 1) % threads
        }
        #expect(got.list.count == expected.count)
        #expect(zip(got.list, expected).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 })
    }
}
