import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("split_huge_page (linux-2.6.38) and the paths that keep huge PMDs whole")
struct SplitTests {
    /// A process with one written huge page at `hugeBase`, in data mode, filled with a pattern.
    func writtenHugePage() throws -> (Kernel, AddressSpace, VirtualAddress, [UInt8]) {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(3, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        #expect(isHuge(mm, a))
        return (kernel, mm, a, bytes)
    }

    @Test("partial munmap splits the huge PMD and keeps the other pages' data, frames and bits")
    func partialMunmap() throws {
        let (kernel, mm, a, bytes) = try writtenHugePage()
        let head = mm.translate(a)!.frame
        try mm.munmap(a + 64 * .KiB, length: 4 * .KiB)
        #expect(kernel.vmstat[.thpSplitPage] == 1 && kernel.vmstat[.thpSplitPMD] == 1)
        #expect(kernel.vmstat[.nrAnonTransparentHugepages] == 0)
        let t = try #require(mm.translate(a + 68 * .KiB))
        #expect(t.level == .pte && t.frame == head + 17 && t.entry.isWritable && t.entry.isDirty && t.entry.isAccessed)
        #expect(!kernel.memory.frames.flags(head).contains(.head) && kernel.memory.frames.order(head) == .base)
        #expect(try mm.read(a, count: Int(64 * .KiB)).get() == Array(bytes[0..<Int(64 * .KiB)]))
        #expect(try mm.read(a + 68 * .KiB, count: Int(2 * .MiB - 68 * .KiB)).get() == Array(bytes[Int(68 * .KiB)...]))
        #expect(mm.smaps(startingAt: a)?["AnonHugePages"] == 0)
        #expect(mm.smaps(startingAt: a)?["Rss"] == 64 * .KiB)
        expectClean(kernel)
    }

    @Test("munmap of a whole huge page frees it without splitting")
    func wholeMunmap() throws {
        let (kernel, mm, a, _) = try writtenHugePage()
        let free = kernel.memory.freePages
        try mm.munmap(a, length: 2 * .MiB)
        #expect(kernel.vmstat[.thpSplitPage] == 0 && kernel.vmstat[.thpSplitPMD] == 0)
        // The page, its deposited table, and the now unused PMD and PUD tables.
        #expect(kernel.memory.freePages == free + 512 + 3)
        expectClean(kernel)
    }

    @Test("mprotect of a whole huge page keeps it huge; a partial, unaligned one splits it")
    func mprotect() throws {
        let (kernel, mm, a, bytes) = try writtenHugePage()
        try mm.mprotect(a, length: 2 * .MiB, protection: .read)
        #expect(isHuge(mm, a) && mm.translate(a)?.entry.isWritable == false)
        #expect(mm.write(a, [1]).isFailure)
        try mm.mprotect(a, length: 2 * .MiB, protection: .readWrite)
        #expect(isHuge(mm, a) && mm.translate(a)?.entry.isWritable == true)  // exclusive: writable at once
        try mm.mprotect(a, length: 2 * .MiB, protection: .none)
        #expect(mm.residentFrame(a) != nil && mm.translate(a) == nil)
        try mm.mprotect(a, length: 2 * .MiB, protection: .readWrite)
        #expect(kernel.vmstat[.thpSplitPage] == 0)
        try mm.mprotect(a + 1 * .MiB, length: 4 * .KiB, protection: .read)
        #expect(kernel.vmstat[.thpSplitPage] == 1 && !isHuge(mm, a))
        #expect(mm.translate(a + 1 * .MiB)?.entry.isWritable == false && mm.translate(a)?.entry.isWritable == true)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }

    @Test("MADV_DONTNEED of part of a huge page splits it; of all of it frees it whole")
    func dontNeed() throws {
        let (kernel, mm, a, bytes) = try writtenHugePage()
        try mm.madvise(a + 8 * .KiB, length: 8 * .KiB, advice: .dontNeed)
        #expect(kernel.vmstat[.thpSplitPage] == 1)
        var expected = bytes
        expected.replaceSubrange(Int(8 * .KiB)..<Int(16 * .KiB), with: repeatElement(0, count: Int(8 * .KiB)))
        #expect(try mm.read(a, count: bytes.count).get() == expected)
        let b = try hugeRegion(mm, 2 * .MiB, offset: 4 * .MiB)
        _ = mm.write(b, [1])
        try mm.madvise(b, length: 2 * .MiB, advice: .dontNeed)
        #expect(kernel.vmstat[.thpSplitPage] == 1 && mm.residentFrame(b) == nil)
        expectClean(kernel)
    }

    @Test("mremap moves an aligned huge PMD whole with its table; an unaligned move splits it")
    func mremap() throws {
        let (kernel, mm, a, bytes) = try writtenHugePage()
        let head = mm.translate(a)!.frame
        let moved = try mm.mremap(a, oldSize: 2 * .MiB, newSize: 2 * .MiB, flags: [.mayMove, .fixed],
                                  newAddress: hugeBase + 8 * .MiB)
        #expect(isHuge(mm, moved) && mm.translate(moved)?.frame == head && mm.residentFrame(a) == nil)
        #expect(kernel.vmstat[.thpSplitPage] == 0)
        #expect(try mm.read(moved, count: bytes.count).get() == bytes)
        expectClean(kernel)
        let again = try mm.mremap(moved, oldSize: 2 * .MiB, newSize: 2 * .MiB, flags: [.mayMove, .fixed],
                                  newAddress: hugeBase + 16 * .MiB + 64 * .KiB)
        #expect(kernel.vmstat[.thpSplitPage] == 1 && !isHuge(mm, again))
        #expect(try mm.read(again, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }

    @Test("splitting a huge page mapped by parent and child splits both PMDs; each subpage is mapped twice")
    func splitShared() throws {
        let (kernel, mm, a, bytes) = try writtenHugePage()
        let head = mm.translate(a)!.frame
        let child = try mm.fork()
        #expect(isHuge(child, a))
        child.splitHugePages(a, length: 2 * .MiB)
        #expect(kernel.vmstat[.thpSplitPage] == 1 && kernel.vmstat[.thpSplitPMD] == 2)
        #expect(!isHuge(mm, a) && !isHuge(child, a))
        let frames = kernel.memory.frames
        #expect(frames.mapcount(head + 100) == 2 && frames.refcount(head + 100) == 2)
        #expect(try child.read(a, count: bytes.count).get() == bytes)
        _ = child.write(a, [0xEE])  // COW of one 4 KiB page now
        #expect(try mm.read(a, count: 1).get() == [bytes[0]])
        expectClean(kernel)
    }

    @Test("a VMA split inside a huge page (MADV_NOHUGEPAGE on half) splits the PMD first")
    func vmaSplit() throws {
        let (kernel, mm, a, bytes) = try writtenHugePage()
        try mm.madvise(a + 1 * .MiB, length: 1 * .MiB, advice: .noHugepage)
        #expect(kernel.vmstat[.thpSplitPage] == 1 && mm.vmas.count == 2)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }

    @Test("a huge zero PMD splits into 512 zero-page PTEs and reads zeros")
    func splitHugeZero() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always, useZeroPage: true)
        let a = try hugeRegion(mm, 2 * .MiB)
        _ = try mm.read(a, count: 1).get()
        try mm.munmap(a + 1 * .MiB, length: 4 * .KiB)
        #expect(kernel.vmstat[.thpSplitPMD] == 1 && kernel.vmstat[.thpSplitPage] == 0)
        #expect(mm.translate(a + 8 * .KiB)?.frame == kernel.zeroPage)
        #expect(try mm.read(a, count: Int(1 * .MiB)).get().allSatisfy { $0 == 0 })
        expectClean(kernel)
    }
}

extension Result {
    var isFailure: Bool { if case .failure = self { true } else { false } }
}
