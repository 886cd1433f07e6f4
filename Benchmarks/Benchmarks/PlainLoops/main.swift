// The fault benchmarks' loops in a plain program, without the benchmark framework (its malloc
// interposer and samplers), for A/B comparisons and profiling (`perf record` sees only this loop).
// docs/performance.md explains why both are kept.
//
//   swift build -c release --product PlainLoops
//   taskset -c 1 .build/release/PlainLoops huge [GiB of memory, default 16] [faults per iteration, default 4096]
//   .build/release/PlainLoops concurrent THREADS [mm|pmd] [separate]
//       # split PMD lock, or page_table_lock with "mm"; "separate" gives each thread a kernel of its
//       # own (10 GiB), which shares nothing: the ceiling the host's cores and memory allow
//   .build/release/PlainLoops pingpong
//       # the host's cache-line round trip between two threads (how far apart the vCPUs are now)
//   .build/release/PlainLoops small | seq | random | scan
//       # 4 KiB write faults; sequential or random reads through CPU.run(_:) over 1 GiB of 4 KiB
//       # pages; khugepaged scans of 262,144 PTEs. Under callgrind: strip -g the binary first.
//
// Environment: ITERATIONS (default 200 for huge, 60 for concurrent); CGROUP=1 (small, huge) faults in a
// memory cgroup; CACHE=1 (seq, random) through the cache model.
import Foundation
import Synchronization
import VMCore
import PhysicalMemory
import Kernel
import Machine

func seconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
/// CPU time the calling thread has used: below the wall time of its faults when it waited for a CPU.
func threadCPUSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}
let arguments = CommandLine.arguments
let iterationsOverride = ProcessInfo.processInfo.environment["ITERATIONS"].flatMap { Int($0) }

func kernel(gib: UInt64, lock: KernelDesign.PMDLockGranularity) -> Kernel {
    var design = KernelDesign.linux2_6_38
    design.pmdLock = lock
    var settings = design.defaultSettings
    settings.enabled = .always
    return Kernel(KernelConfiguration(memoryBytes: gib << 30, mode: .metadata, watermarks: .zero, design: design,
                                      hugepageSettings: settings))
}

/// CGROUP=1 runs the process in a memory cgroup without a limit, so that every fault charges it.
func placeInCgroup(_ kernel: Kernel, _ mm: AddressSpace) {
    guard ProcessInfo.processInfo.environment["CGROUP"] == "1" else { return }
    try! kernel.move(mm, to: try! kernel.createMemoryCgroup("plainloops"))
}

/// `2 MiB huge write faults, metadata mode` of FaultBenchmarks: map, first-touch every 2 MiB, unmap.
func hugeFaults() {
    let gib = arguments.count > 2 ? UInt64(arguments[2]) ?? 16 : 16
    let faults = arguments.count > 3 ? Int(arguments[3]) ?? 4096 : 4096
    let iterations = iterationsOverride ?? 200
    let k = kernel(gib: gib, lock: .pageTableLock)
    guard let mm = k.createAddressSpace() else { fatalError("no address space") }
    placeInCgroup(k, mm)
    let region = UInt64(faults) << 21
    var faulting = 0.0, unmapping = 0.0
    for _ in 0..<iterations {
        let start = try! mm.mmap(length: region, protection: .readWrite, flags: .private)
        let t0 = seconds()
        var va = start
        for _ in 0..<faults { _ = mm.access(va, .write); va = va + PageGeometry.pmdSize }
        let t1 = seconds()
        try! mm.munmap(start, length: region)
        faulting += t1 - t0
        unmapping += seconds() - t1
    }
    let n = Double(iterations * faults)
    print("huge faults: \(n / faulting / 1e6) M/s; munmap of huge pages: \(n / unmapping / 1e6) M/s")
}

/// `concurrent huge faults` of FaultBenchmarks: T threads, 2,048 huge faults each in regions 8 GiB apart.
func concurrentFaults() {
    guard arguments.count > 2, let threads = Int(arguments[2]), threads > 0 else {
        FileHandle.standardError.write("usage: PlainLoops concurrent THREADS [mm|pmd] [separate]\n".data(using: .utf8)!)
        exit(2)
    }
    let lock: KernelDesign.PMDLockGranularity = arguments.count > 3 && arguments[3] == "mm" ? .pageTableLock : .splitPMDLock
    let separate = arguments.contains("separate")
    let kernels = separate ? (0..<threads).map { _ in kernel(gib: 10, lock: lock) } : [kernel(gib: 24, lock: lock)]
    let mms = kernels.map { $0.createAddressSpace()! }
    let mmOf: @Sendable (Int) -> AddressSpace = { mms[separate ? $0 : 0] }
    let perThread = 2048
    let regionBytes = UInt64(perThread) << 21
    let starts = (0..<threads).map { VirtualAddress(0x2000_0000_0000) + UInt64($0) * (8 << 30) }
    let go = (0..<threads).map { _ in DispatchSemaphore(value: 0) }
    let faulted = DispatchSemaphore(value: 0)
    let unmap = (0..<threads).map { _ in DispatchSemaphore(value: 0) }
    let unmapped = DispatchSemaphore(value: 0)
    // Each thread's first fault in a round takes the mmap lock for writing (the new VMA's anon_vma):
    // its time shows whether a writer waited for the other thread's faults.
    final class FirstFaults: @unchecked Sendable {   // one per thread, written by it alone
        var seconds: [Double] = [], starts: [Double] = [], ends: [Double] = [], cpu: [Double] = []
    }
    let firstFaults = (0..<threads).map { _ in FirstFaults() }
    var roundStarts: [Double] = []
    for (i, start) in starts.enumerated() {
        Thread {
            let mm = mmOf(i)
            while true {
                go[i].wait()
                var va = start
                let c0 = threadCPUSeconds()
                let t0 = seconds()
                _ = mm.access(va, .write)
                firstFaults[i].seconds.append(seconds() - t0)
                firstFaults[i].starts.append(t0)
                va = va + PageGeometry.pmdSize
                for _ in 1..<perThread { _ = mm.access(va, .write); va = va + PageGeometry.pmdSize }
                firstFaults[i].ends.append(seconds())
                firstFaults[i].cpu.append(threadCPUSeconds() - c0)
                faulted.signal()
                unmap[i].wait()
                try! mm.munmap(start, length: regionBytes)
                unmapped.signal()
            }
        }.start()
    }
    var times: [Double] = []
    for _ in 0..<(iterationsOverride ?? 60) {
        for (i, start) in starts.enumerated() { _ = try! mmOf(i).mmap(address: start, length: regionBytes, protection: .readWrite, flags: [.private, .fixed]) }
        let t0 = seconds()
        roundStarts.append(t0)
        for g in go { g.signal() }
        for _ in starts { faulted.wait() }
        times.append(seconds() - t0)
        for u in unmap { u.signal() }
        for _ in starts { unmapped.wait() }
    }
    times.sort()
    let p50 = times[times.count / 2]
    let slowestFirst: [Double] = (0..<times.count).map { (r: Int) -> Double in
        firstFaults.map { $0.seconds[r] }.max()!
    }.sorted()
    let lastStart: [Double] = (0..<roundStarts.count).map { (r: Int) -> Double in
        firstFaults.map { $0.starts[r] }.max()! - roundStarts[r]
    }.sorted()
    // Rounds in which one thread's faults ended before another's began: the host ran them one after
    // the other (both threads on one CPU), whatever the model did.
    let serial = (0..<roundStarts.count).filter { (r: Int) -> Bool in
        firstFaults.contains { a in firstFaults.contains { b in a !== b && a.ends[r] <= b.starts[r] } }
    }.count
    let cpuShare = firstFaults.flatMap { f in f.cpu.indices.map { f.cpu[$0] / (f.ends[$0] - f.starts[$0]) } }.sorted()
    print("thread CPU time / wall time of its faults: p50 \(cpuShare[cpuShare.count / 2]), p10 \(cpuShare[cpuShare.count / 10])")
    print("last thread started p50 \(lastStart[lastStart.count / 2] * 1e6) µs after the release; rounds run one thread after the other: \(serial) of \(roundStarts.count)")
    print("\(threads) thread(s), \(lock == .splitPMDLock ? "split PMD lock" : "page_table_lock"): p50 \(p50 * 1e3) ms, p0 \(times[0] * 1e3) ms, \(Double(threads * perThread) / p50 / 1e6) M huge faults/s; slowest first fault p50 \(slowestFirst[slowestFirst.count / 2] * 1e6) µs, p100 \(slowestFirst.last! * 1e6) µs")
}

/// The host's cache-line round trip between two threads: one writes an odd value and waits for the
/// next even one, the other answers. On this project's 2-vCPU VM it moves between ~80 ns and ~400 ns
/// as the host places the vCPUs, and concurrent-fault scaling moves with it (docs/performance.md).
func pingPong() {
    final class Line: @unchecked Sendable { let word = Atomic<Int>(0) }
    let line = Line(), rounds = 2_000_000
    let done = DispatchSemaphore(value: 0)
    Thread {
        for i in 0..<rounds {
            while line.word.load(ordering: .acquiring) != 2 * i + 1 {}
            line.word.store(2 * i + 2, ordering: .releasing)
        }
        done.signal()
    }.start()
    let t0 = seconds()
    for i in 0..<rounds {
        line.word.store(2 * i + 1, ordering: .releasing)
        while line.word.load(ordering: .acquiring) != 2 * i + 2 {}
    }
    let elapsed = seconds() - t0
    done.wait()
    print("cache-line round trip between two threads: \(elapsed / Double(rounds) * 1e9) ns")
}

/// `MachineBenchmarks`' translation streams in a plain loop (for `perf record`): 1 GiB of 4 KiB pages
/// faulted in, then ITERATIONS × 1 Mi 8-byte reads, sequential or random, no cache model, handed to the
/// CPU in batches of 256 as replay does.
func translate(random: Bool) {
    var settings = KernelDesign.linux2_6_38.defaultSettings
    settings.enabled = .never
    let kernel = Kernel(KernelConfiguration(memoryBytes: 2 << 30, mode: .metadata, watermarks: .zero, hugepageSettings: settings))
    let mm = kernel.createAddressSpace()!
    let machine = Machine(kernel: kernel, description: .skylakeSP)
    let cpu = machine.cpus[0]
    cpu.switchTo(mm)
    // CACHE=1: through the cache model (page-table and data lines), as MachineBenchmarks' "cache model" cases.
    cpu.cacheModelling = ProcessInfo.processInfo.environment["CACHE"] == "1" ? .pageTablesAndData : .none
    let bytes: UInt64 = 1 << 30
    let start = try! mm.mmap(length: bytes, protection: .readWrite, flags: .private)
    var va = start
    while va < start + bytes { _ = cpu.access(va, .write); va = va + 4096 }
    let records = UnsafeMutablePointer<AccessRecord>.allocate(capacity: 256)
    let iterations = iterationsOverride ?? 200
    var offset: UInt64 = 0, x: UInt64 = 0x9E37_79B9_7F4A_7C15, sink = 0
    let t0 = seconds()
    for _ in 0..<iterations {
        for _ in 0..<(1 << 12) {
            for i in 0..<256 {
                let a: UInt64
                if random { x ^= x << 13; x ^= x >> 7; x ^= x << 17; a = start.rawValue + (x & (bytes - 8)) }
                else { a = start.rawValue + offset; offset = (offset &+ 8) & (bytes - 1) }
                records[i] = AccessRecord(address: a, count: 1, kind: .read)
            }
            sink &+= cpu.run(UnsafeBufferPointer(start: records, count: 256)).completed
        }
    }
    let elapsed = seconds() - t0
    print("\(random ? "random" : "sequential"): \(Double(iterations << 20) / elapsed / 1e6) M accesses/s (\(sink))")
}

/// `4 KiB write faults, metadata mode` of FaultBenchmarks: 2 GiB, enabled=never, map 256 MiB,
/// write-fault every 4 KiB page, unmap.
func smallFaults() {
    var settings = KernelDesign.linux2_6_38.defaultSettings
    settings.enabled = .never
    let k = Kernel(KernelConfiguration(memoryBytes: 2 << 30, mode: .metadata, design: .linux2_6_38, hugepageSettings: settings))
    guard let mm = k.createAddressSpace() else { fatalError("no address space") }
    placeInCgroup(k, mm)
    let iterations = iterationsOverride ?? 200
    let region: UInt64 = 256 << 20
    var faulting = 0.0
    for _ in 0..<iterations {
        let start = try! mm.mmap(length: region, protection: .readWrite, flags: .private)
        let t0 = seconds()
        var va = start
        while va < start + region { _ = mm.access(va, .write); va = va + 4096 }
        faulting += seconds() - t0
        try! mm.munmap(start, length: region)
    }
    print("4 KiB faults: \(Double(iterations) * Double(region >> 12) / faulting / 1e6) M/s")
}


/// `khugepaged scan without collapse` of KhugepagedBenchmarks: 1 GiB of 4 KiB pages under
/// MADV_HUGEPAGE, accessed bits cleared, one khugepaged wake-up scanning all 262,144 PTEs, ITERATIONS times.
func khugepagedScan() {
    let regionBytes: UInt64 = 1 << 30
    var settings = KernelDesign.linux2_6_38.defaultSettings
    settings.enabled = .madvise
    let kernel = Kernel(KernelConfiguration(memoryBytes: 4 << 30, mode: .metadata, watermarks: .zero, design: .linux2_6_38,
                                            hugepageSettings: settings))
    guard let mm = kernel.createAddressSpace() else { fatalError("no address space") }
    precondition(kernel.setKhugepagedKnob("khugepaged/pages_to_scan", to: String(regionBytes >> 12)) == nil)
    precondition(kernel.setKhugepagedKnob("khugepaged/scan_sleep_millisecs", to: "0") == nil)
    let start = try! mm.mmap(length: regionBytes, protection: .readWrite, flags: .private)
    var va = start
    while va < start + regionBytes { _ = mm.access(va, .write); va = va + 4096 }
    try! mm.madvise(start, length: regionBytes, advice: .hugepage)
    let iterations = iterationsOverride ?? 200
    var scanning = 0.0
    for _ in 0..<iterations {
        mm.clearYoung(start, length: regionBytes)
        let t0 = seconds()
        kernel.runNextKernelThreadWakeup()
        scanning += seconds() - t0
    }
    precondition(kernel.khugepaged.pagesCollapsed == 0)
    print("khugepaged scan: \(Double(iterations) * Double(regionBytes >> 12) / scanning / 1e6) M PTEs/s")
}

switch arguments.count > 1 ? arguments[1] : "" {
case "small": smallFaults()
case "seq": translate(random: false)
case "random": translate(random: true)
case "huge": hugeFaults()
case "scan": khugepagedScan()
case "concurrent": concurrentFaults()
case "pingpong": pingPong()
default:
    FileHandle.standardError.write("usage: PlainLoops huge [GiB] [faults] | small | seq | random | scan | concurrent THREADS [mm|pmd] [separate] | pingpong\n".data(using: .utf8)!)
    exit(2)
}
