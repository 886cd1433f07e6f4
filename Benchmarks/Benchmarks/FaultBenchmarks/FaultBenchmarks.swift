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

/// The linux-2.6.38 design with THP `enabled` as given.
func makeKernel(bytes: UInt64, mode: PhysicalMemory.Mode, enabled: TransparentHugepageSettings.Enabled) -> Kernel {
    var settings = KernelDesign.linux2_6_38.defaultSettings
    settings.enabled = enabled
    return Kernel(KernelConfiguration(memoryBytes: bytes, mode: mode, watermarks: .zero, design: .linux2_6_38,
                                      hugepageSettings: settings))
}

func writeFaults(_ benchmark: Benchmark, mode: PhysicalMemory.Mode) {
    let kernel = makeKernel(bytes: 2 << 30, mode: mode, enabled: .never)
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

/// Huge faults per second: each iteration maps 8 GiB (2 MiB-aligned, THP `enabled=always`) and
/// first-touches each 2 MiB with a write (4,096 huge faults: an order-9 allocation with its 511 tail
/// frames, a deposited PTE table, the PMD install under `page_table_lock`, the split's reverse map,
/// counters), and unmaps it outside the measured part. Huge faults per second = throughput × 4,096.
let hugeFaultsPerIteration = 4_096
let hugeRegionBytes = UInt64(hugeFaultsPerIteration) << 21

func hugeWriteFaults(_ benchmark: Benchmark, mode: PhysicalMemory.Mode, bytes: UInt64) {
    let kernel = makeKernel(bytes: bytes, mode: mode, enabled: .always)
    guard let mm = kernel.createAddressSpace() else { fatalError("no address space") }
    let region = min(hugeRegionBytes, bytes / 2)
    let faults = Int(region >> 21)
    for _ in benchmark.scaledIterations {
        let start = try! mm.mmap(length: region, protection: .readWrite, flags: .private)
        precondition(start.isAligned(PageGeometry.pmdSize))
        benchmark.startMeasurement()
        var va = start
        for _ in 0..<faults {
            blackHole(mm.access(va, .write))
            va = va + PageGeometry.pmdSize
        }
        benchmark.stopMeasurement()
        precondition(mm.translate(start)?.level == .pmd, "the benchmark did not map huge pages")
        try! mm.munmap(start, length: region)
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
    Benchmark("2 MiB huge write faults, metadata mode, x4096") { benchmark in
        hugeWriteFaults(benchmark, mode: .metadata, bytes: 16 << 30)
    }
    Benchmark("2 MiB huge write faults, data mode (zeroing 2 MiB each), x256") { benchmark in
        hugeWriteFaults(benchmark, mode: .data, bytes: 1 << 30)
    }
    registerConcurrentFaultBenchmarks()
}
