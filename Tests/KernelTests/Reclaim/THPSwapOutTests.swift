#if canImport(Glibc)
import Glibc
#endif
import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("linux-6.18 THP swap-out whole, and swap devices")
struct THPSwapOutTests {
    func kernel(swap: SwapConfiguration, memory: UInt64 = 32 << 20) -> (Kernel, AddressSpace) {
        var settings = KernelDesign.linux6_18.defaultSettings
        settings.enabled = .always
        var configuration = KernelConfiguration(memoryBytes: memory, mode: .data, watermarks: .zero,
                                                design: .linux6_18, hugepageSettings: settings)
        configuration.swap = swap
        let kernel = Kernel(configuration)
        return (kernel, kernel.createAddressSpace()!)
    }

    @Test("a device with clusters takes a THP whole: thp_swpout, 512 contiguous slots, no folio split")
    func wholeTHP() throws {
        let (kernel, mm) = kernel(swap: SwapConfiguration(clusters: true))
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(8, Int(2 * .MiB))
        try mm.write(a, bytes).get()
        #expect(isHuge(mm, a))
        let free = kernel.memory.freePages
        try mm.madvise(a, length: 2 * .MiB, advice: .pageout)
        let v = kernel.vmstat
        #expect(v[.thpSwpout] == 1 && v[.thpSwpoutFallback] == 0 && v[.thpSplitPage] == 0 && v[.thpSplitPMD] == 1)
        #expect(kernel.mthpStatValue("hugepages-2048kB/stats/swpout") == 1)
        #expect(v[.pswpout] == 512 && v[.pgpgout] == 2048)
        #expect(kernel.memory.freePages == free + 512, "the folio was freed whole (its deposited table now holds the entries)")
        #expect(mm.smaps(startingAt: a)?["Swap"] == 2 * .MiB && mm.smaps(startingAt: a)?["AnonHugePages"] == 0)
        expectClean(kernel)
        #expect(try mm.read(a, count: bytes.count).get() == bytes, "4 KiB pages come back")
        #expect(v[.pswpin] == 512)
        #expect(kernel.swapDevice.usedSlots == kernel.swapDevice.cachedPages,
                "no entry names a slot: those in use are kept by pages read back into the swap cache")
        expectClean(kernel)
    }

    @Test("reclaim writes an old THP whole to a device with clusters (pgsteal counts 512)")
    func reclaimWholeTHP() throws {
        let (kernel, mm) = kernel(swap: SwapConfiguration(clusters: true))
        let a = try hugeRegion(mm, 4 * .MiB)
        try mm.write(a, [1]).get()
        try mm.write(a + 2 * .MiB, [2]).get()
        mm.clearYoung(a, length: 2 * .MiB)
        #expect(kernel.reclaim(pages: 100) >= 512)
        #expect(kernel.vmstat[.thpSwpout] == 1 && kernel.vmstat[.thpSplitPage] == 0)
        #expect(kernel.vmstat[.pgstealKswapd] == 512)
        #expect(!isHuge(mm, a) && isHuge(mm, a + 2 * .MiB), "the young one kept whole")
        expectClean(kernel)
        #expect(try mm.read(a, count: 1).get() == [1])
        expectClean(kernel)
    }

    @Test("without a free cluster the THP falls back (thp_swpout_fallback) and is split, as with a swap file")
    func noFreeCluster() throws {
        let (kernel, mm) = kernel(swap: SwapConfiguration(slots: 600, clusters: true))
        let a = try hugeRegion(mm, 4 * .MiB)
        let bytes = pattern(6, Int(4 * .MiB))
        try mm.write(a, bytes).get()
        try mm.madvise(a, length: 2 * .MiB, advice: .pageout)
        #expect(kernel.vmstat[.thpSwpout] == 1)
        try mm.madvise(a + 2 * .MiB, length: 2 * .MiB, advice: .pageout)
        #expect(kernel.vmstat[.thpSwpout] == 1 && kernel.vmstat[.thpSwpoutFallback] == 1 && kernel.vmstat[.thpSplitPage] == 1)
        #expect(kernel.swapDevice.usedSlots == 600, "the split pages filled the rest of the device")
        expectClean(kernel)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }

    @Test("a file-backed swap device keeps every byte, for 4 KiB pages and THPs")
    func fileBacked() throws {
        let storage = try FileSwapStorage(directory: "/tmp")
        let (kernel, mm) = kernel(swap: SwapConfiguration(clusters: true, storage: storage))
        let a = try hugeRegion(mm, 4 * .MiB)
        let bytes = pattern(11, Int(4 * .MiB))
        try mm.write(a, bytes).get()
        try mm.madvise(a, length: 2 * .MiB, advice: .pageout)
        try mm.madvise(a + 2 * .MiB + 64 * .KiB, length: 64 * .KiB, advice: .pageout)
        #expect(kernel.vmstat[.thpSwpout] == 1 && kernel.vmstat[.pswpout] == 512 + 16)
        expectClean(kernel)
        let child = try mm.fork()
        #expect(try child.read(a, count: bytes.count).get() == bytes)
        #expect(try mm.read(a, count: bytes.count).get() == bytes)
        expectClean(kernel)
    }

    @Test("a swap file in a directory that does not exist is an error naming it")
    func badDirectory() {
        #expect {
            _ = try FileSwapStorage(directory: "/nonexistent-thpsim-dir")
        } throws: { error in
            "\(error)".contains("/nonexistent-thpsim-dir")
        }
    }
}
