import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("reclaim counters: pgscan, pgsteal, allocstall, pgpgin/pgpgout")
struct ReclaimCounterTests {
    @Test("kswapd's reclaim is counted as pgscan_kswapd and pgsteal_kswapd; pgpgout is 4 KiB per pswpout")
    func kswapdCounters() throws {
        let (kernel, mm, a, pages) = try kernelUnderPressure()
        kernel.advanceTime(by: 1_000_000)
        let v = kernel.vmstat
        #expect(v[.pgstealKswapd] >= 512 - 200 && v[.pgstealDirect] == 0 && v[.allocstallNormal] == 0)
        #expect(v[.pgscanKswapd] >= v[.pgstealKswapd] && v[.pgscanDirect] == 0)
        #expect(v[.pgstealAnon] == v[.pgstealKswapd] && v[.pgscanAnon] == v[.pgscanKswapd])
        #expect(v[.pgstealKswapd] == v[.pswpout], "every page kswapd freed went to swap")
        #expect(v[.pgpgout] == 4 * v[.pswpout])
        for i in 0..<pages { #expect(try mm.read(a + UInt64(i) * 4096, count: 1).get() == [UInt8(truncatingIfNeeded: i)]) }
        #expect(v[.pswpin] > 0 && v[.pgpgin] == 4 * v[.pswpin])
        let text = kernel.vmstatText()
        for name in ["pgpgin", "pgpgout", "allocstall_normal", "pgsteal_kswapd", "pgsteal_direct", "pgscan_kswapd", "pgscan_direct"] {
            #expect(text.contains("\n\(name) "), "\(name) in /proc/vmstat")
        }
        expectClean(kernel)
    }

    @Test("an allocation with nothing free stalls (allocstall_normal) and its reclaim is counted as direct")
    func directCounters() throws {
        let (kernel, mm) = TestMachine.process(memory: 8 << 20)
        let pages = kernel.memory.freePages + 256
        let a = try mm.mmap(length: UInt64(pages) * 4096, protection: .readWrite, flags: [.private, .noReserve])
        for i in 0..<pages { try mm.write(a + UInt64(i) * 4096, [UInt8(truncatingIfNeeded: i)]).get() }
        let v = kernel.vmstat
        #expect(v[.allocstallNormal] > 0)
        #expect(v[.pgstealDirect] >= 256 && v[.pgstealKswapd] == 0 && v[.pgscanKswapd] == 0)
        #expect(v[.pgscanDirect] >= v[.pgstealDirect])
        #expect(v[.pgpgout] == 4 * v[.pswpout])
        expectClean(kernel)
    }

    @Test("MADV_PAGEOUT writes to swap without counting reclaim (pgscan/pgsteal stay 0), as in Linux")
    func pageoutIsNotReclaim() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 64 * .KiB)
        try mm.write(a, pattern(1, Int(64 * .KiB))).get()
        try mm.madvise(a, length: 64 * .KiB, advice: .pageout)
        let v = kernel.vmstat
        #expect(v[.pswpout] == 16 && v[.pgpgout] == 64)
        #expect(v[.pgstealKswapd] + v[.pgstealDirect] + v[.pgscanKswapd] + v[.pgscanDirect] == 0)
    }
}
