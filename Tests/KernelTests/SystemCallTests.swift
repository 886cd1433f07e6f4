import Testing
import VMCore
import Kernel
import TestSupport

@Suite("System calls: mmap, munmap, mprotect, mremap, madvise, brk")
struct SystemCallTests {
    @Test("mmap rounds lengths up, places top-down, and honours free hints")
    func mmapPlacement() throws {
        let (_, mm) = TestMachine.process()
        let a = try anon(mm, 100)
        #expect(mm.smaps(startingAt: a)?["Size"] == 4096)
        let b = try anon(mm, 4096)
        #expect(b < a)
        let hint = VirtualAddress(0x1000_0000)
        #expect(try mm.mmap(address: hint, length: 4096, protection: .readWrite, flags: .private) == hint)
        // A taken hint is ignored, not an error.
        #expect(try mm.mmap(address: hint, length: 4096, protection: .readWrite, flags: .private) != hint)
    }

    struct MmapCase: Sendable, CustomTestStringConvertible {
        var length: UInt64, flags: MapFlags, at: UInt64?, errno: Errno
        var testDescription: String { "length \(length) flags \(flags.rawValue) at \(at.map { String($0, radix: 16) } ?? "-") → \(errno.name)" }
    }

    @Test("mmap errors", arguments: [
        MmapCase(length: 0, flags: .private, at: nil, errno: .EINVAL),
        MmapCase(length: 4096, flags: [.private, .shared], at: nil, errno: .EINVAL),
        MmapCase(length: 4096, flags: [], at: nil, errno: .EINVAL),
        MmapCase(length: 4096, flags: [.private, .fixed], at: 0x10001, errno: .EINVAL),
        MmapCase(length: 4096, flags: [.private, .fixed], at: 0x1000, errno: .EPERM),
        MmapCase(length: UInt64.max - 100, flags: .private, at: nil, errno: .ENOMEM),
        MmapCase(length: 1 << 48, flags: .private, at: nil, errno: .ENOMEM),
    ])
    func mmapErrors(c: MmapCase) {
        let (_, mm) = TestMachine.process()
        #expect(throws: c.errno) { try mm.mmap(address: c.at.map { VirtualAddress($0) }, length: c.length, protection: .readWrite, flags: c.flags) }
    }

    @Test("overcommit refuses a private writable mapping larger than memory, unless noreserve")
    func overcommit() throws {
        let (_, mm) = TestMachine.process()
        #expect(throws: Errno.ENOMEM) { try mm.mmap(length: 1 << 30, protection: .readWrite, flags: .private) }
        _ = try mm.mmap(length: 1 << 30, protection: .readWrite, flags: [.private, .noReserve])
        _ = try mm.mmap(length: 1 << 30, protection: .read, flags: .private)
    }

    @Test("MAP_FIXED replaces, MAP_FIXED_NOREPLACE refuses with EEXIST")
    func fixedMappings() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 4 * 4096)
        _ = mm.write(a + 4096, [5])
        #expect(throws: Errno.EEXIST) { try mm.mmap(address: a + 4096, length: 4096, protection: .read, flags: [.private, .fixedNoReplace]) }
        let b = try mm.mmap(address: a + 4096, length: 4096, protection: .read, flags: [.private, .fixed])
        #expect(b == a + 4096)
        #expect(try mm.read(b, count: 1).get() == [0])
        #expect(mm.smaps().count == 3)
        expectClean(kernel)
    }

    @Test("adjacent compatible mappings merge into one VMA")
    func merging() throws {
        let (_, mm) = TestMachine.process()
        let a = try anon(mm, 8192)
        let b = try anon(mm, 8192, at: a + 8192)
        #expect(b == a + 8192)
        #expect(mm.smaps().count == 1)
        _ = try anon(mm, 4096, prot: .read, at: a + 16384)
        #expect(mm.smaps().count == 2)
    }

    @Test("partial munmap splits the VMA and keeps the other parts' data")
    func partialMunmap() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 4 * 4096)
        _ = mm.write(a, pattern(3, 4 * 4096))
        try mm.munmap(a + 4096, length: 4096)
        #expect(mm.smaps().map(\.start) == [a, a + 8192])
        #expect(mm.access(a + 4096, .read).failure?.outcome == .segv(.mapErr))
        #expect(try mm.read(a + 8192, count: 8192).get() == Array(pattern(3, 4 * 4096)[8192...]))
        #expect(try mm.read(a, count: 4096).get() == Array(pattern(3, 4096)))
        try mm.munmap(VirtualAddress(0x2000_0000), length: 4096) // a hole: no error
        expectClean(kernel)
    }

    @Test("munmap errors", arguments: [(UInt64(1), UInt64(4096)), (0x10000, 0), (0x7fff_ffff_f000, 0x10000)])
    func munmapErrors(start: UInt64, length: UInt64) {
        let (_, mm) = TestMachine.process()
        #expect(throws: Errno.EINVAL) { try mm.munmap(VirtualAddress(start), length: length) }
    }

    @Test("munmap frees the page tables of an emptied range")
    func munmapFreesTables() throws {
        let (kernel, mm) = TestMachine.process()
        let tables = kernel.vmstat[.nrPageTablePages]
        let a = try anon(mm, 4 << 20)
        _ = mm.touch(a, length: 4 << 20, .write)
        #expect(kernel.vmstat[.nrPageTablePages] > tables)
        try mm.munmap(a, length: 4 << 20)
        #expect(kernel.vmstat[.nrPageTablePages] == tables)
        expectClean(kernel)
    }

    @Test("mprotect splits VMAs, enforces the new protection, and merges back")
    func mprotect() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 3 * 4096)
        _ = mm.touch(a, length: 3 * 4096, .write)
        try mm.mprotect(a + 4096, length: 4096, protection: .read)
        #expect(mm.smaps().count == 3)
        #expect(mm.access(a + 4096, .write).failure?.outcome == .segv(.accErr))
        #expect(mm.access(a + 4096, .read).isSuccess)
        #expect(mm.access(a, .write).isSuccess)
        try mm.mprotect(a + 4096, length: 4096, protection: .readWrite)
        #expect(mm.smaps().count == 1)
        #expect(mm.access(a + 4096, .write).isSuccess)
        try mm.mprotect(a, length: 4096, protection: .none)
        #expect(mm.access(a, .read).failure?.outcome == .segv(.accErr))
        try mm.mprotect(a, length: 4096, protection: .readWrite)
        #expect(mm.access(a, .write).isSuccess)
        expectClean(kernel)
    }

    @Test("mprotect errors: misaligned is EINVAL, unmapped is ENOMEM after changing what is mapped")
    func mprotectErrors() throws {
        let (_, mm) = TestMachine.process()
        let a = try anon(mm, 4096)
        #expect(throws: Errno.EINVAL) { try mm.mprotect(a + 1, length: 4096, protection: .read) }
        #expect(throws: Errno.ENOMEM) { try mm.mprotect(VirtualAddress(0x3000_0000), length: 4096, protection: .read) }
        #expect(throws: Errno.ENOMEM) { try mm.mprotect(a, length: 8192, protection: .read) }
        #expect(mm.smaps(startingAt: a)?.flags.protection == .read)
        try mm.mprotect(a, length: 0, protection: .read)
    }

    @Test("mremap grows in place, shrinks, and moves with the data")
    func mremap() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 2 * 4096, at: VirtualAddress(0x4000_0000))
        _ = mm.write(a, pattern(7, 8192))
        #expect(try mm.mremap(a, oldSize: 8192, newSize: 4 * 4096) == a)
        #expect(mm.smaps(startingAt: a)?["Size"] == 16384)
        #expect(try mm.mremap(a, oldSize: 16384, newSize: 8192) == a)
        // Block growth in place, so it must move.
        _ = try anon(mm, 4096, prot: .read, at: a + 8192)
        #expect(throws: Errno.ENOMEM) { try mm.mremap(a, oldSize: 8192, newSize: 16384) }
        let b = try mm.mremap(a, oldSize: 8192, newSize: 16384, flags: .mayMove)
        #expect(b != a)
        #expect(try mm.read(b, count: 8192).get() == pattern(7, 8192))
        #expect(mm.access(a, .read).failure?.outcome == .segv(.mapErr))
        let fixed = VirtualAddress(0x5000_0000)
        #expect(try mm.mremap(b, oldSize: 16384, newSize: 16384, flags: [.mayMove, .fixed], newAddress: fixed) == fixed)
        #expect(try mm.read(fixed, count: 8192).get() == pattern(7, 8192))
        expectClean(kernel)
    }

    @Test("mremap errors")
    func mremapErrors() throws {
        let (_, mm) = TestMachine.process()
        let a = try anon(mm, 8192)
        #expect(throws: Errno.EINVAL) { try mm.mremap(a + 1, oldSize: 4096, newSize: 8192, flags: .mayMove) }
        #expect(throws: Errno.EINVAL) { try mm.mremap(a, oldSize: 4096, newSize: 0, flags: .mayMove) }
        #expect(throws: Errno.EINVAL) { try mm.mremap(a, oldSize: 4096, newSize: 8192, flags: .fixed, newAddress: a + 8192) }
        #expect(throws: Errno.EINVAL) { try mm.mremap(a, oldSize: 0, newSize: 8192, flags: .mayMove) }
        #expect(throws: Errno.EINVAL) { try mm.mremap(a, oldSize: 8192, newSize: 8192, flags: [.mayMove, .fixed], newAddress: a + 4096) }
        #expect(throws: Errno.EFAULT) { try mm.mremap(VirtualAddress(0x6000_0000), oldSize: 4096, newSize: 8192, flags: .mayMove) }
        #expect(throws: Errno.EFAULT) { try mm.mremap(a, oldSize: 3 * 4096, newSize: 4 * 4096, flags: .mayMove) }
    }

    @Test("MADV_DONTNEED zeroes private memory; advice sets VMA flags and smaps mnemonics")
    func madvise() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 3 * 4096)
        _ = mm.write(a, pattern(9, 3 * 4096))
        try mm.madvise(a, length: 4096, advice: .dontNeed)
        #expect(try mm.read(a, count: 4096).get().allSatisfy { $0 == 0 })
        #expect(try mm.read(a + 4096, count: 4096).get() == Array(pattern(9, 8192)[4096...]))
        try mm.madvise(a + 4096, length: 4096, advice: .hugepage)
        let entries = mm.smaps()
        #expect(entries.count == 3)
        #expect(entries[1].text.contains("VmFlags: rd wr mr mw me ac hg \n"))
        try mm.madvise(a + 4096, length: 4096, advice: .noHugepage)
        #expect(mm.smaps()[1].flags.contains(.noHugepage) && !mm.smaps()[1].flags.contains(.hugepage))
        #expect(throws: Errno.EINVAL) { try mm.madvise(a + 1, length: 4096, advice: .dontNeed) }
        #expect(throws: Errno.ENOMEM) { try mm.madvise(a, length: 4 * 4096, advice: .dontNeed) }
        expectClean(kernel)
    }

    @Test("brk grows and shrinks the heap")
    func brk() throws {
        let (kernel, mm) = TestMachine.process()
        let start = mm.brk
        #expect(mm.setBreak(start + 10000) == start + 10000)
        #expect(mm.smaps(startingAt: start)?.name == "[heap]")
        #expect(mm.smaps(startingAt: start)?["Size"] == 12288)
        _ = mm.write(start + 9000, [1])
        #expect(mm.setBreak(start + 4096) == start + 4096)
        #expect(mm.access(start + 9000, .read).failure?.outcome == .segv(.mapErr))
        #expect(mm.setBreak(start - 4096) == start + 4096)
        expectClean(kernel)
    }

    @Test("smaps and meminfo print in Linux's format")
    func procFormats() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 4 << 20)
        _ = mm.touch(a, length: 8192, .write)
        let text = mm.smaps(startingAt: a)!.text
        #expect(text.contains("\nSize:               4096 kB\n"))
        #expect(text.contains("\nRss:                   8 kB\n"))
        #expect(text.contains("\nAnonHugePages:         0 kB\n"))
        #expect(text.contains("\nTHPeligible:           0\n"))
        #expect(text.hasSuffix("VmFlags: rd wr mr mw me ac \n"))
        #expect(text.hasPrefix("\(String(a.rawValue, radix: 16))-\(String((a + (4 << 20)).rawValue, radix: 16)) rw-p 00000000 00:00 0 \n"))
        let meminfo = kernel.meminfo().text
        #expect(meminfo.hasPrefix("MemTotal:          16384 kB\n"))
        #expect(meminfo.contains("AnonPages:             8 kB\n"))
        #expect(kernel.vmstatText().contains("\nthp_fault_alloc 0\n"))
        #expect(kernel.vmstatValues()["pgfault"] == 2)
    }
}
