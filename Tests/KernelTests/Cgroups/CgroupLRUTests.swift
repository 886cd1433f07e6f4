import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// Each memory cgroup has its own LRU lists (Linux: a `struct lruvec` per memcg and node,
/// `folio_lruvec()`); global reclaim visits every cgroup's lists in turn at each priority
/// (`shrink_node_memcgs()`), a cgroup's reclaim only its own and those below it.
@Suite("Memory cgroups: LRU lists of their own")
struct CgroupLRUTests {
    /// A 6.18 kernel with swap, the cgroups "a" and "b", one process in each that has written
    /// `pages` 4 KiB pages, a's first.
    func twoCgroups(pages: Int = 512) throws -> (kernel: Kernel, a: AddressSpace, b: AddressSpace, ids: (Int, Int)) {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 4096))
        let ca = try kernel.createMemoryCgroup("a"), cb = try kernel.createMemoryCgroup("b")
        let a = try #require(kernel.createAddressSpace()), b = try #require(kernel.createAddressSpace())
        try kernel.move(a, to: ca)
        try kernel.move(b, to: cb)
        for mm in [a, b] {
            let start = try mm.mmap(address: nil, length: UInt64(pages) * 4096, protection: .readWrite, flags: .private)
            for page in 0..<pages { try mm.write(start + UInt64(page) * 4096, [UInt8(page & 0xFF)]).get() }
        }
        return (kernel, a, b, (Int(ca.id), Int(cb.id)))
    }

    func swapped(_ kernel: Kernel, _ cgroup: String) throws -> Int {
        Int(try kernel.readCgroupFile(cgroup, "memory.swap.current").dropLast())! / 4096
    }

    @Test("a folio is on the lists of the cgroup it is charged to; the root's lists hold the rest")
    func listsPerCgroup() throws {
        let (kernel, a, b, ids) = try twoCgroups()
        defer { withExtendedLifetime((a, b)) {} }
        let outside = try #require(kernel.createAddressSpace())
        let start = try outside.mmap(address: nil, length: 64 * 4096, protection: .readWrite, flags: .private)
        for page in 0..<64 { try outside.write(start + UInt64(page) * 4096, [1]).get() }
        #expect(kernel.lru.pages(of: ids.0).inactive == 512 && kernel.lru.pages(of: ids.1).inactive == 512)
        #expect(kernel.lru.pages(of: 0).inactive == 64)
        #expect(kernel.lru.pages.inactive == 512 + 512 + 64)
        #expect(kernel.lru.lruvecsInUse == [0, ids.0, ids.1])
        expectClean(kernel)
    }

    @Test("global reclaim takes from every cgroup's lists at each priority, not only the oldest pages on the machine")
    func globalReclaimVisitsEachCgroup() throws {
        let (kernel, a, b, _) = try twoCgroups()
        let freed = kernel.reclaim(pages: 64)
        #expect(freed >= 64)
        // a's pages are all older than b's: one list would have given up a's alone.
        let fromA = try swapped(kernel, "a"), fromB = try swapped(kernel, "b")
        #expect(fromA > 0 && fromB > 0, "swapped from a: \(fromA), from b: \(fromB)")
        #expect(fromA >= fromB, "a's lists come first at each priority")
        #expect(try a.read(a.vmas.areas[0].start + 7 * 4096, count: 1).get() == [7])
        #expect(try b.read(b.vmas.areas[0].start + 9 * 4096, count: 1).get() == [9])
        expectClean(kernel)
    }

    @Test("a cgroup's reclaim leaves every other cgroup's lists as they were")
    func memcgReclaimOwnListsOnly() throws {
        let (kernel, a, b, ids) = try twoCgroups()
        defer { withExtendedLifetime((a, b)) {} }
        let before = kernel.lru.snapshot().lruvecs.first { $0.lruvec == ids.1 }!.lists
        kernel.reclaimCgroup(try #require(kernel.memoryCgroups.cgroup(named: "a")), pages: 128)
        #expect(try swapped(kernel, "a") >= 128 && (try swapped(kernel, "b")) == 0)
        #expect(kernel.lru.snapshot().lruvecs.first { $0.lruvec == ids.1 }!.lists == before)
        expectClean(kernel)
    }
}
