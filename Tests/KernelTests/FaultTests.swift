import Testing
import VMCore
import Kernel
import TestSupport

@Suite("Faults: anonymous, zero page, copy-on-write")
struct FaultTests {
    @Test("a write fault allocates a zeroed page and counts it")
    func writeFault() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 64 * .KiB)
        let before = kernel.vmstat[.pgfault]
        #expect(throws: Never.self) { try mm.write(a + 100, [1, 2, 3]).get() }
        #expect(kernel.vmstat[.pgfault] == before + 1)
        #expect(kernel.vmstat[.nrAnonPages] == 1)
        #expect(try mm.read(a + 99, count: 5).get() == [0, 1, 2, 3, 0])
        #expect(mm.smaps(startingAt: a)?["Rss"] == 4096)
        #expect(mm.smaps(startingAt: a)?["Anonymous"] == 4096)
        expectClean(kernel)
    }

    @Test("a read fault maps the shared zero page: nothing resident, reads zeros")
    func zeroPage() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 16 * .KiB)
        let free = kernel.memory.freePages
        let tables = kernel.vmstat[.nrPageTablePages]
        #expect(try mm.read(a, count: 16384).get().allSatisfy { $0 == 0 })
        #expect(mm.translate(a)?.frame == kernel.zeroPage)
        #expect(mm.smaps(startingAt: a)?["Rss"] == 0)
        #expect(kernel.memory.freePages == free - (kernel.vmstat[.nrPageTablePages] - tables))
        // A write replaces the zero page with a private zeroed page.
        _ = mm.write(a + 4096, [9])
        #expect(mm.translate(a + 4096)?.frame != kernel.zeroPage)
        #expect(mm.translate(a)?.frame == kernel.zeroPage)
        #expect(mm.smaps(startingAt: a)?["Rss"] == 4096)
        expectClean(kernel)
    }

    @Test("access outside a VMA or against its protection is a segfault outcome")
    func segfaults() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 8 * .KiB, prot: .read)
        #expect(mm.access(a, .read).isSuccess)
        #expect(mm.access(a, .write).failure?.outcome == .segv(.accErr))
        #expect(mm.access(a, .execute).failure?.outcome == .segv(.accErr))
        #expect(mm.access(a + 8192, .read).failure?.outcome == .segv(.mapErr))
        #expect(mm.access(VirtualAddress(0x1000), .read).failure?.outcome == .segv(.mapErr))
        let n = try anon(mm, 4 * .KiB, prot: .none)
        #expect(mm.access(n, .read).failure?.outcome == .segv(.accErr))
        expectClean(kernel)
    }

    @Test("out of memory is an outcome, not a crash")
    func outOfMemory() throws {
        let (kernel, mm) = TestMachine.process(memory: 4 << 20)
        let a = try mm.mmap(length: 8 << 20, protection: .readWrite, flags: [.private, .noReserve])
        let result = mm.touch(a, length: 8 << 20, .write)
        #expect(result.failure?.outcome == .outOfMemory)
        expectClean(kernel)
        mm.exit()
        #expect(kernel.memory.freePages == kernel.memory.totalPages - 1)
    }

    @Test("fork shares pages copy-on-write; each side's writes stay its own")
    func forkCOW() throws {
        let (kernel, parent) = TestMachine.process()
        let a = try anon(parent, 3 * 4096)
        _ = parent.write(a, pattern(1, 3 * 4096))
        let anonBefore = kernel.vmstat[.nrAnonPages]
        let child = try parent.fork()
        #expect(kernel.vmstat[.nrAnonPages] == anonBefore)
        #expect(parent.translate(a)?.frame == child.translate(a)?.frame)
        #expect(parent.translate(a)?.entry.isWritable == false)
        expectClean(kernel)

        _ = child.write(a + 10, [0xEE])
        #expect(parent.translate(a)?.frame != child.translate(a)?.frame)
        #expect(try parent.read(a + 10, count: 1).get() == [pattern(1, 11)[10]])
        #expect(try child.read(a + 10, count: 1).get() == [0xEE])
        #expect(kernel.vmstat[.nrAnonPages] == anonBefore + 1)
        // Pss halves for the page still shared.
        #expect(parent.smaps(startingAt: a)?["Pss"] == 4096 + 2048 + 2048)
        expectClean(kernel)

        // Once the child is gone, the parent reuses its pages without copying.
        child.exit()
        let frame = parent.translate(a + 4096)?.frame
        _ = parent.write(a + 4096, [7])
        #expect(parent.translate(a + 4096)?.frame == frame)
        expectClean(kernel)
    }

    @Test("shared anonymous memory stays shared across fork")
    func sharedAcrossFork() throws {
        let (kernel, parent) = TestMachine.process()
        let s = try parent.mmap(length: 8192, protection: .readWrite, flags: .shared)
        _ = parent.write(s, [1])
        let child = try parent.fork()
        _ = child.write(s + 1, [2])
        _ = child.write(s + 4096, [3])
        #expect(try parent.read(s, count: 2).get() == [1, 2])
        #expect(try parent.read(s + 4096, count: 1).get() == [3])
        #expect(kernel.vmstat[.nrShmem] == 2)
        #expect(parent.smaps(startingAt: s)?["Anonymous"] == 0)
        expectClean(kernel)
        child.exit(); parent.exit()
        #expect(kernel.vmstat[.nrShmem] == 0)
        expectClean(kernel)
    }

    @Test("dontfork ranges are not inherited")
    func dontFork() throws {
        let (kernel, parent) = TestMachine.process()
        let a = try anon(parent, 3 * 4096)
        try parent.madvise(a + 4096, length: 4096, advice: .dontFork)
        let child = try parent.fork()
        #expect(child.access(a + 4096, .read).failure?.outcome == .segv(.mapErr))
        #expect(child.access(a, .read).isSuccess)
        #expect(parent.smaps().count == 3)
        #expect(parent.smaps()[1].flags.contains(.dontCopy))
        expectClean(kernel)
    }

    @Test("exit returns every frame", arguments: [PhysicalMemoryModeArg.data, .metadata])
    func exitFreesAll(mode: PhysicalMemoryModeArg) throws {
        let (kernel, mm) = TestMachine.process(mode: mode.mode)
        let free = kernel.memory.freePages
        let a = try anon(mm, 3 << 20)
        _ = mm.touch(a, length: 3 << 20, .write)
        let child = try mm.fork()
        _ = child.touch(a, length: 1 << 20, .write)
        expectClean(kernel)
        child.exit(); mm.exit()
        #expect(kernel.memory.freePages == free + 1) // the PGD too
        #expect(kernel.vmstat[.nrPageTablePages] == 0)
        expectClean(kernel)
    }
}

enum PhysicalMemoryModeArg: Sendable, CustomTestStringConvertible {
    case data, metadata
    var mode: PhysicalMemory.Mode { self == .data ? .data : .metadata }
    var testDescription: String { self == .data ? "data" : "metadata" }
}

import PhysicalMemory

extension Result {
    var isSuccess: Bool { if case .success = self { true } else { false } }
    var failure: Failure? { if case .failure(let f) = self { f } else { nil } }
}
