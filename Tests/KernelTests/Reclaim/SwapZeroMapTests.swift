import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

/// The swap device's zero map (Linux 6.12+): a page that is all zeros goes to swap as a bit, without
/// a write, and comes back without a read (`swap_writepage()` → `is_folio_zero_filled()`,
/// `swap_zeromap_folio_set()`; `swap_read_folio()` → `swap_read_folio_zeromap()`; `swpout_zero`,
/// `swpin_zero`). Measured on Linux 6.18.44 (2026-12-07): 4 MiB paged out, its first half all zeros,
/// counted `pswpout` +512 and `swpout_zero` +512, left 2,048 kB in the swap cache (the written half),
/// and reading the zero half back counted `swpin_zero` +512 and no `pswpin`.
@Suite("swap: the zero map (Linux 6.12+)")
struct SwapZeroMapTests {
    func process(_ design: KernelDesign, clusters: Bool = false) throws -> (Kernel, AddressSpace) {
        var settings = design.defaultSettings
        settings.enabled = .never
        var configuration = KernelConfiguration(memoryBytes: 32 << 20, mode: .data, watermarks: .zero,
                                                design: design, hugepageSettings: settings)
        configuration.swap = SwapConfiguration(slots: 4096, clusters: clusters, pageCluster: 0)
        let kernel = Kernel(configuration)
        return (kernel, try #require(kernel.createAddressSpace()))
    }

    @Test("today, zero-filled pages go out and come back without I/O, and are freed at once; 2.6.38 writes them")
    func zeroPagesSkipIO() throws {
        for design in [KernelDesign.linux6_18, .linux2_6_38] {
            let (kernel, mm) = try process(design)
            let a = try anon(mm, 16 * 4096)
            let zeros = [UInt8](repeating: 0, count: 8 * 4096), data = pattern(5, 8 * 4096)
            try mm.write(a, data + zeros).get()   // the last eight pages written, all zeros
            let free = kernel.memory.freePages
            try mm.madvise(a, length: 16 * 4096, advice: .pageout)
            let today = design.swapsZeroFilledPagesWithoutIO
            #expect(today == (design.name == "linux-6.18"))
            #expect(kernel.vmstat[.pswpout] == (today ? 8 : 16) && kernel.vmstat[.swpoutZero] == (today ? 8 : 0), "\(design.name)")
            #expect(kernel.vmstat[.pgpgout] == (today ? 32 : 64))
            // Nothing in flight for a zero page: it goes now; the written ones stay cached.
            #expect(kernel.swapDevice.cachedPages == (today ? 8 : 16))
            #expect(kernel.memory.freePages == free + (today ? 8 : 0))
            #expect(mm.smaps(startingAt: a)?["Swap"] == 16 * 4096)
            expectClean(kernel)
            #expect(kernel.shrinkSwapCache() == (today ? 8 : 16))
            #expect(try mm.read(a, count: 16 * 4096).get() == data + zeros)
            #expect(kernel.vmstat[.pgmajfault] == 16, "a zero-map swap-in is still a major fault")
            #expect(kernel.vmstat[.pswpin] == (today ? 8 : 16) && kernel.vmstat[.swpinZero] == (today ? 8 : 0))
            expectClean(kernel)
        }
    }

    @Test("a slot freed leaves the zero map: a page written there later reads back its own bytes")
    func freedSlotLeavesZeroMap() throws {
        let (kernel, mm) = try process(.linux6_18)
        let a = try anon(mm, 4096)
        try mm.write(a, [UInt8](repeating: 0, count: 4096)).get()
        try mm.madvise(a, length: 4096, advice: .pageout)
        #expect(kernel.vmstat[.swpoutZero] == 1 && kernel.swapDevice.usedSlots == 1)
        try mm.munmap(a, length: 4096)
        #expect(kernel.swapDevice.usedSlots == 0)
        let b = try anon(mm, 4096)
        let bytes = pattern(9, 4096)
        try mm.write(b, bytes).get()
        #expect(try pageOutToDevice(kernel, mm, b, length: 4096) == 1)
        #expect(kernel.vmstat[.pswpout] == 1)
        #expect(try mm.read(b, count: 4096).get() == bytes)
        #expect(kernel.vmstat[.pswpin] == 1 && kernel.vmstat[.swpinZero] == 0)
        expectClean(kernel)
    }

    @Test("a THP goes to the zero map only when all of it is zeros; one byte set writes all 512 pages")
    func wholeTHPByFolio() throws {
        for oneByte in [false, true] {
            let (kernel, mm) = try process(.linux6_18, clusters: true)
            try kernel.transparentHugepageSysfs.write("enabled", "always")
            let a = try hugeRegion(mm, 2 * .MiB)
            var bytes = [UInt8](repeating: 0, count: Int(2 * .MiB))
            if oneByte { bytes[12345] = 7 }
            try mm.write(a, bytes).get()
            #expect(isHuge(mm, a))
            try mm.madvise(a, length: 2 * .MiB, advice: .pageout)
            #expect(kernel.vmstat[.thpSwpout] == 1)
            #expect(kernel.vmstat[.pswpout] == (oneByte ? 512 : 0) && kernel.vmstat[.swpoutZero] == (oneByte ? 0 : 512))
            expectClean(kernel)
            #expect(try mm.read(a, count: bytes.count).get() == bytes)
            #expect(kernel.vmstat[.pswpin] == (oneByte ? 512 : 0) && kernel.vmstat[.swpinZero] == (oneByte ? 0 : 512))
            expectClean(kernel)
        }
    }
}
