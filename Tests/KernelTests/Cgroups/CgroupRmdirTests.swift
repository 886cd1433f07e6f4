import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// `rmdir` of a memory cgroup (Linux: `cgroup_rmdir()`, `mem_cgroup_css_offline()`): refused while
/// it has processes or children; afterwards its charges stay until freed (a dying memcg), still
/// counted and reclaimed from above.
@Suite("Memory cgroups: rmdir")
struct CgroupRmdirTests {
    @Test("EBUSY with a process or a child, ENOENT for an unknown one; the name is free once it goes, the charges stay")
    func removal() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 4096))
        let pod = try kernel.createMemoryCgroup("pod")
        let app = try kernel.createMemoryCgroup("pod/app")
        try kernel.createMemoryCgroup("pod/other")
        let mm = try #require(kernel.createAddressSpace())
        try kernel.move(mm, to: app)
        let start = try mm.mmap(address: nil, length: 2 << 20, protection: .readWrite, flags: .private)
        for page in 0..<512 { try mm.write(start + UInt64(page) * 4096, [UInt8(page & 0xFF)]).get() }
        #expect(throws: Errno.EBUSY) { try kernel.removeMemoryCgroup("pod/app") }
        #expect(throws: Errno.EBUSY) { try kernel.removeMemoryCgroup("pod") }
        #expect(throws: Errno.ENOENT) { try kernel.removeMemoryCgroup("pod/none") }
        try kernel.writeCgroupFile("pod/app", "memory.low", "8M")
        try kernel.move(mm, to: kernel.memoryCgroups.cgroup(named: "pod/other"))
        let charged = app.usagePages
        try kernel.removeMemoryCgroup("pod/app")
        let removed = app.removed.load(ordering: .relaxed), low = app.lowPages.load(ordering: .relaxed)
        #expect(removed)
        #expect(low == 0, "offline drops memory.low")
        #expect(throws: Errno.ENOENT) { _ = try kernel.readCgroupFile("pod/app", "memory.current") }
        #expect(app.usagePages == charged && pod.usagePages >= charged)
        // The pod's reclaim still reaches the dying cgroup's pages.
        #expect(kernel.reclaimCgroup(pod, pages: 128) >= 128)
        #expect(app.usagePages <= charged - 128)
        #expect(try mm.read(start + 7 * 4096, count: 1).get() == [7])
        // A new cgroup of that name is another one, empty.
        let again = try kernel.createMemoryCgroup("pod/app")
        #expect(again !== app && again.id != app.id && again.usagePages == 0)
        // The pod keeps the memory controller for its children: still no processes in it.
        try kernel.removeMemoryCgroup("pod/app")
        #expect(throws: Errno.EBUSY) { try kernel.move(mm, to: pod) }
        // Freeing the pages uncharges the dying cgroup and the pod.
        try mm.munmap(start, length: 2 << 20)
        #expect(app.usagePages == 0)
        expectClean(kernel)
    }
}
