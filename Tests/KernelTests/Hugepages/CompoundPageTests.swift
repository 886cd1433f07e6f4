import Testing
import Foundation
import Synchronization
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

@Suite("Compound pages of 2010: tail pins, compound_lock, deposit and withdraw")
struct CompoundPageTests {
    /// A mapped, written huge page and its head.
    func mappedHugePage() throws -> (Kernel, AddressSpace, VirtualAddress, PFN) {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a, [1]).get()
        return (kernel, mm, a, mm.translate(a)!.frame)
    }

    @Test("get_page on a tail raises the head's and the tail's counts; put_page lowers both")
    func tailReferences() throws {
        let (kernel, mm, _, head) = try mappedHugePage()
        defer { withExtendedLifetime(mm) {} }
        let frames = kernel.memory.frames
        kernel.getPage(head + 7)
        kernel.getPage(head + 7)
        kernel.getPage(head + 300)
        #expect(frames.refcount(head) == 4 && frames.refcount(head + 7) == 2 && frames.refcount(head + 300) == 1)
        kernel.putPage(head + 7)
        kernel.putPage(head + 300)
        #expect(frames.refcount(head) == 2 && frames.refcount(head + 7) == 1 && frames.refcount(head + 300) == 0)
        kernel.putPage(head + 7)
        #expect(frames.refcount(head) == 1 && frames.refcount(head + 7) == 0)
        expectClean(kernel)
    }

    @Test("a split gives each tail the head's mapcount plus its own pins, which leave the head")
    func splitDistributesPins() throws {
        let (kernel, mm, a, head) = try mappedHugePage()
        let frames = kernel.memory.frames
        kernel.getPage(head + 5)
        kernel.getPage(head + 5)
        kernel.getPage(head)
        mm.splitHugePages(a, length: 2 * .MiB)
        #expect(!frames.flags(head + 5).contains(.tail) && frames.order(head) == .base)
        #expect(frames.refcount(head + 5) == 1 + 2 && frames.mapcount(head + 5) == 1)
        #expect(frames.refcount(head) == 1 + 1 && frames.refcount(head + 6) == 1)
        // The pins taken through the tail now drop from the ordinary page it became.
        kernel.putPage(head + 5)
        kernel.putPage(head + 5)
        kernel.putPage(head)
        expectClean(kernel)
    }

    @Test("a pinned tail keeps the whole huge page after munmap; the last put frees it compound")
    func pinOutlivesMapping() throws {
        let (kernel, mm, a, head) = try mappedHugePage()
        kernel.getPage(head + 9)
        let free = kernel.memory.freePages
        try mm.munmap(a, length: 2 * .MiB)
        #expect(kernel.memory.frames.flags(head).contains(.head) && kernel.memory.frames.refcount(head) == 1)
        #expect(kernel.memory.freePages == free + 3)  // the tables, not the page
        kernel.putPage(head + 9)
        #expect(kernel.memory.freePages == free + 3 + 512)
        expectClean(kernel)
    }

    @Test("put_page on a tail waits for the head's compound_lock, which a split holds")
    func putWaitsForCompoundLock() throws {
        let (kernel, mm, _, head) = try mappedHugePage()
        defer { withExtendedLifetime(mm) {} }
        kernel.getPage(head + 3)
        kernel.lockCompound(head)
        let done = Atomic<Bool>(false)
        let thread = Thread {
            kernel.putPage(head + 3)
            done.store(true, ordering: .releasing)
        }
        thread.start()
        Thread.sleep(forTimeInterval: 0.05)
        let finishedEarly = done.load(ordering: .acquiring)
        #expect(!finishedEarly, "put_page went past a held compound_lock")
        kernel.unlockCompound(head)
        while !done.load(ordering: .acquiring) { Thread.sleep(forTimeInterval: 0.001) }
        #expect(kernel.memory.frames.refcount(head + 3) == 0 && kernel.memory.frames.refcount(head) == 1)
        expectClean(kernel)
    }

    @Test("deposit and withdraw keep one table per huge PMD, last in first out")
    func depositWithdraw() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 4 * .KiB)
        try mm.write(a, [1]).get()
        let (pmd, _) = try #require(mm.walk(a, to: .pmd, allocate: false))
        let t1 = try #require(kernel.allocateTable()), t2 = try #require(kernel.allocateTable())
        mm.pageTableLock.lock()
        mm.depositTable(t1, in: pmd)
        mm.depositTable(t2, in: pmd)
        #expect(mm.depositedTables(in: pmd) == [t2.pfn, t1.pfn])
        #expect(mm.withdrawTable(from: pmd).pfn == t2.pfn)
        #expect(mm.withdrawTable(from: pmd).pfn == t1.pfn)
        #expect(mm.depositedTables(in: pmd).isEmpty)
        mm.pageTableLock.unlock()
        kernel.freeTable(t1)
        kernel.freeTable(t2)
        expectClean(kernel)
    }
}
