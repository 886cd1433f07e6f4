import Benchmark
import Workloads
import Simulation
import Kernel
import Machine

/// What simulating many CPUs costs (issue 20: 80 CPUs at most 2× the host time of the same total
/// work on one CPU). The work is `memscale` with THP off (`thp_memscale`: every thread writes one
/// byte in each 4 KiB page of its own buffer), `linux-2.6.38`, the sampled cache model, as `thpsim run
/// --workload memscale --enabled never --accesses 0` builds it: 80 threads of `manyCPUsBytesPerThread`
/// each on 80 simulated CPUs in simulated-time order, against one thread of 80 times as much on one
/// CPU. "Same work" is the same faults and the same pages written: 80 × 16 MiB and 1 × 1,280 MiB both
/// take 327,680 faults; the 80-CPU run's extra work is what simulating 80 CPUs adds (their clocks,
/// their interleaving, what they share, and 80 TLBs and cache models warming up instead of one).
/// The ratio the issue bounds is the 80-CPU benchmark's median over the 1-CPU one's.
let manyCPUsBytesPerThread: UInt64 = 16 << 20
let manyCPUs = 80

/// Builds the system and runs memscale on it: `threads` threads of `bytesPerThread` each, one CPU per thread.
func runMemscale(threads: Int, bytesPerThread: UInt64, _ benchmark: Benchmark? = nil) -> ReplayReport {
    let total = bytesPerThread * UInt64(threads)
    var setup = SystemBuilder()
    setup.design = .linux2_6_38
    setup.enabled = .never
    setup.cpus = threads
    setup.simulatedTime = threads > 1
    setup.cacheModel = .sampled
    setup.memoryBytes = SystemBuilder.defaultMemoryBytes(footprint: total)
    let executor = try! setup.makeExecutor()
    var sink = executor
    benchmark?.startMeasurement()
    SyntheticWorkload.memscale.generate(SyntheticParameters(size: total, accesses: 0, threads: threads), into: &sink)
    let report = executor.finish()
    benchmark?.stopMeasurement()
    return report
}

func registerManyCPUBenchmarks() {
    for threads in [1, manyCPUs] {
        let bytes = manyCPUsBytesPerThread * UInt64(manyCPUs / threads)
        let faults = Int(bytes >> 12) * threads
        Benchmark("many CPUs: memscale THP off, \(threads) CPU\(threads == 1 ? "" : "s") × \(bytes >> 20) MiB (\(faults) faults)",
                  configuration: .init(metrics: [.wallClock, .cpuTotal, .instructions, .mallocCountTotal, .peakMemoryResident],
                                       scalingFactor: .one, maxDuration: .seconds(20), maxIterations: 10)) { benchmark in
            for _ in benchmark.scaledIterations {
                let report = runMemscale(threads: threads, bytesPerThread: bytes, benchmark)
                precondition(report.total.faults >= faults, "memscale took \(report.total.faults) faults, expected \(faults)")
                blackHole(report)
            }
        }
    }
}
