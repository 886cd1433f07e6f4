import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("migration and compaction")
struct MigrationTests {
    @Test("a 4 KiB page mapped by parent and child moves to another frame; both see the bytes, counts move with it")
    func migrateSmallPage() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 16 * .KiB)
        let bytes = pattern(5, 4096)
        try mm.write(a, bytes).get()
        let child = try mm.fork()
        let old = try #require(mm.residentFrame(a))
        let target = try #require(kernel.memory.allocateFolio(order: .base, kind: .anonymous))
        let result = kernel.migratePage(old, to: target, mappings: [(mm, a), (child, a)])
        #expect(result == .migrated(target))
        #expect(mm.residentFrame(a) == target && child.residentFrame(a) == target)
        #expect(kernel.memory.frames.kind(old) == .free)
        #expect(kernel.memory.frames.mapcount(target) == 2)
        #expect(try mm.read(a, count: 4096).get() == bytes && child.read(a, count: 4096).get() == bytes)
        #expect(mm.translate(a)?.entry.isWritable == false, "the entry keeps its bits: still write-protected for COW")
        expectClean(kernel)
        try mm.write(a, [9]).get()
        #expect(try child.read(a, count: 1).get() == [bytes[0]])
        expectClean(kernel)
    }

    @Test("a pinned page is not migrated: the entries come back unchanged")
    func pinnedPage() throws {
        let (kernel, mm) = TestMachine.process()
        let notifier = RecordingNotifier()
        mm.registerMMUNotifier(notifier)
        let a = try anon(mm, 4 * .KiB)
        try mm.write(a, [1, 2, 3]).get()
        let old = try #require(mm.residentFrame(a))
        let before = mm.translate(a)?.entry
        kernel.getPage(old)  // a GUP pin: refcount above mapcount
        let target = try #require(kernel.memory.allocateFolio(order: .base, kind: .anonymous))
        #expect(kernel.migratePage(old, to: target, mappings: [(mm, a)]) == .pinned)
        #expect(mm.residentFrame(a) == old && mm.translate(a)?.entry == before)
        #expect(notifier.take().map(\.kind) == ["start", "end"])
        kernel.putPage(target)
        kernel.putPage(old)
        #expect(try mm.read(a, count: 3).get() == [1, 2, 3])
        expectClean(kernel)
    }

    @Test("a huge page moves whole with its PMDs; a pin through a tail refuses it (thp_migration_*)")
    func migrateHugePage() throws {
        let (kernel, mm) = TestMachine.process(memory: 32 << 20, enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(8, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        let child = try mm.fork()
        let head = try #require(mm.residentFrame(a))
        let target = try #require(kernel.memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous))
        kernel.getPage(head + 7)
        #expect(kernel.migratePage(head, to: target) == .pinned)
        #expect(kernel.vmstat[.thpMigrationFail] == 1)
        kernel.putPage(head + 7)
        #expect(kernel.migratePage(head, to: target) == .migrated(target))
        #expect(kernel.vmstat[.thpMigrationSuccess] == 1)
        #expect(isHuge(mm, a) && isHuge(child, a) && mm.residentFrame(a) == target && child.residentFrame(a + 4096) == target + 1)
        #expect(try child.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
        // It still splits like any huge page: the reverse map followed it.
        try mm.munmap(a + 4096, length: 4096)
        #expect(try child.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }

    @Test("linux-6.18: a PMD-mapped folio moves whole; a FOLL_PIN pin refuses it; a PTE-mapped one is left alone")
    func migrateHugePageToday() throws {
        let kernel = TestMachine.kernel(memory: 32 << 20, design: .linux6_18, enabled: .always)
        let mm = kernel.createAddressSpace()!
        let a = try hugeRegion(mm, 4 * .MiB)
        let bytes = pattern(9, Int(4 * .MiB))
        try mm.write(a, bytes).get()
        let child = try mm.fork()
        let head = try #require(mm.residentFrame(a))
        let target = try #require(kernel.memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous))
        let pins = try mm.pinUserPages(a + 28 * .KiB, count: 1, write: false).get()
        #expect(kernel.migratePage(head, to: target) == .pinned)
        kernel.unpinUserPages(pins)
        #expect(kernel.migratePage(head, to: target) == .migrated(target))
        #expect(isHuge(mm, a) && isHuge(child, a) && child.residentFrame(a + 4096) == target + 1)
        #expect(try child.read(a, count: bytes.count).get() == bytes && (try mm.read(a, count: bytes.count).get()) == bytes)
        expectClean(kernel)
        // The second folio, split to PTEs in the parent, is not migrated whole.
        try mm.munmap(a + 2 * .MiB + 4096, length: 4096)
        let second = try #require(child.residentFrame(a + 2 * .MiB))
        let target2 = try #require(kernel.memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous))
        #expect(kernel.migratePage(second, to: target2) == .busy)
        kernel.memory.frames.setRefcount(target2, 0)
        kernel.memory.freeFolio(target2)
        expectClean(kernel)
    }

    @Test("compaction empties pageblocks of movable pages into free pages at the top, making order 9 free")
    func compaction() throws {
        let (kernel, mm) = TestMachine.process(memory: 16 << 20)
        let free = kernel.memory.freePages
        // Fill memory with 4 KiB pages, then give back all but one page in every 128: no order-9 block.
        let a = try anon(mm, UInt64(free - 64) * 4096)
        let count = free - 64
        for i in stride(from: 0, to: count, by: 512) { _ = mm.access(a + UInt64(i) * 4096, .read) }
        for i in 0..<count { try mm.write(a + UInt64(i) * 4096, [UInt8(truncatingIfNeeded: i)]).get() }
        var i = 0
        while i < count {
            let pages = min(127, count - i - 1)
            if pages > 0 { try mm.madvise(a + UInt64(i) * 4096 + 4096, length: UInt64(pages) * 4096, advice: .dontNeed) }
            i += 128
        }
        #expect(!kernel.memory.buddy.hasFreeBlock(order: PageGeometry.pmdOrder))
        let result = kernel.compactZone()
        #expect(result == .success)
        #expect(kernel.memory.buddy.hasFreeBlock(order: PageGeometry.pmdOrder))
        #expect(kernel.vmstat[.compactMigrateScanned] > 0 && kernel.vmstat[.compactFreeScanned] > 0 && kernel.vmstat[.compactIsolated] > 0)
        i = 0
        while i < count {
            #expect(try mm.read(a + UInt64(i) * 4096, count: 1).get() == [UInt8(truncatingIfNeeded: i)])
            i += 128
        }
        expectClean(kernel)
    }

    @Test("defrag decides whether a huge fault compacts (compact_stall) or falls back, or wakes kcompactd",
          arguments: [("always", true, false), ("never", false, false), ("defer", false, true), ("madvise", false, false)])
    func defrag(setting: String, direct: Bool, kcompactd: Bool) throws {
        let (kernel, mm) = TestMachine.process(memory: 16 << 20, enabled: .always)
        var settings = kernel.hugepageSettings
        _ = settings.set("defrag", to: setting)
        settings.enabled = .never
        kernel.hugepageSettings = settings
        let free = kernel.memory.freePages
        let a = try anon(mm, UInt64(free - 64) * 4096)
        let count = free - 64
        // Page tables first, so that they sit together and do not pin the data's pageblocks (the model
        // has no pageblock migratetypes to group unmovable allocations, docs/notes.md).
        for i in stride(from: 0, to: count, by: 512) { _ = mm.access(a + UInt64(i) * 4096, .read) }
        for i in 0..<count { try mm.write(a + UInt64(i) * 4096, [1]).get() }
        var i = 0
        while i < count {
            let pages = min(63, count - i - 1)
            if pages > 0 { try mm.madvise(a + UInt64(i) * 4096 + 4096, length: UInt64(pages) * 4096, advice: .dontNeed) }
            i += 64
        }
        #expect(!kernel.memory.buddy.hasFreeBlock(order: PageGeometry.pmdOrder))
        settings.enabled = .always
        kernel.hugepageSettings = settings
        let b = try hugeRegion(mm, 2 * .MiB)
        try mm.write(b, [7]).get()
        #expect(isHuge(mm, b) == direct)
        #expect(kernel.vmstat[.compactStall] == (direct ? 1 : 0))
        #expect(kernel.vmstat[.compactSuccess] == (direct ? 1 : 0))
        #expect(kernel.vmstat[.thpFaultFallback] == (direct ? 0 : 1))
        #expect(kernel.kcompactd.isWoken == kcompactd)
        kernel.runNextKernelThreadWakeup()  // kcompactd first, if it was woken
        #expect(kernel.vmstat[.compactDaemonWake] == (kcompactd ? 1 : 0))
        if kcompactd { #expect(kernel.memory.buddy.hasFreeBlock(order: PageGeometry.pmdOrder)) }
        expectClean(kernel)
    }
}
