import Benchmark
import VMCore
import PhysicalMemory
import Kernel

/// Page faults per second: each iteration maps 256 MiB of private anonymous memory, first-touches
/// every 4 KiB page with a write (65,536 write faults: VMA lookup, page-table walk and population,
/// a buddy allocation, PTE install under the split lock, counters), and unmaps it outside the
/// measured part. Faults per second = throughput (iterations/s) × 65,536.
let faultsPerIteration = 65_536
let regionBytes = UInt64(faultsPerIteration) << 12

func writeFaults(_ benchmark: Benchmark, mode: PhysicalMemory.Mode) {
    let kernel = Kernel(KernelConfiguration(memoryBytes: 2 << 30, mode: mode, watermarks: .zero))
    guard let mm = kernel.createAddressSpace() else { fatalError("no address space") }
    for _ in benchmark.scaledIterations {
        let start = try! mm.mmap(length: regionBytes, protection: .readWrite, flags: .private)
        benchmark.startMeasurement()
        var va = start
        for _ in 0..<faultsPerIteration {
            blackHole(mm.access(va, .write))
            va = va + 4096
        }
        benchmark.stopMeasurement()
        try! mm.munmap(start, length: regionBytes)
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .cpuTotal, .mallocCountTotal, .peakMemoryResident],
        warmupIterations: 2,
        maxDuration: .seconds(10),
        maxIterations: 40
    )
    Benchmark("4 KiB write faults, metadata mode, x65536") { benchmark in
        writeFaults(benchmark, mode: .metadata)
    }
    Benchmark("4 KiB write faults, data mode (zeroing 4 KiB each), x65536") { benchmark in
        writeFaults(benchmark, mode: .data)
    }
}
