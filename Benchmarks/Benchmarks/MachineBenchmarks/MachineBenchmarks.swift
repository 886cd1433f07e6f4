import Benchmark
import VMCore
import PhysicalMemory
import Kernel
import Machine

/// Translations per second on one simulated CPU over 4 GiB of 4 KiB pages (metadata mode), every
/// page faulted in before measuring. Each iteration makes `accessesPerIteration` accesses;
/// accesses per second = iterations per second × 1,048,576.
///
/// - sequential: 8-byte reads walking through the region (511 of 512 accesses per page hit the
///   last-translation filter, one per page misses the L1 dTLB, one per 512 pages walks).
/// - random: 8-byte reads at uniformly random addresses: every access misses both TLB levels and
///   walks (the PDE cache covers 64 × 2 MiB of the 4 GiB, so nearly every walk reads PDE and PTE).
let accessesPerIteration = 1 << 20

/// Accesses reach a CPU as replay hands them over: in batches through `CPU.run(_:)`, the access
/// path's entry point (`MachineExecutor` queues up to 256).
let batchSize = 256
nonisolated(unsafe) let records = UnsafeMutablePointer<AccessRecord>.allocate(capacity: batchSize)

/// Runs `accessesPerIteration` 8-byte reads at `address(i)` in batches.
@inline(__always)
func readBatched(_ cpu: CPU, _ address: () -> UInt64) {
    for _ in 0..<(accessesPerIteration / batchSize) {
        for i in 0..<batchSize { records[i] = AccessRecord(address: address(), count: 1, kind: .read) }
        blackHole(cpu.run(UnsafeBufferPointer(start: records, count: batchSize)).completed)
    }
}
let regionBytes: UInt64 = 4 << 30

final class Setup: @unchecked Sendable {
    let machine: Machine
    let mm: AddressSpace
    let start: VirtualAddress
    init(_ preset: MachineDescription) {
        // THP off, so that the region is mapped by 4 KiB pages as the benchmarks' names say (the
        // design's default, enabled=always, would map it with 2 MiB pages).
        var settings = KernelDesign.linux2_6_38.defaultSettings
        settings.enabled = .never
        let kernel = Kernel(KernelConfiguration(memoryBytes: 5 << 30, mode: .metadata, watermarks: .zero,
                                                hugepageSettings: settings))
        mm = kernel.createAddressSpace()!
        machine = Machine(kernel: kernel, description: preset)
        machine.cpus[0].switchTo(mm)
        start = try! mm.mmap(length: regionBytes, protection: .readWrite, flags: .private)
        var va = start
        while va < start + regionBytes {
            _ = machine.cpus[0].access(va, .write)
            va = va + 4096
        }
    }
}

func sequential(_ benchmark: Benchmark, _ s: Setup, modelling: CacheModelling) {
    let cpu = s.machine.cpus[0]
    cpu.cacheModelling = modelling
    var offset: UInt64 = 0
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
        readBatched(cpu) {
            let a = s.start.rawValue + offset
            offset = (offset &+ 8) & (regionBytes - 1)
            return a
        }
    }
    benchmark.stopMeasurement()
}

func random(_ benchmark: Benchmark, _ s: Setup, modelling: CacheModelling) {
    let cpu = s.machine.cpus[0]
    cpu.cacheModelling = modelling
    var x: UInt64 = 0x9E37_79B9_7F4A_7C15
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
        readBatched(cpu) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            return s.start.rawValue + (x & (regionBytes - 8))
        }
    }
    benchmark.stopMeasurement()
}

/// The same random stream inside a VM (guest and host with 4 KiB pages): every access misses and
/// makes a 2-D walk.
final class NestedSetup: @unchecked Sendable {
    let vm: VirtualMachine
    let start: VirtualAddress
    init(_ preset: MachineDescription) {
        var settings = KernelDesign.linux2_6_38.defaultSettings
        settings.enabled = .never
        let host = Kernel(KernelConfiguration(memoryBytes: 6 << 30, mode: .metadata, watermarks: .zero, hugepageSettings: settings))
        let vmm = host.createAddressSpace()!
        vm = try! VirtualMachine(hostMM: vmm, guest: KernelConfiguration(memoryBytes: 5 << 30, mode: .metadata,
                                                                          watermarks: .zero, hugepageSettings: settings),
                                 description: preset)
        let mm = vm.guest.createAddressSpace()!
        let cpu = vm.machine.cpus[0]
        cpu.switchTo(mm)
        cpu.cacheModelling = .none
        start = try! mm.mmap(length: regionBytes, protection: .readWrite, flags: .private)
        var va = start
        while va < start + regionBytes {
            _ = cpu.access(va, .write)
            va = va + 4096
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .cpuTotal, .mallocCountTotal, .instructions],
        warmupIterations: 1,
        maxDuration: .seconds(5),
        maxIterations: 30
    )
    nonisolated(unsafe) var setups: [String: Setup] = [:]
    func setup(_ name: String) -> Setup {
        if let s = setups[name] { return s }
        let s = Setup(MachineDescription.presets[name]!)
        setups[name] = s
        return s
    }
    Benchmark("zen4 random 4 GiB in a VM, 4 KiB pages on both sides (2-D walks), no cache model, x1Mi") { benchmark in
        let s = NestedSetup(.zen4)
        let cpu = s.vm.machine.cpus[0]
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            readBatched(cpu) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                return s.start.rawValue + (x & (regionBytes - 8))
            }
        }
        benchmark.stopMeasurement()
    }
    // The cache model alone: reads of random lines over 4 GiB, every one a miss in all three levels
    // (a fill per level and a victim pushed outwards from each).
    Benchmark("skylake-sp cache model alone, random lines over 4 GiB, x1Mi") { benchmark in
        let cache = CacheModel(levels: MachineDescription.skylakeSP.caches, memoryLatency: 300)
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            for _ in 0..<accessesPerIteration {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17
                blackHole(cache.access(physicalAddress: x & (regionBytes - 64)))
            }
        }
        benchmark.stopMeasurement()
    }
    for preset in ["skylake-sp", "zen4"] {
        for (label, modelling) in [("no cache model", CacheModelling.none), ("page tables and data through the cache model", .pageTablesAndData)] {
            Benchmark("\(preset) sequential 4 GiB, 4 KiB pages, \(label), x1Mi") { sequential($0, setup(preset), modelling: modelling) }
            Benchmark("\(preset) random 4 GiB, 4 KiB pages, \(label), x1Mi") { random($0, setup(preset), modelling: modelling) }
        }
    }
}
