import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("swap cache: pages shared through swap after fork")
struct SwapCacheTests {
    /// A parent with 16 KiB swapped out and a child that shares the swap entries.
    func forkedWithSwap(_ bytes: [UInt8]) throws -> (Kernel, AddressSpace, AddressSpace, VirtualAddress) {
        let (kernel, mm) = TestMachine.process(swap: TestMachine.swapWithoutReadahead)
        let a = try anon(mm, UInt64(bytes.count))
        try mm.write(a, bytes).get()
        #expect(try pageOutToDevice(kernel, mm, a, length: UInt64(bytes.count)) == bytes.count / 4096)
        let child = try mm.fork()
        return (kernel, mm, child, a)
    }

    @Test("a page swapped in by one process stays in the swap cache, read-only; the other maps the same page")
    func sharedSwapIn() throws {
        let bytes = pattern(9, Int(16 * .KiB))
        let (kernel, mm, child, a) = try forkedWithSwap(bytes)
        #expect(try child.read(a, count: bytes.count).get() == bytes)
        #expect(kernel.swapDevice.cachedPages == 4 && kernel.swapDevice.usedSlots == 4)
        #expect(kernel.meminfo()["SwapCached"] == 16 * .KiB)
        #expect(child.translate(a)?.entry.isWritable == false)
        expectClean(kernel)
        let pswpin = kernel.vmstat[.pswpin]
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        #expect(kernel.vmstat[.pswpin] == pswpin, "the parent's swap-in read nothing: it found the pages in the cache")
        #expect(kernel.vmstat[.pgmajfault] == 4, "only the child's faults were major")
        #expect(mm.residentFrame(a) == child.residentFrame(a), "one page for both")
        #expect(kernel.swapDevice.cachedPages == 4 && kernel.swapDevice.usedSlots == 4,
                "no entry names the slots, but the mapped pages keep them in the cache (swap is not short)")
        expectClean(kernel)
        // Shared now as after fork: a write copies.
        try child.write(a, [0xAB]).get()
        #expect(mm.residentFrame(a) != child.residentFrame(a))
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }

    @Test("a write to a swap-cache page copies it, and the slot keeps the old bytes for the other process")
    func writeCopiesCachedPage() throws {
        let bytes = pattern(3, Int(16 * .KiB))
        let (kernel, mm, child, a) = try forkedWithSwap(bytes)
        try child.write(a + 5, [1, 2, 3]).get()
        #expect(kernel.swapDevice.cachedPages == 1, "the swapped-in page stays cached for the parent")
        expectClean(kernel)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        var expected = bytes
        expected[5...7] = [1, 2, 3]
        #expect(try child.read(a, count: bytes.count).get() == expected)
        expectClean(kernel)
    }

    @Test("reclaim frees a swap-cache page nothing maps; the slot still has the bytes")
    func reclaimUnmappedCachePage() throws {
        let bytes = pattern(5, Int(16 * .KiB))
        let (kernel, mm, child, a) = try forkedWithSwap(bytes)
        _ = try child.read(a, count: 1).get()
        try child.munmap(a, length: 16 * .KiB)
        #expect(kernel.swapDevice.cachedPages == 1)
        expectClean(kernel)
        let free = kernel.memory.freePages
        kernel.reclaim(pages: 1)
        #expect(kernel.swapDevice.cachedPages == 0 && kernel.memory.freePages == free + 1)
        #expect(kernel.vmstat[.pgstealKswapd] == 1)
        expectClean(kernel)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }

    @Test("exit of the last other process naming a slot leaves the mapped page cached; a write then frees the slot")
    func exitFreesSlotAndCache() throws {
        let bytes = pattern(7, Int(16 * .KiB))
        let (kernel, mm, child, a) = try forkedWithSwap(bytes)
        _ = try child.read(a, count: bytes.count).get()
        #expect(kernel.swapDevice.cachedPages == 4)
        mm.exit()
        #expect(kernel.swapDevice.cachedPages == 4 && kernel.swapDevice.usedSlots == 4,
                "free_swap_and_cache() leaves a page that is mapped")
        expectClean(kernel)
        let frame = child.residentFrame(a)
        try child.write(a, [9]).get()
        #expect(child.residentFrame(a) == frame, "reused in place, not copied")
        #expect(kernel.swapDevice.cachedPages == 3 && kernel.swapDevice.usedSlots == 3)
        #expect(try child.read(a, count: 2).get() == [9, bytes[1]])
        expectClean(kernel)
        try child.munmap(a, length: 16 * .KiB)
        #expect(kernel.swapDevice.cachedPages == 0 && kernel.swapDevice.usedSlots == 0, "unmapped, the rest go")
        expectClean(kernel)
    }

    @Test("migration moves a swap-cache page and its cache entry; the other process then maps the new frame")
    func migrateCachedPage() throws {
        let bytes = pattern(12, Int(16 * .KiB))
        let (kernel, mm, child, a) = try forkedWithSwap(bytes)
        _ = try child.read(a, count: 1).get()
        let old = try #require(child.residentFrame(a))
        let target = try #require(kernel.memory.allocateFolio(order: .base, kind: .anonymous))
        #expect(kernel.migratePage(old, to: target, mappings: [(child, a)]) == .migrated(target))
        #expect(kernel.memory.frames.kind(old) == .free && kernel.swapDevice.cachedPages == 1)
        expectClean(kernel)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        #expect(mm.residentFrame(a) == target, "the parent found the moved page in the swap cache")
        expectClean(kernel)
    }

    @Test("meminfo shows the device: SwapTotal, SwapFree, SwapCached")
    func meminfo() throws {
        let bytes = pattern(2, Int(16 * .KiB))
        let (kernel, mm, child, a) = try forkedWithSwap(bytes)
        let info = kernel.meminfo()
        #expect(info["SwapTotal"] == UInt64(kernel.swapDevice.capacity) * 4096)
        #expect(info["SwapFree"] == info["SwapTotal"]! - 16 * .KiB)
        _ = try child.read(a, count: 1).get()
        #expect(kernel.meminfo()["SwapCached"] == 4 * .KiB)
        withExtendedLifetime(mm) {}
    }
}

@Suite("reclaim of pages shared after fork")
struct SharedReclaimTests {
    @Test("reclaim unmaps a shared page from every process: one slot per page, its count the mappings")
    func sharedPagesGoToSwap() throws {
        let (kernel, mm) = TestMachine.process(swap: TestMachine.swapWithoutReadahead)
        let a = try anon(mm, 64 * .KiB)
        let bytes = pattern(4, Int(64 * .KiB))
        try mm.write(a, bytes).get()
        let child = try mm.fork()
        let free = kernel.memory.freePages
        mm.clearYoung(a, length: 64 * .KiB)
        child.clearYoung(a, length: 64 * .KiB)
        kernel.reclaim(pages: 16)
        #expect(kernel.memory.freePages == free + 16)
        #expect(kernel.vmstat[.pswpout] == 16, "each shared page written once")
        #expect(kernel.swapDevice.usedSlots == 16 && kernel.swapDevice.cachedPages == 0)
        #expect(mm.smaps(startingAt: a)?["Swap"] == 64 * .KiB && child.smaps(startingAt: a)?["Swap"] == 64 * .KiB)
        #expect(kernel.vmstat[.pgstealKswapd] == 16)
        expectClean(kernel)
        #expect(try child.read(a, count: bytes.count).get() == bytes)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        #expect(kernel.vmstat[.pswpin] == 16, "the second process found the pages in the swap cache")
        #expect(kernel.swapDevice.usedSlots == 16 && kernel.swapDevice.cachedPages == 16,
                "read by both, the pages keep their slots in the swap cache")
        expectClean(kernel)
    }
}
