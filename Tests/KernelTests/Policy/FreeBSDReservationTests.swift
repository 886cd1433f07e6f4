import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

/// FreeBSD's reservations on Linux 6.18's mechanism (`FreeBSDPolicy`, `Reservations.swift`): each rule
/// of `vm_reserv.c` and `pmap_promote_pde()` as the model keeps it.
@Suite("FreeBSD reservations")
struct FreeBSDReservationTests {
    static let huge = PageGeometry.pmdSize

    func kernel(promotes: Bool = true, enabled: TransparentHugepageSettings.Enabled = .always,
                memory: UInt64 = 64 << 20) -> (Kernel, AddressSpace) {
        var configuration = KernelConfiguration(memoryBytes: memory, mode: .data, watermarks: .zero, design: .linux6_18,
                                                hugepageSettings: TransparentHugepageSettings(enabled: enabled, defrag: .madvise, useZeroPage: true))
        configuration.policy = FreeBSDPolicy(promotes: promotes)
        let kernel = Kernel(configuration)
        return (kernel, kernel.createAddressSpace()!)
    }

    /// A 2 MiB-aligned private anonymous mapping of `ranges` × 2 MiB.
    func aligned(_ mm: AddressSpace, ranges: Int = 1) throws -> VirtualAddress {
        try anon(mm, UInt64(ranges) * Self.huge, at: VirtualAddress(1 << 30))
    }

    func touch(_ mm: AddressSpace, _ va: VirtualAddress, access: MemoryAccess = .write) -> FaultContext {
        var fault = FaultContext(address: va, access: access, present: false)
        #expect(mm.handleFault(&fault) == .handled)
        return fault
    }

    func anonPages(_ kernel: Kernel) -> Int { kernel.vmstatState(.nrAnonPages) }

    @Test("the first touch reserves a 2 MiB block; each page maps the block's frame at its offset, zeroed only when touched")
    func populate() throws {
        let (kernel, mm) = kernel()
        let start = try aligned(mm)
        let first = touch(mm, start + 5 * 4096)
        #expect(first.bytesZeroed == 4096 && first.mapped == .base)
        #expect(kernel.vmstat[.thpReservAlloc] == 1)
        let frame = try #require(mm.translate(start + 5 * 4096)).frame
        let head = PFN(frame.rawValue - 5)
        #expect(head.rawValue % 512 == 0, "the block is 2 MiB-aligned in physical memory")
        for page in [0, 6, 300, 511] {
            let fault = touch(mm, start + UInt64(page) * 4096, access: page == 300 ? .read : .write)
            #expect(fault.bytesZeroed == 4096, "page \(page) is zeroed when touched, alone")
            #expect(mm.translate(start + UInt64(page) * 4096)?.frame == head + page)
            #expect(mm.translate(start + UInt64(page) * 4096)?.level == .pte)
        }
        #expect(kernel.vmstat[.thpReservAlloc] == 1, "one reservation serves the range")
        #expect(anonPages(kernel) == 5, "RSS is the pages touched, not the block")
        #expect(kernel.vmstat[.thpFaultAlloc] == 0)
        #expect(kernel.vmstat[.thpDeferredSplitPage] == 0, "a reservation is no THP Linux split partly")
        #expect(try mm.read(start + 300 * 4096, count: 4).get() == [0, 0, 0, 0])
        expectClean(kernel)
    }

    @Test("no reservation where the aligned range does not fit the VMA, or enabled does not allow huge pages")
    func noReservation() throws {
        let (kernel, mm) = kernel()
        let small = try anon(mm, 1 << 20, at: VirtualAddress(1 << 30))
        _ = touch(mm, small)
        #expect(kernel.vmstat[.thpReservAlloc] == 0)
        let (never, mm2) = self.kernel(enabled: .never)
        let start = try aligned(mm2)
        _ = touch(mm2, start)
        _ = touch(mm2, start + 4096)
        #expect(never.vmstat[.thpReservAlloc] == 0)
        expectClean(kernel)
        expectClean(never)
    }

    @Test("a range where a page of its own is mapped gets no reservation (vm_reserv_alloc_page's leftcap/rightcap)")
    func occupied() throws {
        let (kernel, mm) = kernel(enabled: .never)
        let start = try aligned(mm)
        _ = touch(mm, start)
        try kernel.transparentHugepageSysfs.write("enabled", "always")
        _ = touch(mm, start + 4096)
        #expect(kernel.vmstat[.thpReservAlloc] == 0)
        #expect(anonPages(kernel) == 2)
        expectClean(kernel)
    }

    @Test("all 512 pages populated: one PMD maps the same frames in place, data kept, no copy")
    func promotion() throws {
        let (kernel, mm) = kernel()
        let start = try aligned(mm)
        for page in 0..<512 {
            try mm.write(start + UInt64(page) * 4096, [UInt8(truncatingIfNeeded: page) | 1]).get()
            if page == 510 { #expect(mm.translate(start)?.level == .pte, "still PTE-mapped at 511 of 512") }
        }
        let t = try #require(mm.translate(start + 7 * 4096))
        #expect(t.level == .pmd)
        #expect(t.frame.rawValue % 512 == 7, "the reservation's own frames, not a copy")
        #expect(kernel.vmstat[.thpReservPromote] == 1 && kernel.vmstat[.thpReservAlloc] == 1)
        #expect(kernel.vmstat[.thpCollapseAlloc] == 0 && kernel.vmstat[.thpFaultAlloc] == 0)
        #expect(kernel.vmstatState(.nrAnonTransparentHugepages) == 1 && anonPages(kernel) == 512)
        for page in [0, 7, 511] {
            #expect(try mm.read(start + UInt64(page) * 4096, count: 1).get() == [UInt8(truncatingIfNeeded: page) | 1])
        }
        expectClean(kernel)
    }

    @Test("a page faulted in by GUP that fills the reservation promotes it, as any fault does; the pin holds the page inside the huge PMD",
          arguments: [false, true])
    func gupFaultPromotes(pin: Bool) throws {
        let (kernel, mm) = kernel()
        let start = try aligned(mm)
        for page in 0..<511 { try mm.write(start + UInt64(page) * 4096, [UInt8(truncatingIfNeeded: page) | 1]).get() }
        #expect(mm.translate(start)?.level == .pte)
        let last = start + 511 * 4096
        let pages = try (pin ? mm.pinUserPages(last, count: 1, write: true) : mm.getUserPages(last, count: 1, write: true)).get()
        let t = try #require(mm.translate(start + 7 * 4096))
        #expect(t.level == .pmd, "promoted once GUP dropped the mmap lock")
        #expect(kernel.vmstat[.thpReservPromote] == 1)
        let head = PFN(t.frame.rawValue - 7)
        #expect(pages == [head + 511], "the pinned page is the reservation's last frame, now inside the huge page")
        #expect(try mm.read(start + 7 * 4096, count: 1).get() == [7 | 1])
        if pin { kernel.releasePinnedPages(pages) } else { kernel.putUserPages(pages) }
        try mm.munmap(start, length: Self.huge)
        expectClean(kernel)
    }

    @Test("with promote=0 (vm.pmap.pg_ps_enabled=0) a full reservation stays PTE-mapped")
    func noPromotion() throws {
        let (kernel, mm) = kernel(promotes: false)
        let start = try aligned(mm)
        for page in 0..<512 { _ = touch(mm, start + UInt64(page) * 4096) }
        #expect(mm.translate(start)?.level == .pte)
        #expect(kernel.vmstat[.thpReservPromote] == 0 && anonPages(kernel) == 512)
        expectClean(kernel)
    }

    @Test("the population falls with MADV_DONTNEED and rises again with the same frames; unmapping all frees the block")
    func depopulate() throws {
        let (kernel, mm) = kernel()
        let free = kernel.memory.freePages
        let start = try aligned(mm)
        for page in 0..<10 { _ = touch(mm, start + UInt64(page) * 4096) }
        let head = try #require(mm.translate(start)).frame
        try mm.madvise(start, length: 5 * 4096, advice: .dontNeed)
        #expect(anonPages(kernel) == 5)
        #expect(mm.translate(start) == nil)
        _ = touch(mm, start + 2 * 4096)
        #expect(mm.translate(start + 2 * 4096)?.frame == head + 2, "the page comes back from the reservation")
        #expect(kernel.vmstat[.thpReservAlloc] == 1 && anonPages(kernel) == 6)
        try mm.munmap(start, length: Self.huge)
        #expect(anonPages(kernel) == 0)
        #expect(kernel.memory.freePages >= free - 8, "the whole block went back (page tables aside)")
        expectClean(kernel)
    }

    @Test("under memory pressure the reservation changed least recently is broken first, its unpopulated pages freed")
    func breakLeastRecentlyChanged() throws {
        let (kernel, mm) = kernel()
        let start = try aligned(mm, ranges: 2)
        let a = start, b = start + Self.huge
        _ = touch(mm, a)
        _ = touch(mm, b)
        _ = touch(mm, a + 4096)          // a changed after b: b is the least recently changed
        let bHead = try #require(mm.translate(b)).frame
        let free = kernel.memory.freePages
        kernel.deferredSplitScan(limit: 1)
        #expect(kernel.vmstat[.thpReservBroken] == 1)
        #expect(kernel.memory.freePages - free == 511, "b's 511 unpopulated pages are free again")
        #expect(!kernel.memory.frames.flags(bHead).contains(.head), "b's block is order-0 pages now")
        #expect(kernel.memory.frames.flags(try #require(mm.translate(a)).frame).contains(.head), "a keeps its reservation")
        // A broken range gets no new reservation: its remaining page is a page of its own.
        _ = touch(mm, b + 4096)
        #expect(kernel.vmstat[.thpReservAlloc] == 2 && anonPages(kernel) == 4)
        #expect(try mm.read(b, count: 1).get() == [0])
        expectClean(kernel)
    }

    @Test("fork shares the reservation's pages; a write in the child copies one page; exit frees everything")
    func fork() throws {
        let (kernel, mm) = kernel()
        let free = kernel.memory.freePages
        let start = try aligned(mm)
        for page in 0..<4 { try mm.write(start + UInt64(page) * 4096, [UInt8(page + 1)]).get() }
        let child = try mm.fork()
        try child.write(start + 4096, [9]).get()
        #expect(try mm.read(start + 4096, count: 1).get() == [2])
        #expect(try child.read(start + 4096, count: 1).get() == [9])
        _ = touch(mm, start + 100 * 4096)
        #expect(try child.read(start + 100 * 4096, count: 1).get() == [0])
        expectClean(kernel)
        child.exit()
        mm.exit()
        #expect(kernel.memory.freePages >= free - 8)
        expectClean(kernel)
    }
}
