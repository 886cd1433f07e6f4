import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// Today's design (`linux-6.18`): folios mapped by PMDs and PTEs at once, PMD splits apart from folio
/// splits, the deferred-split queue, FOLL_PIN and fork, COW of 4 KiB in a THP, aligned large mmaps.
@Suite("linux-6.18: PTE-mapped THPs, deferred split, pins")
struct TodayDesignTests {
    func process(memory: UInt64 = 32 << 20, mode: PhysicalMemory.Mode = .data) -> (Kernel, AddressSpace) {
        let kernel = TestMachine.kernel(memory: memory, mode: mode, design: .linux6_18, enabled: .always)
        return (kernel, kernel.createAddressSpace()!)
    }

    @Test("a partial munmap splits only the PMD: the folio stays order 9, mapped by PTEs, and is queued once")
    func partialMunmapKeepsFolio() throws {
        let (kernel, mm) = process()
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(1, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        let head = mm.translate(a)!.frame
        #expect(isHuge(mm, a) && kernel.vmstat[.nrAnonTransparentHugepages] == 1)
        try mm.munmap(a + 1 * .MiB, length: 4 * .KiB)
        #expect(!isHuge(mm, a) && mm.translate(a + 8 * .KiB)!.frame == head + 2)
        let frames = kernel.memory.frames
        #expect(frames.order(head) == PageGeometry.pmdOrder && frames.refcount(head) == 511)
        #expect(kernel.vmstat[.thpSplitPMD] == 1 && kernel.vmstat[.thpSplitPage] == 0)
        #expect(kernel.vmstat[.thpDeferredSplitPage] == 1 && kernel.deferredSplitQueue.count == 1)
        #expect(kernel.vmstat[.nrAnonTransparentHugepages] == 0 && kernel.vmstat[.nrAnonPages] == 511)
        #expect(mm.smaps(startingAt: a)?.fields["AnonHugePages"] == 0)
        try mm.munmap(a, length: 4 * .KiB)
        #expect(kernel.vmstat[.thpDeferredSplitPage] == 1, "counted once per folio")
        #expect(try mm.read(a + 4 * .KiB, count: Int(1 * .MiB - 4 * .KiB)).get() == Array(bytes[4096..<(1 << 20)]))
        expectClean(kernel)
    }

    @Test("the deferred-split shrinker splits a partially mapped folio and frees its unmapped pages")
    func deferredSplitFreesUnmappedPages() throws {
        let (kernel, mm) = process()
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(2, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        try mm.munmap(a + 1 * .MiB, length: 1 * .MiB)
        let free = kernel.memory.freePages
        #expect(kernel.deferredSplitScan() == 256)
        #expect(kernel.memory.freePages == free + 256)
        #expect(kernel.vmstat[.thpSplitPage] == 1 && kernel.deferredSplitQueue.count == 0)
        #expect(try mm.read(a, count: Int(1 * .MiB)).get() == Array(bytes[0..<(1 << 20)]))
        expectClean(kernel)
    }

    @Test("memory pressure runs the shrinker: reclaim frees the unmapped half of a THP before swapping anything")
    func reclaimRunsTheShrinker() throws {
        let (kernel, mm) = process()
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a, pattern(3, Int(2 * .MiB))).get()
        try mm.madvise(a, length: 1 * .MiB, advice: .dontNeed)
        #expect(kernel.reclaim(pages: 100) >= 256)
        #expect(kernel.vmstat[.thpSplitPage] == 1 && kernel.vmstat[.pswpout] == 0)
        expectClean(kernel)
    }

    @Test("a pinned THP cannot be split: split_huge_page fails with the pin and succeeds after unpin")
    func splitFailsWhilePinned() throws {
        let (kernel, mm) = process()
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(4, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        let pins = try mm.pinUserPages(a + 40 * .KiB, count: 2, write: true).get()
        let head = mm.translate(a)!.frame
        #expect(kernel.memory.frames.folioField(head, .pincount) == 2)
        #expect(mm.splitHugePages(a, length: 2 * .MiB) == 0)
        #expect(kernel.vmstat[.thpSplitPageFailed] == 1 && kernel.vmstat[.thpSplitPage] == 0)
        // The failed split still split the PMD (Linux: unmap_folio() splits PMDs before the refcount check).
        #expect(!isHuge(mm, a) && kernel.vmstat[.thpSplitPMD] == 1)
        kernel.unpinUserPages(pins)
        #expect(mm.splitHugePages(a, length: 2 * .MiB) == 1)
        #expect(kernel.memory.frames.order(head) == .base && kernel.vmstat[.thpSplitPage] == 1)
        #expect(try mm.read(a, count: Int(2 * .MiB)).get() == bytes)
        expectClean(kernel)
    }

    @Test("COW since 5.8: a write to a THP shared after fork splits the writer's PMD and copies 4 KiB")
    func cowCopiesOnePage() throws {
        let (kernel, mm) = process()
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(5, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        let child = try mm.fork()
        let allocated = kernel.vmstat[.pgallocNormal]
        try child.write(a + 8 * .KiB, [0xEE]).get()
        #expect(kernel.vmstat[.pgallocNormal] == allocated + 1, "one 4 KiB page copied")
        #expect(kernel.vmstat[.thpFaultAlloc] == 1 && kernel.vmstat[.thpSplitPMD] == 1)
        #expect(isHuge(mm, a) && !isHuge(child, a))
        #expect(mm.translate(a + 12 * .KiB)!.frame == child.translate(a + 12 * .KiB)!.frame)
        #expect(try mm.read(a, count: Int(2 * .MiB)).get() == bytes)
        var expected = bytes
        expected[8192] = 0xEE
        #expect(try child.read(a, count: Int(2 * .MiB)).get() == expected)
        child.exit()
        // The parent's folio is mapped by its PMD alone again: its write reuses it in place.
        try mm.write(a, [1]).get()
        #expect(isHuge(mm, a) && kernel.vmstat[.thpSplitPMD] == 1)
        expectClean(kernel)
    }

    @Test("fork vs O_DIRECT (today): a pinned page is copied for the child at fork, so the DMA reaches the parent")
    func forkVersusDirectIOFixed() throws {
        let (kernel, mm) = process()
        let a = try anon(mm, 4 * .KiB)
        try mm.write(a, [UInt8](repeating: 0, count: 4096)).get()
        let device = DirectIODevice(kernel: kernel)
        let request = try device.submit(.read, in: mm, buffer: a, length: 512, cpu: 0).get()
        let child = try mm.fork()
        try mm.write(a + 2048, [1]).get()
        device.completeRead(request, data: [UInt8](repeating: 0xAA, count: 512))
        // The same steps as the 2010 test (GUPTests.forkVersusDirectIO), the opposite outcome.
        #expect(try mm.read(a, count: 512).get().allSatisfy { $0 == 0xAA })
        #expect(try child.read(a, count: 512).get().allSatisfy { $0 == 0 })
        expectClean(kernel)
    }

    @Test("fork of a pinned THP splits the parent's PMD and copies every page of it for the child")
    func forkPinnedTHP() throws {
        let (kernel, mm) = process()
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(6, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        let pins = try mm.pinUserPagesFast(a, count: 1, write: true, cpu: 0).get()
        let child = try mm.fork()
        #expect(kernel.vmstat[.thpSplitPMD] == 1)
        #expect(mm.translate(a + 4 * .KiB)!.frame != child.translate(a + 4 * .KiB)!.frame)
        #expect(try child.read(a, count: Int(2 * .MiB)).get() == bytes)
        kernel.unpinUserPages(pins)
        expectClean(kernel)
    }

    @Test("an underused THP (more zero pages than max_ptes_none) is split by the shrinker, its zero pages freed")
    func underusedSplit() throws {
        let (kernel, mm) = process()
        #expect(kernel.setKhugepagedKnob("khugepaged/max_ptes_none", to: "256") == nil)
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a, pattern(7, Int(64 * .KiB))).get()  // 16 pages written, 496 zero
        let free = kernel.memory.freePages
        kernel.deferredSplitScan()
        #expect(kernel.vmstat[.thpUnderusedSplitPage] == 1 && kernel.vmstat[.thpSplitPage] == 1)
        #expect(kernel.memory.freePages == free + 496)
        #expect(mm.smaps(startingAt: a)?.fields["Rss"] == 64 * .KiB)
        #expect(try mm.read(a, count: Int(64 * .KiB)).get() == pattern(7, Int(64 * .KiB)))
        #expect(try mm.read(a + 1 * .MiB, count: 4096).get().allSatisfy { $0 == 0 })
        expectClean(kernel)
    }

    @Test("anonymous mmaps whose length is a multiple of 2 MiB start 2 MiB-aligned; other lengths need not")
    func alignedMmap() throws {
        let (_, mm) = process()
        for _ in 0..<3 {
            _ = try mm.mmap(length: 12 * .KiB, protection: .readWrite, flags: .private)
            let big = try mm.mmap(length: 4 * .MiB, protection: .readWrite, flags: .private)
            #expect(big.isAligned(2 * .MiB))
        }
        let old = TestMachine.kernel(memory: 32 << 20).createAddressSpace()!
        _ = try old.mmap(length: 12 * .KiB, protection: .readWrite, flags: .private)
        #expect(!(try old.mmap(length: 4 * .MiB, protection: .readWrite, flags: .private)).isAligned(2 * .MiB),
                "the 2010 design places it below the last mapping")
    }

    func mthp(_ kernel: Kernel, _ settings: [String: String]) {
        var s = kernel.hugepageSettings
        for (name, value) in settings { #expect(s.set(name, to: value) == nil) }
        kernel.hugepageSettings = s
    }

    @Test("mTHP: a write fault maps a 64 KiB folio by 16 PTEs and counts it per size")
    func mthpFault() throws {
        let (kernel, mm) = process()
        mthp(kernel, ["enabled": "never", "hugepages-64kB/enabled": "always"])
        #expect(kernel.hugepageSettings.sysfsText("hugepages-64kB/enabled") == "[always] inherit madvise never")
        #expect(kernel.hugepageSettings.sysfsText("hugepages-2048kB/enabled") == "always [inherit] madvise never")
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a + 20 * .KiB, [7]).get()
        let head = mm.translate(a)!.frame
        #expect(kernel.memory.frames.order(head).rawValue == 4)
        #expect((0..<16).allSatisfy { mm.translate(a + UInt64($0) * 4096)?.frame == head + $0 })
        #expect(mm.translate(a + 64 * .KiB) == nil)
        #expect(kernel.mthpStatValue("hugepages-64kB/stats/anon_fault_alloc") == 1)
        #expect(kernel.mthpStatValue("hugepages-64kB/stats/nr_anon") == 1)
        #expect(kernel.vmstat[.nrAnonPages] == 16 && kernel.vmstat[.thpFaultAlloc] == 0)
        // A partial munmap queues it; the shrinker splits it and frees the unmapped pages.
        try mm.munmap(a + 32 * .KiB, length: 8 * .KiB)
        #expect(kernel.mthpStatValue("hugepages-64kB/stats/split_deferred") == 1)
        #expect(kernel.mthpStatValue("hugepages-64kB/stats/nr_anon_partially_mapped") == 1)
        #expect(kernel.vmstat[.thpDeferredSplitPage] == 0, "thp_deferred_split_page counts PMD-sized folios only")
        expectClean(kernel)
        let free = kernel.memory.freePages
        kernel.deferredSplitScan()
        #expect(kernel.memory.freePages == free + 2)
        #expect(kernel.mthpStatValue("hugepages-64kB/stats/split") == 1 && kernel.vmstat[.thpSplitPage] == 0)
        #expect(kernel.mthpStatValue("hugepages-64kB/stats/nr_anon") == 0)
        #expect(try mm.read(a + 20 * .KiB, count: 1).get() == [7])
        expectClean(kernel)
    }

    @Test("mTHP: an order whose allocation fails counts anon_fault_fallback and the next allowed size is used")
    func mthpFallback() throws {
        let (kernel, mm) = process(memory: 16 << 20)
        mthp(kernel, ["enabled": "never", "hugepages-1024kB/enabled": "always", "hugepages-64kB/enabled": "always"])
        let a = try hugeRegion(mm, 2 * .MiB)
        let held = fragmentMemory(kernel)  // no free block above 256 KiB
        try mm.write(a, [1]).get()
        #expect(kernel.mthpStatValue("hugepages-1024kB/stats/anon_fault_fallback") == 1)
        #expect(kernel.mthpStatValue("hugepages-64kB/stats/anon_fault_alloc") == 1)
        #expect(kernel.memory.frames.order(mm.translate(a)!.frame).rawValue == 4)
        release(kernel, held)
        expectClean(kernel)
    }

    @Test("mTHP: fork shares the folio's pages; a write copies 4 KiB; everything stays consistent")
    func mthpForkCOW() throws {
        let (kernel, mm) = process()
        mthp(kernel, ["enabled": "never", "hugepages-32kB/enabled": "always"])
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(9, Int(32 * .KiB))
        try mm.write(a, bytes).get()
        let child = try mm.fork()
        try child.write(a + 4 * .KiB, [0xAB]).get()
        #expect(try mm.read(a, count: Int(32 * .KiB)).get() == bytes)
        #expect(try child.read(a + 4 * .KiB, count: 1).get() == [0xAB])
        expectClean(kernel)
        child.exit()
        try mm.write(a + 8 * .KiB, [0xCD]).get()
        #expect(mm.translate(a + 8 * .KiB)!.frame == mm.translate(a)!.frame + 2, "the parent reuses its page in place")
        expectClean(kernel)
    }

    @Test("the 2010 design has no mTHP: its faults map 4 KiB pages whatever the per-size knobs say")
    func noMTHPIn2010() throws {
        let kernel = TestMachine.kernel(memory: 32 << 20, enabled: .never)
        let mm = kernel.createAddressSpace()!
        mthp(kernel, ["hugepages-64kB/enabled": "always"])
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a, [1]).get()
        #expect(kernel.memory.frames.order(mm.translate(a)!.frame) == .base)
        #expect(kernel.mthpStatValue("hugepages-64kB/stats/anon_fault_alloc") == 0)
    }

    @Test("per-size knobs: names, values and errors as in sysfs")
    func mthpKnobs() {
        var s = KernelDesign.linux6_18.defaultSettings
        #expect(s.set("hugepages-16kB/enabled", to: "madvise") == nil && s.mode(order: 2) == .madvise)
        #expect(s.set("hugepages-2048kB/enabled", to: "never") == nil && s.mode(order: 9) == .never)
        #expect(s.set("hugepages-64kB/enabled", to: "sometimes")?.contains("always, inherit, madvise, never") == true)
        #expect(s.set("hugepages-8kB/enabled", to: "always")?.contains("unknown") == true)
        #expect(s.set("hugepages-4096kB/enabled", to: "always")?.contains("unknown") == true)
        #expect(TransparentHugepageSettings(packed: s.packed) == s)
    }
}
