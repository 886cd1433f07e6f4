import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("swap: MADV_PAGEOUT, swap entries and swap-in")
struct SwapTests {
    @Test("pageout frees exclusive pages into swap; a touch brings every byte back (pgmajfault, pswpin)")
    func pageoutAndSwapIn() throws {
        let (kernel, mm) = TestMachine.process(swap: TestMachine.swapWithoutReadahead)
        let a = try anon(mm, 64 * .KiB)
        let bytes = pattern(4, Int(64 * .KiB))
        try mm.write(a, bytes).get()
        let free = kernel.memory.freePages
        try mm.madvise(a, length: 64 * .KiB, advice: .pageout)
        #expect(kernel.vmstat[.pswpout] == 16 && kernel.swapDevice.usedSlots == 16)
        #expect(kernel.memory.freePages == free && kernel.swapDevice.cachedPages == 16,
                "written asynchronously, the pages stay in the swap cache until reclaim frees them")
        #expect(kernel.shrinkSwapCache() == 16 && kernel.memory.freePages == free + 16)
        #expect(mm.residentFrame(a) == nil)
        #expect(mm.smaps(startingAt: a)?["Swap"] == 64 * .KiB && mm.smaps(startingAt: a)?["Rss"] == 0)
        expectClean(kernel)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        #expect(kernel.vmstat[.pswpin] == 16 && kernel.vmstat[.pgmajfault] == 16)
        #expect(kernel.swapDevice.usedSlots == 16 && kernel.swapDevice.cachedPages == 16,
                "a read swap-in keeps the slot, its page in the swap cache")
        #expect(mm.translate(a)?.entry.isWritable == false, "a read swap-in maps read-only; the next write reuses the page")
        try mm.write(a, [0xEE]).get()
        #expect(try mm.read(a, count: 2).get() == [0xEE, bytes[1]])
        #expect(kernel.swapDevice.usedSlots == 15, "the write took the page out of the swap cache (reuse_swap_page())")
        expectClean(kernel)
        // Paged out again, the 15 cached pages go without a write; the one written is written anew.
        try mm.madvise(a, length: 64 * .KiB, advice: .pageout)
        #expect(kernel.vmstat[.pswpout] == 17 && kernel.swapDevice.usedSlots == 16 && kernel.swapDevice.cachedPages == 1)
        expectClean(kernel)
        #expect(try mm.read(a, count: 2).get() == [0xEE, bytes[1]])
    }

    @Test("pageout's pages stay in the swap cache, charged, until reclaim frees them without a write; a touch before maps them")
    func pageoutKeepsPagesCached() throws {
        for design in [KernelDesign.linux2_6_38, .linux6_18] {
            let kernel = TestMachine.kernel(memory: 32 << 20, design: design, swap: SwapConfiguration(slots: 4096, pageCluster: 0))
            try kernel.createMemoryCgroup("box")
            let mm = try #require(kernel.createAddressSpace())
            try kernel.move(mm, to: kernel.memoryCgroups.cgroup(named: "box"))
            let box = try #require(kernel.memoryCgroups.cgroup(named: "box"))
            let a = try anon(mm, 64 * .KiB), b = a + 32 * .KiB
            let bytes = pattern(8, Int(32 * .KiB))
            try mm.write(a, bytes).get()
            try mm.write(b, bytes).get()
            let charged = box.usagePages, free = kernel.memory.freePages
            try mm.madvise(a, length: 32 * .KiB, advice: .pageout)
            try mm.madvise(b, length: 32 * .KiB, advice: .pageout)
            #expect(kernel.vmstat[.pswpout] == 16 && kernel.swapDevice.cachedPages == 16, "\(design.name)")
            #expect(kernel.memory.freePages == free && box.usagePages == charged, "still in memory, still charged")
            #expect(mm.smaps(startingAt: a)?["Rss"] == 0 && mm.smaps(startingAt: a)?["Swap"] == 64 * .KiB)
            #expect(kernel.meminfo()["SwapCached"] == 64 * .KiB)
            expectClean(kernel)
            // A touch maps the cached page: no read, no major fault.
            #expect(try mm.read(a, count: bytes.count).get() == bytes)
            #expect(kernel.vmstat[.pswpin] == 0 && kernel.vmstat[.pgmajfault] == 0)
            expectClean(kernel)
            // Reclaim frees b's eight without writing them again; the slots keep the bytes.
            let out = kernel.vmstat[.pswpout]
            kernel.reclaim(pages: 8)
            #expect(kernel.vmstat[.pswpout] == out, "clean: freed without a write")
            #expect(kernel.memory.freePages >= free + 8 && box.usagePages <= charged - 8)
            #expect(try mm.read(b, count: bytes.count).get() == bytes)
            #expect(kernel.vmstat[.pswpin] == 8 && kernel.vmstat[.pgmajfault] == 8, "read back from the device")
            expectClean(kernel)
        }
    }

    @Test("fork shares swap entries (the slot's count is 2); each process swaps in its own copy; exit frees slots")
    func forkWithSwapEntries() throws {
        let (kernel, mm) = TestMachine.process(swap: TestMachine.swapWithoutReadahead)
        let a = try anon(mm, 16 * .KiB)
        let bytes = pattern(6, Int(16 * .KiB))
        try mm.write(a, bytes).get()
        try mm.madvise(a, length: 16 * .KiB, advice: .pageout)
        let child = try mm.fork()
        #expect(kernel.swapDevice.usedSlots == 4)
        expectClean(kernel)
        try child.write(a, [1]).get()
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        #expect(try child.read(a, count: 2).get() == [1, bytes[1]])
        #expect(kernel.swapDevice.usedSlots == 4, "the child's three pages in swap, and the page its write left cached")
        expectClean(kernel)
        child.exit()
        #expect(kernel.swapDevice.usedSlots == 4, "the parent maps the cached pages: they keep their slots")
        try mm.munmap(a, length: 16 * .KiB)
        #expect(kernel.swapDevice.usedSlots == 0 && kernel.swapDevice.cachedPages == 0, "unmapped, they give them back")
        expectClean(kernel)
    }

    @Test("2.6.38 splits a huge page before swap-out; mremap moves swap entries; pinned and shared pages stay")
    func hugeAndPinned() throws {
        let (kernel, mm) = TestMachine.process(memory: 32 << 20, enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(2, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        let pinned = try #require(mm.residentFrame(a + 8 * .KiB))
        try mm.madvise(a, length: 2 * .MiB, advice: .pageout)
        #expect(kernel.vmstat[.thpSplitPage] == 1 && kernel.vmstat[.pswpout] == 512 && kernel.vmstat[.thpSwpout] == 0)
        expectClean(kernel)
        // mremap the swapped range elsewhere; the data follows.
        let moved = try mm.mremap(a, oldSize: 2 * .MiB, newSize: 2 * .MiB, flags: [.mayMove, .fixed], newAddress: a + 4 * .MiB)
        #expect(mm.smaps(startingAt: moved)?["Swap"] == 2 * .MiB)
        #expect(try mm.read(moved, count: bytes.count).get() == bytes)
        expectClean(kernel)
        // A pinned page is not swapped out.
        let page = try #require(mm.residentFrame(moved + 8 * .KiB))
        kernel.getPage(page)
        try mm.madvise(moved, length: 2 * .MiB, advice: .pageout)
        #expect(mm.residentFrame(moved + 8 * .KiB) == page && mm.smaps(startingAt: moved)?["Swap"] == 2 * .MiB - 4 * .KiB)
        kernel.putPage(page)
        _ = pinned
        expectClean(kernel)
    }

    @Test("MADV_COLLAPSE swaps swapped-out pages into the new huge page")
    func collapseSwapsIn() throws {
        let (kernel, mm) = TestMachine.process(memory: 32 << 20)
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(3, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        try mm.madvise(a + 1 * .MiB, length: 1 * .MiB, advice: .pageout)
        try mm.madvise(a, length: 2 * .MiB, advice: .collapse)
        #expect(isHuge(mm, a) && kernel.swapDevice.usedSlots == 0 && kernel.vmstat[.pswpin] == 256)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }
}
