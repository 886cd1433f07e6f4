import Benchmark
import Foundation
import VMCore
import PhysicalMemory
import Kernel

/// Concurrent huge faults (issue 5's scalability figure, after Linux's `thp_memscale`): T threads of
/// one process each first-touch 2,048 huge pages (4 GiB) in a region of their own, 8 GiB apart so that
/// no two threads share a PMD table; the PMD lock is the mm-wide `page_table_lock` or the split PMD
/// lock. The threads live for the whole benchmark (as a program's threads do); each iteration maps the
/// regions, releases the threads together, measures until all have finished their faults, and then
/// lets each thread unmap its own region outside the measured interval, so every thread finds its
/// frames as warm (or cold) as the others do. Huge faults per second = throughput × T × 2,048.
let concurrentFaultsPerThread = 2_048

final class FaultWorkers: @unchecked Sendable {
    let go: [DispatchSemaphore]
    let faulted = DispatchSemaphore(value: 0)
    let unmap: [DispatchSemaphore]
    let unmapped = DispatchSemaphore(value: 0)
    var stop = false
    init(threads: Int) {
        go = (0..<threads).map { _ in DispatchSemaphore(value: 0) }
        unmap = (0..<threads).map { _ in DispatchSemaphore(value: 0) }
    }
}

func concurrentHugeFaults(_ benchmark: Benchmark, threads: Int, lock: KernelDesign.PMDLockGranularity) {
    var design = KernelDesign.linux2_6_38
    design.pmdLock = lock
    var settings = design.defaultSettings
    settings.enabled = .always
    let kernel = Kernel(KernelConfiguration(memoryBytes: 24 << 30, mode: .metadata, watermarks: .zero, design: design,
                                            hugepageSettings: settings))
    guard let mm = kernel.createAddressSpace() else { fatalError("no address space") }
    let regionBytes = UInt64(concurrentFaultsPerThread) << 21
    let starts = (0..<threads).map { VirtualAddress(0x2000_0000_0000) + UInt64($0) * (8 << 30) }
    let workers = FaultWorkers(threads: threads)
    for (i, start) in starts.enumerated() {
        Thread {
            while true {
                workers.go[i].wait()
                if workers.stop { return }
                var va = start
                for _ in 0..<concurrentFaultsPerThread {
                    blackHole(mm.access(va, .write))
                    va = va + PageGeometry.pmdSize
                }
                workers.faulted.signal()
                workers.unmap[i].wait()
                try! mm.munmap(start, length: regionBytes)
                workers.unmapped.signal()
            }
        }.start()
    }
    for _ in benchmark.scaledIterations {
        for start in starts { _ = try! mm.mmap(address: start, length: regionBytes, protection: .readWrite, flags: [.private, .fixed]) }
        benchmark.startMeasurement()
        for g in workers.go { g.signal() }
        for _ in starts { workers.faulted.wait() }
        benchmark.stopMeasurement()
        precondition(kernel.vmstat[.nrAnonTransparentHugepages] == threads * concurrentFaultsPerThread)
        for u in workers.unmap { u.signal() }
        for _ in starts { workers.unmapped.wait() }
    }
    workers.stop = true
    for g in workers.go { g.signal() }
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
