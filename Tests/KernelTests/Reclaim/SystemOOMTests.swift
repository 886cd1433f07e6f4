import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// The system-wide OOM killer (Linux: `__alloc_pages_may_oom()` → `out_of_memory()` →
/// `select_bad_process()`, `oom_badness()`): when the machine has no memory left and reclaim frees
/// none, the process with the most resident plus swapped memory is killed, whichever faulted, and
/// the allocation is tried again.
@Suite("The system-wide OOM killer")
struct SystemOOMTests {
    /// A 6.18 kernel of 16 MiB without swap, and a process that has written `pages` pages.
    func machine(bigPages: Int) throws -> (Kernel, AddressSpace) {
        let kernel = TestMachine.kernel(memory: 16 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 0))
        let big = try #require(kernel.createAddressSpace())
        let a = try big.mmap(length: UInt64(bigPages) * 4096, protection: .readWrite, flags: .private)
        #expect(big.touch(a, length: UInt64(bigPages) * 4096, .write).failure == nil)
        return (kernel, big)
    }

    @Test("the largest process is killed, not the one that faulted, whose fault then succeeds")
    func killsLargest() throws {
        let (kernel, big) = try machine(bigPages: 2304)   // 9 MiB
        let small = try #require(kernel.createAddressSpace())
        let b = try small.mmap(length: 8 << 20, protection: .readWrite, flags: .private)
        // 9 + 8 MiB do not fit in 16 MiB; when memory runs out, the faulting process holds under 7.
        #expect(small.touch(b, length: 8 << 20, .write).failure == nil)
        #expect(big.wasOOMKilled && big.hasExited)
        #expect(!small.wasOOMKilled && !small.hasExited)
        #expect(kernel.vmstat[.oomKill] == 1)
        let kill = try #require(kernel.memoryCgroups.oomKills.first)
        #expect(kill.cgroup == "" && kill.pid == big.pid && kill.triggeredBy == small.pid)
        #expect(kill.rssBytes >= 9 << 20)
        expectClean(kernel)
    }

    @Test("when the faulting process is the largest, it is the one killed, and its fault fails")
    func killsFaulting() throws {
        let (kernel, small) = try machine(bigPages: 256)   // 1 MiB
        let hog = try #require(kernel.createAddressSpace())
        let b = try hog.mmap(length: 32 << 20, protection: .readWrite, flags: [.private, .noReserve])
        #expect(hog.touch(b, length: 32 << 20, .write).failure?.outcome == .outOfMemory)
        #expect(hog.wasOOMKilled && hog.hasExited)
        #expect(!small.wasOOMKilled)
        #expect(kernel.vmstat[.oomKill] == 1)
        expectClean(kernel)
    }

    @Test("a fork that finds no page for the child's tables kills the largest process and goes on")
    func forkKillsLargest() throws {
        let (kernel, big) = try machine(bigPages: 1024)   // 4 MiB
        let parent = try #require(kernel.createAddressSpace())
        let a = try parent.mmap(length: 64 * 4096, protection: .readWrite, flags: .private)
        #expect(parent.touch(a, length: 64 * 4096, .write).failure == nil)
        // Every free page taken by something no reclaim can free.
        var held: [PFN] = []
        while let pfn = kernel.memory.allocateFolio(order: .base, kind: .anonymous) { held.append(pfn) }
        let child = try parent.fork()
        #expect(big.wasOOMKilled && big.hasExited)
        #expect(!parent.wasOOMKilled && !child.hasExited)
        let kill = try #require(kernel.memoryCgroups.oomKills.first)
        #expect(kill.pid == big.pid && kill.triggeredBy == parent.pid)
        #expect(try child.read(a, count: 1).get().count == 1)
        for pfn in held { kernel.putPage(pfn) }
        expectClean(kernel)
    }

    @Test("a fork by the largest process, when no page is free, kills the forking process: ENOMEM")
    func forkKillsForker() throws {
        let (kernel, small) = try machine(bigPages: 16)
        let parent = try #require(kernel.createAddressSpace())
        let a = try parent.mmap(length: 1024 * 4096, protection: .readWrite, flags: .private)
        #expect(parent.touch(a, length: 1024 * 4096, .write).failure == nil)
        var held: [PFN] = []
        while let pfn = kernel.memory.allocateFolio(order: .base, kind: .anonymous) { held.append(pfn) }
        #expect(throws: Errno.ENOMEM) { _ = try parent.fork() }
        #expect(parent.wasOOMKilled && parent.hasExited && !small.wasOOMKilled)
        for pfn in held { kernel.putPage(pfn) }
        expectClean(kernel)
    }

    @Test("a GUP fault that finds no memory kills the largest process, and the pin succeeds")
    func gupKillsLargest() throws {
        let (kernel, big) = try machine(bigPages: 2304)   // 9 MiB
        let small = try #require(kernel.createAddressSpace())
        let b = try small.mmap(length: 8 << 20, protection: .readWrite, flags: .private)
        // Nothing touched yet: every page comes from GUP's own faults (pin_user_pages()).
        let pages = try small.pinUserPages(b, count: 2048, write: true).get()
        #expect(pages.count == 2048)
        #expect(big.wasOOMKilled && big.hasExited)
        #expect(!small.wasOOMKilled && !small.hasExited)
        let kill = try #require(kernel.memoryCgroups.oomKills.first)
        #expect(kill.cgroup == "" && kill.pid == big.pid && kill.triggeredBy == small.pid)
        kernel.releasePinnedPages(pages)
        expectClean(kernel)
    }

    @Test("a GUP by the largest process, when memory runs out, kills it: it gets what was pinned and exits")
    func gupKillsCaller() throws {
        let (kernel, small) = try machine(bigPages: 256)   // 1 MiB
        let hog = try #require(kernel.createAddressSpace())
        let b = try hog.mmap(length: 32 << 20, protection: .readWrite, flags: [.private, .noReserve])
        let pages = try hog.pinUserPages(b, count: 8192, write: true).get()
        #expect(pages.count > 0 && pages.count < 8192)
        #expect(hog.wasOOMKilled && hog.hasExited)
        #expect(!small.wasOOMKilled && kernel.vmstat[.oomKill] == 1)
        kernel.releasePinnedPages(pages)
        expectClean(kernel)
    }

    @Test("a cgroup's limit is not the machine out of memory: only the cgroup's OOM killer acts")
    func cgroupLimitIsNotGlobal() throws {
        let (kernel, big) = try machine(bigPages: 1024)   // 4 MiB, in the root
        try kernel.createMemoryCgroup("box")
        try kernel.writeCgroupFile("box", "memory.max", "1M")
        let boxed = try #require(kernel.createAddressSpace())
        try kernel.move(boxed, to: kernel.memoryCgroups.cgroup(named: "box"))
        let b = try boxed.mmap(length: 4 << 20, protection: .readWrite, flags: .private)
        #expect(boxed.touch(b, length: 4 << 20, .write).failure?.outcome == .outOfMemory)
        #expect(boxed.wasOOMKilled && !big.wasOOMKilled)
        #expect(kernel.memoryCgroups.oomKills.map(\.cgroup) == ["box"])
        expectClean(kernel)
    }
}
