import Benchmark
import Foundation
import VMCore
import PhysicalMemory
import Kernel

/// Concurrent huge faults (issue 5's scalability figure, after Linux's `thp_memscale`): T threads of
/// one process each first-touch 2,048 huge pages (4 GiB) in a region of their own, 1 GiB-aligned so
/// that no two threads share a PMD table; the PMD lock is the mm-wide `page_table_lock` or the split
/// PMD lock. Each iteration maps the regions, starts the threads together, waits for all, and unmaps
/// outside the measured interval. Huge faults per second = throughput × T × 2,048.
let concurrentFaultsPerThread = 2_048

func concurrentHugeFaults(_ benchmark: Benchmark, threads: Int, lock: KernelDesign.PMDLockGranularity) {
    var design = KernelDesign.linux2_6_38
    design.pmdLock = lock
    var settings = design.defaultSettings
    settings.enabled = .always
    let kernel = Kernel(KernelConfiguration(memoryBytes: 24 << 30, mode: .metadata, watermarks: .zero, design: design,
                                            hugepageSettings: settings))
    guard let mm = kernel.createAddressSpace() else { fatalError("no address space") }
    let regionBytes = UInt64(concurrentFaultsPerThread) << 21
    let base = VirtualAddress(0x2000_0000_0000)
    for _ in benchmark.scaledIterations {
        let starts = (0..<threads).map { base + UInt64($0) * (8 << 30) }
        for start in starts { _ = try! mm.mmap(address: start, length: regionBytes, protection: .readWrite, flags: [.private, .fixed]) }
        let ready = DispatchGroup(), done = DispatchGroup()
        let go = DispatchSemaphore(value: 0)
        for start in starts {
            ready.enter(); done.enter()
            Thread {
                ready.leave()
                go.wait()
                var va = start
                for _ in 0..<concurrentFaultsPerThread {
                    blackHole(mm.access(va, .write))
                    va = va + PageGeometry.pmdSize
                }
                done.leave()
            }.start()
        }
        ready.wait()
        benchmark.startMeasurement()
        for _ in starts { go.signal() }
        done.wait()
        benchmark.stopMeasurement()
        precondition(kernel.vmstat[.nrAnonTransparentHugepages] == threads * concurrentFaultsPerThread)
        for start in starts { try! mm.munmap(start, length: regionBytes) }
    }
}

func registerConcurrentFaultBenchmarks() {
    for (lock, name) in [(KernelDesign.PMDLockGranularity.pageTableLock, "page_table_lock"), (.splitPMDLock, "split PMD lock")] {
        for threads in [1, 2] {
            Benchmark("concurrent huge faults, \(name), \(threads) thread\(threads == 1 ? "" : "s") x\(threads * concurrentFaultsPerThread)",
                      configuration: .init(maxDuration: .seconds(10), maxIterations: 30)) { benchmark in
                concurrentHugeFaults(benchmark, threads: threads, lock: lock)
            }
        }
    }
}
