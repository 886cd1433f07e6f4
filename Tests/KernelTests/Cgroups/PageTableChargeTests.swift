import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// Page tables are charged to the memory cgroup of the process they map (Linux: `GFP_PGTABLE_USER`
/// has `__GFP_ACCOUNT`; `memory.stat` `pagetables`).
@Suite("Memory cgroups: page tables")
struct PageTableChargeTests {
    static let page = Int(PageGeometry.pageSize)

    /// A 6.18 kernel with one process moved into "box" after it was created (its PGD stays in the root,
    /// as a process's PGD does in Linux when it is moved).
    func boxed(enabled: TransparentHugepageSettings.Enabled = .never) throws -> (Kernel, AddressSpace, MemoryCgroup) {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, enabled: enabled,
                                        swap: SwapConfiguration(slots: 0))
        let memcg = try kernel.createMemoryCgroup("box")
        let mm = try #require(kernel.createAddressSpace())
        try kernel.writeCgroupFile("box", "cgroup.procs", "\(mm.pid)\n")
        return (kernel, mm, memcg)
    }

    func stat(_ kernel: Kernel, _ key: String) throws -> Int {
        let lines = try kernel.readCgroupFile("box", "memory.stat").split(separator: "\n")
        let line = try #require(lines.first { $0.hasPrefix(key + " ") })
        return Int(line.split(separator: " ")[1])!
    }

    @Test("a 4 KiB fault charges the PUD, PMD and PTE tables it allocates; unmapping frees and uncharges them")
    func smallFault() throws {
        let (kernel, mm, memcg) = try boxed()
        let tablesBefore = kernel.vmstatValues()["nr_page_table_pages"]!
        let start = try mm.mmap(address: nil, length: 1 << 20, protection: .readWrite, flags: .private)
        try mm.write(start, [1]).get()
        let tables = kernel.vmstatValues()["nr_page_table_pages"]! - tablesBefore
        #expect(tables == 3)
        #expect(memcg.usagePages == 1 + tables)
        #expect(try stat(kernel, "pagetables") == tables * Self.page)
        #expect(try stat(kernel, "anon") == Self.page)
        // More pages under the same PTE table charge no more tables.
        for p in 1..<200 { try mm.write(start + UInt64(p) * 4096, [1]).get() }
        #expect(memcg.usagePages == 200 + tables)
        expectClean(kernel)
        try mm.munmap(start, length: 1 << 20)
        #expect(memcg.usagePages == 0)
        #expect(try stat(kernel, "pagetables") == 0)
        expectClean(kernel)
    }

    @Test("a huge fault charges its deposited PTE table; after a split that table maps the pages and stays charged")
    func depositedTable() throws {
        let (kernel, mm, memcg) = try boxed(enabled: .always)
        let start = try mm.mmap(address: nil, length: 4 << 20, protection: .readWrite, flags: .private)
        let huge = start.alignedUp(PageGeometry.pmdSize)
        try mm.write(huge, [1]).get()
        #expect(kernel.vmstatValues()["thp_fault_alloc"] == 1)
        // PUD + PMD + the deposited PTE table.
        #expect(try stat(kernel, "pagetables") == 3 * Self.page)
        #expect(memcg.usagePages == 512 + 3)
        #expect(mm.splitHugePages(huge, length: PageGeometry.pmdSize) == 1)
        #expect(try stat(kernel, "pagetables") == 3 * Self.page)
        expectClean(kernel)
        try mm.munmap(start, length: 4 << 20)
        #expect(memcg.usagePages == 0 && memcg.pageTablePages.load(ordering: .relaxed) == 0)
        expectClean(kernel)
    }

    @Test("a THP that fits with no page to spare: the deposited table's charge finds nothing to reclaim and the OOM killer runs (Linux charges the folio, then pte_alloc_one())")
    func depositOverLimit() throws {
        let (kernel, mm, memcg) = try boxed(enabled: .always)
        try kernel.transparentHugepageSysfs.write("shrink_underused", "0")
        let start = try mm.mmap(address: nil, length: 4 << 20, protection: .readWrite, flags: .private)
        let huge = start.alignedUp(PageGeometry.pmdSize)
        // The PUD and PMD tables (2 pages) and the THP (512) fit; its deposited table does not.
        try kernel.writeCgroupFile("box", "memory.max", "\((512 + 2) * Self.page)")
        guard case .failure(let failure) = mm.write(huge, [1]) else {
            Issue.record("the fault succeeded past memory.max")
            return
        }
        #expect(failure.outcome == .outOfMemory)
        #expect(mm.wasOOMKilled)
        #expect(memcg.usagePages == 0)
        #expect(kernel.vmstatValues()["thp_fault_fallback_charge"] == 0)
        expectClean(kernel)
    }

    @Test("fork charges the child's PGD and tables to the cgroup; exit uncharges them")
    func forkCharges() throws {
        let (kernel, mm, memcg) = try boxed()
        let start = try mm.mmap(address: nil, length: 1 << 20, protection: .readWrite, flags: .private)
        try mm.write(start, [1]).get()
        let parentOnly = memcg.usagePages
        let child = try mm.fork()
        // The child shares the page; it has a PGD, PUD, PMD and PTE table of its own.
        #expect(memcg.usagePages == parentOnly + 4)
        #expect(try stat(kernel, "pagetables") == (3 + 4) * Self.page)
        child.exit()
        #expect(memcg.usagePages == parentOnly)
        expectClean(kernel)
    }

    @Test("a process in the root cgroup charges nothing for its tables")
    func rootUncharged() throws {
        let (kernel, _, memcg) = try boxed()
        let other = try #require(kernel.createAddressSpace())
        let start = try other.mmap(address: nil, length: 1 << 20, protection: .readWrite, flags: .private)
        try other.write(start, [1]).get()
        #expect(memcg.usagePages == 0)
        expectClean(kernel)
    }
}
