import Benchmark
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

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .throughput, .instructions, .mallocCountTotal],
                                           maxDuration: .seconds(10), maxIterations: 20)

    Benchmark("replay: TLB-hit-dominated gups trace (\(records) records)",
              configuration: .init(scalingFactor: .one)) { benchmark in
        var setup = SystemBuilder()
        setup.memoryBytes = 64 << 20
        setup.enabled = .never
        for _ in benchmark.scaledIterations {
            let executor = try! setup.makeExecutor()
            var reader = try! TraceReader(input: TraceBytes(traceBytes))
            benchmark.startMeasurement()
            blackHole(try! reader.replay(on: executor))
            benchmark.stopMeasurement()
            blackHole(executor.finish())
        }
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
            for _ in benchmark.scaledIterations {
                let executor = try! setup.makeExecutor()
                var reader = try! TraceReader(input: TraceBytes(policyTraceBytes))
                benchmark.startMeasurement()
                blackHole(try! reader.replay(on: executor))
                benchmark.stopMeasurement()
                blackHole(executor.finish())
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
