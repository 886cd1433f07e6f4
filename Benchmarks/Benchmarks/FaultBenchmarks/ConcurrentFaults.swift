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

/// The kernel, the address space and the threads of one concurrent benchmark, built in its setup hook
/// (see `KernelRig`): the threads live for the whole benchmark, and every sample finds the kernel as
/// the samples before it left it.
final class FaultWorkers: @unchecked Sendable {   // set up and torn down by the framework, around the samples
    let threads: Int
    let kernel: Kernel
    let mm: AddressSpace
    let starts: [VirtualAddress]
    let go: [DispatchSemaphore]
    let faulted = DispatchSemaphore(value: 0)
    let unmap: [DispatchSemaphore]
    let unmapped = DispatchSemaphore(value: 0)
    var stop = false

    init(threads: Int, lock: KernelDesign.PMDLockGranularity) {
        self.threads = threads
        var design = KernelDesign.linux2_6_38
        design.pmdLock = lock
        var settings = design.defaultSettings
        settings.enabled = .always
        kernel = Kernel(KernelConfiguration(memoryBytes: 24 << 30, mode: .metadata, watermarks: .zero, design: design,
                                            hugepageSettings: settings))
        guard let mm = kernel.createAddressSpace() else { fatalError("no address space") }
        self.mm = mm
        starts = (0..<threads).map { VirtualAddress(0x2000_0000_0000) + UInt64($0) * (8 << 30) }
        go = (0..<threads).map { _ in DispatchSemaphore(value: 0) }
        unmap = (0..<threads).map { _ in DispatchSemaphore(value: 0) }
        let regionBytes = UInt64(concurrentFaultsPerThread) << 21
        for (i, start) in starts.enumerated() {
            Thread { [self] in
                while true {
                    go[i].wait()
                    if stop { return }
                    var va = start
                    for _ in 0..<concurrentFaultsPerThread {
                        blackHole(mm.access(va, .write))
                        va = va + PageGeometry.pmdSize
                    }
                    faulted.signal()
                    unmap[i].wait()
                    try! mm.munmap(start, length: regionBytes)
                    unmapped.signal()
                }
            }.start()
        }
    }

    /// One round: map the regions, release the threads together, measure until all have faulted, then
    /// let them unmap outside the measured interval.
    func round(_ benchmark: Benchmark) {
        let regionBytes = UInt64(concurrentFaultsPerThread) << 21
        for start in starts { _ = try! mm.mmap(address: start, length: regionBytes, protection: .readWrite, flags: [.private, .fixed]) }
        benchmark.startMeasurement()
        for g in go { g.signal() }
        for _ in starts { faulted.wait() }
        benchmark.stopMeasurement()
        precondition(kernel.vmstat[.nrAnonTransparentHugepages] == threads * concurrentFaultsPerThread)
        for u in unmap { u.signal() }
        for _ in starts { unmapped.wait() }
    }

    func finish() {
        stop = true
        for g in go { g.signal() }
    }
}

func registerConcurrentFaultBenchmarks() {
    for (lock, name) in [(KernelDesign.PMDLockGranularity.pageTableLock, "page_table_lock"), (.splitPMDLock, "split PMD lock")] {
        for threads in [1, 2] {
            let rig = ConcurrentRig()
            Benchmark("concurrent huge faults, \(name), \(threads) thread\(threads == 1 ? "" : "s") x\(threads * concurrentFaultsPerThread)",
                      configuration: .init(warmupIterations: 3, maxDuration: .seconds(10), maxIterations: 30),
                      closure: { benchmark in for _ in benchmark.scaledIterations { rig.workers!.round(benchmark) } },
                      setup: { rig.workers = FaultWorkers(threads: threads, lock: lock) },
                      teardown: { rig.workers?.finish(); rig.workers = nil })
        }
    }
}

/// Holds a benchmark's `FaultWorkers` between its setup and teardown hooks.
final class ConcurrentRig: @unchecked Sendable {
    var workers: FaultWorkers?
}
