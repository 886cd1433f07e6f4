import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("fork and COW of huge pages (linux-2.6.38)")
struct ForkCOWTests {
    @Test("fork shares the huge PMD write-protected in both, with the child's own deposited table")
    func forkShares() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(9, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        let head = mm.translate(a)!.frame
        let tables = kernel.vmstat[.nrPageTablePages]
        let child = try mm.fork()
        #expect(child.translate(a)?.frame == head && child.translate(a)?.level == .pmd)
        #expect(mm.translate(a)?.entry.isWritable == false && child.translate(a)?.entry.isWritable == false)
        #expect(kernel.memory.frames.mapcount(head) == 2 && kernel.memory.frames.refcount(head) == 2)
        // The child's PGD, PUD, PMD, and the deposit beside its huge PMD.
        #expect(kernel.vmstat[.nrPageTablePages] == tables + 4)
        #expect(child.smaps(startingAt: a)?["AnonHugePages"] == 2 * .MiB)
        #expect(child.smaps(startingAt: a)?["Pss"] == 1 * .MiB)
        #expect(try child.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }

    @Test("a write to a shared huge page copies it into a new huge page; after the other exits, writes reuse in place")
    func cowCopiesHuge() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(5, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        let head = mm.translate(a)!.frame
        let child = try mm.fork()
        try child.write(a + 100, [0xAB]).get()
        #expect(kernel.vmstat[.thpFaultAlloc] == 2 && kernel.vmstat[.thpSplitPage] == 0)
        let copy = try #require(child.translate(a)).frame
        #expect(copy != head && isHuge(child, a) && isHuge(mm, a))
        #expect(try mm.read(a + 100, count: 1).get() == [bytes[100]])
        var expected = bytes; expected[100] = 0xAB
        #expect(try child.read(a, count: bytes.count).get() == expected)
        #expect(kernel.memory.frames.mapcount(head) == 1 && kernel.memory.frames.refcount(head) == 1)
        expectClean(kernel)
        // The parent's PMD is still write-protected; mapcount 1 now, so its write reuses the page.
        try mm.write(a, [1]).get()
        #expect(mm.translate(a)?.frame == head && kernel.vmstat[.thpFaultAlloc] == 2)
        expectClean(kernel)
    }

    @Test("COW with no free huge page copies into 512 small pages (do_huge_pmd_wp_page_fallback)")
    func cowFallback() throws {
        let (kernel, mm) = TestMachine.process(memory: 16 * .MiB, enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(1, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        let child = try mm.fork()
        let held = fragmentMemory(kernel)
        #expect(kernel.memory.freePages >= 512)
        try child.write(a + 4 * .KiB, [0x55]).get()
        #expect(kernel.vmstat[.thpFaultFallback] == 1)
        #expect(!isHuge(child, a) && isHuge(mm, a))
        #expect(child.smaps(startingAt: a)?["AnonHugePages"] == 0 && child.smaps(startingAt: a)?["Rss"] == 2 * .MiB)
        var expected = bytes; expected[Int(4 * .KiB)] = 0x55
        #expect(try child.read(a, count: bytes.count).get() == expected)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
        child.exit()
        mm.exit()
        release(kernel, held)
    }

    @Test("fork shares the huge zero page too")
    func forkHugeZero() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always, useZeroPage: true)
        let a = try hugeRegion(mm, 2 * .MiB)
        _ = try mm.read(a, count: 1).get()
        let child = try mm.fork()
        #expect(child.translate(a)?.frame == kernel.hugeZeroPageFrame)
        try child.write(a, [3]).get()
        #expect(isHuge(child, a) && child.translate(a)?.frame != kernel.hugeZeroPageFrame)
        #expect(mm.translate(a)?.frame == kernel.hugeZeroPageFrame)
        expectClean(kernel)
    }
}
