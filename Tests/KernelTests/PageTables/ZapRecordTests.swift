import Testing
import VMCore
import Kernel
import TestSupport

@Suite("What a zap records")
struct ZapRecordTests {
    @Test("munmap of 4 KiB pages records each PTE table it locked, the entries it cleared and the pages it freed")
    func munmapOfBasePages() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata)
        let mm = try #require(kernel.createAddressSpace())
        let start = try anon(mm, 4 << 20, at: VirtualAddress(0x4000_0000))
        // 700 pages written: the first PTE table full, 188 entries of the second.
        for i in 0..<700 { try mm.write(start + UInt64(i) * 4096, [1]).get() }
        var record = ZapRecord()
        try mm.munmap(start, length: 4 << 20, recording: &record)
        #expect(record.pteTables.map(\.entries) == [512, 188])
        #expect(record.pteTables.map(\.range) == [0x4000_0000 >> 21, 0x4020_0000 >> 21])
        #expect(record.entriesCleared == 700 && record.hugePMDs.isEmpty)
        #expect(record.referencesDropped == 700)
        #expect(record.freed.pages == 700 && record.freed.folios == 700 && record.freed.largeFolios == 0)
        #expect(record.freed.onLRU <= 700)
        expectClean(kernel)
    }

    @Test("munmap of huge PMDs records each PMD it cleared and each huge page it freed")
    func munmapOfHugePMDs() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata, enabled: .always)
        let mm = try #require(kernel.createAddressSpace())
        let start = try anon(mm, 4 << 20, at: VirtualAddress(0x4000_0000))
        try mm.write(start, [1]).get()
        try mm.write(start + (2 << 20), [1]).get()
        var record = ZapRecord()
        try mm.munmap(start, length: 4 << 20, recording: &record)
        #expect(record.hugePMDs == [0x4000_0000, 0x4020_0000])
        #expect(record.pteTables.isEmpty)
        #expect(record.freed.largeFolios == 2 && record.freed.pages == 1024)
        expectClean(kernel)
    }

    @Test("MADV_DONTNEED records what it zapped; advice that zaps nothing records nothing")
    func dontNeed() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata)
        let mm = try #require(kernel.createAddressSpace())
        let start = try anon(mm, 1 << 20, at: VirtualAddress(0x4000_0000))
        for i in 0..<256 { try mm.write(start + UInt64(i) * 4096, [1]).get() }
        var none = ZapRecord()
        try mm.madvise(start, length: 1 << 20, advice: .hugepage, recording: &none)
        #expect(none == ZapRecord())
        var record = ZapRecord()
        try mm.madvise(start, length: 1 << 20, advice: .dontNeed, recording: &record)
        #expect(record.entriesCleared == 256 && record.freed.folios == 256)
        expectClean(kernel)
    }
}

@Suite("What a collapse records")
struct CollapseRecordTests {
    @Test("khugepaged's collapses are recorded only while someone asks for them")
    func recordedWhenAsked() throws {
        for recording in [false, true] {
            let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata, enabled: .madvise)
            let mm = try #require(kernel.createAddressSpace())
            let a = try anon(mm, 4 << 20, at: VirtualAddress(0x4000_0000))
            for i in 0..<1024 { try mm.write(a + UInt64(i) * 4096, [1]).get() }
            kernel.recordCollapses(recording)
            try mm.madvise(a, length: 4 << 20, advice: .hugepage)
            #expect(kernel.setKhugepagedKnob("khugepaged/pages_to_scan", to: "1024") == nil)
            kernel.advanceTime(by: 20_000_000_000)
            #expect(kernel.khugepaged.pagesCollapsed == 2)
            let records = kernel.takeCollapseRecords()
            if recording {
                #expect(records.map(\.address) == [0x4000_0000, 0x4020_0000])
                #expect(records.allSatisfy { $0.pid == mm.pid && $0.pagesCopied == 512 && $0.freed.folios == 512 })
            } else {
                #expect(records.isEmpty)
            }
            expectClean(kernel)
        }
    }
}

@Suite("What a zap records of splits")
struct ZapSplitRecordTests {
    @Test("munmap of a huge page's middle records one split; of its first half, one; of whole PMDs, none")
    func splits() throws {
        for (offset, length, splits) in [(UInt64(512 << 10), UInt64(1 << 20), 1), (0, 1 << 20, 1), (0, 2 << 20, 0)] {
            let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata, enabled: .always)
            let mm = try #require(kernel.createAddressSpace())
            let start = try anon(mm, 2 << 20, at: VirtualAddress(0x4000_0000))
            try mm.write(start, [1]).get()
            var record = ZapRecord()
            try mm.munmap(start + offset, length: length, recording: &record)
            #expect(record.pmdSplits.count == splits)
            #expect(record.hugePMDs.count == (splits == 0 ? 1 : 0))
            expectClean(kernel)
        }
    }
}
