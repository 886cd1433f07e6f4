import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("collapse: MADV_COLLAPSE and khugepaged turn 512 small pages into one huge page")
struct CollapseTests {
    /// A process with 2 MiB at `hugeBase` written with 4 KiB pages (THP off while writing).
    func smallPages(_ length: UInt64 = 2 * .MiB, written: UInt64? = nil) throws -> (Kernel, AddressSpace, VirtualAddress, [UInt8]) {
        let (kernel, mm) = TestMachine.process(memory: 32 << 20)
        let a = try hugeRegion(mm, length)
        let bytes = pattern(7, Int(written ?? length))
        try mm.write(a, bytes).get()
        #expect(!isHuge(mm, a))
        return (kernel, mm, a, bytes)
    }

    @Test("MADV_COLLAPSE copies every byte into a huge page; the old table becomes its deposit")
    func madviseCollapse() throws {
        let (kernel, mm, a, bytes) = try smallPages(written: 1 * .MiB)
        let tables = kernel.vmstat[.nrPageTablePages]
        let anon = kernel.vmstat[.nrAnonPages]
        #expect(anon == 256)
        try mm.madvise(a, length: 2 * .MiB, advice: .collapse)
        #expect(isHuge(mm, a))
        #expect(kernel.vmstat[.thpCollapseAlloc] == 1 && kernel.vmstat[.nrAnonTransparentHugepages] == 1)
        #expect(kernel.vmstat[.nrAnonPages] == 0, "2.6.38 counts huge pages apart")
        #expect(kernel.vmstat[.nrPageTablePages] == tables, "the PTE table is kept as the deposit")
        #expect(kernel.khugepaged.pagesCollapsed == 0, "pages_collapsed counts khugepaged only")
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        #expect(try mm.read(a + 1 * .MiB, count: Int(1 * .MiB)).get().allSatisfy { $0 == 0 })
        #expect(mm.smaps(startingAt: a)?["AnonHugePages"] == 2 * .MiB)
        expectClean(kernel)
        // The collapsed page splits like any other, with the deposited table.
        try mm.munmap(a + 4 * .KiB, length: 4 * .KiB)
        #expect(try mm.read(a + 8 * .KiB, count: 4096).get() == Array(bytes[8192..<12288]))
        expectClean(kernel)
    }

    @Test("MADV_COLLAPSE errors: EINVAL without anon_vma or under NOHUGEPAGE, EAGAIN for a pinned page, ENOMEM without memory")
    func madviseErrors() throws {
        let (kernel, mm, a, _) = try smallPages()
        // A never-written VMA has no anon_vma.
        let b = try hugeRegion(mm, 2 * .MiB, offset: 4 * .MiB)
        #expect(throws: Errno.EINVAL) { try mm.madvise(b, length: 2 * .MiB, advice: .collapse) }
        #expect(mm.access(b, .read).isSuccess)
        #expect(throws: Errno.EINVAL) { try mm.madvise(b, length: 2 * .MiB, advice: .collapse) }

        // A pin (refcount above mapcount) makes it back off; the PMD is restored and data stays.
        let pinned = try #require(mm.residentFrame(a + 40 * .KiB))
        kernel.getPage(pinned)
        #expect(throws: Errno.EAGAIN) { try mm.madvise(a, length: 2 * .MiB, advice: .collapse) }
        #expect(!isHuge(mm, a) && mm.residentFrame(a + 40 * .KiB) == pinned)
        kernel.putPage(pinned)

        // No free order-9 block: ENOMEM, counted as a failed collapse allocation.
        let held = fragmentMemory(kernel)
        #expect(throws: Errno.ENOMEM) { try mm.madvise(a, length: 2 * .MiB, advice: .collapse) }
        #expect(kernel.vmstat[.thpCollapseAllocFailed] == 1)
        release(kernel, held)
        try mm.madvise(a, length: 2 * .MiB, advice: .collapse)
        #expect(isHuge(mm, a))

        try mm.madvise(a, length: 2 * .MiB, advice: .noHugepage)
        #expect(throws: Errno.EINVAL) { try mm.madvise(a, length: 2 * .MiB, advice: .collapse) }
        expectClean(kernel)
    }

    @Test("a collapse invalidates secondary MMUs over the 2 MiB it replaces")
    func notifiers() throws {
        let (_, mm, a, _) = try smallPages()
        let notifier = RecordingNotifier()
        mm.registerMMUNotifier(notifier)
        try mm.madvise(a, length: 2 * .MiB, advice: .collapse)
        #expect(notifier.take() == [.init(kind: "start", start: a.rawValue, end: (a + 2 * .MiB).rawValue),
                                    .init(kind: "end", start: a.rawValue, end: (a + 2 * .MiB).rawValue)])
    }

    @Test("pages shared with a child after fork are copied; the child keeps the originals")
    func sharedAfterFork() throws {
        let (kernel, mm, a, bytes) = try smallPages()
        let child = try mm.fork()
        try mm.madvise(a, length: 2 * .MiB, advice: .collapse)
        #expect(isHuge(mm, a) && !isHuge(child, a))
        try mm.write(a, [0xAB]).get()
        #expect(try child.read(a, count: bytes.count).get() == bytes)
        #expect(try mm.read(a, count: 1).get() == [0xAB])
        expectClean(kernel)
    }
}

@Suite("khugepaged on simulated time")
struct KhugepagedTests {
    @Test("MADV_HUGEPAGE registers the mm; wake-ups every scan_sleep_millisecs collapse the range")
    func scansOnTheClock() throws {
        let (kernel, mm) = TestMachine.process(memory: 32 << 20, enabled: .madvise)
        let a = try hugeRegion(mm, 4 * .MiB)
        let bytes = pattern(9, Int(4 * .MiB))
        try mm.write(a, bytes).get()
        #expect(!mm.isRegisteredWithKhugepaged)
        #expect(kernel.runNextKernelThreadWakeup() == false, "with no mm, khugepaged sleeps until one registers")
        try mm.madvise(a, length: 4 * .MiB, advice: .hugepage)
        #expect(mm.isRegisteredWithKhugepaged && kernel.khugepaged.registeredPIDs == [mm.pid])
        #expect(kernel.setKhugepagedKnob("khugepaged/pages_to_scan", to: "512") == nil)
        #expect(kernel.setKhugepagedKnob("khugepaged/scan_sleep_millisecs", to: "100") == nil)

        kernel.advanceTime(by: 0)  // the registration woke it: one range per wake-up
        #expect(isHuge(mm, a) && !isHuge(mm, a + 2 * .MiB))
        #expect(kernel.khugepaged.pagesCollapsed == 1 && kernel.khugepaged.fullScans == 0)
        kernel.advanceTime(by: 99_000_000)
        #expect(!isHuge(mm, a + 2 * .MiB), "the next wake-up is 100 ms later")
        kernel.advanceTime(by: 1_000_000)
        #expect(isHuge(mm, a + 2 * .MiB) && kernel.khugepaged.pagesCollapsed == 2)
        kernel.advanceTime(by: 100_000_000)
        #expect(kernel.khugepaged.fullScans == 1)
        #expect(kernel.clock.now == 200_000_000)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        #expect(kernel.vmstat[.thpCollapseAlloc] == 2)
        expectClean(kernel)
    }

    @Test("max_ptes_none, max_ptes_shared and young PTEs decide, and each refusal is counted",
          arguments: [(0, 511, false, "none"), (511, 256, false, "shared"), (511, 511, true, "collapse")])
    func limits(maxNone: Int, maxShared: Int, collapses: Bool, what: String) throws {
        let (kernel, mm) = TestMachine.process(memory: 32 << 20, enabled: .madvise)
        let a = try hugeRegion(mm, 2 * .MiB, advise: true)
        // Small pages despite the advice: write while THP is off, 300 of 512 pages.
        var settings = kernel.hugepageSettings
        settings.enabled = .never
        kernel.hugepageSettings = settings
        try mm.write(a, pattern(1, Int(300 * 4 * .KiB))).get()
        let child = try mm.fork()
        try child.madvise(a, length: 2 * .MiB, advice: .noHugepage)
        settings.enabled = .madvise
        kernel.hugepageSettings = settings
        #expect(kernel.setKhugepagedKnob("khugepaged/max_ptes_none", to: String(maxNone)) == nil)
        #expect(kernel.setKhugepagedKnob("khugepaged/max_ptes_shared", to: String(maxShared)) == nil)
        try mm.write(a, [1]).get()  // one page of 300 the parent's own: 299 shared, 212 none
        kernel.runNextKernelThreadWakeup()
        #expect(isHuge(mm, a) == collapses)
        #expect(kernel.vmstat[.thpScanExceedNonePTE] == (what == "none" ? 1 : 0))
        #expect(kernel.vmstat[.thpScanExceedSharePTE] == (what == "shared" ? 1 : 0))
        #expect(kernel.khugepaged.fullScans == 1)
        expectClean(kernel)
    }

    @Test("khugepaged leaves a range alone when no PTE is young")
    func needsYoungPTE() throws {
        let (kernel, mm) = TestMachine.process(memory: 32 << 20, enabled: .madvise)
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a, [1]).get()
        try mm.madvise(a, length: 2 * .MiB, advice: .hugepage)
        #expect(mm.clearYoung(a, length: 2 * .MiB) == 1)
        kernel.runNextKernelThreadWakeup()
        #expect(!isHuge(mm, a))
        try mm.write(a, [2]).get()  // the access sets the accessed bit again
        kernel.runNextKernelThreadWakeup()
        #expect(isHuge(mm, a))
        expectClean(kernel)
    }

    @Test("a failed allocation makes khugepaged sleep alloc_sleep_millisecs")
    func allocSleep() throws {
        let (kernel, mm) = TestMachine.process(memory: 32 << 20, enabled: .madvise)
        let a = try hugeRegion(mm, 4 * .MiB)
        try mm.write(a, pattern(2, Int(4 * .MiB))).get()
        try mm.madvise(a, length: 4 * .MiB, advice: .hugepage)
        let held = fragmentMemory(kernel)
        kernel.runNextKernelThreadWakeup()
        // The first failure sleeps alloc_sleep_millisecs within the wake-up; the second ends it.
        #expect(kernel.vmstat[.thpCollapseAllocFailed] == 2)
        #expect(kernel.clock.now == 60_000 * 1_000_000)
        #expect(kernel.khugepaged.nextWakeupTime == 120_000 * 1_000_000)
        release(kernel, held)
        kernel.runNextKernelThreadWakeup()
        #expect(isHuge(mm, a) && isHuge(mm, a + 2 * .MiB))
        #expect(kernel.khugepaged.fullScans == 2)
        expectClean(kernel)
    }

    @Test("khugepaged knobs take Linux's ranges; bad values and read-only counters name the problem")
    func knobs() {
        let kernel = TestMachine.kernel()
        #expect(kernel.khugepaged.sysfsText("khugepaged/pages_to_scan") == "4096")
        #expect(kernel.khugepaged.sysfsText("khugepaged/max_ptes_none") == "511")
        #expect(kernel.khugepaged.sysfsText("khugepaged/max_ptes_swap") == "64")
        #expect(kernel.khugepaged.sysfsText("khugepaged/max_ptes_shared") == "256")
        #expect(kernel.khugepaged.sysfsText("khugepaged/scan_sleep_millisecs") == "10000")
        #expect(kernel.khugepaged.sysfsText("khugepaged/alloc_sleep_millisecs") == "60000")
        #expect(kernel.khugepaged.sysfsText("khugepaged/full_scans") == "0")
        #expect(kernel.setKhugepagedKnob("khugepaged/max_ptes_none", to: "512")?.contains("from 0 to 511") == true)
        #expect(kernel.setKhugepagedKnob("khugepaged/pages_to_scan", to: "0")?.contains("from 1") == true)
        #expect(kernel.setKhugepagedKnob("khugepaged/defrag", to: "2")?.contains("0 or 1") == true)
        #expect(kernel.setKhugepagedKnob("khugepaged/max_ptes_swap", to: "-1") != nil)
        #expect(kernel.setKhugepagedKnob("khugepaged/full_scans", to: "1")?.contains("read-only") == true)
        #expect(kernel.setKhugepagedKnob("khugepaged/nonsense", to: "1")?.contains("unknown") == true)
        #expect(kernel.setKhugepagedKnob("khugepaged/max_ptes_shared", to: "0") == nil)
        #expect(kernel.khugepaged.settings.maxPtesShared == 0)
    }

    @Test("enabled=always registers at the first huge fault, fork copies the registration, exit drops the slot")
    func registration() throws {
        let (kernel, mm) = TestMachine.process(memory: 32 << 20, enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a, [1]).get()
        #expect(mm.isRegisteredWithKhugepaged)
        let child = try mm.fork()
        #expect(kernel.khugepaged.registeredPIDs == [mm.pid, child.pid])
        child.exit()
        kernel.runNextKernelThreadWakeup()
        #expect(kernel.khugepaged.registeredPIDs == [mm.pid])
        expectClean(kernel)
    }
}
