import Testing
import Foundation
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// The anonymous LRU lists, as Linux documents them (`mm/vmscan.c`, `mm/swap.c`,
/// Documentation/mm/page_reclaim and the 5.9 commit "mm/vmscan: protect the workingset on anonymous
/// LRU").
@Suite("LRU lists: active and inactive anonymous pages")
struct LRUTests {
    static let designs: [KernelDesign] = [.linux2_6_38, .linux6_18]

    /// A kernel of `design` with THP off unless `enabled` says, and one process.
    func process(_ design: KernelDesign, memory: UInt64 = 16 << 20,
                 enabled: TransparentHugepageSettings.Enabled = .never,
                 swap: SwapConfiguration = SwapConfiguration()) -> (Kernel, AddressSpace) {
        let kernel = TestMachine.kernel(memory: memory, design: design, enabled: enabled, swap: swap)
        return (kernel, kernel.createAddressSpace()!)
    }

    func listOf(_ kernel: Kernel, _ pfn: PFN) -> AnonLRU? {
        let snapshot = kernel.lru.snapshot()
        for list in AnonLRU.allCases where snapshot.lruvecs[0].lists[list.rawValue].contains(pfn) { return list }
        return nil
    }

    @Test("new anonymous pages start active in 2.6.38 (lru_cache_add_lru(LRU_ACTIVE_ANON)) and inactive in 6.18",
          arguments: designs)
    func newPages(design: KernelDesign) throws {
        let (kernel, mm) = process(design)
        let a = try anon(mm, 64 * 4096)
        for i in 0..<64 { try mm.write(a + UInt64(i) * 4096, [UInt8(i)]).get() }
        let (inactive, active) = kernel.lru.pages
        if design.anonLRU.newPagesActive {
            #expect(active == 64 && inactive == 0)
            #expect(kernel.meminfo()["Active(anon)"] == 64 * 4096 && kernel.meminfo()["Inactive(anon)"] == 0)
        } else {
            #expect(active == 0 && inactive == 64)
            #expect(kernel.meminfo()["Inactive(anon)"] == 64 * 4096 && kernel.meminfo()["Active(anon)"] == 0)
        }
        #expect(kernel.vmstatState(.nrActiveAnon) == active && kernel.vmstatState(.nrInactiveAnon) == inactive)
        // munmap frees them and takes them off.
        try mm.munmap(a, length: 64 * 4096)
        #expect(kernel.lru.pages == (0, 0))
        expectClean(kernel)
    }

    @Test("a THP is one list entry that counts 512 pages", arguments: designs)
    func hugePageIsOneEntry(design: KernelDesign) throws {
        let (kernel, mm) = process(design, memory: 32 << 20, enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a, [1]).get()
        #expect(isHuge(mm, a))
        let head = try #require(mm.residentFrame(a))
        let snapshot = kernel.lru.snapshot()
        #expect(snapshot.lruvecs[0].lists[0].count + snapshot.lruvecs[0].lists[1].count == 1)
        #expect(listOf(kernel, head) == (design.anonLRU.newPagesActive ? .active : .inactive))
        #expect(kernel.vmstatState(design.anonLRU.newPagesActive ? .nrActiveAnon : .nrInactiveAnon) == 512)
        expectClean(kernel)
    }

    @Test("a split puts the 511 tails on the head's list next to it (lru_add_split_folio())", arguments: designs)
    func splitKeepsTailsOnTheList(design: KernelDesign) throws {
        let (kernel, mm) = process(design, memory: 32 << 20, enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a, [1]).get()
        let head = try #require(mm.residentFrame(a))
        let list: AnonLRU = design.anonLRU.newPagesActive ? .active : .inactive
        #expect(mm.splitHugePages(a, length: 2 * .MiB) == 1)
        #expect(!isHuge(mm, a))
        let entries = kernel.lru.snapshot().lruvecs[0].lists[list.rawValue]
        #expect(entries.count == 512)
        // From the hot end: tail 1 … tail 511, then the head, contiguous.
        #expect(entries == (1..<512).map { head + $0 } + [head])
        #expect(kernel.vmstatState(list == .active ? .nrActiveAnon : .nrInactiveAnon) == 512)
        let flags = kernel.memory.frames.flags(head + 7)
        #expect(flags.contains(.lru) && flags.contains(.active) == (list == .active))
        expectClean(kernel)
    }

    @Test("a page touched again is activated and survives reclaim; an untouched one is swapped out",
          arguments: designs)
    func referencedPageSurvives(design: KernelDesign) throws {
        let (kernel, mm) = process(design)
        let a = try anon(mm, 2 * 4096)
        let hot = a, cold = a + 4096
        try mm.write(hot, [1]).get()
        try mm.write(cold, [2]).get()
        let hotFrame = try #require(mm.residentFrame(hot))
        if design.anonLRU.newPagesActive {
            // 2.6.38: both start active; the active scan moves them to the inactive list, clearing
            // their young bits.
            kernel.shrinkActiveList(32)
            #expect(kernel.vmstat[.pgdeactivate] == 2 && kernel.vmstat[.pgrefill] == 2)
        } else {
            // 6.18: both start inactive and young from their fault; the first look only marks them
            // (PG_referenced) and keeps them inactive.
            #expect(kernel.shrinkInactiveList(32, by: .kswapd) == 0)
            #expect(kernel.vmstat[.pgactivate] == 0 && kernel.vmstat[.pswpout] == 0)
            #expect(kernel.memory.frames.flags(hotFrame).contains(.referenced))
        }
        #expect(kernel.lru.pages == (2, 0))
        try mm.write(hot, [3]).get()
        #expect(kernel.shrinkInactiveList(32, by: .kswapd) == 1)
        #expect(mm.residentFrame(hot) == hotFrame && mm.residentFrame(cold) == nil)
        #expect(listOf(kernel, hotFrame) == .active)
        #expect(kernel.vmstat[.pgactivate] == 1 && kernel.vmstat[.pswpout] == 1)
        #expect(kernel.vmstat[.pgscanKswapd] >= 2 && kernel.vmstat[.pgstealKswapd] == 1)
        #expect(try mm.read(cold, count: 1).get() == [2])
        #expect(try mm.read(hot, count: 1).get() == [3])
        expectClean(kernel)
    }

    @Test("one reference activates an inactive page in 2.6.38; 6.18 needs a second (workingset protection)",
          arguments: designs)
    func firstReference(design: KernelDesign) throws {
        let (kernel, mm) = process(design)
        let a = try anon(mm, 4096)
        try mm.write(a, [1]).get()
        let pfn = try #require(mm.residentFrame(a))
        if design.anonLRU.newPagesActive { kernel.shrinkActiveList(32) }
        try mm.write(a, [2]).get()
        _ = kernel.shrinkInactiveList(32, by: .direct)
        #expect(listOf(kernel, pfn) == (design.anonLRU.activateOnFirstReference ? .active : .inactive))
        if !design.anonLRU.activateOnFirstReference {
            try mm.write(a, [3]).get()
            _ = kernel.shrinkInactiveList(32, by: .direct)
            #expect(listOf(kernel, pfn) == .active)
        }
        #expect(kernel.vmstat[.pgactivate] == 1)
        expectClean(kernel)
    }

    @Test("the active list is aged only while the inactive one is low (inactive_is_low())")
    func deactivationWhenInactiveIsLow() throws {
        // 2.6.38: everything starts active, so the inactive list is low and reclaim deactivates.
        let (old, oldMM) = process(.linux2_6_38)
        let a = try anon(oldMM, 256 * 4096)
        for i in 0..<256 { try oldMM.write(a + UInt64(i) * 4096, [1]).get() }
        #expect(old.inactiveIsLow())
        #expect(old.reclaim(pages: 16) >= 16)
        #expect(old.vmstat[.pgdeactivate] > 0 && old.vmstat[.pgrefill] >= old.vmstat[.pgdeactivate])
        expectClean(old)
        // 6.18: everything starts inactive: nothing to deactivate.
        let (new, newMM) = process(.linux6_18)
        let b = try anon(newMM, 256 * 4096)
        for i in 0..<256 { try newMM.write(b + UInt64(i) * 4096, [1]).get() }
        #expect(!new.inactiveIsLow())
        #expect(new.reclaim(pages: 16) >= 16)
        #expect(new.vmstat[.pgdeactivate] == 0 && new.vmstat[.pgrefill] == 0)
        expectClean(new)
        // The ratio: √(10 × GiB), rounded down; 1 below 1 GiB.
        #expect(Kernel.intSqrt(10) == 3 && Kernel.intSqrt(10 * 16) == 12 && Kernel.intSqrt(99) == 9 && Kernel.intSqrt(100) == 10)
    }

    @Test("vmstat and meminfo show the lists as Linux prints them")
    func counters() throws {
        let (kernel, mm) = process(.linux6_18)
        let a = try anon(mm, 8 * 4096)
        for i in 0..<8 { try mm.write(a + UInt64(i) * 4096, [1]).get() }
        let vmstat = kernel.vmstatText()
        #expect(vmstat.contains("\nnr_inactive_anon 8\nnr_active_anon 0\n"))
        for name in ["pgactivate 0", "pgdeactivate 0", "pgrefill 0"] { #expect(vmstat.contains("\n\(name)\n")) }
        #expect(kernel.vmstatValues()["nr_inactive_anon"] == 8)
        let meminfo = kernel.meminfo().text
        #expect(meminfo.contains("Active:                0 kB\nInactive:             32 kB\nActive(anon):          0 kB\nInactive(anon):       32 kB\nActive(file):          0 kB\nInactive(file):        0 kB\n"))
    }

    @Test("migration puts the new page in the old one's place on its list, with its active bit", arguments: designs)
    func migration(design: KernelDesign) throws {
        let (kernel, mm) = process(design)
        let a = try anon(mm, 4096)
        try mm.write(a, [9]).get()
        let old = try #require(mm.residentFrame(a))
        let list = try #require(listOf(kernel, old))
        let target = try #require(kernel.memory.allocateFolio(order: .base, kind: .anonymous))
        #expect(kernel.migratePage(old, to: target, mappings: [(mm, a)]) == .migrated(target))
        #expect(listOf(kernel, target) == list && listOf(kernel, old) == nil)
        #expect(kernel.memory.frames.flags(target).contains(.active) == (list == .active))
        #expect(try mm.read(a, count: 1).get() == [9])
        expectClean(kernel)
    }

    @Test("the reverse map finds pages after mremap and in a fork child whose parent exited", arguments: designs)
    func reverseMap(design: KernelDesign) throws {
        let (kernel, parent) = process(design)
        let a = try anon(parent, 4 * 4096)
        for i in 0..<4 { try parent.write(a + UInt64(i) * 4096, [UInt8(i + 1)]).get() }
        let moved = try parent.mremap(a, oldSize: 4 * 4096, newSize: 4 * 4096, flags: [.mayMove, .fixed],
                                      newAddress: a + 64 * .MiB)
        #expect(moved == a + 64 * .MiB)
        let child = try parent.fork()
        parent.exit()
        let frame = try #require(child.residentFrame(moved))
        let mappings = try #require(kernel.lockedAnonMappings(of: frame))
        kernel.unlockMappers(mappings.locked)
        #expect(mappings.mappings.count == 1 && mappings.mappings[0].mm === child && mappings.mappings[0].address == moved)
        // Everything can be reclaimed: no page is kept for want of its mappings.
        var freed = 0
        for _ in 0..<4 { freed += kernel.reclaim(pages: 4) }
        #expect(freed >= 4 && child.residentFrame(moved) == nil)
        for i in 0..<4 { #expect(try child.read(moved + UInt64(i) * 4096, count: 1).get() == [UInt8(i + 1)]) }
        expectClean(kernel)
    }

    @Test("reclaim keeps pinned pages and activates them")
    func pinnedPagesStay() throws {
        let (kernel, mm) = process(.linux6_18)
        let a = try anon(mm, 2 * 4096)
        try mm.write(a, [1]).get()
        try mm.write(a + 4096, [2]).get()
        let pinned = try #require(mm.residentFrame(a))
        kernel.getPage(pinned)
        _ = kernel.shrinkInactiveList(32, by: .kswapd)   // young from the fault: marked only
        _ = kernel.shrinkInactiveList(32, by: .kswapd)
        #expect(mm.residentFrame(a) == pinned && mm.residentFrame(a + 4096) == nil)
        #expect(listOf(kernel, pinned) == .active)
        kernel.putPage(pinned)
        expectClean(kernel)
    }

    @Test("new folios staged on their CPU are on their lists for every operation, hottest first",
          arguments: designs)
    func stagedFolios(design: KernelDesign) throws {
        let (kernel, mm) = process(design)
        let a = try anon(mm, 3 * 4096)
        for i in 0..<3 { try mm.write(a + UInt64(i) * 4096, [UInt8(i + 1)]).get() }
        let pages = try (0..<3).map { try #require(mm.residentFrame(a + UInt64($0) * 4096)) }
        let list = design.anonLRU.newPagesActive ? AnonLRU.active : .inactive
        // Fewer than a stage's worth: all three are still staged, and every view links them first.
        #expect(kernel.lru.snapshot().lruvecs[0].lists[list.rawValue] == pages.reversed())
        #expect(kernel.vmstatState(design.anonLRU.newPagesActive ? .nrActiveAnon : .nrInactiveAnon) == 3)
        // Isolating and freeing staged folios work as on linked ones.
        let more = try anon(mm, 2 * 4096)
        try mm.write(more, [1]).get()
        try mm.write(more + 4096, [2]).get()
        let staged = try #require(mm.residentFrame(more + 4096))
        #expect(kernel.lru.isolate(staged))
        kernel.lru.putBack(staged, on: list)
        kernel.putPage(staged)
        try mm.munmap(more, length: 2 * 4096)
        #expect(kernel.lru.snapshot().lruvecs[0].lists[list.rawValue] == pages.reversed())
        expectClean(kernel)
    }

    @Test("two CPUs faulting at once in one mm leave every new folio on its list once", arguments: designs)
    func concurrentAdds(design: KernelDesign) throws {
        let (kernel, mm) = process(design, memory: 64 << 20)
        let perThread = 1_000
        let regions = try (0..<2).map { _ in try anon(mm, UInt64(perThread) * 4096) }
        let done = DispatchGroup()
        for region in regions {
            done.enter()
            Thread {
                for i in 0..<perThread { _ = mm.access(region + UInt64(i) * 4096, .write) }
                done.leave()
            }.start()
        }
        done.wait()
        let (inactive, active) = kernel.lru.pages
        #expect(inactive + active == 2 * perThread)
        expectClean(kernel)
        for region in regions { try mm.munmap(region, length: UInt64(perThread) * 4096) }
        #expect(kernel.lru.pages == (0, 0))
        expectClean(kernel)
    }
}
