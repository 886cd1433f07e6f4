import Benchmark
import VMCore
import PhysicalMemory
import Kernel

/// khugepaged's scan rate in PTEs per second. Each iteration is one khugepaged wake-up whose
/// `pages_to_scan` covers a 1 GiB region of 4 KiB pages (512 ranges, 262,144 PTEs) in one pass.
let regionBytes: UInt64 = 1 << 30
let ptesPerRegion = Int(regionBytes >> 12)

/// A metadata- or data-mode kernel with one process whose 1 GiB region is written with 4 KiB pages
/// and registered with khugepaged (MADV_HUGEPAGE), `pages_to_scan` set to the whole region.
func makeProcess(mode: PhysicalMemory.Mode, bytes: UInt64) -> (Kernel, AddressSpace, VirtualAddress) {
    var settings = KernelDesign.linux2_6_38.defaultSettings
    settings.enabled = .madvise
    let kernel = Kernel(KernelConfiguration(memoryBytes: bytes, mode: mode, watermarks: .zero, design: .linux2_6_38,
                                            hugepageSettings: settings))
    guard let mm = kernel.createAddressSpace() else { fatalError("no address space") }
    precondition(kernel.setKhugepagedKnob("khugepaged/pages_to_scan", to: String(ptesPerRegion)) == nil)
    precondition(kernel.setKhugepagedKnob("khugepaged/scan_sleep_millisecs", to: "0") == nil)
    return (kernel, mm, populate(mm))
}

/// Maps the region and writes every 4 KiB page before MADV_HUGEPAGE, so that it is mapped by PTEs.
func populate(_ mm: AddressSpace) -> VirtualAddress {
    let start = try! mm.mmap(length: regionBytes, protection: .readWrite, flags: .private)
    precondition(start.isAligned(PageGeometry.pmdSize))
    var va = start
    while va < start + regionBytes {
        blackHole(mm.access(va, .write))
        va = va + 4096
    }
    try! mm.madvise(start, length: regionBytes, advice: .hugepage)
    return start
}

/// Scanning only: the PTEs' accessed bits are cleared (outside the measured part), so every range is
/// examined whole — 512 PTEs, each a load of the entry and of its frame's refcount, mapcount and
/// flags — and refused for lack of a young PTE; nothing is collapsed, so the next iteration scans the
/// same tables.
func scanOnly(_ benchmark: Benchmark) {
    let (kernel, mm, start) = makeProcess(mode: .metadata, bytes: 4 << 30)
    for _ in benchmark.scaledIterations {
        mm.clearYoung(start, length: regionBytes)
        benchmark.startMeasurement()
        kernel.runNextKernelThreadWakeup()
        benchmark.stopMeasurement()
    }
    precondition(kernel.khugepaged.pagesCollapsed == 0 && mm.translate(start)?.level == .pte)
}

/// Scanning and collapsing: every range is collapsed — scan, huge-page allocation, mmap write lock,
/// PMD clear and TLB flush, re-check, copy (data mode: 2 MiB of bytes), release of 512 small pages,
/// deposit and PMD install. The region is unmapped and written again outside the measured part.
func scanAndCollapse(_ benchmark: Benchmark, mode: PhysicalMemory.Mode) {
    let (kernel, mm, first) = makeProcess(mode: mode, bytes: 4 << 30)
    var start = first
    for _ in benchmark.scaledIterations {
        let before = kernel.khugepaged.pagesCollapsed
        benchmark.startMeasurement()
        kernel.runNextKernelThreadWakeup()
        benchmark.stopMeasurement()
        precondition(kernel.khugepaged.pagesCollapsed - before == ptesPerRegion / 512, "not every range collapsed")
        try! mm.munmap(start, length: regionBytes)
        start = populate(mm)
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .cpuTotal, .mallocCountTotal, .peakMemoryResident],
        warmupIterations: 1,
        maxDuration: .seconds(10),
        maxIterations: 20
    )
    Benchmark("khugepaged scan without collapse, metadata mode, 262144 PTEs") { benchmark in
        scanOnly(benchmark)
    }
    Benchmark("khugepaged scan and collapse, metadata mode, 262144 PTEs") { benchmark in
        scanAndCollapse(benchmark, mode: .metadata)
    }
    Benchmark("khugepaged scan and collapse, data mode (copying 2 MiB each), 262144 PTEs") { benchmark in
        scanAndCollapse(benchmark, mode: .data)
    }
}
