import Benchmark
import VMCore
import Workloads
import Simulation
import Kernel

/// Trace replay speed (issue 8's target: ≥ 50 M records/s on one core for a TLB-hit-dominated trace).
///
/// The trace is `gups` over 128 KiB (32 pages, all in the L1 dTLB) with 4 M updates, one CPU, THP
/// off: nearly every update is a record of its own (a new page) and an L1 TLB hit. It is built in
/// memory before measuring; each iteration decodes the whole trace (decompression, checksums,
/// records) and drives it through a fresh kernel and machine (set-up faults included: 32 of them).
/// Records per second = records × iterations per second; the benchmark's throughput metric counts
/// records (scalingFactor .mega: M records/s).
let traceBytes: [UInt8] = {
    var writer = try! TraceWriter(output: TraceBytes())
    SyntheticWorkload.gups.generate(SyntheticParameters(size: 128 << 10, accesses: 4_000_000), into: &writer)
    return try! writer.finish().bytes
}()
let records: Int = {
    struct Null: WorkloadSink {
        mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) {}
        mutating func event(thread: Int, _ event: WorkloadEvent) {}
    }
    var reader = try! TraceReader(input: TraceBytes(traceBytes))
    var null = Null()
    return try! reader.replay(into: &null)
}()

/// Lackey text for the conversion benchmark: 2 M lines in lackey's format, instruction fetches
/// alternating with loads and stores over 64 MiB (pseudo-random, so most lines start a new run).
let lackeyText: [UInt8] = {
    var text = ""
    var rng = SplitMix64(seed: 5)
    for i in 0..<2_000_000 {
        let address = 0x5000_0000 + rng.below(64 << 20)
        switch i % 3 {
        case 0: text += "I  " + String(0x0401_0000 + UInt64(i % 4096) * 4, radix: 16) + ",4\n"
        case 1: text += " L " + String(address, radix: 16) + ",8\n"
        default: text += " S " + String(address, radix: 16) + ",8\n"
        }
    }
    return Array(text.utf8)
}()

/// For the policy comparison (issue 24: a zoo policy's replay within 10 % of linux-6.18's): `gups`
/// over 64 MiB with 2 M updates, so that faults (16,384 first touches), 2 MiB ranges and the policies'
/// kernel threads all take part.
let policyTraceBytes: [UInt8] = {
    var writer = try! TraceWriter(output: TraceBytes())
    SyntheticWorkload.gups.generate(SyntheticParameters(size: 64 << 20, accesses: 2_000_000), into: &writer)
    return try! writer.finish().bytes
}()

/// Ingens's decisions like for like (issue 24: a policy's decisions must not slow replay by more than
/// 10 %). Comparing Ingens with `linux-6.18 always` measures the TLB misses of memory Ingens has not
/// promoted yet, not its decisions; so both runs here end with the same huge pages, made at the same
/// records. The trace is `gups` over 64 MiB, 2 M updates, with 10 s of settle after set-up, so that
/// Ingens's khugepaged promotes all 32 ranges early in the measured phase. The baseline trace is the
/// same with an `MADV_COLLAPSE` of each range inserted at the record where Ingens's run had promoted
/// it, replayed on `linux-6.18` with `enabled=never`: the same faults, collapses, TLB and page walks,
/// and none of Ingens's decision code (the population count at every fault, the queue, the sampler,
/// khugepaged's wake-ups).
let promotedTraceBytes: [UInt8] = {
    var writer = try! TraceWriter(output: TraceBytes())
    var p = SyntheticParameters(size: 64 << 20, accesses: 2_000_000)
    p.settleMilliseconds = 10_000
    SyntheticWorkload.gups.generate(p, into: &writer)
    return try! writer.finish().bytes
}()

/// Ingens's run of `promotedTraceBytes`, copied into a trace with an `MADV_COLLAPSE` after each record
/// at which khugepaged promoted a range (found by the ranges that became huge since the last record).
struct PromotionRecorder: WorkloadSink {
    let executor: MachineExecutor
    var writer: TraceWriter<TraceBytes>
    let region: (start: UInt64, end: UInt64)
    var collapsed = 0
    var promoted: Set<UInt64> = []

    mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) {
        executor.access(thread: thread, address: address, kind: kind, count: count)
        writer.access(thread: thread, address: address, kind: kind, count: count)
        note(thread)
    }

    mutating func event(thread: Int, _ event: WorkloadEvent) {
        executor.event(thread: thread, event)
        writer.event(thread: thread, event)
        note(thread)
    }

    private mutating func note(_ thread: Int) {
        let kernel = executor.machine.kernel
        let now = kernel.khugepaged.pagesCollapsed
        guard now != collapsed else { return }
        collapsed = now
        for mm in kernel.addressSpaces {
            for haddr in stride(from: region.start, to: region.end, by: Int(PageGeometry.pmdSize)) where !promoted.contains(haddr) {
                guard mm.translate(VirtualAddress(haddr))?.level == .pmd else { continue }
                promoted.insert(haddr)
                writer.event(thread: thread, .madvise(address: haddr, length: PageGeometry.pmdSize, advice: .collapse))
            }
        }
    }
}

/// The baseline trace and how much memory each run ended with huge (the same, or the comparison is off).
let ingensBaseline: (trace: [UInt8], ingensHuge: UInt64) = {
    var setup = SystemBuilder()
    setup.design = .linux6_18
    setup.policy = IngensPolicy()
    setup.memoryBytes = 256 << 20
    setup.enabled = .always
    let executor = try! setup.makeExecutor()
    var recorder = PromotionRecorder(executor: executor, writer: try! TraceWriter(output: TraceBytes()),
                                     region: (SyntheticLayout.base, SyntheticLayout.base + (64 << 20)))
    var reader = try! TraceReader(input: TraceBytes(promotedTraceBytes))
    _ = try! reader.replay(into: &recorder)
    let huge = executor.finish().anonHugeBytes
    precondition(recorder.promoted.count == 32, "Ingens promoted \(recorder.promoted.count) of 32 ranges")
    return (try! recorder.writer.finish().bytes, huge)
}()

/// Replays `bytes` on a fresh system from `setup` once per iteration, measuring the replay alone;
/// `check` sees each run's report.
func measureReplays(_ benchmark: Benchmark, _ setup: SystemBuilder, _ bytes: [UInt8],
                    check: (ReplayReport) -> Void = { blackHole($0) }) {
    for _ in benchmark.scaledIterations {
        let executor = try! setup.makeExecutor()
        var reader = try! TraceReader(input: TraceBytes(bytes))
        benchmark.startMeasurement()
        blackHole(try! reader.replay(on: executor))
        benchmark.stopMeasurement()
        check(executor.finish())
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .throughput, .instructions, .mallocCountTotal],
                                           maxDuration: .seconds(10), maxIterations: 20)

    Benchmark("replay: TLB-hit-dominated gups trace (\(records) records)",
              configuration: .init(scalingFactor: .one)) { benchmark in
        var setup = SystemBuilder()
        setup.memoryBytes = 64 << 20
        setup.enabled = .never
        measureReplays(benchmark, setup, traceBytes)
    }

    // One trace under each policy of the catalog that runs on linux-6.18's mechanism, `enabled=always`;
    // and linux-6.18 with `enabled=never`, the baseline for a policy that maps no huge page at a fault
    // (Ingens): its run takes a TLB miss where `always` hits, whatever the policy decides.
    let policyRuns = PolicyCatalog.all.filter { $0.design.name == KernelDesign.linux6_18.name }
        .map { ($0, TransparentHugepageSettings.Enabled.always, $0.name) }
        + [(PolicyCatalog.named(KernelDesign.linux6_18.name)!, .never, "linux-6.18 never")]
    for (entry, enabled, label) in policyRuns {
        Benchmark("replay by policy: gups 64 MiB trace, \(label)", configuration: .init(scalingFactor: .one)) { benchmark in
            var setup = SystemBuilder()
            setup.design = entry.design
            setup.policy = entry.policy
            setup.memoryBytes = 256 << 20
            setup.enabled = enabled
            measureReplays(benchmark, setup, policyTraceBytes)
        }
    }

    // Ingens against the same promotions without its decisions (`ingensBaseline`).
    let likeForLike: [(String, (any HugepagePolicy)?, TransparentHugepageSettings.Enabled, () -> [UInt8])] = [
        ("ingens", IngensPolicy(), .always, { promotedTraceBytes }),
        ("linux-6.18 never + the same collapses by MADV_COLLAPSE", nil, .never, { ingensBaseline.trace }),
    ]
    for (label, policy, enabled, trace) in likeForLike {
        Benchmark("replay, Ingens's decisions: gups 64 MiB trace, settle 10 s, \(label)", configuration: .init(scalingFactor: .one)) { benchmark in
            var setup = SystemBuilder()
            setup.design = .linux6_18
            setup.policy = policy
            setup.memoryBytes = 256 << 20
            setup.enabled = enabled
            measureReplays(benchmark, setup, trace()) { report in
                let huge = report.anonHugeBytes
                precondition(huge == ingensBaseline.ingensHuge, "\(label) ended with \(huge) bytes huge, Ingens with \(ingensBaseline.ingensHuge)")
            }
        }
    }

    Benchmark("decode only: the same trace into a counting sink") { benchmark in
        struct Count: WorkloadSink {
            var n = 0
            mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) { n &+= count }
            mutating func event(thread: Int, _ event: WorkloadEvent) { n &+= 1 }
        }
        for _ in benchmark.scaledIterations {
            var reader = try! TraceReader(input: TraceBytes(traceBytes))
            var sink = Count()
            blackHole(try! reader.replay(into: &sink))
            blackHole(sink.n)
        }
    }

    Benchmark("import: 2 M lines of lackey text (\(lackeyText.count >> 20) MiB) into a trace") { benchmark in
        for _ in benchmark.scaledIterations {
            var converter = LackeyConverter(sink: try! TraceWriter(output: TraceBytes()))
            lackeyText.withUnsafeBytes { all in
                var i = 0
                while i < all.count {   // 1 MiB chunks, as `thpsim record` reads its pipe
                    let j = min(all.count, i + (1 << 20))
                    converter.feed(UnsafeRawBufferPointer(rebasing: all[i..<j]))
                    i = j
                }
            }
            var writer = converter.finish()
            blackHole(try! writer.finish().bytes.count)
        }
    }

    Benchmark("write: gups 4 M updates into an in-memory trace") { benchmark in
        for _ in benchmark.scaledIterations {
            var writer = try! TraceWriter(output: TraceBytes())
            SyntheticWorkload.gups.generate(SyntheticParameters(size: 128 << 10, accesses: 4_000_000), into: &writer)
            blackHole(try! writer.finish().bytes.count)
        }
    }

    registerManyCPUBenchmarks()
}
