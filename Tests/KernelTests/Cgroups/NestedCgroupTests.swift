import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// Cgroups below cgroups, as a container runtime makes them (a pod's cgroup with one per container):
/// Documentation/admin-guide/cgroup-v2.rst ("Top-down Constraint", "No Internal Process
/// Constraint", `memory.events` and `memory.events.local`), and `page_counter_try_charge()`.
@Suite("Nested memory cgroups")
struct NestedCgroupTests {
    /// A 6.18 kernel with no swap (or `swapSlots`), the cgroup "pod" with the children "pod/app" and
    /// "pod/side", one process in each child.
    func pod(swapSlots: Int = 0) throws -> (kernel: Kernel, app: AddressSpace, side: AddressSpace) {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: swapSlots))
        try kernel.createMemoryCgroup("pod")
        try kernel.createMemoryCgroup("pod/app")
        try kernel.createMemoryCgroup("pod/side")
        let app = try #require(kernel.createAddressSpace())
        let side = try #require(kernel.createAddressSpace())
        try kernel.writeCgroupFile("pod/app", "cgroup.procs", "\(app.pid)")
        try kernel.writeCgroupFile("pod/side", "cgroup.procs", "\(side.pid)")
        return (kernel, app, side)
    }

    /// Writes `pages` pages of a new mapping of `mm`; the number written before a write failed.
    @discardableResult
    func touch(_ mm: AddressSpace, pages: Int) throws -> Int {
        let start = try mm.mmap(address: nil, length: UInt64(pages) * 4096, protection: .readWrite, flags: .private)
        for page in 0..<pages {
            if case .failure = mm.write(start + UInt64(page) * 4096, [1]) { return page }
        }
        return pages
    }

    func bytes(_ kernel: Kernel, _ cgroup: String, _ file: String) throws -> Int {
        Int(try kernel.readCgroupFile(cgroup, file).dropLast())!
    }

    func event(_ kernel: Kernel, _ cgroup: String, _ file: String, _ key: String) throws -> Int {
        let line = try kernel.readCgroupFile(cgroup, file).split(separator: "\n").first { $0.hasPrefix(key + " ") }
        return Int(try #require(line).split(separator: " ")[1])!
    }

    @Test("a path names a cgroup below another; mkdir's and cgroup.procs' refusals follow cgroup v2")
    func paths() throws {
        let (kernel, app, _) = try pod()
        #expect(kernel.memoryCgroups.cgroup(named: "pod/app")?.parent === kernel.memoryCgroups.cgroup(named: "pod"))
        #expect(kernel.memoryCgroups.cgroup(named: "pod")?.parent == nil)
        #expect(throws: Errno.ENOENT) { try kernel.createMemoryCgroup("nopod/app") }
        #expect(throws: Errno.EEXIST) { try kernel.createMemoryCgroup("pod/app") }
        for bad in ["pod//x", "pod/./x", "pod/..", "/pod", "pod/x\ny"] {
            #expect(throws: Errno.EINVAL) { try kernel.createMemoryCgroup(bad) }
        }
        // No internal processes: a cgroup with children takes none, and one with processes gets no
        // children (the model enables the memory controller in every subtree_control).
        #expect(throws: Errno.EBUSY) { try kernel.writeCgroupFile("pod", "cgroup.procs", "\(app.pid)") }
        #expect(throws: Errno.EBUSY) { try kernel.createMemoryCgroup("pod/app/worker") }
        #expect(app.memcg?.name == "pod/app")
        // Three levels, once the middle one is empty.
        try kernel.createMemoryCgroup("pod/jobs")
        try kernel.createMemoryCgroup("pod/jobs/one")
        #expect(kernel.memoryCgroups.cgroup(named: "pod/jobs/one")?.isDescendant(of: kernel.memoryCgroups.cgroup(named: "pod")!) == true)
    }

    @Test("a charge counts in every cgroup above; memory.stat sums the cgroups below")
    func chargesCountUp() throws {
        let (kernel, app, side) = try pod()
        try touch(app, pages: 100)
        try touch(side, pages: 50)
        let appBytes = try bytes(kernel, "pod/app", "memory.current")
        let sideBytes = try bytes(kernel, "pod/side", "memory.current")
        // The pages, and each process's PUD, PMD and PTE tables.
        #expect(appBytes == (100 + 3) * 4096 && sideBytes == (50 + 3) * 4096)
        #expect(try bytes(kernel, "pod", "memory.current") == appBytes + sideBytes)
        #expect(try bytes(kernel, "pod", "memory.peak") == appBytes + sideBytes)
        #expect(try event(kernel, "pod", "memory.stat", "pgfault") == 150)
        #expect(try event(kernel, "pod", "memory.stat", "pagetables") == 6 * 4096)
        #expect(try event(kernel, "pod", "memory.stat", "anon") == 150 * 4096)
        #expect(try event(kernel, "pod/side", "memory.stat", "pgfault") == 50)
        #expect(try kernel.readCgroupFile("pod", "cgroup.procs") == "")
        app.exit()
        #expect(try bytes(kernel, "pod", "memory.current") == sideBytes)
        expectClean(kernel)
    }

    @Test("the parent's memory.max binds its children together: its OOM killer picks the largest process below it")
    func parentLimit() throws {
        let (kernel, app, side) = try pod()
        try kernel.writeCgroupFile("pod", "memory.max", "1M")
        #expect(try touch(side, pages: 150) == 150)
        // The side's 153 pages (150 and its 3 tables) and the app's 3 tables leave 100 of the pod's
        // 256 for the app's pages: its 101st runs into the pod's limit, and the side, the larger
        // process, is killed.
        #expect(try touch(app, pages: 200) == 200)
        #expect(side.wasOOMKilled && !app.hasExited)
        let kill = try #require(kernel.memoryCgroups.oomKills.first)
        #expect(kill.cgroup == "pod" && kill.pid == side.pid && kill.triggeredBy == app.pid)
        // Events count where they happen (memory.events.local) and in every cgroup above
        // (memory.events): the limit and the OOM were the pod's, the kill the side's.
        #expect(try event(kernel, "pod", "memory.events.local", "max") > 0)
        #expect(try event(kernel, "pod", "memory.events.local", "oom") == 1)
        #expect(try event(kernel, "pod", "memory.events.local", "oom_kill") == 0)
        #expect(try event(kernel, "pod", "memory.events", "oom_kill") == 1)
        #expect(try event(kernel, "pod/side", "memory.events", "oom_kill") == 1)
        #expect(try event(kernel, "pod/side", "memory.events", "oom") == 0)
        #expect(try event(kernel, "pod/app", "memory.events", "max") == 0)
        #expect(try bytes(kernel, "pod", "memory.current") <= 1 << 20)
        expectClean(kernel)
    }

    @Test("a child's own memory.max binds it alone: the OOM killer looks only below the child, and its events reach the parent's memory.events")
    func childLimit() throws {
        let (kernel, app, side) = try pod()
        try kernel.writeCgroupFile("pod", "memory.max", "4M")
        try kernel.writeCgroupFile("pod/app", "memory.max", "512K")
        #expect(try touch(side, pages: 300) == 300)
        #expect(try touch(app, pages: 200) < 200)
        #expect(app.wasOOMKilled && !side.hasExited)
        #expect(kernel.memoryCgroups.oomKills.map(\.cgroup) == ["pod/app"])
        #expect(try event(kernel, "pod/app", "memory.events.local", "oom") == 1)
        #expect(try event(kernel, "pod", "memory.events", "oom") == 1)
        #expect(try event(kernel, "pod", "memory.events", "oom_kill") == 1)
        #expect(try event(kernel, "pod", "memory.events.local", "oom") == 0)
        #expect(try event(kernel, "pod", "memory.events.local", "max") == 0)
        expectClean(kernel)
    }

    @Test("reclaim for the parent's limit swaps the children's pages, within the parent's memory.swap.max")
    func parentReclaim() throws {
        let (kernel, app, side) = try pod(swapSlots: 4096)
        try kernel.writeCgroupFile("pod", "memory.max", "1M")
        try touch(side, pages: 200)
        try touch(app, pages: 200)
        #expect(kernel.memoryCgroups.oomKills.isEmpty && !app.hasExited && !side.hasExited)
        #expect(try bytes(kernel, "pod", "memory.current") <= 1 << 20)
        let swapped = try bytes(kernel, "pod", "memory.swap.current")
        #expect(swapped > 0)
        #expect(swapped == (try bytes(kernel, "pod/app", "memory.swap.current")) + (try bytes(kernel, "pod/side", "memory.swap.current")))
        expectClean(kernel)

        // With the parent's swap closed, the same pressure kills instead.
        let (closed, app2, side2) = try pod(swapSlots: 4096)
        try closed.writeCgroupFile("pod", "memory.max", "1M")
        try closed.writeCgroupFile("pod", "memory.swap.max", "0")
        try touch(side2, pages: 200)
        try touch(app2, pages: 200)
        #expect(closed.swapDevice.usedSlots == 0)
        #expect(closed.memoryCgroups.oomKills.count >= 1)
        expectClean(closed)
    }

    @Test("a child's own memory.swap.max keeps its pages out of the parent's reclaim and of global reclaim")
    func childSwapMax() throws {
        // The pod's reclaim: side may not swap (its own memory.swap.max 0), so only app's pages go,
        // even when the pod asks for more than app holds.
        let (kernel, app, side) = try pod(swapSlots: 4096)
        let other = try #require(kernel.createAddressSpace())   // in the root
        try kernel.writeCgroupFile("pod/side", "memory.swap.max", "0")
        try touch(side, pages: 200)
        try touch(app, pages: 200)
        try touch(other, pages: 400)
        let pod = try #require(kernel.memoryCgroups.cgroup(named: "pod"))
        #expect(kernel.reclaimCgroup(pod, pages: 300) >= 100)
        #expect(try bytes(kernel, "pod/side", "memory.swap.current") == 0)
        #expect(try bytes(kernel, "pod/app", "memory.swap.current") >= 100 * 4096)
        // Global reclaim asks each cgroup's lists too (can_reclaim_anon_pages()): side's stay.
        #expect(kernel.reclaim(pages: 128, by: .kswapd) >= 128)
        #expect(try bytes(kernel, "pod/side", "memory.swap.current") == 0)
        // The pod's own 0 closes both children to global reclaim; the root's process gives the pages.
        try kernel.writeCgroupFile("pod", "memory.swap.max", "0")
        let app0 = try bytes(kernel, "pod/app", "memory.swap.current")
        #expect(kernel.reclaim(pages: 64, by: .kswapd) >= 64)
        #expect(try bytes(kernel, "pod/app", "memory.swap.current") == app0)
        #expect(try bytes(kernel, "pod/side", "memory.swap.current") == 0)
        expectClean(kernel)
        withExtendedLifetime((app, side, other)) {}
    }

    @Test("lowering the parent's memory.max reclaims and kills below it")
    func lowerParentLimit() throws {
        let (kernel, app, side) = try pod()
        try touch(app, pages: 200)
        try touch(side, pages: 100)
        try kernel.writeCgroupFile("pod", "memory.max", "512K")
        #expect(app.wasOOMKilled)
        #expect(try bytes(kernel, "pod", "memory.current") <= 512 << 10)
        #expect(kernel.memoryCgroups.oomKills.first?.triggeredBy == 0)
        expectClean(kernel)
    }
}
