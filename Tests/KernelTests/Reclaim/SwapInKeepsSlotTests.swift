import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

/// Today's swap-in: a page swapped in keeps its slot in the swap cache unless the fault writes or swap
/// is short, is mapped writable when nobody else has it, and goes back to swap without a write unless
/// it was written since (Linux 6.18: `do_swap_page()` → `should_try_to_free_swap()`,
/// `mem_cgroup_swap_full()`; `shrink_folio_list()` → `pageout()` only for a dirty folio).
/// `scenarios/thp-6.18/swapin-keeps-slot.scen` checks the same against the live kernel.
@Suite("swap-in keeps the slot (Linux 6.18)")
struct SwapInKeepsSlotTests {
    /// A process of today's design with `pages` written and paged out, on a device of `slots`.
    func pagedOut(pages: Int, slots: Int = 4096) throws -> (Kernel, AddressSpace, VirtualAddress, [UInt8]) {
        let kernel = TestMachine.kernel(memory: 32 << 20, design: .linux6_18, swap: SwapConfiguration(slots: slots, pageCluster: 0))
        let mm = try #require(kernel.createAddressSpace())
        let a = try anon(mm, UInt64(pages) * 4096)
        let bytes = pattern(21, pages * 4096)
        try mm.write(a, bytes).get()
        try mm.madvise(a, length: UInt64(pages) * 4096, advice: .pageout)
        #expect(kernel.vmstat[.pswpout] == pages && kernel.swapDevice.cachedPages == pages,
                "written, and kept in the swap cache until reclaim frees them")
        #expect(kernel.shrinkSwapCache() == pages && kernel.swapDevice.cachedPages == 0)
        return (kernel, mm, a, bytes)
    }

    @Test("a read swap-in keeps the slot and maps the page writable; a write then does not fault")
    func readKeepsSlotWritable() throws {
        let (kernel, mm, a, bytes) = try pagedOut(pages: 16)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        #expect(kernel.vmstat[.pswpin] == 16 && kernel.vmstat[.pgmajfault] == 16)
        #expect(kernel.swapDevice.cachedPages == 16 && kernel.swapDevice.usedSlots == 16)
        #expect(kernel.meminfo()["SwapCached"] == 64 * .KiB)
        #expect(mm.translate(a)?.entry.isWritable == true, "exclusive: writable at once, still in the swap cache")
        expectClean(kernel)
        let faults = kernel.vmstat[.pgfault]
        try mm.write(a + 4096, [0x5A]).get()
        #expect(kernel.vmstat[.pgfault] == faults, "the write went through the writable PTE")
        #expect(kernel.swapDevice.cachedPages == 16, "the written page stays cached, dirty")
        expectClean(kernel)
    }

    @Test("paged out again, clean cached pages are not written; a dirty one is, to its own slot")
    func cleanNotWrittenAgain() throws {
        let (kernel, mm, a, bytes) = try pagedOut(pages: 16)
        _ = try mm.read(a, count: bytes.count).get()
        try mm.write(a + 4096 + 7, [0x5A]).get()
        let used = kernel.swapDevice.usedSlots
        try mm.madvise(a, length: 16 * 4096, advice: .pageout)
        #expect(kernel.vmstat[.pswpout] == 16 + 1, "only the page written since its swap-in")
        #expect(kernel.swapDevice.usedSlots == used && kernel.swapDevice.cachedPages == 1,
                "the clean ones went at once; the one just written stays cached until reclaim")
        expectClean(kernel)
        var expected = bytes
        expected[4096 + 7] = 0x5A
        #expect(try mm.read(a, count: bytes.count).get() == expected, "the dirty page's new bytes came back")
        expectClean(kernel)
    }

    @Test("reclaim writes a dirty cached page back too, and drops a clean one without a write")
    func reclaimWritesOnlyDirty() throws {
        let (kernel, mm, a, bytes) = try pagedOut(pages: 16)
        _ = try mm.read(a, count: bytes.count).get()
        try mm.write(a, [0x11]).get()
        mm.clearYoung(a, length: 16 * 4096)
        let out = kernel.vmstat[.pswpout]
        kernel.reclaim(pages: 16)
        #expect(kernel.vmstat[.pswpout] == out + 1)
        #expect(kernel.swapDevice.cachedPages == 0 && kernel.swapDevice.usedSlots == 16)
        expectClean(kernel)
        var expected = bytes
        expected[0] = 0x11
        #expect(try mm.read(a, count: bytes.count).get() == expected)
        expectClean(kernel)
    }

    @Test("a device's write into a cached page through a pin makes it dirty: paged out again, it is written")
    func dmaDirties() throws {
        let (kernel, mm, a, bytes) = try pagedOut(pages: 4)
        _ = try mm.read(a, count: bytes.count).get()
        let device = DirectIODevice(kernel: kernel)
        guard case .success(let request) = device.submit(.read, in: mm, buffer: a, length: 4096, cpu: 0) else {
            Issue.record("O_DIRECT submit failed"); return
        }
        let data = [UInt8](repeating: 0x77, count: 4096)
        device.completeRead(request, data: data)
        let out = kernel.vmstat[.pswpout]
        try mm.madvise(a, length: 4 * 4096, advice: .pageout)
        #expect(kernel.vmstat[.pswpout] == out + 1, "the page the device wrote, and only it")
        expectClean(kernel)
        #expect(try mm.read(a, count: 4096).get() == data)
        expectClean(kernel)
    }

    @Test("an entry a fork shared is not exclusive, even after the other process is gone: read back read-only, the write reuses")
    func forkClearsExclusive() throws {
        let (kernel, mm, a, bytes) = try pagedOut(pages: 4)
        let child = try mm.fork()
        child.exit()
        #expect(kernel.swapDevice.usedSlots == 4)
        expectClean(kernel)
        _ = try mm.read(a, count: bytes.count).get()
        #expect(mm.translate(a)?.entry.isWritable == false, "pte_swp_exclusive() was cleared by the fork")
        #expect(kernel.swapDevice.cachedPages == 4)
        let frame = mm.residentFrame(a), faults = kernel.vmstat[.pgfault]
        try mm.write(a, [0x42]).get()
        #expect(kernel.vmstat[.pgfault] == faults + 1 && mm.residentFrame(a) == frame,
                "the write faults once and reuses the page, its swap freed (wp_can_reuse_anon_folio())")
        #expect(kernel.swapDevice.cachedPages == 3 && kernel.swapDevice.usedSlots == 3)
        expectClean(kernel)
    }

    @Test("a write swap-in frees the slot: the page is the process's alone")
    func writeFreesSlot() throws {
        let (kernel, mm, a, _) = try pagedOut(pages: 4)
        try mm.write(a, [1]).get()
        #expect(kernel.vmstat[.pswpin] == 1)
        #expect(kernel.swapDevice.usedSlots == 3 && kernel.swapDevice.cachedPages == 0)
        #expect(mm.translate(a)?.entry.isDirty == true)
        expectClean(kernel)
    }

    @Test("with more than half the device in use, a swap-in frees the slot at once (vm_swap_full())")
    func halfFullFrees() throws {
        // 40 of 64 slots in use: more than half.
        let (kernel, mm, a, bytes) = try pagedOut(pages: 40, slots: 64)
        _ = try mm.read(a, count: 4096).get()
        #expect(kernel.swapDevice.usedSlots == 39 && kernel.swapDevice.cachedPages == 0)
        // At half (32 in use after eight more swap-ins), the next one keeps its slot.
        _ = try mm.read(a + 4096, count: 8 * 4096).get()
        #expect(kernel.swapDevice.usedSlots == 32 && kernel.swapDevice.cachedPages == 1)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }

    @Test("a cgroup using half its memory.swap.max frees at swap-in (mem_cgroup_swap_full())")
    func cgroupHalfFullFrees() throws {
        let kernel = TestMachine.kernel(memory: 32 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 4096, pageCluster: 0))
        try kernel.createMemoryCgroup("box")
        try kernel.writeCgroupFile("box", "memory.swap.max", "64K")   // 16 pages
        let mm = try #require(kernel.createAddressSpace())
        try kernel.move(mm, to: kernel.memoryCgroups.cgroup(named: "box"))
        let a = try anon(mm, 16 * 4096)
        try mm.write(a, pattern(3, 16 * 4096)).get()
        try mm.madvise(a, length: 16 * 4096, advice: .pageout)
        #expect(kernel.swapDevice.usedSlots == 16)
        // 16 charged of 16: each swap-in frees its slot while 8 or more are charged (half the
        // maximum), so the first nine do and the last seven keep theirs.
        for page in 0..<16 { _ = try mm.read(a + UInt64(page) * 4096, count: 1).get() }
        #expect(kernel.swapDevice.cachedPages == 7 && kernel.swapDevice.usedSlots == 7)
        expectClean(kernel)
    }

    @Test("reclaim that activates a cached page gives its slot back when swap is short")
    func activationFreesWhenShort() throws {
        // 16 of 32 slots kept by pages two processes read back (half the device: not short).
        let (kernel, mm, a, bytes) = try pagedOut(pages: 16, slots: 32)
        let child = try mm.fork()
        _ = try mm.read(a, count: bytes.count).get()
        _ = try child.read(a, count: bytes.count).get()
        #expect(kernel.swapDevice.cachedPages == 16 && kernel.swapDevice.usedSlots == 16)
        // Four more slots in use: more than half.
        let b = try anon(mm, 4 * 4096)
        try mm.write(b, pattern(2, 4 * 4096)).get()
        try mm.madvise(b, length: 4 * 4096, advice: .pageout)
        #expect(kernel.swapDevice.usedSlots == 20)
        // Young in both mappings, the cached pages are activated at the first look, and their
        // slots freed while more than half the device is in use: four of them.
        kernel.reclaim(pages: 8)
        #expect(kernel.vmstat[.pgactivate] == 16)
        #expect(kernel.swapDevice.cachedPages == 12)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        #expect(try child.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }

    @Test("an allocation that finds no free slot frees the slots only cached pages hold")
    func fullDeviceFreesCacheOnlySlots() throws {
        // 16 slots: 8 pages read back keep theirs (half in use then), 8 other pages need slots.
        let (kernel, mm, a, bytes) = try pagedOut(pages: 8, slots: 16)
        _ = try mm.read(a, count: bytes.count).get()
        #expect(kernel.swapDevice.cachedPages == 8 && kernel.swapDevice.usedSlots == 8)
        let b = try anon(mm, 12 * 4096)
        try mm.write(b, pattern(4, 12 * 4096)).get()
        try mm.madvise(b, length: 12 * 4096, advice: .pageout)
        #expect(mm.smaps(startingAt: b)?["Swap"] == 48 * .KiB, "every page found a slot")
        #expect(kernel.swapDevice.cachedPages == 12 && kernel.swapDevice.usedSlots == 12,
                "the first eight slots' cached pages were freed; the twelve written stay cached")
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }
}
