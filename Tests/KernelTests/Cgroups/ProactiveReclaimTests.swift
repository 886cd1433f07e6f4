import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// `memory.reclaim` (Documentation/admin-guide/cgroup-v2.rst; Linux: `memory_reclaim()`), and how a
/// cgroup's reclaim is counted in `/proc/vmstat` (`shrink_inactive_list()` and
/// `do_try_to_free_pages()` count the per-reclaimer events only `if (!cgroup_reclaim(sc))`).
@Suite("Memory cgroups: memory.reclaim and the counters of a cgroup's reclaim")
struct ProactiveReclaimTests {
    /// A 6.18 kernel with swap and a cgroup "box" whose process has written 2 MiB.
    func box(swap: Bool = true) throws -> (Kernel, AddressSpace) {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: swap ? 4096 : 0))
        try kernel.createMemoryCgroup("box")
        let mm = try #require(kernel.createAddressSpace())
        try kernel.move(mm, to: kernel.memoryCgroups.cgroup(named: "box"))
        let start = try mm.mmap(address: nil, length: 2 << 20, protection: .readWrite, flags: .private)
        for page in 0..<512 { try mm.write(start + UInt64(page) * 4096, [UInt8(page & 0xFF)]).get() }
        return (kernel, mm)
    }

    func bytes(_ kernel: Kernel, _ file: String) throws -> Int { Int(try kernel.readCgroupFile("box", file).dropLast())! }

    @Test("writing a size reclaims at least that much from the cgroup; the data comes back from swap")
    func reclaimsWhatIsAsked() throws {
        let (kernel, mm) = try box()
        let before = try bytes(kernel, "memory.current")
        try kernel.writeCgroupFile("box", "memory.reclaim", "1M\n")
        #expect(try bytes(kernel, "memory.swap.current") >= 1 << 20)
        #expect(try before - bytes(kernel, "memory.current") >= 1 << 20)
        #expect(try mm.read(mm.vmas.areas[0].start + 5 * 4096, count: 1).get() == [5])
        try kernel.writeCgroupFile("box", "memory.reclaim", "")   // nothing asked: nothing to do
        expectClean(kernel)
    }

    @Test("with nothing reclaimable it gives up with EAGAIN; swappiness=0 leaves nothing reclaimable")
    func eagain() throws {
        let (kernel, mm) = try box(swap: false)
        defer { withExtendedLifetime(mm) {} }
        #expect(throws: Errno.EAGAIN) { try kernel.writeCgroupFile("box", "memory.reclaim", "1M") }
        let (other, mm2) = try box()
        defer { withExtendedLifetime(mm2) {} }
        #expect(throws: Errno.EAGAIN) { try other.writeCgroupFile("box", "memory.reclaim", "1M swappiness=0") }
        #expect(try bytes(other, "memory.swap.current") == 0)
        try other.writeCgroupFile("box", "memory.reclaim", "256K swappiness=max")
        try other.writeCgroupFile("box", "memory.reclaim", "256K swappiness=60")
        #expect(try bytes(other, "memory.swap.current") >= 512 << 10)
    }

    @Test("bad values are EINVAL; the file cannot be read", arguments: ["max", "1M swappiness=201", "1M swappiness=-1", "1M bogus", "1MB", "-1"])
    func refusals(value: String) throws {
        let (kernel, mm) = try box()
        defer { withExtendedLifetime(mm) {} }
        #expect(throws: Errno.EINVAL) { try kernel.writeCgroupFile("box", "memory.reclaim", value) }
        #expect(throws: Errno.EINVAL) { _ = try kernel.readCgroupFile("box", "memory.reclaim") }
    }

    @Test("a cgroup's reclaim counts pgscan_anon and pgsteal_anon, not the direct reclaim counters or allocstall_normal")
    func countedAsCgroupReclaim() throws {
        let (kernel, mm) = try box()
        defer { withExtendedLifetime(mm) {} }
        let counters: [VMEvent] = [.pgstealAnon, .pgscanAnon, .pgstealDirect, .pgscanDirect, .pgstealKswapd, .pgscanKswapd, .allocstallNormal]
        func read() -> [VMEvent: Int] { Dictionary(uniqueKeysWithValues: counters.map { ($0, kernel.vmstat[$0]) }) }
        let before = read()
        try kernel.writeCgroupFile("box", "memory.reclaim", "1M")
        let after = read()
        #expect(after[.pgstealAnon]! - before[.pgstealAnon]! >= 256)
        #expect(after[.pgscanAnon]! - before[.pgscanAnon]! >= 256)
        for counter in counters.dropFirst(2) {
            #expect(after[counter] == before[counter], "\(counter)")
        }
        // Global direct reclaim still counts as direct.
        #expect(kernel.reclaim(pages: 32, by: .direct) >= 32)
        #expect(kernel.vmstat[.pgstealDirect] > after[.pgstealDirect]!)
    }
}
