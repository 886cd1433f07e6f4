import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("Huge faults (linux-2.6.38): settings, alignment, fallback, huge zero page")
struct HugeFaultTests {
    @Test("a write in an aligned 2 MiB range maps one huge page with a deposited table, and counts it")
    func hugeWriteFault() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let a = try hugeRegion(mm, 4 * .MiB)
        let free = kernel.memory.freePages
        let tables = kernel.vmstat[.nrPageTablePages]
        #expect(throws: Never.self) { try mm.write(a + 12345, [7]).get() }
        let t = try #require(mm.translate(a + 12345))
        #expect(t.level == .pmd && t.entry.isHuge && t.entry.isWritable && t.entry.isDirty)
        #expect(t.frame == mm.translate(a)!.frame + 3)
        #expect(kernel.memory.frames.order(mm.translate(a)!.frame) == PageGeometry.pmdOrder)
        #expect(kernel.vmstat[.thpFaultAlloc] == 1)
        #expect(kernel.vmstat[.nrAnonTransparentHugepages] == 1)
        // PUD and PMD tables for the region, plus the deposited PTE table — but no PTE table in use.
        #expect(kernel.vmstat[.nrPageTablePages] == tables + 3)
        #expect(kernel.memory.freePages == free - 512 - 3)
        #expect(kernel.meminfo()["AnonHugePages"] == 2 * .MiB)
        #expect(kernel.meminfo()["AnonPages"] == 2 * .MiB)
        let smaps = try #require(mm.smaps(startingAt: a))
        #expect(smaps["AnonHugePages"] == 2 * .MiB && smaps["Rss"] == 2 * .MiB && smaps["Anonymous"] == 2 * .MiB)
        #expect(smaps.thpEligible == 1)
        #expect(try mm.read(a + 12344, count: 3).get() == [0, 7, 0])
        expectClean(kernel)
    }

    struct Case: Sendable, CustomStringConvertible {
        var enabled: TransparentHugepageSettings.Enabled
        var advice: Advice?
        var huge: Bool
        var description: String { "enabled=\(enabled) advice=\(advice.map(\.rawValue) ?? "none") → \(huge ? "huge" : "4K")" }
    }

    @Test("enabled and MADV_HUGEPAGE/NOHUGEPAGE decide, as transhuge.rst says", arguments: [
        Case(enabled: .always, advice: nil, huge: true), Case(enabled: .always, advice: .hugepage, huge: true),
        Case(enabled: .always, advice: .noHugepage, huge: false), Case(enabled: .madvise, advice: nil, huge: false),
        Case(enabled: .madvise, advice: .hugepage, huge: true), Case(enabled: .madvise, advice: .noHugepage, huge: false),
        Case(enabled: .never, advice: nil, huge: false), Case(enabled: .never, advice: .hugepage, huge: false),
    ])
    func settings(_ c: Case) throws {
        let (kernel, mm) = TestMachine.process(enabled: c.enabled)
        let a = try hugeRegion(mm, 2 * .MiB)
        if let advice = c.advice { try mm.madvise(a, length: 2 * .MiB, advice: advice) }
        #expect(mm.smaps(startingAt: a)?.thpEligible == (c.huge ? 1 : 0))
        _ = mm.write(a, [1])
        #expect(isHuge(mm, a) == c.huge)
        #expect(kernel.vmstat[.thpFaultAlloc] == (c.huge ? 1 : 0))
        #expect(kernel.vmstat[.thpFaultFallback] == 0)
        expectClean(kernel)
    }

    @Test("a VMA that does not cover the aligned 2 MiB range gets 4 KiB pages, without a fallback count")
    func alignment() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB, offset: 4 * .KiB)
        _ = mm.write(a, [1])
        _ = mm.write(a + 2 * .MiB - 1, [1])
        #expect(!isHuge(mm, a) && !isHuge(mm, a + 2 * .MiB - 1))
        #expect(mm.smaps(startingAt: a)?.thpEligible == 0)
        #expect(kernel.vmstat[.thpFaultAlloc] == 0 && kernel.vmstat[.thpFaultFallback] == 0)
        // A 3 MiB VMA from 1 MiB: only [2 MiB, 4 MiB) can be huge.
        let b = try hugeRegion(mm, 3 * .MiB, offset: 9 * .MiB)
        _ = mm.write(b, [1])
        _ = mm.write(b + 1 * .MiB, [1])
        #expect(!isHuge(mm, b) && isHuge(mm, b + 1 * .MiB))
        expectClean(kernel)
    }

    @Test("no free order-9 block: the fault falls back to 4 KiB and counts thp_fault_fallback")
    func fallback() throws {
        let (kernel, mm) = TestMachine.process(memory: 8 * .MiB, enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        let held = fragmentMemory(kernel)
        #expect(kernel.memory.buddy.freeBlocksPerOrder[9...].allSatisfy { $0 == 0 })
        #expect(throws: Never.self) { try mm.write(a, [1, 2, 3]).get() }
        #expect(!isHuge(mm, a))
        #expect(kernel.vmstat[.thpFaultFallback] == 1 && kernel.vmstat[.thpFaultAlloc] == 0)
        #expect(try mm.read(a, count: 3).get() == [1, 2, 3])
        expectClean(kernel)
        mm.exit()
        release(kernel, held)
    }

    @Test("use_zero_page: a read maps the huge zero page (no Rss, no AnonHugePages); a write then allocates a huge page")
    func hugeZeroPage() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always, useZeroPage: true)
        let a = try hugeRegion(mm, 4 * .MiB)
        let free = kernel.memory.freePages
        #expect(try mm.read(a + 5000, count: 8).get() == [UInt8](repeating: 0, count: 8))
        #expect(kernel.vmstat[.thpZeroPageAlloc] == 1)
        let zero = try #require(kernel.hugeZeroPageFrame)
        #expect(mm.translate(a)?.frame == zero && mm.translate(a)?.level == .pmd && mm.translate(a)?.entry.isWritable == false)
        let smaps = try #require(mm.smaps(startingAt: a))
        #expect(smaps["Rss"] == 0 && smaps["AnonHugePages"] == 0)
        #expect(kernel.vmstat[.nrAnonTransparentHugepages] == 0)
        // The second read (another PMD) shares it without allocating again.
        _ = try mm.read(a + 2 * .MiB, count: 1).get()
        #expect(kernel.vmstat[.thpZeroPageAlloc] == 1)
        #expect(kernel.memory.freePages == free - 512 - 3 - 1)  // zero page, PUD+PMD tables, two deposits
        expectClean(kernel)
        // A write replaces the huge zero page with a zeroed huge page.
        #expect(throws: Never.self) { try mm.write(a + 5000, [9]).get() }
        #expect(isHuge(mm, a) && mm.translate(a)?.frame != zero)
        #expect(kernel.vmstat[.thpFaultAlloc] == 1)
        #expect(try mm.read(a + 4999, count: 3).get() == [0, 9, 0])
        #expect(mm.smaps(startingAt: a)?["AnonHugePages"] == 2 * .MiB)
        expectClean(kernel)
        // The zero page stays while mapped; once unmapped, pressure may free it.
        #expect(!kernel.releaseUnusedHugeZeroPage())
        try mm.munmap(a + 2 * .MiB, length: 2 * .MiB)
        #expect(kernel.releaseUnusedHugeZeroPage())
        #expect(kernel.hugeZeroPageFrame == nil)
        expectClean(kernel)
    }

    @Test("use_zero_page=0 (2.6.38): a read fault allocates a huge page")
    func readAllocates() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always, useZeroPage: false)
        let a = try hugeRegion(mm, 2 * .MiB)
        _ = try mm.read(a, count: 1).get()
        #expect(isHuge(mm, a) && kernel.vmstat[.thpFaultAlloc] == 1 && kernel.vmstat[.thpZeroPageAlloc] == 0)
        expectClean(kernel)
    }

    @Test("2.6.38 counts huge pages apart from nr_anon_pages; meminfo AnonPages adds them back")
    func anonPagesAccounting() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        _ = mm.write(a, [1])
        #expect(kernel.vmstat[.nrAnonPages] == 0 && kernel.vmstat[.nrAnonTransparentHugepages] == 1)
        #expect(kernel.meminfo()["AnonPages"] == 2 * .MiB)
        try mm.munmap(a, length: 4 * .KiB)
        #expect(kernel.vmstat[.nrAnonPages] == 511 && kernel.vmstat[.nrAnonTransparentHugepages] == 0)
        expectClean(kernel)
    }

    @Test("THP settings read and write with sysfs spellings, and bad values name the problem")
    func sysfsSettings() {
        var s = KernelDesign.linux2_6_38.defaultSettings
        #expect(s.sysfsText("enabled") == "[always] madvise never")
        #expect(s.set("enabled", to: "[madvise]") == nil && s.enabled == .madvise)
        #expect(s.set("defrag", to: "defer+madvise") == nil && s.sysfsText("defrag") == "always defer [defer+madvise] madvise never")
        #expect(s.set("use_zero_page", to: "1") == nil && s.sysfsText("use_zero_page") == "1")
        #expect(s.sysfsText("hpage_pmd_size") == "2097152")
        #expect(s.set("enabled", to: "sometimes")?.contains("enabled must be one of always, madvise, never") == true)
        #expect(s.set("use_zero_page", to: "2") != nil)
        #expect(s.set("khugepaged/defrag", to: "1")?.contains("unknown") == true)
    }
}
