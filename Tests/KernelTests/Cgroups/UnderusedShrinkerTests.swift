import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

/// Linux 6.12's "mm: split underused THPs" (docs/history.md): in a cgroup with memory.max = 20 MiB
/// and no swap, a process touching 48 MiB with a 50 KiB stride under enabled=always. The cover
/// letter's test touches 40 MiB; with page tables charged, as Linux 6.18.44 charges them, 40 MiB
/// fits without the shrinker (nine THPs, the rest 4 KiB pages) in the model and on that kernel, so
/// the direction is checked at 48 MiB, where both OOM-kill without the shrinker.
@Suite("Underused-THP shrinker in a memory cgroup")
struct UnderusedShrinkerTests {
    /// Runs the cover letter's test; returns whether the process was OOM-killed, the kernel, and the
    /// process (which the caller keeps alive while it reads the cgroup: releasing it exits it).
    func run(shrinkUnderused: Bool, maxPtesNone: Int, length: UInt64 = 48 << 20) throws -> (killed: Bool, kernel: Kernel, mm: AddressSpace) {
        let kernel = TestMachine.kernel(memory: 128 << 20, design: .linux6_18, enabled: .always,
                                        swap: SwapConfiguration(slots: 0))
        let sysfs = kernel.transparentHugepageSysfs
        try sysfs.write("shrink_underused", shrinkUnderused ? "1" : "0")
        try sysfs.write("khugepaged/max_ptes_none", "\(maxPtesNone)")
        try kernel.createMemoryCgroup("test")
        try kernel.writeCgroupFile("test", "memory.max", "20M")
        try kernel.writeCgroupFile("test", "memory.swap.max", "0")
        let mm = try #require(kernel.createAddressSpace())
        try kernel.writeCgroupFile("test", "cgroup.procs", "\(mm.pid)")
        let start = try mm.mmap(address: nil, length: length, protection: .readWrite, flags: .private)
        var offset: UInt64 = 0
        while offset < length {
            if case .failure = mm.write(start + offset, [1]) { break }
            offset += 50 << 10
        }
        return (mm.wasOOMKilled, kernel, mm)
    }

    @Test("without the shrinker the process is OOM-killed")
    func killedWithout() throws {
        let (killed, kernel, mm) = try run(shrinkUnderused: false, maxPtesNone: 450)
        #expect(killed)
        #expect(try kernel.readCgroupFile("test", "memory.events").contains("oom_kill 1\n"))
        #expect(kernel.vmstatValues()["thp_underused_split_page"] == 0)
        withExtendedLifetime(mm) {}
    }

    @Test("at the cover letter's 40 MiB the process survives without the shrinker: nine THPs and their page tables leave room for the rest as 4 KiB pages (as on Linux 6.18.44)")
    func fortyMiBFits() throws {
        let (killed, kernel, mm) = try run(shrinkUnderused: false, maxPtesNone: 450, length: 40 << 20)
        #expect(!killed)
        let stat = try kernel.readCgroupFile("test", "memory.stat")
        #expect(stat.contains("anon_thp \(18 << 20)\n"), "\(stat)")
        #expect(kernel.vmstatValues()["thp_fault_fallback_charge"] == 11)
        #expect(kernel.memoryCgroups.cgroup(named: "test")!.usagePages <= 5120)
        withExtendedLifetime(mm) {}
    }

    @Test("with the shrinker it survives for max_ptes_none up to 470, the splits counted",
          arguments: [0, 200, 409, 450, 470])
    func survivesWith(maxPtesNone: Int) throws {
        let (killed, kernel, mm) = try run(shrinkUnderused: true, maxPtesNone: maxPtesNone)
        #expect(!killed)
        #expect((kernel.vmstatValues()["thp_underused_split_page"] ?? 0) > 0)
        #expect(kernel.memoryCgroups.cgroup(named: "test")!.usagePages <= 5120)
        #expect(kernel.checkInvariants().isEmpty)
        withExtendedLifetime(mm) {}
    }

    @Test("above 470 the THPs (41 of 512 pages touched) are not underused: killed again")
    func killedAbove() throws {
        let (killed, _, _) = try run(shrinkUnderused: true, maxPtesNone: 480)
        #expect(killed)
    }
}
