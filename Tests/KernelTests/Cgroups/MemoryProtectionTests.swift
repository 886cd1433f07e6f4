import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// `memory.min` and `memory.low` (Documentation/admin-guide/cgroup-v2.rst): reclaim leaves a
/// cgroup's memory below its effective protection alone — `memory.low` only while there is other
/// memory to take (`shrink_node_memcgs()`, `do_try_to_free_pages()`'s second pass),
/// `memory.min` always — and scans a protected cgroup above its protection in proportion to the
/// excess (`get_scan_count()`).
@Suite("Memory cgroups: memory.min and memory.low")
struct MemoryProtectionTests {
    /// A 6.18 kernel with swap and the cgroups at `paths`, a process in each of `leaves` that has
    /// written `pages` 4 KiB pages, in that order.
    func kernel(_ paths: [String], leaves: [String], pages: Int = 512) throws -> (Kernel, [AddressSpace]) {
        let kernel = TestMachine.kernel(memory: 64 << 20, design: .linux6_18, swap: SwapConfiguration(slots: 8192))
        for path in paths { try kernel.createMemoryCgroup(path) }
        var spaces: [AddressSpace] = []
        for leaf in leaves {
            let mm = try #require(kernel.createAddressSpace())
            try kernel.move(mm, to: kernel.memoryCgroups.cgroup(named: leaf))
            let start = try mm.mmap(address: nil, length: UInt64(pages) * 4096, protection: .readWrite, flags: .private)
            for page in 0..<pages { try mm.write(start + UInt64(page) * 4096, [UInt8(page & 0xFF)]).get() }
            spaces.append(mm)
        }
        return (kernel, spaces)
    }

    /// `kernel` with the cgroup "pod" and below it "pod/x" and "pod/y", each with a process that has
    /// written 800 pages; and the three cgroups.
    func pod() throws -> (Kernel, [AddressSpace], pod: MemoryCgroup, x: MemoryCgroup, y: MemoryCgroup) {
        let (kernel, spaces) = try kernel(["pod", "pod/x", "pod/y"], leaves: ["pod/x", "pod/y"], pages: 800)
        let groups = kernel.memoryCgroups
        return (kernel, spaces, try #require(groups.cgroup(named: "pod")), try #require(groups.cgroup(named: "pod/x")),
                try #require(groups.cgroup(named: "pod/y")))
    }

    func swapped(_ kernel: Kernel, _ cgroup: String) throws -> Int {
        Int(try kernel.readCgroupFile(cgroup, "memory.swap.current").dropLast())! / 4096
    }

    func low(_ kernel: Kernel, _ cgroup: String) throws -> Int {
        try #require(kernel.memoryCgroups.cgroup(named: cgroup)).value(of: .low)
    }

    @Test("memory.min and memory.low read 0 until written, take memparse values and 'max', refuse junk")
    func files() throws {
        let (kernel, _) = try kernel(["a"], leaves: [])
        #expect(try kernel.readCgroupFile("a", "memory.min") == "0\n")
        #expect(try kernel.readCgroupFile("a", "memory.low") == "0\n")
        try kernel.writeCgroupFile("a", "memory.low", "8M\n")
        try kernel.writeCgroupFile("a", "memory.min", "max")
        #expect(try kernel.readCgroupFile("a", "memory.low") == "\(8 << 20)\n")
        #expect(try kernel.readCgroupFile("a", "memory.min") == "max\n")
        #expect(throws: Errno.EINVAL) { try kernel.writeCgroupFile("a", "memory.low", "-1") }
        #expect(kernel.memoryCgroups.anyProtection)
    }

    @Test("direct reclaim passes over a cgroup under its memory.low while another has pages to give")
    func lowSparedWhileOthersGive() throws {
        let (kernel, spaces) = try kernel(["a", "b"], leaves: ["a", "b"])
        defer { withExtendedLifetime(spaces) {} }
        try kernel.writeCgroupFile("a", "memory.low", "4M")   // a uses 2 MiB: under it
        let freed = kernel.reclaim(pages: 256, by: .direct)
        #expect(freed >= 256)
        #expect(try swapped(kernel, "a") == 0)
        #expect(try swapped(kernel, "b") >= 256)
        #expect(try low(kernel, "a") == 0)
        expectClean(kernel)
    }

    @Test("with only protected memory left, direct reclaim goes round again and counts low events; kswapd does not")
    func lowGivenUpToAvertOOM() throws {
        let (kernel, spaces) = try kernel(["a", "b"], leaves: ["a", "b"])
        defer { withExtendedLifetime(spaces) {} }
        try kernel.writeCgroupFile("a", "memory.low", "4M")
        try kernel.writeCgroupFile("b", "memory.low", "4M")
        #expect(kernel.reclaim(pages: 64, by: .kswapd) == 0)
        #expect(try swapped(kernel, "a") + (try swapped(kernel, "b")) == 0)
        #expect(try low(kernel, "a") == 0)
        let freed = kernel.reclaim(pages: 64, by: .direct)
        #expect(freed >= 64)
        #expect(try low(kernel, "a") + (try low(kernel, "b")) >= 1)
        #expect(try swapped(kernel, "a") + (try swapped(kernel, "b")) >= 64)
        expectClean(kernel)
    }

    @Test("memory under memory.min is never reclaimed, not even to avert OOM")
    func minIsHard() throws {
        let (kernel, spaces) = try kernel(["a", "b"], leaves: ["a", "b"])
        defer { withExtendedLifetime(spaces) {} }
        try kernel.writeCgroupFile("a", "memory.min", "4M")
        try kernel.writeCgroupFile("b", "memory.min", "4M")
        #expect(kernel.reclaim(pages: 64, by: .direct) == 0)
        #expect(try swapped(kernel, "a") + (try swapped(kernel, "b")) == 0)
        #expect(try low(kernel, "a") + (try low(kernel, "b")) == 0)
        expectClean(kernel)
    }

    @Test("the cgroup reclaimed from is not protected by its own memory.low; the ones below it are")
    func targetUnprotected() throws {
        let (kernel, spaces) = try kernel(["pod", "pod/x", "pod/y"], leaves: ["pod/x", "pod/y"])
        defer { withExtendedLifetime(spaces) {} }
        try kernel.writeCgroupFile("pod", "memory.low", "max")
        try kernel.writeCgroupFile("pod/x", "memory.low", "4M")
        let pod = try #require(kernel.memoryCgroups.cgroup(named: "pod"))
        let uncharged = kernel.reclaimCgroup(pod, pages: 128)
        #expect(uncharged >= 128)
        #expect(try swapped(kernel, "pod/x") == 0)
        #expect(try swapped(kernel, "pod/y") >= 128)
        // Global reclaim: the pod's memory.low (max) protects only what its children claim
        // (without `memory_recursiveprot`): x's pages stay, y's go.
        let before = try swapped(kernel, "pod/y")
        #expect(kernel.reclaim(pages: 32, by: .kswapd) >= 32)
        #expect(try swapped(kernel, "pod/x") == 0)
        #expect(try swapped(kernel, "pod/y") > before)
        expectClean(kernel)
    }

    @Test("siblings claiming more than their parent's protection share it in proportion to what they use")
    func effectiveProtectionIsShared() throws {
        let (kernel, spaces, pod, x, y) = try pod()
        defer { withExtendedLifetime(spaces) {} }
        let groups = kernel.memoryCgroups
        try kernel.writeCgroupFile("pod", "memory.low", "4M")     // 1,024 pages
        try kernel.writeCgroupFile("pod/x", "memory.low", "4M")   // claims min(usage, 1,024)
        try kernel.writeCgroupFile("pod/y", "memory.low", "1M")   // claims min(usage, 256)
        let ux = x.usagePages, uy = y.usagePages
        #expect(ux >= 800 && uy >= 800)
        let claimed = min(ux, 1024) + min(uy, 256)
        #expect(claimed > 1024)
        // Global reclaim: the pod, a child of the root, has its own value.
        #expect(groups.effectiveProtection(of: pod, target: nil).low == 1024)
        #expect(groups.effectiveProtection(of: x, target: nil).low == min(ux, 1024) * 1024 / claimed)
        #expect(groups.effectiveProtection(of: y, target: nil).low == 256 * 1024 / claimed)
        // Reclaim from the pod: its children have their own values.
        #expect(groups.effectiveProtection(of: x, target: pod).low == 1024)
        #expect(groups.effectiveProtection(of: pod, target: pod) == (0, 0))
        // A parent that affords what they claim leaves each its own.
        try kernel.writeCgroupFile("pod", "memory.low", "max")
        #expect(groups.effectiveProtection(of: x, target: nil).low == min(ux, 1024))
        #expect(groups.effectiveProtection(of: y, target: nil).low == 256)
    }

    @Test("with memory_recursiveprot, what a parent affords beyond its children's claims goes to them by their unclaimed usage")
    func recursiveProtectionShares() throws {
        let (kernel, spaces, pod, x, y) = try pod()
        defer { withExtendedLifetime(spaces) {} }
        let groups = kernel.memoryCgroups
        try kernel.writeCgroupFile("pod", "memory.low", "4M")     // 1,024 pages
        try kernel.writeCgroupFile("pod/x", "memory.low", "1M")   // claims 256
        let ux = x.usagePages, uy = y.usagePages, up = pod.usagePages
        #expect(ux >= 800 && uy >= 800 && up >= ux + uy)
        // Without the option, the children get what they claim and no more.
        #expect(!groups.recursiveProtection)
        #expect(groups.effectiveProtection(of: x, target: nil).low == 256)
        #expect(groups.effectiveProtection(of: y, target: nil).low == 0)
        // With it, the 768 pages the pod affords beyond x's claim are shared by unclaimed usage
        // (`effective_protection()`: unclaimed × (usage − protected) / (parent usage − claimed)).
        groups.recursiveProtection = true
        #expect(groups.effectiveProtection(of: x, target: nil).low == 256 + 768 * (ux - 256) / (up - 256))
        #expect(groups.effectiveProtection(of: y, target: nil).low == 768 * uy / (up - 256))
        #expect(groups.effectiveProtection(of: x, target: nil).min == 0)
        // Over-claimed, the share is proportional as without the option.
        try kernel.writeCgroupFile("pod/y", "memory.low", "4M")
        let claimed = 256 + min(uy, 1024)
        #expect(groups.effectiveProtection(of: y, target: nil).low == min(uy, 1024) * 1024 / claimed)
        // Reclaim from the pod: its children have their own values, recursive or not.
        #expect(groups.effectiveProtection(of: x, target: pod).low == 256)
        // A parent at `max`: the product passes 64 bits; each child is covered up to its usage and more.
        try kernel.writeCgroupFile("pod", "memory.low", "max")
        try kernel.writeCgroupFile("pod/y", "memory.low", "0")
        #expect(groups.effectiveProtection(of: y, target: nil).low >= uy)
        #expect(groups.effectiveProtection(of: x, target: nil).low >= ux)
    }

    @Test("with memory_recursiveprot, a parent's memory.low keeps global reclaim off children that set none")
    func recursiveProtectionSparesSubtree() throws {
        func run(recursive: Bool) throws -> (pod: Int, other: Int) {
            let (kernel, spaces) = try kernel(["pod", "pod/x", "pod/y", "other"], leaves: ["pod/x", "pod/y", "other"])
            defer { withExtendedLifetime(spaces) {} }
            kernel.memoryCgroups.recursiveProtection = recursive
            try kernel.writeCgroupFile("pod", "memory.low", "max")
            #expect(kernel.reclaim(pages: 256, by: .kswapd) >= 256)
            expectClean(kernel)
            return (try swapped(kernel, "pod/x") + (try swapped(kernel, "pod/y")), try swapped(kernel, "other"))
        }
        // Without the option the pod's protection covers what its children claim: nothing.
        let plain = try run(recursive: false)
        #expect(plain.pod > 0)
        // With it the pod's whole subtree is protected, and the other cgroup gives the pages.
        let recursive = try run(recursive: true)
        #expect(recursive.pod == 0)
        #expect(recursive.other >= 256)
    }

    @Test("a cgroup above its protection is scanned for the excess only (get_scan_count's proportion)")
    func proportionalScan() {
        #expect(ReclaimProtection.scanSize(1000, .scan) == 1000)
        #expect(ReclaimProtection.scanSize(1000, .scanProportionally(protection: 256, usage: 512)) == 1000 - 1000 * 256 / 513)
        // At least SWAP_CLUSTER_MAX, so that reclaim moves on.
        #expect(ReclaimProtection.scanSize(40, .scanProportionally(protection: 500, usage: 510)) == 32)
        #expect(ReclaimProtection.scanSize(0, .scanProportionally(protection: 500, usage: 510)) == 0)
    }
}
