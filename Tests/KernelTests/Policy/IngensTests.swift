import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

/// Ingens's rules, one test each (docs/policies.md, "ingens").
@Suite("Ingens: population counts, the promotion queue, the sampler, fairness")
struct IngensTests {
    static let base = VirtualAddress(1 << 30)
    static let mib2 = PageGeometry.pmdSize

    /// The sampler is off unless a test is about it, so that each kernel-thread wake-up is khugepaged's.
    func kernel(_ policy: IngensPolicy = IngensPolicy(scanSleepMillisecs: 0), enabled: TransparentHugepageSettings.Enabled = .always,
                memory: UInt64 = 64 << 20) -> Kernel {
        var configuration = KernelConfiguration(
            memoryBytes: memory, watermarks: .zero, design: .linux6_18,
            hugepageSettings: TransparentHugepageSettings(enabled: enabled, defrag: .madvise, useZeroPage: true))
        configuration.policy = policy
        return Kernel(configuration)
    }

    func state(_ kernel: Kernel) throws -> IngensState { try #require(kernel.policyState as? IngensState) }

    /// Writes one byte in each of `pages` pages of the 2 MiB range at `haddr`, from its first page.
    func touch(_ mm: AddressSpace, _ haddr: VirtualAddress, pages: Range<Int>, write: Bool = true) throws {
        for p in pages {
            let va = haddr + UInt64(p) * PageGeometry.pageSize
            if write { try mm.write(va, [1]).get() } else { _ = try mm.read(va, count: 1).get() }
        }
    }

    func counter(_ kernel: Kernel, _ name: String) -> Int { kernel.vmstatValues()[name] ?? -1 }

    @Test("a fault maps 4 KiB even where enabled=always would map 2 MiB; each page counts once, zero-page reads too")
    func noHugePageAtFault() throws {
        let kernel = kernel()
        let mm = try #require(kernel.createAddressSpace())
        _ = try mm.mmap(address: Self.base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
        try touch(mm, Self.base, pages: 0..<10)
        try touch(mm, Self.base, pages: 0..<10)                     // again: no change
        try touch(mm, Self.base, pages: 10..<15, write: false)      // zero-page reads count
        try touch(mm, Self.base, pages: 10..<12)                    // COW of the zero page: already counted
        #expect(mm.translate(Self.base)?.level == .pte)
        #expect(kernel.vmstat[.thpFaultAlloc] == 0)
        #expect(try state(kernel).weight(pid: mm.pid, range: Self.base) == 15)
        #expect(try state(kernel).weight(pid: mm.pid, range: Self.base + Self.mib2) == 0)
        #expect(mm.isRegisteredWithKhugepaged)
        expectClean(kernel)
    }

    @Test("the range is queued once, at util_threshold percent of 512 pages", arguments: [(90, 460), (50, 256), (100, 512)])
    func threshold(percent: Int, pages: Int) throws {
        let kernel = kernel(IngensPolicy(utilThreshold: percent))
        let mm = try #require(kernel.createAddressSpace())
        _ = try mm.mmap(address: Self.base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
        try touch(mm, Self.base, pages: 0..<(pages - 1))
        #expect(try state(kernel).queuedRanges.isEmpty)
        try touch(mm, Self.base, pages: (pages - 1)..<pages)
        #expect(try state(kernel).queuedRanges.map(\.address) == [Self.base])
        try touch(mm, Self.base, pages: pages..<512)
        #expect(try state(kernel).queuedRanges.count == 1)
        #expect(counter(kernel, "ingens_ranges_queued") == 1)
    }

    @Test("no tracking where enabled forbids huge pages, or where the range does not fit the VMA")
    func eligibility() throws {
        let never = kernel(enabled: .never)
        let mm = try #require(never.createAddressSpace())
        _ = try mm.mmap(address: Self.base, length: 2 << 20, protection: .readWrite, flags: [.private, .fixed])
        try touch(mm, Self.base, pages: 0..<512)
        #expect(try state(never).weight(pid: mm.pid, range: Self.base) == 0 && !mm.isRegisteredWithKhugepaged)

        let always = kernel()
        let mm2 = try #require(always.createAddressSpace())
        _ = try mm2.mmap(address: Self.base, length: 1 << 20, protection: .readWrite, flags: [.private, .fixed])
        try touch(mm2, Self.base, pages: 0..<256)
        #expect(try state(always).weight(pid: mm2.pid, range: Self.base) == 0)
    }

    @Test("khugepaged collapses the queue before it scans: the range that filled first is promoted first")
    func queueFirst() throws {
        let kernel = kernel()
        #expect(kernel.setKhugepagedKnob("khugepaged/pages_to_scan", to: "512") == nil)
        let mm = try #require(kernel.createAddressSpace())
        _ = try mm.mmap(address: Self.base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
        let low = Self.base, high = Self.base + Self.mib2
        try touch(mm, high, pages: 0..<512)        // queued first
        try touch(mm, low, pages: 0..<512)         // queued second; a scan from the start would take it first
        #expect(try state(kernel).queuedRanges.map(\.address) == [high, low])
        #expect(kernel.runNextKernelThreadWakeup())
        #expect(mm.translate(high)?.level == .pmd && mm.translate(low)?.level == .pte)
        #expect(kernel.khugepaged.pagesCollapsed == 1)
        #expect(kernel.runNextKernelThreadWakeup())
        #expect(mm.translate(low)?.level == .pmd)
        #expect(counter(kernel, "ingens_ranges_promoted") == 2 && counter(kernel, "ingens_promotions_failed") == 0)
        #expect(try mm.read(high + 4096, count: 1).get() == [1])
        expectClean(kernel)
    }

    @Test("khugepaged's scan leaves a range populated below the threshold alone, where Linux's would collapse it")
    func scanRefusesUnderutilized() throws {
        for policy in [IngensPolicy() as any HugepagePolicy, Linux6_18Policy()] {
            var configuration = KernelConfiguration(
                memoryBytes: 64 << 20, watermarks: .zero, design: .linux6_18,
                hugepageSettings: TransparentHugepageSettings(enabled: .always, defrag: .madvise, useZeroPage: true))
            configuration.policy = policy
            let kernel = Kernel(configuration)
            let mm = try #require(kernel.createAddressSpace())
            _ = try mm.mmap(address: Self.base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
            // Linux maps 2 MiB at the fault; split it back so both start from 300 small pages.
            try touch(mm, Self.base, pages: 0..<300)
            if policy is Linux6_18Policy {
                try mm.madvise(Self.base + 300 * 4096, length: Self.mib2 - 300 * 4096, advice: .dontNeed)
                #expect(mm.translate(Self.base)?.level == .pte)
                #expect(mm.isRegisteredWithKhugepaged)
            }
            for _ in 0..<4 { kernel.advanceTime(by: 20 * 1_000_000_000) }
            let collapsed = mm.translate(Self.base)?.level == .pmd
            #expect(collapsed == (policy is Linux6_18Policy))
            if policy is IngensPolicy { #expect(counter(kernel, "ingens_scan_underutilized") > 0) }
        }
    }

    @Test("unmapping clears the bits and the committed mark: the range queues again when it refills")
    func unmapClears() throws {
        let kernel = kernel()
        let mm = try #require(kernel.createAddressSpace())
        _ = try mm.mmap(address: Self.base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
        try touch(mm, Self.base, pages: 0..<460)
        #expect(try state(kernel).queuedRanges.count == 1)
        try mm.madvise(Self.base, length: 100 * 4096, advice: .dontNeed)
        #expect(try state(kernel).weight(pid: mm.pid, range: Self.base) == 360)
        #expect(kernel.runNextKernelThreadWakeup())   // the queued entry is stale now: dropped, not collapsed
        #expect(mm.translate(Self.base + 200 * 4096)?.level == .pte && counter(kernel, "ingens_queue_stale") == 1)
        try touch(mm, Self.base, pages: 0..<100)
        #expect(counter(kernel, "ingens_ranges_queued") == 2)
        try mm.munmap(Self.base, length: 4 << 20)
        #expect(try state(kernel).weight(pid: mm.pid, range: Self.base) == 0)
        expectClean(kernel)
    }

    @Test("the sampler reads and clears accessed bits every scan_sleep_millisecs: a range is hot once accessed at 4 passes in a row")
    func samplerHotRanges() throws {
        let kernel = kernel(IngensPolicy())
        let mm = try #require(kernel.createAddressSpace())
        _ = try mm.mmap(address: Self.base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
        let hot = Self.base, cold = Self.base + Self.mib2
        try touch(mm, hot, pages: 0..<10)
        try touch(mm, cold, pages: 0..<10)
        let s = try state(kernel)
        kernel.advanceTime(by: 1_000_000)                       // the first pass, when the process joined
        #expect(counter(kernel, "ingens_sample_passes") == 1)
        #expect(s.sample(pid: mm.pid).basePages == 20 && s.sample(pid: mm.pid).idleBasePages == 0)
        for pass in 2...4 {
            try touch(mm, hot, pages: 0..<1)
            kernel.advanceTime(by: 4_000_000_000)
            #expect(counter(kernel, "ingens_sample_passes") == pass)
            #expect(s.isHot(pid: mm.pid, range: hot) == (pass == 4))  // hot only at the 4th young sample
            #expect(!s.isHot(pid: mm.pid, range: cold))
        }
        // The bits were cleared at each pass: one page of 20 seen young.
        #expect(s.sample(pid: mm.pid).idleBasePages == 19 && s.sample(pid: mm.pid).hotRanges == 1)
        kernel.advanceTime(by: 4_000_000_000)                   // a pass without an access: no longer hot
        #expect(!s.isHot(pid: mm.pid, range: hot) && s.sample(pid: mm.pid).idleBasePages == 20)
        #expect(counter(kernel, "ingens_hot_range_samples") == 1)
        // A passes only every scan_sleep_millisecs; the process's exit stops it.
        try sysfsWrite(kernel, "ingens/scan_sleep_millisecs", "10000")
        kernel.advanceTime(by: 4_000_000_000)   // the pass already set for 4 s later runs, then 10 s apart
        kernel.advanceTime(by: 9_000_000_000)   // no pass 9 s after the last
        #expect(counter(kernel, "ingens_sample_passes") == 6)
        mm.exit()
        kernel.advanceTime(by: 60_000_000_000)  // one more pass finds nothing to sample, and the thread sleeps
        #expect(counter(kernel, "ingens_sample_passes") == 7)
        expectClean(kernel)
    }

    @Test("the sampler counts huge PMDs, idle ones, and the requirement: resident pages / 512")
    func samplerHugePages() throws {
        let kernel = kernel(IngensPolicy())
        #expect(kernel.setKhugepagedKnob("khugepaged/pages_to_scan", to: "512") == nil)
        let mm = try #require(kernel.createAddressSpace())
        _ = try mm.mmap(address: Self.base, length: 6 << 20, protection: .readWrite, flags: [.private, .fixed])
        try touch(mm, Self.base, pages: 0..<512)
        try touch(mm, Self.base + Self.mib2, pages: 0..<300)
        kernel.advanceTime(by: 1_000_000)                       // khugepaged collapses the full range; a pass
        #expect(mm.translate(Self.base)?.level == .pmd)
        kernel.advanceTime(by: 4_000_000_000)                   // nothing accessed since the last pass
        let sample = try state(kernel).sample(pid: mm.pid)
        #expect(sample.hugePages == 1 && sample.idleHugePages == 1 && sample.basePages == 300)
        #expect(sample.requirement == (512 + 300) / 512)
        try touch(mm, Self.base, pages: 7..<8)
        kernel.advanceTime(by: 4_000_000_000)
        #expect(try state(kernel).sample(pid: mm.pid).idleHugePages == 0 && counter(kernel, "ingens_idle_hugepage_samples") >= 1)
        #expect(try state(kernel).fairnessMetric(pid: mm.pid) == 1 * 1 * 100 / 1)
        expectClean(kernel)
    }

    @Test("while ranges are queued khugepaged does not sleep: 16 queued ranges are all promoted at the first wake-up, 8 a pass")
    func queueDrainsWithoutSleeping() throws {
        let kernel = kernel(memory: 128 << 20)
        let mm = try #require(kernel.createAddressSpace())
        let size: UInt64 = 32 << 20
        _ = try mm.mmap(address: Self.base, length: size, protection: .readWrite, flags: [.private, .fixed])
        for r in 0..<16 { try touch(mm, Self.base + UInt64(r) * Self.mib2, pages: 0..<512) }
        #expect(try state(kernel).queuedRanges.count == 16)
        #expect(kernel.khugepaged.settings.pagesToScan == 4096)        // 8 ranges of budget a pass
        kernel.advanceTime(by: 1_000_000)                              // the wake-up due since the first fault
        #expect(kernel.khugepaged.pagesCollapsed == 16)                // Linux's sleep would leave 8 for 10 s
        #expect(try state(kernel).queuedRanges.isEmpty)
        #expect(counter(kernel, "ingens_ranges_promoted") == 16)
        // With the queue empty it sleeps scan_sleep_millisecs again.
        #expect(kernel.khugepaged.nextWakeupTime == 10_000 * 1_000_000)
        expectClean(kernel)
    }

    @Test("the queue is served oldest first, with fairness too: the queue comes before the fairness metric")
    func queueIgnoresFairness() throws {
        let kernel = kernel(IngensPolicy(fairness: true, scanSleepMillisecs: 0))
        #expect(kernel.setKhugepagedKnob("khugepaged/pages_to_scan", to: "512") == nil)
        let a = try #require(kernel.createAddressSpace()), b = try #require(kernel.createAddressSpace())
        for mm in [a, b] { _ = try mm.mmap(address: Self.base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed]) }
        let s = try state(kernel)
        s.setWeight(1, pid: a.pid)
        s.setWeight(999, pid: b.pid)
        try touch(a, Self.base, pages: 0..<512)        // queued first
        try touch(b, Self.base, pages: 0..<512)
        #expect(kernel.runNextKernelThreadWakeup())
        #expect(a.translate(Self.base)?.level == .pmd && b.translate(Self.base)?.level == .pte)
        expectClean(kernel)
    }

    /// Which process khugepaged's scan serves first once the queue is empty. A registers first, so a
    /// scan that goes on in slot order serves A; A has two ranges of 300 pages and B four, so the
    /// sampler finds A needing 1 huge page and B 2, neither holding any. Nothing is queued (300 pages
    /// are below 90 %); util_threshold then drops to 50, so the scan finds every range eligible.
    @Test("fairness picks the process khugepaged scans: highest weight × requirement × 100 / huge pages above 1; without, slot order",
          arguments: [(false, 1, 1, "A"), (true, 1, 1, "B"), (true, 3, 1, "A"), (true, 0, 1, "B"), (true, 1, 0, "A"), (false, 0, 3, "A")])
    func fairness(on: Bool, weightA: Int, weightB: Int, first: String) throws {
        let kernel = kernel(IngensPolicy(fairness: on))
        #expect(kernel.setKhugepagedKnob("khugepaged/pages_to_scan", to: "512") == nil)
        let a = try #require(kernel.createAddressSpace()), b = try #require(kernel.createAddressSpace())
        for mm in [a, b] {
            _ = try mm.mmap(address: Self.base, length: 8 << 20, protection: .readWrite, flags: [.private, .fixed])
        }
        let s = try state(kernel)
        s.setWeight(weightA, pid: a.pid)
        s.setWeight(weightB, pid: b.pid)
        for r in 0..<2 { try touch(a, Self.base + UInt64(r) * Self.mib2, pages: 0..<300) }
        for r in 0..<4 { try touch(b, Self.base + UInt64(r) * Self.mib2, pages: 0..<300) }
        #expect(s.queuedRanges.isEmpty && kernel.khugepaged.registeredPIDs == [a.pid, b.pid])
        kernel.advanceTime(by: 1_000_000)     // khugepaged refuses A's first range (below 90 %); the sampler's pass
        #expect(kernel.khugepaged.pagesCollapsed == 0)
        #expect(s.fairnessMetric(pid: a.pid) == weightA * 1 * 100 && s.fairnessMetric(pid: b.pid) == weightB * 2 * 100)
        try sysfsWrite(kernel, "ingens/util_threshold", "50")
        kernel.advanceTime(by: 10_000_000_000)   // khugepaged at 10 s: one range of budget
        #expect(kernel.khugepaged.pagesCollapsed == 1)
        let hugeA = (0..<2).contains { a.translate(Self.base + UInt64($0) * Self.mib2)?.level == .pmd }
        let hugeB = (0..<4).contains { b.translate(Self.base + UInt64($0) * Self.mib2)?.level == .pmd }
        #expect(hugeA == (first == "A") && hugeB == (first == "B"))
        expectClean(kernel)
    }

    @Test("knobs: ingens/util_threshold and ingens/fairness through sysfs; bad values and names are refused")
    func knobs() throws {
        let kernel = kernel()
        let sysfs = kernel.transparentHugepageSysfs
        #expect(try sysfs.read("ingens/util_threshold") == "90" && sysfs.read("ingens/fairness") == "0")
        try sysfs.write("ingens/util_threshold", "50\n")
        try sysfs.write("ingens/fairness", "1")
        #expect(try sysfs.read("ingens/util_threshold") == "50" && sysfs.read("ingens/fairness") == "1")
        #expect(try sysfs.read("ingens/scan_sleep_millisecs") == "0" && sysfs.read("ingens/weight") == "1")
        try sysfs.write("ingens/scan_sleep_millisecs", "4000")
        try sysfs.write("ingens/weight", "7")
        #expect(try sysfs.read("ingens/scan_sleep_millisecs") == "4000" && sysfs.read("ingens/weight") == "7")
        #expect(throws: SysfsError.self) { try sysfs.write("ingens/weight", "1000") }
        #expect(throws: SysfsError.self) { try sysfs.write("ingens/scan_sleep_millisecs", "-5") }
        #expect(throws: SysfsError.self) { try sysfs.write("ingens/util_threshold", "101") }
        do { try sysfs.write("ingens/util_threshold", "x"); Issue.record("accepted x") } catch {
            #expect(error.errno == .EINVAL && error.message.contains("ingens/util_threshold"))
        }
        do { try sysfs.write("ingens/bogus", "1"); Issue.record("accepted a bogus knob") } catch {
            #expect(error.errno == .ENOENT && error.message.contains("ingens/util_threshold"))
        }
        // Without a kernel, for --set: the policy's knobs and the design's files.
        let p = IngensPolicy()
        #expect(TransparentHugepageSysfs.problem(writing: "70", to: "ingens/util_threshold", design: .linux6_18, policy: p) == nil)
        #expect(TransparentHugepageSysfs.problem(writing: "-1", to: "ingens/util_threshold", design: .linux6_18, policy: p)?.errno == .EINVAL)
        #expect(TransparentHugepageSysfs.problem(writing: "always", to: "enabled", design: .linux6_18, policy: p) == nil)
        #expect(TransparentHugepageSysfs.problem(writing: "70", to: "ingens/util_threshold", design: .linux6_18, policy: nil)?.errno == .ENOENT)
        // Counters after Linux's in /proc/vmstat; none on a Linux kernel.
        #expect(kernel.vmstatText().contains("\ningens_ranges_queued 0\n"))
        #expect(!Kernel(KernelConfiguration(memoryBytes: 64 << 20, design: .linux6_18)).vmstatText().contains("ingens"))
    }

    func sysfsWrite(_ kernel: Kernel, _ name: String, _ value: String) throws {
        try kernel.transparentHugepageSysfs.write(name, value)
    }
}
