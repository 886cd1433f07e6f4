import Testing
import VMCore
@testable import Kernel
@testable import Machine
import TestSupport

/// What a walk found, without the A/D bits the walks themselves set.
private func summary(_ r: PageWalkResult) -> String {
    switch r {
    case .mapped(let entry, let level): "mapped \(entry.pfn.rawValue) at \(level.name)"
    case .notPresent: "not present"
    case .protection: "protection"
    }
}

/// A mixed table at `base`: a huge PMD (2 MiB written under MADV_HUGEPAGE), then 4 KiB PTEs beside
/// it: two written, one read-only, holes between.
private func mixedLayout(_ mm: AddressSpace, base: VirtualAddress) throws {
    _ = try mm.mmap(address: base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
    try mm.madvise(base, length: 2 << 20, advice: .hugepage)
    try mm.madvise(base + (2 << 20), length: 2 << 20, advice: .noHugepage)
    _ = try mm.access(base, .write).get()
    _ = try mm.access(base + (2 << 20), .write).get()
    _ = try mm.access(base + (2 << 20) + 4096, .write).get()
    _ = try mm.access(base + (2 << 20) + 8192, .write).get()
    try mm.mprotect(base + (2 << 20) + 8192, length: 4096, protection: .read)
}

private let probes: [(UInt64, MemoryAccess)] = [
    (0, .read), (0, .write), (0x1F_F000, .write), (0x12_3000, .execute),
    (0x20_0000, .read), (0x20_0000, .write), (0x20_1000, .write), (0x20_2000, .read), (0x20_2000, .write),
    (0x20_3000, .read), (0x30_0000, .write), (0x40_0000, .read), (1 << 39, .read),
]

@Suite("One page-table walker, three observers")
struct PageTableWalkTests {
    @Test("the software MMU, a CPU and a 2-D walk agree over a table of 4 KiB PTEs and a huge PMD")
    func observersAgree() throws {
        let base = VirtualAddress(1 << 30)
        // Software MMU and a CPU over one kernel.
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata, enabled: .madvise)
        let mm = try #require(kernel.createAddressSpace())
        try mixedLayout(mm, base: base)
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 1)
        let cpu = m.cpus[0]
        cpu.switchTo(mm)
        // A guest with the same layout behind nested paging.
        let (vm, guestMM) = try virtualMachine(hostTHP: true)
        try mixedLayout(guestMM, base: base)
        let guestCPU = vm.machine.cpus[0]
        let nested = try #require(guestCPU.nested)

        for (offset, kind) in probes {
            let va = base.rawValue + offset
            var software = SoftwareWalk(kernel)
            let bySoftware = PageTableWalk.walk(va, kind, root: mm.pageTableRoot, &software)
            var byCPUObserver = CPUWalk(cpu: cpu, kernel: kernel, asid: cpu.asid, cost: 0)
            let byCPU = PageTableWalk.walk(va, kind, root: mm.pageTableRoot, &byCPUObserver)
            #expect(summary(bySoftware) == summary(byCPU), "at +\(offset) \(kind)")

            var guestSoftware = SoftwareWalk(vm.guest)
            let byGuestSoftware = PageTableWalk.walk(va, kind, root: guestMM.pageTableRoot, &guestSoftware)
            var twoD = GuestWalk(cpu: guestCPU, nested: nested, kernel: vm.guest, asid: guestCPU.asid, cost: 0)
            let by2D = PageTableWalk.walk(va, kind, root: guestMM.pageTableRoot, &twoD)
            #expect(summary(byGuestSoftware) == summary(by2D), "guest at +\(offset) \(kind)")
            // The same layout gives the same kinds of answers in both kernels.
            #expect(summary(bySoftware).prefix(6) == summary(by2D).prefix(6), "at +\(offset) \(kind)")
        }
        // The walks saw the expected kinds of leaf.
        var software = SoftwareWalk(kernel)
        #expect(summary(PageTableWalk.walk(base.rawValue, .read, root: mm.pageTableRoot, &software)).hasSuffix("PMD"))
        #expect(summary(PageTableWalk.walk(base.rawValue + 0x20_0000, .read, root: mm.pageTableRoot, &software)).hasSuffix("PTE"))
        #expect(PageTableWalk.walk(base.rawValue + 0x20_2000, .write, root: mm.pageTableRoot, &software) == .protection)
        #expect(PageTableWalk.walk(base.rawValue + 0x20_3000, .read, root: mm.pageTableRoot, &software) == .notPresent)
    }

    @Test("a CPU's walk reaches a table through the hint beside its entry only when the slot's owner confirms it")
    func tableHints() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata, enabled: .never)
        let mm = try #require(kernel.createAddressSpace())
        let base = VirtualAddress(1 << 30)
        _ = try mm.mmap(address: base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
        _ = try mm.access(base, .write).get()
        _ = try mm.access(base + (2 << 20), .write).get()
        let pmds = try #require(kernel.pmdTable(base.rawValue, root: mm.pageTableRoot))
        let i = Int((base.rawValue >> 21) & 511)
        let first = kernel.pageTable(at: pmds[i]), second = kernel.pageTable(at: pmds[i + 1])
        #expect(first.slot != second.slot)
        let hint = kernel.tables.hints(pmds.slot) + i
        // A hint naming another live table is refused; the frame record's slot replaces it.
        hint.pointee.store(second.slot, ordering: .relaxed)
        #expect(kernel.pageTable(below: pmds[i], in: pmds, at: i).entries == first.entries)
        #expect(hint.pointee.load(ordering: .relaxed) == first.slot)
        #expect(kernel.pageTable(below: pmds[i], in: pmds, at: i).entries == first.entries)

        // After the tables are freed and others taken, a CPU's walks (whose hints named the freed
        // tables) still agree with the software MMU's.
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 1)
        let cpu = m.cpus[0]
        cpu.switchTo(mm)
        let probes = [base.rawValue, base.rawValue + (2 << 20), base.rawValue + (2 << 20) + 4096]
        for round in 0..<2 {
            for va in probes {
                var software = SoftwareWalk(kernel)
                var observer = CPUWalk(cpu: cpu, kernel: kernel, asid: cpu.asid, cost: 0)
                #expect(summary(PageTableWalk.walk(va, .read, root: mm.pageTableRoot, &software))
                        == summary(PageTableWalk.walk(va, .read, root: mm.pageTableRoot, &observer)), "round \(round)")
            }
            try mm.munmap(base, length: 4 << 20)
            // Another table takes the freed slot first, so the old hints name a slot owned elsewhere.
            _ = try mm.mmap(address: base + (64 << 20), length: 4096, protection: .readWrite, flags: [.private, .fixed])
            _ = try mm.access(base + (64 << 20), .write).get()
            _ = try mm.mmap(address: base, length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
            _ = try mm.access(base + (2 << 20) + 4096, .write).get()
            _ = try mm.access(base, .read).get()
        }
    }

    @Test("a walk sets the accessed bit, and the dirty bit on a write, in the leaf it uses")
    func accessedAndDirty() throws {
        let kernel = TestMachine.kernel(memory: 16 << 20, mode: .metadata)
        let mm = try #require(kernel.createAddressSpace())
        let va = try mm.mmap(length: 16 << 10, protection: .readWrite, flags: .shared)
        _ = try mm.access(va, .read).get()
        #expect(mm.translate(va)?.entry.isDirty == false)
        var software = SoftwareWalk(kernel)
        guard case .mapped = PageTableWalk.walk(va.rawValue, .write, root: mm.pageTableRoot, &software) else {
            Issue.record("a shared writable page should map"); return
        }
        #expect(mm.translate(va)?.entry.isDirty == true)
    }
}
