import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

@Suite("Memory cgroups")
struct MemoryCgroupTests {
    /// A 6.18 kernel with `memory` bytes and no swap, one process moved into the cgroup "box".
    func boxed(memory: UInt64 = 64 << 20, design: KernelDesign = .linux6_18,
               enabled: TransparentHugepageSettings.Enabled = .never,
               swapSlots: Int = 0) throws -> (Kernel, AddressSpace) {
        let kernel = TestMachine.kernel(memory: memory, design: design, enabled: enabled,
                                        swap: SwapConfiguration(slots: swapSlots))
        try kernel.createMemoryCgroup("box")
        let mm = try #require(kernel.createAddressSpace())
        try kernel.writeCgroupFile("box", "cgroup.procs", "\(mm.pid)\n")
        return (kernel, mm)
    }

    /// A boxed process under `enabled=always` with a 4 MiB mapping at `start`, and the 2 MiB-aligned
    /// range inside it, `huge`.
    func boxedMapping(design: KernelDesign) throws -> (kernel: Kernel, mm: AddressSpace, start: VirtualAddress, huge: VirtualAddress) {
        let (kernel, mm) = try boxed(design: design, enabled: .always)
        let start = try mm.mmap(address: nil, length: 4 << 20, protection: .readWrite, flags: .private)
        return (kernel, mm, start, start.alignedUp(PageGeometry.pmdSize))
    }

    @Test("a new cgroup has no limits, no usage and Linux's file formats")
    func freshFiles() throws {
        let (kernel, mm) = try boxed()
        #expect(try kernel.readCgroupFile("box", "memory.max") == "max\n")
        #expect(try kernel.readCgroupFile("box", "memory.high") == "max\n")
        #expect(try kernel.readCgroupFile("box", "memory.swap.max") == "max\n")
        #expect(try kernel.readCgroupFile("box", "memory.current") == "0\n")
        #expect(try kernel.readCgroupFile("box", "cgroup.procs") == "\(mm.pid)\n")
        #expect(try kernel.readCgroupFile("box", "memory.events") == "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n")
        #expect(try kernel.readCgroupFile("box", "memory.stat").hasPrefix("anon 0\npagetables 0\nanon_thp 0\npgfault 0\n"))
    }

    @Test("limits parse as page_counter_memparse() does, rounded down to pages")
    func parsing() throws {
        #expect(try Kernel.pageCounterMemparse("max") == Int.max)
        #expect(try Kernel.pageCounterMemparse("20M") == 5120)
        #expect(try Kernel.pageCounterMemparse("20m") == 5120)
        #expect(try Kernel.pageCounterMemparse("1g") == 262_144)
        #expect(try Kernel.pageCounterMemparse("4097") == 1)
        #expect(try Kernel.pageCounterMemparse("0x2000") == 2)
        #expect(try Kernel.pageCounterMemparse("") == 0)
        for bad in ["-1", "20MB", "1.5M", "max ", "twenty", "20 M"] {
            #expect(throws: Errno.EINVAL) { try Kernel.pageCounterMemparse(bad) }
        }
        let (kernel, _) = try boxed()
        try kernel.writeCgroupFile("box", "memory.max", " 20M\n")
        #expect(try kernel.readCgroupFile("box", "memory.max") == "\(20 << 20)\n")
        try kernel.writeCgroupFile("box", "memory.max", "max")
        #expect(try kernel.readCgroupFile("box", "memory.max") == "max\n")
    }

    @Test("bad files, values, names and pids get Linux's errno")
    func refusals() throws {
        let (kernel, _) = try boxed()
        #expect(throws: Errno.ENOENT) { try kernel.writeCgroupFile("box", "memory.limit_in_bytes", "1M") }
        #expect(throws: Errno.ENOENT) { try kernel.readCgroupFile("nobox", "memory.max") }
        #expect(throws: Errno.EACCES) { try kernel.writeCgroupFile("box", "memory.current", "0") }
        #expect(throws: Errno.EINVAL) { try kernel.writeCgroupFile("box", "memory.max", "-1") }
        #expect(throws: Errno.EINVAL) { try kernel.writeCgroupFile("box", "cgroup.procs", "abc") }
        #expect(throws: Errno.ESRCH) { try kernel.writeCgroupFile("box", "cgroup.procs", "9999") }
        #expect(throws: Errno.EEXIST) { try kernel.createMemoryCgroup("box") }
        #expect(throws: Errno.ENOENT) { try kernel.createMemoryCgroup("a/b") }
        #expect(throws: Errno.EINVAL) { try kernel.createMemoryCgroup("box/") }
        #expect(throws: Errno.EINVAL) { try kernel.createMemoryCgroup("") }
    }

    @Test("pages are charged when faulted and uncharged when freed; a THP is charged whole")
    func charging() throws {
        let (kernel, mm) = try boxed(enabled: .always)
        let start = try mm.mmap(address: nil, length: 4 << 20, protection: .readWrite, flags: .private)
        try mm.write(start, [1]).get()
        // The THP, and the PUD and PMD tables and the PTE table deposited beside the huge PMD.
        #expect(try kernel.readCgroupFile("box", "memory.current") == "\((2 << 20) + 3 * 4096)\n")
        let stat = try kernel.readCgroupFile("box", "memory.stat")
        #expect(stat.contains("anon \(2 << 20)\n") && stat.contains("pagetables \(3 * 4096)\n"))
        #expect(stat.contains("anon_thp \(2 << 20)\n"))
        #expect(stat.contains("thp_fault_alloc 1\n"))
        try mm.munmap(start, length: 4 << 20)
        #expect(try kernel.readCgroupFile("box", "memory.current") == "0\n")
        #expect(try kernel.readCgroupFile("box", "memory.peak") == "\((2 << 20) + 3 * 4096)\n")
        expectClean(kernel)
    }

    @Test("a THP charged whole is split page by page: each page then uncharges alone (both designs, and a 64 KiB mTHP)",
          arguments: [KernelDesign.linux2_6_38, .linux6_18])
    func splitOfAWholeCharge(design: KernelDesign) throws {
        let (kernel, mm, start, huge) = try boxedMapping(design: design)
        for page in 0..<512 { try mm.write(huge + UInt64(page) * 4096, [1]).get() }
        // Three page tables (PUD, PMD, the deposited PTE table, which maps the pages after the split).
        let tables = 3 * 4096
        #expect(try kernel.readCgroupFile("box", "memory.current") == "\((2 << 20) + tables)\n")
        #expect(mm.splitHugePages(huge, length: PageGeometry.pmdSize) == 1)
        expectClean(kernel)
        // Half the pages go back one at a time, each uncharged from the cgroup its split record names.
        try mm.madvise(huge, length: 1 << 20, advice: .dontNeed)
        #expect(try kernel.readCgroupFile("box", "memory.current") == "\((1 << 20) + tables)\n")
        expectClean(kernel)
        try mm.munmap(start, length: 4 << 20)
        #expect(try kernel.readCgroupFile("box", "memory.current") == "0\n")
        expectClean(kernel)
        guard design.supportsMTHP else { return }
        try kernel.transparentHugepageSysfs.write("enabled", "never")
        try kernel.transparentHugepageSysfs.write("hugepages-64kB/enabled", "always")
        let small = try mm.mmap(address: nil, length: 1 << 20, protection: .readWrite, flags: .private)
        let folio = small.alignedUp(64 << 10)
        try mm.write(folio, [1]).get()
        #expect(try kernel.readCgroupFile("box", "memory.current") == "\((64 << 10) + tables)\n")
        try mm.madvise(folio + 4096, length: 4096, advice: .dontNeed)
        #expect(mm.splitHugePages(small, length: 1 << 20) >= 0)
        expectClean(kernel)
        try mm.munmap(small, length: 1 << 20)
        #expect(try kernel.readCgroupFile("box", "memory.current") == "0\n")
        expectClean(kernel)
    }

    @Test("a THP charged whole keeps its charge when it migrates; the record leaves the old frame and splits from the new",
          arguments: [KernelDesign.linux2_6_38, .linux6_18])
    func migrationOfAWholeCharge(design: KernelDesign) throws {
        let (kernel, mm, start, huge) = try boxedMapping(design: design)
        try mm.write(huge, [1]).get()
        let head = try #require(mm.residentFrame(huge))
        let target = try #require(kernel.memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous))
        #expect(kernel.memoryCgroups.owner(of: head)?.name == "box")
        #expect(kernel.migratePage(head, to: target) == .migrated(target))
        #expect(kernel.memoryCgroups.owner(of: target)?.name == "box")
        #expect(kernel.memoryCgroups.owner(of: head) == nil)
        // The THP and three page tables (PUD, PMD, the deposited PTE table).
        let tables = 3 * 4096
        #expect(try kernel.readCgroupFile("box", "memory.current") == "\((2 << 20) + tables)\n")
        expectClean(kernel)
        // Split after the move: each page of the new frames uncharges on its own.
        #expect(mm.splitHugePages(huge, length: PageGeometry.pmdSize) == 1)
        try mm.madvise(huge, length: 1 << 20, advice: .dontNeed)
        #expect(try kernel.readCgroupFile("box", "memory.current") == "\((1 << 20) + tables)\n")
        expectClean(kernel)
        try mm.munmap(start, length: 4 << 20)
        #expect(try kernel.readCgroupFile("box", "memory.current") == "0\n")
        expectClean(kernel)
    }

    @Test("a THP charge over memory.max falls back to 4 KiB pages (thp_fault_fallback_charge)")
    func thpChargeFallback() throws {
        let (kernel, mm) = try boxed(enabled: .always)
        try kernel.writeCgroupFile("box", "memory.max", "1M")
        let start = try mm.mmap(address: nil, length: 2 << 20, protection: .readWrite, flags: .private)
        try mm.write(start, [1]).get()
        // One 4 KiB page and its PUD, PMD and PTE tables.
        #expect(try kernel.readCgroupFile("box", "memory.current") == "\(4 * 4096)\n")
        #expect(kernel.vmstatValues()["thp_fault_fallback_charge"] == 1)
        #expect(kernel.memoryCgroups.oomKills.isEmpty)
    }

    @Test("with no swap, a process that outgrows memory.max is OOM-killed and its memory uncharged")
    func oomKill() throws {
        let (kernel, mm) = try boxed()
        try kernel.writeCgroupFile("box", "memory.max", "1M")
        let start = try mm.mmap(address: nil, length: 2 << 20, protection: .readWrite, flags: .private)
        var failure: AccessFault?
        for page in 0..<512 {
            if case .failure(let f) = mm.write(start + UInt64(page) * 4096, [1]) { failure = f; break }
        }
        #expect(failure?.outcome == .outOfMemory)
        #expect(mm.hasExited && mm.wasOOMKilled)
        let kill = try #require(kernel.memoryCgroups.oomKills.first)
        // The PUD, PMD and PTE tables take 3 of the 256 pages.
        #expect(kill.pid == mm.pid && kill.cgroup == "box" && kill.rssBytes == (1 << 20) - 3 * 4096)
        #expect(try kernel.readCgroupFile("box", "memory.current") == "0\n")
        let events = try kernel.readCgroupFile("box", "memory.events")
        #expect(events.contains("oom 1\n") && events.contains("oom_kill 1\n") && !events.contains("max 0\n"))
        expectClean(kernel)
    }

    @Test("the OOM killer picks the largest process in the cgroup, which need not be the faulting one")
    func largestVictim() throws {
        let (kernel, small) = try boxed()
        let big = try #require(kernel.createAddressSpace())
        try kernel.writeCgroupFile("box", "cgroup.procs", "\(big.pid)")
        try kernel.writeCgroupFile("box", "memory.max", "1M")
        let b = try big.mmap(address: nil, length: 1 << 20, protection: .readWrite, flags: .private)
        for page in 0..<200 { try big.write(b + UInt64(page) * 4096, [1]).get() }
        let s = try small.mmap(address: nil, length: 1 << 20, protection: .readWrite, flags: .private)
        for page in 0..<100 { try small.write(s + UInt64(page) * 4096, [1]).get() }
        #expect(big.hasExited && big.wasOOMKilled && !small.hasExited)
        #expect(kernel.memoryCgroups.oomKills.map(\.pid) == [big.pid])
        #expect(kernel.memoryCgroups.oomKills.first?.triggeredBy == small.pid)
    }

    @Test("fork's child is in its parent's cgroup; moving keeps the charges where they are")
    func forkAndMove() throws {
        let (kernel, mm) = try boxed()
        let start = try mm.mmap(address: nil, length: 1 << 20, protection: .readWrite, flags: .private)
        try mm.write(start, [1]).get()
        let child = try mm.fork()
        #expect(child.memcg === mm.memcg)
        try kernel.createMemoryCgroup("other")
        try kernel.writeCgroupFile("other", "cgroup.procs", "\(mm.pid)")
        // The page, the parent's PUD, PMD and PTE tables and the child's PGD, PUD, PMD and PTE tables.
        #expect(try kernel.readCgroupFile("box", "memory.current") == "\(8 * 4096)\n")
        #expect(try kernel.readCgroupFile("other", "memory.current") == "0\n")
        try mm.write(start + 4096, [1]).get()
        #expect(try kernel.readCgroupFile("other", "memory.current") == "4096\n")
        child.exit()
        try mm.munmap(start, length: 1 << 20)
        #expect(try kernel.readCgroupFile("box", "memory.current") == "0\n")
    }

    @Test("fork's copies of pinned pages are charged to the child, and fork fails with ENOMEM over memory.max")
    func forkCopiesPinned() throws {
        let (kernel, mm) = try boxed(design: .linux6_18)
        let start = try mm.mmap(address: nil, length: 1 << 20, protection: .readWrite, flags: .private)
        for page in 0..<4 { try mm.write(start + UInt64(page) * 4096, [1]).get() }
        let pins = try mm.pinUserPages(start, count: 4, write: true).get()
        let child = try mm.fork()
        // 4 pages and 3 tables of the parent's; the child's 4 copies and its 4 tables (PGD to PTE).
        #expect(try kernel.readCgroupFile("box", "memory.current") == "\(15 * 4096)\n")
        child.exit()
        // 7 pages charged: room for 2 more, not for the child's tables and 4 copies.
        try kernel.writeCgroupFile("box", "memory.max", "\(9 * 4096)")
        #expect(throws: Errno.ENOMEM) { _ = try mm.fork() }
        kernel.unpinUserPages(pins)
        expectClean(kernel)
    }

    @Test("memory.high reclaims the cgroup back under it (here by splitting underused THPs)")
    func highReclaims() throws {
        let (kernel, mm) = try boxed(enabled: .always)
        try kernel.transparentHugepageSysfs.write("khugepaged/max_ptes_none", "450")
        try kernel.writeCgroupFile("box", "memory.high", "3M")
        let start = try mm.mmap(address: nil, length: 4 << 20, protection: .readWrite, flags: .private)
        try mm.write(start, [1]).get()
        try mm.write(start + (2 << 20), [1]).get()
        let events = try kernel.readCgroupFile("box", "memory.events")
        #expect(events.contains("high 1\n"))
        #expect(kernel.memoryCgroups.cgroup(named: "box")!.usagePages <= 768)
        expectClean(kernel)
    }

    @Test("each cgroup has its own deferred-split queue: its reclaim splits only its own underused THPs; global reclaim reaches every queue")
    func perCgroupSplitQueues() throws {
        let (kernel, a) = try boxed(enabled: .always)
        try kernel.transparentHugepageSysfs.write("khugepaged/max_ptes_none", "450")
        _ = try kernel.createMemoryCgroup("other")
        let b = try #require(kernel.createAddressSpace())
        try kernel.writeCgroupFile("other", "cgroup.procs", "\(b.pid)\n")
        for mm in [a, b] {
            let start = try mm.mmap(address: nil, length: 4 << 20, protection: .readWrite, flags: .private)
            try mm.write(start, [1]).get()
            try mm.write(start + (2 << 20), [1]).get()
        }
        let box = try #require(kernel.memoryCgroups.cgroup(named: "box"))
        let other = try #require(kernel.memoryCgroups.cgroup(named: "other"))
        // Two THPs each, and 4 page tables each: PUD, PMD and the two deposited PTE tables.
        #expect(box.usagePages == 1024 + 4 && other.usagePages == 1024 + 4)
        #expect(box.deferredSplitQueue.count == 2 && other.deferredSplitQueue.count == 2 && kernel.deferredSplitQueue.count == 0)
        kernel.deferredSplitScan(only: box)
        #expect(box.usagePages == 2 + 4 && other.usagePages == 1024 + 4)
        #expect(box.deferredSplitQueue.count == 0 && other.deferredSplitQueue.count == 2)
        #expect(kernel.vmstatValues()["thp_underused_split_page"] == 2)
        expectClean(kernel)
        kernel.deferredSplitScan()
        #expect(other.usagePages == 2 + 4 && other.deferredSplitQueue.count == 0)
        #expect(kernel.vmstatValues()["thp_underused_split_page"] == 4)
        expectClean(kernel)
    }

    @Test("lowering memory.max below the usage of a cgroup with nothing to reclaim OOM-kills")
    func lowerMax() throws {
        let (kernel, mm) = try boxed()
        let start = try mm.mmap(address: nil, length: 1 << 20, protection: .readWrite, flags: .private)
        for page in 0..<10 { try mm.write(start + UInt64(page) * 4096, [1]).get() }
        try kernel.writeCgroupFile("box", "memory.max", "0")
        #expect(mm.hasExited && mm.wasOOMKilled)
        #expect(kernel.memoryCgroups.oomKills.first?.triggeredBy == 0)
        #expect(try kernel.readCgroupFile("box", "memory.current") == "0\n")
    }
}

@Suite("Memory cgroups and swap")
struct MemoryCgroupSwapTests {
    func boxed(swapMax: String) throws -> (Kernel, AddressSpace) {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 4096))
        try kernel.createMemoryCgroup("box")
        let mm = try #require(kernel.createAddressSpace())
        try kernel.writeCgroupFile("box", "cgroup.procs", "\(mm.pid)")
        try kernel.writeCgroupFile("box", "memory.max", "1M")
        try kernel.writeCgroupFile("box", "memory.swap.max", swapMax)
        return (kernel, mm)
    }

    @Test("with swap, reclaim swaps the cgroup's own pages out instead of killing")
    func swapsInstead() throws {
        let (kernel, mm) = try boxed(swapMax: "max")
        let start = try mm.mmap(address: nil, length: 2 << 20, protection: .readWrite, flags: .private)
        for page in 0..<512 { try mm.write(start + UInt64(page) * 4096, [UInt8(page & 0xFF)]).get() }
        #expect(kernel.memoryCgroups.oomKills.isEmpty)
        let current = Int(try kernel.readCgroupFile("box", "memory.current").dropLast())!
        #expect(current <= 1 << 20)
        #expect(Int(try kernel.readCgroupFile("box", "memory.swap.current").dropLast())! > 0)
        // Swapped pages come back with their bytes.
        #expect(try mm.read(start + 7 * 4096, count: 1).get() == [7])
        expectClean(kernel)
    }

    @Test("memory.swap.max bounds what reclaim swaps out; past it the OOM killer runs")
    func swapLimit() throws {
        let (kernel, mm) = try boxed(swapMax: "512K")
        let start = try mm.mmap(address: nil, length: 4 << 20, protection: .readWrite, flags: .private)
        var swappedBeforeKill = 0
        for page in 0..<1024 {
            if case .failure = mm.write(start + UInt64(page) * 4096, [1]) { break }
            swappedBeforeKill = kernel.swapDevice.usedSlots
        }
        #expect(mm.wasOOMKilled)
        // The last reclaim batch may pass the limit by up to SWAP_CLUSTER_MAX pages.
        #expect(swappedBeforeKill >= 128 && swappedBeforeKill <= 128 + 32)
        #expect(kernel.swapDevice.usedSlots == 0)
    }

    @Test("memory.swap.max=0 leaves nothing to reclaim: OOM kill")
    func noSwapAllowed() throws {
        let (kernel, mm) = try boxed(swapMax: "0")
        let start = try mm.mmap(address: nil, length: 2 << 20, protection: .readWrite, flags: .private)
        for page in 0..<512 { if case .failure = mm.write(start + UInt64(page) * 4096, [1]) { break } }
        #expect(mm.wasOOMKilled)
        #expect(kernel.swapDevice.usedSlots == 0)
    }
}
