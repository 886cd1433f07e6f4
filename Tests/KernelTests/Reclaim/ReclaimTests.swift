import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("reclaim: kswapd on watermarks and direct reclaim")
struct ReclaimTests {
    @Test("falling below the low watermark wakes kswapd, which swaps old pages out until free is above high")
    func kswapd() throws {
        let (kernel, mm, a, pages) = try kernelUnderPressure { [UInt8(truncatingIfNeeded: $0), 7] }
        #expect(kernel.memory.freePages < 256 && kernel.kswapd.isWoken)
        kernel.advanceTime(by: 1_000_000)
        #expect(!kernel.kswapd.isWoken)
        #expect(kernel.memory.freePages >= 512)
        #expect(kernel.vmstat[.pswpout] >= 512 - 200)
        #expect(mm.smaps(startingAt: a)!["Swap"]! > 0)
        expectClean(kernel)
        for i in 0..<pages { #expect(try mm.read(a + UInt64(i) * 4096, count: 2).get() == [UInt8(truncatingIfNeeded: i), 7]) }
        expectClean(kernel)
    }

    @Test("an allocation with nothing free reclaims directly; young pages get a second chance")
    func directReclaim() throws {
        let (kernel, mm) = TestMachine.process(memory: 8 << 20)
        let pages = kernel.memory.freePages + 512
        let a = try mm.mmap(length: UInt64(pages) * 4096, protection: .readWrite, flags: [.private, .noReserve])
        for i in 0..<pages { try mm.write(a + UInt64(i) * 4096, [UInt8(truncatingIfNeeded: i)]).get() }
        #expect(kernel.vmstat[.pswpout] >= 512)
        #expect(kernel.vmstat[.pgmajfault] == 0)
        // The first pages written are the ones gone: they are at the cold end of the lists, so they
        // were deactivated and reclaimed first, while the last ones written are still in memory.
        #expect(mm.residentFrame(a) == nil && mm.residentFrame(a + UInt64(pages - 1) * 4096) != nil)
        expectClean(kernel)
        for i in 0..<pages { #expect(try mm.read(a + UInt64(i) * 4096, count: 1).get() == [UInt8(truncatingIfNeeded: i)]) }
        #expect(kernel.vmstat[.pswpin] > 0)
        expectClean(kernel)
    }

    @Test("reclaim splits an old huge page before swapping it out (2.6.38); a young one is aged, not split")
    func hugePages() throws {
        let (kernel, mm) = TestMachine.process(memory: 32 << 20, enabled: .always)
        let a = try hugeRegion(mm, 4 * .MiB)
        try mm.write(a, [1]).get()
        try mm.write(a + 2 * .MiB, [2]).get()
        mm.clearYoung(a, length: 2 * .MiB)
        let freed = kernel.reclaim(pages: 100)
        #expect(freed >= 100)
        #expect(kernel.vmstat[.thpSplitPage] == 1 && kernel.vmstat[.pswpout] >= 100)
        #expect(!isHuge(mm, a) && isHuge(mm, a + 2 * .MiB), "the old one was split, the young one kept whole")
        #expect(try mm.read(a, count: 1).get() == [1])
        #expect(try mm.read(a + 2 * .MiB, count: 1).get() == [2])
        expectClean(kernel)
    }
}
