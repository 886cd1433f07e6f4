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

/// A kernel and address space that a benchmark builds once, in its setup hook, and that every sample
/// reuses. The framework calls a benchmark's closure once per sample: a kernel built inside it would
/// be measured on its first round each time — page-table store chunks allocated and host pages of its
/// tables touched for the first time inside the measured faults — rather than in the steady state a
/// program's later faults see (docs/performance.md, "How the fault benchmarks measure").
final class KernelRig: @unchecked Sendable {   // set up and torn down by the framework, around the samples
    private var built: (kernel: Kernel, mm: AddressSpace)?
    var kernel: Kernel { built!.kernel }
    var mm: AddressSpace { built!.mm }

    /// With `inCgroup`, the process runs in a memory cgroup of its own without a limit, so every
    /// fault charges it (`mem_cgroup_charge()`): what charging costs over the root cgroup's branch.
    func build(_ kernel: Kernel, inCgroup: Bool = false) {
        guard let mm = kernel.createAddressSpace() else { fatalError("no address space") }
        if inCgroup {
            let memcg = try! kernel.createMemoryCgroup("benchmark")
            try! kernel.move(mm, to: memcg)
        }
        built = (kernel, mm)
    }

    func tearDown() { built = nil }
}

func writeFaults(_ benchmark: Benchmark, _ mm: AddressSpace) {
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

func hugeWriteFaults(_ benchmark: Benchmark, _ kernel: Kernel, _ mm: AddressSpace) {
    let region = min(hugeRegionBytes, kernel.configuration.memoryBytes / 2)
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
    for mode in [PhysicalMemory.Mode.metadata, .data] {
        let rig = KernelRig()
        let name = mode == .metadata ? "metadata mode" : "data mode (zeroing 4 KiB each)"
        Benchmark("4 KiB write faults, \(name), x65536",
                  closure: { benchmark in writeFaults(benchmark, rig.mm) },
                  setup: { rig.build(makeKernel(bytes: 2 << 30, mode: mode, enabled: .never)) },
                  teardown: { rig.tearDown() })
    }
    for (mode, bytes) in [(PhysicalMemory.Mode.metadata, UInt64(16) << 30), (.data, 1 << 30)] {
        let rig = KernelRig()
        let name = mode == .metadata ? "metadata mode, x4096" : "data mode (zeroing 2 MiB each), x256"
        Benchmark("2 MiB huge write faults, \(name)",
                  closure: { benchmark in hugeWriteFaults(benchmark, rig.kernel, rig.mm) },
                  setup: { rig.build(makeKernel(bytes: bytes, mode: mode, enabled: .always)) },
                  teardown: { rig.tearDown() })
    }
    // The same metadata-mode faults by a process in a memory cgroup (issue 21's bound: charging costs
    // at most 5 % over the root cgroup).
    let smallRig = KernelRig(), hugeRig = KernelRig()
    Benchmark("4 KiB write faults, metadata mode, in a memory cgroup, x65536",
              closure: { benchmark in writeFaults(benchmark, smallRig.mm) },
              setup: { smallRig.build(makeKernel(bytes: 2 << 30, mode: .metadata, enabled: .never), inCgroup: true) },
              teardown: { smallRig.tearDown() })
    Benchmark("2 MiB huge write faults, metadata mode, in a memory cgroup, x4096",
              closure: { benchmark in hugeWriteFaults(benchmark, hugeRig.kernel, hugeRig.mm) },
              setup: { hugeRig.build(makeKernel(bytes: 16 << 30, mode: .metadata, enabled: .always), inCgroup: true) },
              teardown: { hugeRig.tearDown() })
    registerConcurrentFaultBenchmarks()
}
