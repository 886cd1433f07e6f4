import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// A cgroup's swap as cgroup v2 counts it (Documentation/admin-guide/cgroup-v2.rst,
/// "memory.swap.current", "memory.swap.max", "memory.swap.events"): each swapped-out page is charged
/// once, to the cgroup of the page, when its slot is taken, and uncharged when the slot is freed
/// (`__mem_cgroup_try_charge_swap()`, `mem_cgroup_uncharge_swap()`); a swap-out that would take a
/// cgroup past its `memory.swap.max` is refused for that page.
@Suite("Memory cgroups: swap charges")
struct SwapChargeTests {
    /// A 6.18 kernel with swap, the cgroup "box" and a process in it that has written `pages` pages.
    func box(pages: Int) throws -> (Kernel, AddressSpace, VirtualAddress) {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 8192))
        try kernel.createMemoryCgroup("box")
        let mm = try #require(kernel.createAddressSpace())
        try kernel.move(mm, to: kernel.memoryCgroups.cgroup(named: "box"))
        let start = try mm.mmap(address: nil, length: UInt64(pages) * 4096, protection: .readWrite, flags: .private)
        // A byte that is never 0: a page of zeros would go to the swap zero map and be freed at once.
        for page in 0..<pages { try mm.write(start + UInt64(page) * 4096, [UInt8(page & 0x7F) | 0x80]).get() }
        return (kernel, mm, start)
    }

    func swapPages(_ kernel: Kernel, _ cgroup: String = "box") throws -> Int {
        Int(try kernel.readCgroupFile(cgroup, "memory.swap.current").dropLast())! / 4096
    }

    @Test("a slot shared after fork is charged once, until its last entry goes")
    func sharedAfterFork() throws {
        let (kernel, parent, start) = try box(pages: 64)
        try parent.madvise(start, length: 64 * 4096, advice: .pageout)
        #expect(try swapPages(kernel) == 64)
        let child = try parent.fork()
        #expect(try swapPages(kernel) == 64)
        child.exit()
        #expect(try swapPages(kernel) == 64)
        // Read back in, the pages keep their slots in the swap cache, still charged; unmapped, they
        // give them back.
        for page in 0..<64 { _ = try parent.read(start + UInt64(page) * 4096, count: 1).get() }
        #expect(try swapPages(kernel) == 64 && kernel.swapDevice.cachedPages == 64)
        expectClean(kernel)
        try parent.munmap(start, length: 64 * 4096)
        #expect(try swapPages(kernel) == 0 && kernel.swapDevice.cachedPages == 0)
        expectClean(kernel)
        withExtendedLifetime(parent) {}
    }

    @Test("memory.swap.max is checked page by page: the pages past it stay, counted as max and fail events")
    func limitPerPage() throws {
        let (kernel, mm, start) = try box(pages: 512)
        try kernel.writeCgroupFile("box", "memory.swap.max", "1M")   // 256 pages
        // The 256 written stay in the swap cache until reclaim frees them: here at once.
        #expect(try pageOutToDevice(kernel, mm, start, length: 512 * 4096) == 256)
        #expect(try swapPages(kernel) == 256)
        let events = try kernel.readCgroupFile("box", "memory.swap.events")
        #expect(events.hasPrefix("high 0\nmax 256\nfail 256\n"), "\(events)")
        // Reclaim leaves the cgroup alone once it is at its limit, global reclaim too.
        let box = try #require(kernel.memoryCgroups.cgroup(named: "box"))
        #expect(!kernel.mayStillSwap(box))
        #expect(kernel.reclaim(pages: 64, by: .kswapd) == 0)
        #expect(try swapPages(kernel) == 256)
        expectClean(kernel)
        withExtendedLifetime(mm) {}
    }

    @Test("memory.swap.high: a charge over it counts a high event in each cgroup past it; nothing is refused")
    func swapHigh() throws {
        let (kernel, mm, start) = try box(pages: 64)
        #expect(try kernel.readCgroupFile("box", "memory.swap.high") == "max\n")
        try kernel.writeCgroupFile("box", "memory.swap.high", "64K")   // 16 pages
        #expect(try kernel.readCgroupFile("box", "memory.swap.high") == "65536\n")
        #expect(throws: Errno.EINVAL) { try kernel.writeCgroupFile("box", "memory.swap.high", "-1") }
        try mm.madvise(start, length: 64 * 4096, advice: .pageout)
        #expect(try swapPages(kernel) == 64, "swap.high refuses no swap-out")
        #expect(try kernel.readCgroupFile("box", "memory.swap.events").hasPrefix("high 0\n"), "no memory charge yet")
        // Three new pages: three charges, each returning over swap.high.
        let more = try mm.mmap(address: nil, length: 3 * 4096, protection: .readWrite, flags: .private)
        for page in 0..<3 { try mm.write(more + UInt64(page) * 4096, [1]).get() }
        #expect(try kernel.readCgroupFile("box", "memory.swap.events").hasPrefix("high 3\nmax 0\nfail 0\n"))
        // Swap-ins free their slots while 8 or more are charged (half of swap.high).
        for page in 0..<64 { _ = try mm.read(start + UInt64(page) * 4096, count: 1).get() }
        #expect(try swapPages(kernel) == 7 && kernel.swapDevice.cachedPages == 7)
        expectClean(kernel)
    }

    @Test("a removed cgroup's swap stays charged above it until the slots are freed")
    func removedCgroupKeepsSwap() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 8192))
        try kernel.createMemoryCgroup("pod")
        try kernel.createMemoryCgroup("pod/job")
        let mm = try #require(kernel.createAddressSpace())
        try kernel.move(mm, to: kernel.memoryCgroups.cgroup(named: "pod/job"))
        let start = try mm.mmap(address: nil, length: 32 * 4096, protection: .readWrite, flags: .private)
        for page in 0..<32 { try mm.write(start + UInt64(page) * 4096, [1]).get() }
        try mm.madvise(start, length: 32 * 4096, advice: .pageout)
        try kernel.move(mm, to: nil)
        try kernel.removeMemoryCgroup("pod/job")
        #expect(try swapPages(kernel, "pod") == 32)
        try mm.munmap(start, length: 32 * 4096)
        #expect(try swapPages(kernel, "pod") == 0)
        expectClean(kernel)
    }
}
