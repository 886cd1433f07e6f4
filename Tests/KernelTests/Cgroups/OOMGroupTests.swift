import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// A new process in cgroup `name` of `kernel` that has written `mib` MiB, with `oom_score_adj` `adj`.
private func process(in name: String, of kernel: Kernel, writing mib: Int, adj: Int = 0) throws -> AddressSpace {
    let mm = try #require(kernel.createAddressSpace())
    mm.oomScoreAdj.store(adj, ordering: .relaxed)
    try kernel.move(mm, to: kernel.memoryCgroups.cgroup(named: name))
    let a = try mm.mmap(length: UInt64(mib) << 20, protection: .readWrite, flags: .private)
    #expect(mm.touch(a, length: UInt64(mib) << 20, .write).failure == nil)
    return mm
}

/// `memory.oom.group` (Documentation/admin-guide/cgroup-v2.rst): when the OOM killer picks a process
/// below a cgroup with it set — the highest such cgroup between the victim's and the OOM killer's
/// domain — every process below that cgroup is killed with it, counted once as `oom_group_kill`
/// there (`mem_cgroup_get_oom_group()`, `oom_kill_process()`).
@Suite("Memory cgroups: memory.oom.group")
struct OOMGroupTests {
    /// A 6.18 kernel without swap, "pod" with "pod/big" (a process holding 20 MiB) and "pod/small"
    /// (a process holding 1 MiB).
    func pod() throws -> (Kernel, big: AddressSpace, small: AddressSpace) {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 0))
        for name in ["pod", "pod/big", "pod/small"] { try kernel.createMemoryCgroup(name) }
        return (kernel, try process(in: "pod/big", of: kernel, writing: 20), try process(in: "pod/small", of: kernel, writing: 1))
    }

    func events(_ kernel: Kernel, _ cgroup: String) throws -> [String: Int] {
        var e: [String: Int] = [:]
        for line in try kernel.readCgroupFile(cgroup, "memory.events").split(separator: "\n") {
            let parts = line.split(separator: " ")
            e[String(parts[0])] = Int(parts[1])
        }
        return e
    }

    @Test("memory.oom.group reads 0 until written and takes 0 or 1")
    func file() throws {
        let (kernel, _, _) = try pod()
        #expect(try kernel.readCgroupFile("pod", "memory.oom.group") == "0\n")
        try kernel.writeCgroupFile("pod", "memory.oom.group", "1\n")
        #expect(try kernel.readCgroupFile("pod", "memory.oom.group") == "1\n")
        #expect(throws: Errno.EINVAL) { try kernel.writeCgroupFile("pod", "memory.oom.group", "2") }
        #expect(throws: Errno.EINVAL) { try kernel.writeCgroupFile("pod", "memory.oom.group", "yes") }
    }

    @Test("set on the pod, a kill below it kills the whole pod, counted as one oom_group_kill there")
    func wholePod() throws {
        let (kernel, big, small) = try pod()
        try kernel.writeCgroupFile("pod", "memory.oom.group", "1")
        try kernel.writeCgroupFile("pod", "memory.max", "16M")   // below the usage: the OOM killer runs
        #expect(big.wasOOMKilled && small.wasOOMKilled && big.hasExited && small.hasExited)
        #expect(try events(kernel, "pod")["oom_group_kill"] == 1)
        #expect(try events(kernel, "pod")["oom_kill"] == 2)
        #expect(kernel.vmstat[.oomKill] == 2)
        expectClean(kernel)
    }

    @Test("set on the victim's own cgroup only, the kill stays there; unset, one process dies")
    func ownCgroupOnly() throws {
        let (kernel, big, small) = try pod()
        try kernel.writeCgroupFile("pod/big", "memory.oom.group", "1")
        try kernel.writeCgroupFile("pod", "memory.max", "16M")
        #expect(big.wasOOMKilled && !small.wasOOMKilled && !small.hasExited)
        #expect(try events(kernel, "pod/big")["oom_group_kill"] == 1)
        #expect(try events(kernel, "pod")["oom_kill"] == 1)

        let (plain, big2, small2) = try pod()
        try plain.writeCgroupFile("pod", "memory.max", "16M")
        #expect(big2.wasOOMKilled && !small2.wasOOMKilled)
        #expect(try events(plain, "pod")["oom_group_kill"] == 0)
        expectClean(kernel)
        expectClean(plain)
    }

    @Test("the system-wide OOM killer honours it too")
    func systemWide() throws {
        let kernel = TestMachine.kernel(memory: 16 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 0))
        try kernel.createMemoryCgroup("job")
        try kernel.writeCgroupFile("job", "memory.oom.group", "1")
        let members = [try process(in: "job", of: kernel, writing: 8), try process(in: "job", of: kernel, writing: 1)]
        let outside = try #require(kernel.createAddressSpace())
        let b = try outside.mmap(length: 7 << 20, protection: .readWrite, flags: .private)
        // 9 MiB in the job, then 7 more outside it, in 16 MiB: the job's 8 MiB process is the largest.
        #expect(outside.touch(b, length: 7 << 20, .write).failure == nil)
        #expect(members.allSatisfy { $0.wasOOMKilled && $0.hasExited })
        #expect(!outside.wasOOMKilled)
        #expect(try events(kernel, "job")["oom_group_kill"] == 1)
        expectClean(kernel)
    }
}

/// `oom_score_adj` (Documentation/filesystems/proc.rst): the OOM killer adds it to a process's badness
/// in thousandths of the memory it weighs, and never picks a process at -1000 (`oom_badness()`).
@Suite("The OOM killer: oom_score_adj")
struct OOMScoreAdjTests {
    @Test("badness is resident plus swapped pages plus adj thousandths of the memory weighed; -1000 is never chosen")
    func badness() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 0))
        let mm = try #require(kernel.createAddressSpace())
        mm.oomScoreAdj.store(250, ordering: .relaxed)
        #expect(Kernel.oomBadness(mm, (rss: 4 << 20, swap: 1 << 20, pageTables: 3), totalPages: 6144) == 1280 + 3 + 250 * 6)
        mm.oomScoreAdj.store(-1000, ordering: .relaxed)
        #expect(Kernel.oomBadness(mm, (rss: 4 << 20, swap: 0, pageTables: 3), totalPages: 6144) == nil)
        // A cgroup weighs its memory.max and the swap it may use; the machine, memory and swap.
        try kernel.createMemoryCgroup("box")
        try kernel.writeCgroupFile("box", "memory.max", "24M")
        #expect(kernel.oomTotalPages(kernel.memoryCgroups.cgroup(named: "box")) == 6144)
        #expect(kernel.oomTotalPages(nil) == kernel.memory.totalPages)
        // fork's child inherits it.
        mm.oomScoreAdj.store(300, ordering: .relaxed)
        #expect(try mm.fork().oomScoreAdj.load(ordering: .relaxed) == 300)
    }

    @Test("a process at -1000 is passed over: the OOM killer kills the smaller one")
    func unkillable() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 0))
        try kernel.createMemoryCgroup("box")
        try kernel.writeCgroupFile("box", "memory.swap.max", "0")
        let spaces = [try process(in: "box", of: kernel, writing: 20, adj: -1000), try process(in: "box", of: kernel, writing: 2)]
        try kernel.writeCgroupFile("box", "memory.max", "16M")
        #expect(!spaces[0].wasOOMKilled && spaces[1].wasOOMKilled)
        expectClean(kernel)
    }
}

/// The page tables a process holds count in its badness (`oom_badness()` adds `mm_pgtables_bytes()`
/// in pages): PUD, PMD and PTE tables, and in the 2010 design the PTE table each huge PMD deposits.
@Suite("The OOM killer: page tables in the badness")
struct OOMPageTableTests {
    @Test("an mm's page tables are its PUD, PMD and PTE tables, deposited ones included")
    func counted() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux2_6_38, enabled: .always)
        let mm = try #require(kernel.createAddressSpace())
        #expect(mm.pageTablePages() == 0)
        // Three 4 KiB pages 2 MiB apart: one PUD table, one PMD table, three PTE tables.
        let a = try anon(mm, 6 * .MiB, at: VirtualAddress(1 << 30))
        try mm.madvise(a, length: 6 * .MiB, advice: .noHugepage)
        for i in 0..<3 { try mm.write(a + UInt64(i) * 2 * .MiB, [1]).get() }
        #expect(mm.pageTablePages() == 5)
        // A huge page in the same PMD table deposits a PTE table (2.6.38: `pgtable_trans_huge_deposit()`).
        let h = try anon(mm, 2 * .MiB, at: VirtualAddress(1 << 30) + 8 * .MiB)
        try mm.write(h, [1]).get()
        #expect(mm.translate(h)?.level == .pmd)
        #expect(mm.pageTablePages() == 6)
        expectClean(kernel)
    }

    @Test("of two processes with as much memory, the OOM killer picks the one with more page tables")
    func breaksTie() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 0))
        try kernel.createMemoryCgroup("box")
        // 16 pages each: one process's in one PTE table, the other's spread over 16. The dense one is
        // made last, so that it would be the one chosen on a tie (the later one).
        let sparse = try #require(kernel.createAddressSpace()), dense = try #require(kernel.createAddressSpace())
        for mm in [sparse, dense] { try kernel.move(mm, to: kernel.memoryCgroups.cgroup(named: "box")) }
        let d = try anon(dense, 16 * 4096)
        try dense.write(d, pattern(1, 16 * 4096)).get()
        let s = try anon(sparse, 32 * .MiB)
        for i in 0..<16 { try sparse.write(s + UInt64(i) * 2 * .MiB, [1]).get() }
        #expect(sparse.pageTablePages() == dense.pageTablePages() + 15)
        // Any new charge now fails: the OOM killer runs.
        try kernel.writeCgroupFile("box", "memory.max", "\(kernel.memoryCgroups.cgroup(named: "box")!.usagePages * 4096)")
        let x = try anon(dense, 4096)
        let outcome = dense.touch(x, length: 4096, .write)
        #expect(outcome.failure == nil, "the fault went on after the kill")
        let sparseKilled = sparse.oomKilled.load(ordering: .relaxed), denseKilled = dense.oomKilled.load(ordering: .relaxed)
        #expect(sparseKilled, "the sparse process's page tables tip the balance")
        #expect(!denseKilled)
    }
}
