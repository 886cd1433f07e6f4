import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

/// HawkEye's rules, one test each (docs/policies.md, "hawkeye").
@Suite("HawkEye: access-coverage bins, pre-zeroing, bloat recovery")
struct HawkEyeTests {
    static let base = VirtualAddress(1 << 30)
    static let mib2 = PageGeometry.pmdSize
    static let second: UInt64 = 1_000_000_000

    func kernel(_ policy: (any HugepagePolicy)? = HawkEyePolicy(preZeroing: .init(enabled: false)),
                mode: PhysicalMemory.Mode = .metadata, memory: UInt64 = 64 << 20) -> Kernel {
        var configuration = KernelConfiguration(
            memoryBytes: memory, mode: mode, watermarks: .zero, design: .linux6_18,
            hugepageSettings: TransparentHugepageSettings(enabled: .always, defrag: .madvise, useZeroPage: true))
        configuration.policy = policy
        return Kernel(configuration)
    }

    func state(_ kernel: Kernel) throws -> HawkEyeState { try #require(kernel.policyState as? HawkEyeState) }
    func counter(_ kernel: Kernel, _ name: String) -> Int { kernel.vmstatValues()[name] ?? -1 }

    /// A heap that grows by mprotect (as `heap` does): 4 MiB reserved, the first 1 MiB made writable
    /// and written, then the rest; the first 2 MiB range has a PTE table before it fits a VMA, so its
    /// later faults map 4 KiB pages (candidates), while the second range takes a huge page at its fault.
    func grownHeap(_ mm: AddressSpace, touch pages: Range<Int> = 0..<512) throws {
        _ = try mm.mmap(address: Self.base, length: 4 << 20, protection: .none, flags: [.private, .fixed])
        try mm.mprotect(Self.base, length: 1 << 20, protection: .readWrite)
        try mm.write(Self.base, [1]).get()
        try mm.mprotect(Self.base + (1 << 20), length: 3 << 20, protection: .readWrite)
        for p in pages { try mm.write(Self.base + UInt64(p) * 4096, [1]).get() }
        try mm.write(Self.base + Self.mib2, [1]).get()
    }

    @Test("weights and bins: w ← (6w + 4n)/10, at most 512; bin = log2 rounded up",
          arguments: [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (120, 7), (512, 9)])
    func bins(weight: Int, bin: Int) {
        #expect(HawkEyeState.bin(weight) == bin)
    }

    @Test("the weight is an exponential average of young PTEs")
    func weights() {
        #expect(HawkEyeState.nextWeight(0, young: 512) == 204)
        #expect(HawkEyeState.nextWeight(204, young: 512) == 327)
        #expect(HawkEyeState.nextWeight(512, young: 0) == 307)
        #expect(HawkEyeState.nextWeight(512, young: 512) == 512)
    }

    @Test("Linux's fault path; a 4 KiB fault in a range that could be huge makes it a candidate in bin 0")
    func candidates() throws {
        let kernel = kernel()
        let mm = try #require(kernel.createAddressSpace())
        try grownHeap(mm)
        #expect(mm.translate(Self.base)?.level == .pte && mm.translate(Self.base + Self.mib2)?.level == .pmd)
        let c = try state(kernel).candidates(pid: mm.pid)
        #expect(c.keys.sorted() == [Self.base])
        #expect(c[Self.base]?.bin == 0 && c[Self.base]?.weight == 0)
        // A partial unmap keeps the candidate; unmapping the whole range drops it.
        try mm.madvise(Self.base + 4096, length: 4096, advice: .dontNeed)
        #expect(try state(kernel).candidates(pid: mm.pid).keys.sorted() == [Self.base])
        try mm.munmap(Self.base, length: 4 << 20)
        #expect(try state(kernel).candidates(pid: mm.pid).isEmpty)
        expectClean(kernel)
    }

    @Test("the sampler clears the accessed bits, waits, counts the young PTEs and re-bins the range")
    func sampler() throws {
        let kernel = kernel()
        let mm = try #require(kernel.createAddressSpace())
        try grownHeap(mm)
        kernel.advanceTime(by: Self.second / 2)            // t = 0: clear
        for p in 0..<300 { _ = try mm.read(Self.base + UInt64(p) * 4096, count: 1).get() }
        kernel.advanceTime(by: Self.second)                 // t = 1 s: count 300 young
        var c = try state(kernel).candidates(pid: mm.pid)[Self.base]
        #expect(c?.weight == 120 && c?.bin == 7)
        #expect(counter(kernel, "hawkeye_sample_passes") == 1)
        // Next pass after scan_sleep_millisecs (5 s): nothing touched, the weight decays.
        kernel.advanceTime(by: 7 * Self.second)
        c = try state(kernel).candidates(pid: mm.pid)[Self.base]
        #expect(c?.weight == 72 && c?.bin == 7)
    }

    @Test("khugepaged promotes the highest bin first, across processes, and never a range in bin 0")
    func promotion() throws {
        let kernel = kernel()
        #expect(kernel.setKhugepagedKnob("khugepaged/pages_to_scan", to: "512") == nil)
        #expect(kernel.setKhugepagedKnob("khugepaged/scan_sleep_millisecs", to: "3000") == nil)
        let cold = try #require(kernel.createAddressSpace()), hot = try #require(kernel.createAddressSpace()),
            idle = try #require(kernel.createAddressSpace())
        for mm in [cold, hot, idle] { try grownHeap(mm) }
        kernel.advanceTime(by: Self.second / 2)
        for p in 0..<20 { _ = try cold.read(Self.base + UInt64(p) * 4096, count: 1).get() }
        for p in 0..<500 { _ = try hot.read(Self.base + UInt64(p) * 4096, count: 1).get() }
        kernel.advanceTime(by: Self.second)                 // counted at 1 s; khugepaged next at 3 s
        #expect(try state(kernel).candidates(pid: hot.pid)[Self.base]?.bin == 8)
        #expect(try state(kernel).candidates(pid: cold.pid)[Self.base]?.bin == 3)
        kernel.advanceTime(by: 2 * Self.second)             // khugepaged at 3 s: one range
        #expect(hot.translate(Self.base)?.level == .pmd && cold.translate(Self.base)?.level == .pte)
        kernel.advanceTime(by: 3 * Self.second)             // at 6 s: the next bin
        #expect(cold.translate(Self.base)?.level == .pmd)
        kernel.advanceTime(by: 30 * Self.second)
        #expect(idle.translate(Self.base)?.level == .pte)
        #expect(counter(kernel, "hawkeye_ranges_promoted") == 2)
        expectClean(kernel)
    }

    @Test("the pre-zeroing thread zeroes free blocks at its rate, and a huge fault on one zeroes nothing")
    func preZeroing() throws {
        let kernel = kernel(HawkEyePolicy(preZeroing: .init(enabled: true, blocksPerWakeup: 2, sleepMillisecs: 1000)),
                            mode: .data)
        let mm = try #require(kernel.createAddressSpace())
        // Dirty every free huge page, then free them: nothing is zero ahead now.
        _ = try mm.mmap(address: Self.base, length: 32 << 20, protection: .readWrite, flags: [.private, .fixed])
        for r in 0..<16 { try mm.write(Self.base + UInt64(r) * Self.mib2 + 4096, [0xAB]).get() }
        try mm.munmap(Self.base, length: 32 << 20)
        #expect(kernel.memory.buddy.preZeroedFreePages == 0)
        kernel.advanceTime(by: Self.second / 2)             // one wake-up: 2 blocks
        #expect(counter(kernel, "hawkeye_blocks_prezeroed") == 2)
        let zeroedAhead = kernel.memory.buddy.preZeroedFreePages
        #expect(zeroedAhead == 2 * 1024)
        kernel.advanceTime(by: Self.second)                 // and 2 more a second later
        #expect(counter(kernel, "hawkeye_blocks_prezeroed") == 4)
        // Faster, until every free order-10 and order-9 block is zeroed: the allocator takes order-9
        // blocks first, as HawkEye's does, so a huge fault gets a zeroed one only then.
        try kernel.transparentHugepageSysfs.write("hawkeye/prezero_blocks", "1000")
        kernel.advanceTime(by: Self.second)
        #expect(kernel.memory.buddy.freeBlocksPerOrder[9...].reduce(0) { $0 + $1 } > 0)
        var unzeroed = 0
        kernel.memory.buddy.forEachFreeBlock { pfn, order in
            if order.rawValue >= 9 && !kernel.memory.frames.flags(pfn).contains(.preZeroed) { unzeroed += 1 }
        }
        #expect(unzeroed == 0)

        _ = try mm.mmap(address: Self.base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
        var fault = FaultContext(address: Self.base + 8192, access: .write, present: false)
        #expect(mm.handleFault(&fault) == .handled)
        #expect(fault.hugePages == 1 && fault.bytesZeroed == 0)
        #expect(mm.translate(Self.base)?.level == .pmd)
        // Its bytes are zero all the same.
        #expect(try mm.read(Self.base, count: 8192).get().allSatisfy { $0 == 0 })
        #expect(try mm.read(Self.base + Self.mib2 - 4096 + 4095, count: 1).get() == [0])
        expectClean(kernel)
    }

    @Test("Linux 6.18 zeroes every huge page at its fault")
    func linuxZeroesAtFault() throws {
        let kernel = kernel(nil)
        let mm = try #require(kernel.createAddressSpace())
        kernel.advanceTime(by: 5 * Self.second)
        _ = try mm.mmap(address: Self.base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
        var fault = FaultContext(address: Self.base, access: .write, present: false)
        #expect(mm.handleFault(&fault) == .handled)
        #expect(fault.hugePages == 1 && fault.bytesZeroed == Self.mib2)
        #expect(kernel.memory.buddy.preZeroedFreePages == 0)
    }

    @Test("bloat recovery: the shrinker splits a huge page with zero-filled pages and maps the zero page there; Linux keeps it")
    func bloatRecovery() throws {
        for policy in [HawkEyePolicy(preZeroing: .init(enabled: false)) as (any HugepagePolicy)?, nil] {
            let kernel = kernel(policy, mode: .data)
            let mm = try #require(kernel.createAddressSpace())
            _ = try mm.mmap(address: Self.base, length: 2 << 20, protection: .readWrite, flags: [.private, .fixed])
            for p in 0..<10 { try mm.write(Self.base + UInt64(p) * 4096, [7]).get() }
            #expect(mm.translate(Self.base)?.level == .pmd)
            let freed = kernel.deferredSplitScan()
            let recovered = mm.translate(Self.base)?.level == .pte
            #expect(recovered == (policy != nil))
            if recovered {
                #expect(freed == 502)
                #expect(try mm.read(Self.base + 9 * 4096, count: 1).get() == [7])
                #expect(try mm.read(Self.base + 100 * 4096, count: 1).get() == [0])
            }
            expectClean(kernel)
        }
    }

    @Test("knobs through sysfs; bad values refused with the knob's name")
    func knobs() throws {
        let kernel = kernel()
        let sysfs = kernel.transparentHugepageSysfs
        #expect(try sysfs.read("hawkeye/scan_sleep_millisecs") == "5000" && sysfs.read("hawkeye/prezero") == "0")
        try sysfs.write("hawkeye/scan_sleep_millisecs", "2000")
        #expect(try sysfs.read("hawkeye/scan_sleep_millisecs") == "2000")
        do { try sysfs.write("hawkeye/prezero_blocks", "0"); Issue.record("accepted 0") } catch {
            #expect(error.errno == .EINVAL && error.message.contains("hawkeye/prezero_blocks"))
        }
        #expect(throws: SysfsError.self) { try sysfs.write("hawkeye/nonsense", "1") }
        #expect(kernel.vmstatText().contains("\nhawkeye_blocks_prezeroed 0\n"))
    }
}
