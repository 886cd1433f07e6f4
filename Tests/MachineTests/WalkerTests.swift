import Testing
import VMCore
import Kernel
import Machine
import TestSupport

@Suite("Page walker")
struct WalkerTests {
    @Test("a walk with empty caches reads one entry per level; the PDE cache then cuts it to one")
    func walkReferences() throws {
        let (m, mm) = machine()
        let cpu = m.cpus[0]
        let va = try anon(mm, 4 << 20)
        _ = cpu.access(va, .write)                // faults, then walks again
        cpu.reset()
        #expect(cpu.access(va, .read) == .success(mm.translate(va)!.frame))
        #expect(cpu.counters.walks == 1)
        #expect(cpu.counters.walkReferences == 4)
        #expect(cpu.counters.pageWalkCacheHits == 0)
        // The next page shares the PTE table: the PDE cache knows it, one reference.
        _ = cpu.access(va + 4096, .write)
        #expect(cpu.counters.walks == 3)         // the first walk faults, the retry maps it
        #expect(cpu.counters.pageWalkCacheHits == 2)
        #expect(cpu.counters.walkReferences == 4 + 1 + 1)
        #expect(cpu.counters.faults == 1)
    }

    @Test("the walker raises the fault into the kernel and retries; unmapped addresses fail with SIGSEGV")
    func faultsReachTheKernel() throws {
        let (m, mm) = machine()
        let cpu = m.cpus[0]
        let va = try anon(mm, 1 << 20)
        let before = mm.kernel.vmstat[.pgfault]
        touchPages(cpu, va, 1 << 20, .write)
        #expect(cpu.counters.faults == 256)
        #expect(mm.kernel.vmstat[.pgfault] - before == 256)
        #expect(cpu.counters.faultCycles == 256 * m.machineDescription.timing.baseFaultCycles)
        #expect(cpu.access(VirtualAddress(0x1000), .read) == .failure(AccessFault(at: VirtualAddress(0x1000), outcome: .segv(.mapErr))))
        // Every frame the CPU returns is the one the kernel's functional walk reports.
        var va2 = va
        while va2 < va + (1 << 20) {
            #expect(cpu.access(va2, .read) == .success(mm.translate(va2)!.frame))
            va2 = va2 + 4096
        }
    }

    @Test("a write through a clean TLB entry re-walks and sets the dirty bit in the kernel's PTE")
    func walkerSetsDirtyBit() throws {
        let (m, mm) = machine()
        let cpu = m.cpus[0]
        let va = try anon(mm, 1 << 20, shared: true)
        #expect(cpu.access(va, .read) == .success(mm.translate(va)!.frame))
        let entry = mm.translate(va)!.entry
        #expect(entry.isWritable && entry.isAccessed && !entry.isDirty)
        let faults = cpu.counters.faults
        #expect(cpu.access(va, .write) == .success(mm.translate(va)!.frame))
        #expect(mm.translate(va)!.entry.isDirty)
        #expect(cpu.counters.dirtyAssists == 1)
        #expect(cpu.counters.faults == faults)
        // A second write hits the now-dirty TLB entry without another walk.
        let walks = cpu.counters.walks
        _ = cpu.access(va + 8, .write)
        #expect(cpu.counters.walks == walks)
    }

    @Test("with 4 KiB pages, a loop over as many pages as the L1 dTLB has entries hits L1 on every access")
    func l1ReachWithSmallPages() throws {
        let (m, mm) = machine(.skylakeSP)
        let cpu = m.cpus[0]
        let va = try anon(mm, 1 << 20)
        touchPages(cpu, va, 64 * 4096, .write)
        cpu.counters = TranslationCounters()
        for _ in 0..<3 { touchPages(cpu, va, 64 * 4096) }
        #expect(cpu.counters.l1Hits == 3 * 64)
        // 65 pages: one of the sixteen 4-way sets gets five pages and thrashes under LRU.
        touchPages(cpu, va, 65 * 4096, .write)
        cpu.counters = TranslationCounters()
        for _ in 0..<3 { touchPages(cpu, va, 65 * 4096) }
        #expect(cpu.counters.l1Hits == 3 * (65 - 5))
        #expect(cpu.counters.l2Hits == 3 * 5)
        #expect(cpu.counters.walks == 0)
    }

    @Test("the functional view reports a cached translation without changing counters")
    func cachedTranslationIsSideEffectFree() throws {
        let (m, mm) = machine(.zen4)
        let cpu = m.cpus[0]
        let va = try anon(mm, 1 << 20)
        #expect(cpu.cachedTranslation(va) == nil)
        _ = cpu.access(va, .write)
        let counters = cpu.counters
        let seen = cpu.cachedTranslation(va + 5)
        #expect(seen?.level == 1 && seen?.size == .size4K && seen?.frame == mm.translate(va)!.frame)
        #expect(cpu.counters == counters)
    }
}

@Suite("Page walker over transparent huge pages")
struct HugeWalkerTests {
    /// A kernel with THP `enabled=madvise`, a 2 MiB-aligned region of `bytes` advised as asked, all written.
    func region(_ preset: MachineDescription, bytes: UInt64, huge: Bool) throws -> (Machine, AddressSpace, VirtualAddress) {
        let kernel = TestMachine.kernel(memory: 128 << 20, mode: .metadata, enabled: .madvise)
        let mm = kernel.createAddressSpace()!
        let m = Machine(kernel: kernel, description: preset)
        m.cpus[0].switchTo(mm)
        let va = try mm.mmap(length: bytes + (2 << 20), protection: .readWrite, flags: .private).alignedUp(2 << 20)
        try mm.madvise(va, length: bytes, advice: huge ? .hugepage : .noHugepage)
        touchPages(m.cpus[0], va, bytes, .write)
        return (m, mm, va)
    }

    @Test("a 2 MiB mapping takes one walk and one TLB entry per 2 MiB instead of 512", arguments: MachineDescription.presetNames)
    func hugeMappingsNeedFewerWalks(preset: String) throws {
        let d = MachineDescription.presets[preset]!
        for huge in [false, true] {
            let (m, mm, va) = try region(d, bytes: 16 << 20, huge: huge)
            let cpu = m.cpus[0]
            #expect((mm.translate(va)?.level == .pmd) == huge)
            cpu.reset()
            touchPages(cpu, va, 16 << 20)
            #expect(cpu.counters.walks == (huge ? 8 : 4096))
            #expect(cpu.counters.faults == 0)
            let entries = cpu.tlb.l2.reduce(0) { $0 + $1.validEntries }
            let smallEntries = d.l2.filter { $0.pageSizes.contains(.size4K) }.reduce(0) { $0 + $1.entries }
            #expect(entries == (huge ? 8 : min(4096, smallEntries)))
            // Every frame agrees with the kernel's functional walk.
            #expect(try cpu.access(va + 0x12345, .read).get() == mm.translate(va + 0x12345)!.frame)
        }
    }

    @Test("a walk ending at a huge PMD reads three entries and fills the 2 MiB L1 dTLB array")
    func hugeWalkReferencesAndL1Array() throws {
        let (m, _, va) = try region(.skylakeSP, bytes: 4 << 20, huge: true)
        let cpu = m.cpus[0]
        cpu.reset()
        _ = cpu.access(va + 4096 * 7, .read)
        #expect(cpu.counters.walkReferences == 3)
        #expect(cpu.cachedTranslation(va)?.size == .size2M && cpu.cachedTranslation(va)?.level == 1)
        #expect(cpu.tlb.l1Data[1].validEntries == 1 && cpu.tlb.l1Data[0].validEntries == 0)
    }

    @Test("mprotect of a huge mapping drops its 2 MiB TLB entry: a write then faults, a read still maps huge")
    func mprotectOfHugeMapping() throws {
        let (m, mm, va) = try region(.zen5, bytes: 4 << 20, huge: true)
        let cpu = m.cpus[0]
        #expect(try cpu.access(va + 8, .write).get() == mm.translate(va + 8)!.frame)
        try m.run(on: 0) { try mm.mprotect(va, length: 2 << 20, protection: .read) }
        #expect(cpu.cachedTranslation(va) == nil)
        #expect(cpu.access(va + 8, .write) == .failure(AccessFault(at: va + 8, outcome: .segv(.accErr))))
        #expect(try cpu.access(va + 8, .read).get() == mm.translate(va + 8)!.frame)
        #expect(cpu.cachedTranslation(va)?.size == .size2M)
        // The other 2 MiB kept its writable entry.
        #expect(try cpu.access(va + (2 << 20), .write).get() == mm.translate(va + (2 << 20))!.frame)
    }

    @Test("splitting a huge PMD (partial munmap) shoots down the 2 MiB entry; the rest walks to 4 KiB PTEs")
    func splitShootsDownHugeEntry() throws {
        let (m, mm, va) = try region(.zen4, bytes: 4 << 20, huge: true)
        let cpu = m.cpus[0]
        _ = cpu.access(va, .read)
        #expect(cpu.cachedTranslation(va)?.size == .size2M)
        try m.run(on: 0) { try mm.munmap(va, length: 4096) }
        #expect(cpu.cachedTranslation(va + 4096) == nil)
        #expect(cpu.access(va, .read) == .failure(AccessFault(at: va, outcome: .segv(.mapErr))))
        #expect(try cpu.access(va + 4096, .read).get() == mm.translate(va + 4096)!.frame)
        #expect(cpu.cachedTranslation(va + 4096)?.size == .size4K)
    }
}

@Suite("Instruction fetches")
struct InstructionFetchTests {
    @Test("fetches fill the L1 iTLB, not the L1 dTLB, and fault on a mapping without PROT_EXEC")
    func fetchesUseTheITLB() throws {
        let (m, mm) = machine(.skylakeSP)
        let cpu = m.cpus[0]
        let code = try anon(mm, 1 << 20, prot: [.read, .execute])
        let data = try anon(mm, 1 << 20)
        #expect(try cpu.access(code, .execute).get() == mm.translate(code)!.frame)
        #expect(cpu.cachedTranslation(code, .execute)?.level == 1)
        #expect(cpu.cachedTranslation(code, .read)?.level == 2)   // the STLB is unified; the L1 dTLB did not get it
        #expect(cpu.tlb.l1Instruction[0].validEntries == 1 && cpu.tlb.l1Data[0].validEntries == 0)
        _ = cpu.access(data, .write)
        #expect(cpu.access(data, .execute) == .failure(AccessFault(at: data, outcome: .segv(.accErr))))
    }
}
