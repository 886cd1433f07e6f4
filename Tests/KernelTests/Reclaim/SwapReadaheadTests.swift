import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// Swap readahead (`SwapReadahead.swift`): a fault that reads its slot reads the slots around it into
/// the swap cache. Measured on Linux 6.18.44 with a swap file (rotational, `page-cluster` 3,
/// `scenarios/model/swap-readahead.scen`): 4 MiB swapped out and read back in order took 128
/// major faults, `swap_ra` +896, `swap_ra_hit` +896, `pswpin` +1,024; writing every 16th page of the
/// next 4 MiB took 64 major faults with `swap_ra` +11 (windows of 8, 4 and 2, then none).
@Suite("swap: readahead")
struct SwapReadaheadTests {
    /// A kernel of `design` with swap of `pageCluster` and one process, and `pages` pages written
    /// (no byte zero) and pushed out to the device; returns the region's start.
    func swappedOut(_ design: KernelDesign, pages: Int, pageCluster: Int = 3) throws -> (Kernel, AddressSpace, VirtualAddress) {
        let kernel = TestMachine.kernel(memory: 32 << 20, design: design,
                                        swap: SwapConfiguration(slots: 4096, pageCluster: pageCluster))
        let mm = try #require(kernel.createAddressSpace())
        let a = try anon(mm, UInt64(pages) * 4096)
        try mm.write(a, bytes(pages)).get()
        #expect(try pageOutToDevice(kernel, mm, a, length: UInt64(pages) * 4096) == pages)
        #expect(kernel.swapDevice.cachedPages == 0)
        return (kernel, mm, a)
    }

    func bytes(_ pages: Int) -> [UInt8] { pattern(3, pages * 4096).map { $0 | 1 } }

    @Test("today's window: the hits plus two, rounded up to a power of two from 4; 1 without hits unless the offset is adjacent; never below half the last")
    func windowHeuristic() {
        // In order, against one state (`swapin_nr_pages()`).
        let state = SwapReadaheadState()
        #expect(state.window(for: 100, maxPages: 8) == 8, "swapin_readahead_hits starts at 4: 6 rounds up to 8")
        #expect(state.window(for: 300, maxPages: 8) == 4, "no hits, not adjacent: 1, but not below half of 8")
        #expect(state.window(for: 500, maxPages: 8) == 2)
        #expect(state.window(for: 700, maxPages: 8) == 1)
        #expect(state.window(for: 701, maxPages: 8) == 2, "no hits, but the offset after the last one read")
        state.hit()
        #expect(state.window(for: 900, maxPages: 8) == 4, "one hit: 3 rounds up to 4")
        for _ in 0..<3 { state.hit() }
        #expect(state.window(for: 950, maxPages: 8) == 8, "three hits: 5 rounds up to 8")
        for _ in 0..<7 { state.hit() }
        #expect(state.window(for: 990, maxPages: 8) == 8, "capped at 2^page-cluster")
        for _ in 0..<7 { state.hit() }
        #expect(state.window(for: 1000, maxPages: 32) == 16, "9 rounds up to 16 under a larger cluster")
    }

    @Test("today, a sequential swap-in reads whole clusters: a major fault per 8 pages, the rest read ahead and found")
    func sequentialToday() throws {
        let (kernel, mm, a) = try swappedOut(.linux6_18, pages: 64)
        // Slots 0…63 are offsets 1…64 (the header is offset 0): windows 0–7 (7 pages), 8–15, …, 64–71.
        #expect(try mm.read(a, count: 64 * 4096).get() == bytes(64))
        #expect(kernel.vmstat[.pgmajfault] == 9 && kernel.vmstat[.pswpin] == 64)
        #expect(kernel.vmstat[.swapRA] == 55 && kernel.vmstat[.swapRAHit] == 55)
        #expect(kernel.vmstat[.pgpgin] == 64 * 4)
        #expect(mm.smaps(startingAt: a)?["Rss"] == 64 * 4096 && mm.smaps(startingAt: a)?["Swap"] == 0)
        expectClean(kernel)
    }

    @Test("today, a random swap-in shrinks the window to one page: read-ahead pages nobody uses stop it")
    func strideShrinksToday() throws {
        let (kernel, mm, a) = try swappedOut(.linux6_18, pages: 256)
        let all = bytes(256)
        for i in stride(from: 0, to: 256, by: 16) {
            #expect(try mm.read(a + UInt64(i) * 4096, count: 1).get() == [all[i * 4096]])
        }
        // Page i is offset i + 1. Windows of 8 (offsets 0…7: the header, the fault's 1, six read
        // ahead), then, with no hits, 4 (16…19 around 17: three), 2 (32, 33: one), then 1.
        #expect(kernel.vmstat[.pgmajfault] == 16)
        #expect(kernel.vmstat[.swapRA] == 6 + 3 + 1 && kernel.vmstat[.swapRAHit] == 0)
        #expect(kernel.vmstat[.pswpin] == 16 + 10)
        // The read-ahead pages sit unmapped in the cache, where reclaim frees them without a write.
        #expect(kernel.swapDevice.cachedPages == 16 + 10)
        #expect(kernel.shrinkSwapCache() == 10)
        expectClean(kernel)
    }

    @Test("2.6.38 reads the run of slots in use around the fault in its cluster, every time, and stops at a free slot")
    func contiguous2_6_38() throws {
        let (kernel, mm, a) = try swappedOut(.linux2_6_38, pages: 32)
        // A hole: page 10's slot (offset 11) freed.
        try mm.munmap(a + 10 * 4096, length: 4096)
        let all = bytes(32)
        #expect(try mm.read(a + 12 * 4096, count: 1).get() == [all[12 * 4096]])
        // Offset 13's cluster is 8…15; the run in use around it stops at the hole: 12…15.
        #expect(kernel.vmstat[.pgmajfault] == 1 && kernel.vmstat[.pswpin] == 4)
        #expect(kernel.vmstat[.swapRA] == 0, "2.6.38 has no swap_ra counter")
        #expect(try mm.read(a + 20 * 4096, count: 1).get() == [all[20 * 4096]])
        #expect(kernel.vmstat[.pgmajfault] == 2 && kernel.vmstat[.pswpin] == 12, "no window shrinks: the whole cluster 16…23")
        expectClean(kernel)
    }

    @Test("page-cluster 0 reads one page per fault")
    func pageClusterZero() throws {
        for design in [KernelDesign.linux6_18, .linux2_6_38] {
            let (kernel, mm, a) = try swappedOut(design, pages: 16, pageCluster: 0)
            #expect(try mm.read(a, count: 16 * 4096).get() == bytes(16))
            #expect(kernel.vmstat[.pgmajfault] == 16 && kernel.vmstat[.pswpin] == 16 && kernel.vmstat[.swapRA] == 0)
        }
    }

    @Test("a read-ahead page is charged to its slot's cgroup, and reclaim of the cgroup frees it")
    func chargedToSlotOwner() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 4096))
        try kernel.createMemoryCgroup("box")
        let owner = try #require(kernel.createAddressSpace())
        try kernel.move(owner, to: kernel.memoryCgroups.cgroup(named: "box"))
        let a = try anon(owner, 16 * 4096)
        try owner.write(a, bytes(16)).get()
        #expect(try pageOutToDevice(kernel, owner, a, length: 16 * 4096) == 16)
        let box = try #require(kernel.memoryCgroups.cgroup(named: "box"))
        // A child in the root shares the entries after fork; its fault reads ahead for the box.
        let child = try owner.fork()
        try kernel.move(child, to: nil)
        let before = box.usagePages
        #expect(try child.read(a + 2 * 4096, count: 1).get() == [bytes(16)[2 * 4096]])
        #expect(kernel.vmstat[.swapRA] == 6, "offsets 1…7 but the faulting 3")
        // The faulting page and the six read ahead are the box's: its swap is what they stand for,
        // though the fault is the root's child's (`mem_cgroup_swapin_charge_folio()`).
        #expect(box.usagePages == before + 7)
        try kernel.writeCgroupFile("box", "memory.reclaim", "24K")
        #expect(box.usagePages <= before + 1, "reclaim takes the unmapped read-ahead pages first")
        #expect(try owner.read(a, count: 16 * 4096).get() == bytes(16))
        expectClean(kernel)
    }

    @Test("a page read ahead out of address order is found by the reverse map once mapped: reclaim swaps it out again")
    func mappedLaterReclaimable() throws {
        let kernel = TestMachine.kernel(memory: 32 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 4096))
        let mm = try #require(kernel.createAddressSpace())
        let a = try anon(mm, 16 * 4096)
        try mm.write(a, bytes(16)).get()
        // The second half first: slots 0…7 hold pages 8…15, slots 8…15 pages 0…7. Page 0's fault
        // (offset 9) reads offsets 8…15 ahead, among them page 15's, whose place the read-ahead can
        // only guess from its slot; the fault that maps it records the right one.
        #expect(try pageOutToDevice(kernel, mm, a + 8 * 4096, length: 8 * 4096) == 8)
        #expect(try pageOutToDevice(kernel, mm, a, length: 8 * 4096) == 8)
        let child = try mm.fork()
        #expect(try mm.read(a, count: 16 * 4096).get() == bytes(16))
        #expect(try child.read(a, count: 16 * 4096).get() == bytes(16))
        #expect(kernel.vmstat[.swapRAHit] > 0)
        // Reclaim finds both mappings of every page through its recorded origin; mapped and just
        // referenced, the pages take a few rounds.
        for _ in 0..<32 where mm.smaps(startingAt: a)?["Swap"] != 16 * 4096 || child.smaps(startingAt: a)?["Swap"] != 16 * 4096 {
            _ = kernel.reclaim(pages: 64)
        }
        #expect(mm.smaps(startingAt: a)?["Swap"] == 16 * 4096 && child.smaps(startingAt: a)?["Swap"] == 16 * 4096)
        #expect(try child.read(a, count: 16 * 4096).get() == bytes(16))
        #expect(try mm.read(a, count: 16 * 4096).get() == bytes(16))
        expectClean(kernel)
    }

    /// A 6.18 kernel with a non-rotational device (`clusters`), one process, and a 4 MiB region
    /// (2 MiB-aligned) whose first `pages` pages are written and pushed out, in the order `halves`
    /// gives (the second half first when true).
    func swappedOutByAddress(pages: Int, secondHalfFirst: Bool, clusters: Bool = true) throws -> (Kernel, AddressSpace, VirtualAddress) {
        let kernel = TestMachine.kernel(memory: 32 << 20, design: .linux6_18,
                                        swap: SwapConfiguration(slots: 4096, clusters: clusters))
        let mm = try #require(kernel.createAddressSpace())
        let a = try anon(mm, 4 << 20)
        #expect(a.rawValue % (2 << 20) == 0)
        try mm.write(a, bytes(pages)).get()
        let half = UInt64(pages / 2) * 4096
        if secondHalfFirst {
            #expect(try pageOutToDevice(kernel, mm, a + half, length: half) == pages / 2)
            #expect(try pageOutToDevice(kernel, mm, a, length: half) == pages / 2)
        } else {
            #expect(try pageOutToDevice(kernel, mm, a, length: 2 * half) == pages)
        }
        return (kernel, mm, a)
    }

    @Test("on a non-rotational device today reads ahead by address: the order of the slots does not matter")
    func byAddress() throws {
        let (kernel, mm, a) = try swappedOutByAddress(pages: 32, secondHalfFirst: true)
        #expect(try mm.read(a, count: 32 * 4096).get() == bytes(32))
        // Page 0: a new VMA's window of 8, centred, from the VMA's start: 0…4. Then each fault follows
        // the last hit: 5…12, 13…20, 21…28, 29…31 (the rest of the region is not in swap).
        #expect(kernel.vmstat[.pgmajfault] == 5 && kernel.vmstat[.pswpin] == 32)
        #expect(kernel.vmstat[.swapRA] == 27 && kernel.vmstat[.swapRAHit] == 27)
        // By slot, the same reads fetch the other half's pages and take six faults.
        let (bySlot, mm2, b) = try swappedOutByAddress(pages: 32, secondHalfFirst: true, clusters: false)
        #expect(try mm2.read(b, count: 32 * 4096).get() == bytes(32))
        #expect(bySlot.vmstat[.pgmajfault] == 6)
        expectClean(kernel)
    }

    @Test("each VMA keeps its own window: faults taking turns between two regions read each one ahead")
    func perVMA() throws {
        let (kernel, mm, a) = try swappedOutByAddress(pages: 32, secondHalfFirst: false)
        _ = try anon(mm, 4096, prot: [])   // a guard between them, or the two would be one VMA
        let b = try anon(mm, 4 << 20)
        try mm.write(b, bytes(32)).get()
        #expect(try pageOutToDevice(kernel, mm, b, length: 32 * 4096) == 32)
        let all = bytes(32)
        for i in 0..<32 {
            #expect(try mm.read(a + UInt64(i) * 4096, count: 1).get() == [all[i * 4096]])
            #expect(try mm.read(b + UInt64(i) * 4096, count: 1).get() == [all[i * 4096]])
        }
        #expect(mm.vmas.count == 3)
        #expect(kernel.vmstat[.pgmajfault] == 10 && kernel.vmstat[.swapRA] == 54)
        expectClean(kernel)
    }

    @Test("the window stays within the VMA and the 2 MiB of the fault's page table")
    func windowBounds() throws {
        let kernel = TestMachine.kernel(memory: 32 << 20, design: .linux6_18,
                                        swap: SwapConfiguration(slots: 4096, clusters: true))
        let mm = try #require(kernel.createAddressSpace())
        let a = try anon(mm, 4 << 20)
        let around = a + 508 * 4096
        try mm.write(around, bytes(8)).get()
        #expect(try pageOutToDevice(kernel, mm, around, length: 8 * 4096) == 8)
        // Page 511: centred on it, 508…515, but the PTE table ends at 512.
        #expect(try mm.read(a + 511 * 4096, count: 1).get() == [bytes(8)[3 * 4096]])
        #expect(kernel.vmstat[.pswpin] == 4 && kernel.vmstat[.swapRA] == 3)
        #expect(kernel.swapDevice.cachedPages == 4, "page 511 and the three read ahead; 512 stays on the device")
        expectClean(kernel)
    }

    @Test("read-ahead leaves a slot whose swap-out has not written it yet, and a slot already cached")
    func pendingAndCachedSlotsLeft() throws {
        let device = SwapDevice(SwapConfiguration(slots: 64), defaultSlots: 64)
        let slot = try #require(device.allocate(uses: 1))
        #expect(device.map.withLock { $0.mayReadAhead(slot) } == false, "taken, not written yet")
        device.map.withLock { device.write(slot, nil, &$0) }
        #expect(device.map.withLock { $0.mayReadAhead(slot) } == true)
        let zero = try #require(device.allocate(uses: 1))
        device.map.withLock { device.writeZeroFilled(zero, &$0) }
        #expect(device.map.withLock { $0.mayReadAhead(zero) } == true)
        let unnamed = try #require(device.allocate(uses: 0))
        device.map.withLock { device.write(unnamed, nil, &$0) }
        #expect(device.map.withLock { $0.mayReadAhead(unnamed) } == false, "no swap entry names it")
        device.map.withLock { m in
            m.cache[slot] = PFN(7)
            #expect(m.mayReadAhead(slot) == false, "a page stands for it")
        }
    }
}
