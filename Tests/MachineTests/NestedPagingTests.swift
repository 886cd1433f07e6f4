import Testing
import VMCore
import Kernel
import Machine
import TestSupport

/// A host kernel and VMM process, a VM with `guestMemory` on it, and a guest process on guest CPU 0.
/// THP is `enabled=madvise` on both sides, as on this machine; `hostTHP` advises the guest-memory
/// region of the host with MADV_HUGEPAGE (else MADV_NOHUGEPAGE).
func virtualMachine(_ preset: MachineDescription = .zen4, guestMemory: UInt64 = 32 << 20, cpus: Int = 1,
                    hostTHP: Bool = false) throws -> (VirtualMachine, AddressSpace) {
    let host = TestMachine.kernel(memory: 128 << 20, mode: .metadata, enabled: .madvise)
    let vmm = host.createAddressSpace()!
    var settings = KernelDesign.linux2_6_38.defaultSettings
    settings.enabled = .madvise
    let vm = try VirtualMachine(hostMM: vmm, guest: KernelConfiguration(memoryBytes: guestMemory, mode: .metadata, watermarks: .zero,
                                                                        hugepageSettings: settings),
                                description: preset, cpuCount: cpus, hostAdvice: hostTHP ? .hugepage : .noHugepage)
    let guestMM = vm.guest.createAddressSpace()!
    vm.machine.cpus[0].switchTo(guestMM)
    return (vm, guestMM)
}

/// The host frame behind guest virtual address `va`: guest translation, then host translation.
func hostFrame(_ vm: VirtualMachine, _ guestMM: AddressSpace, _ va: VirtualAddress) -> PFN? {
    guard let g = guestMM.translate(va) else { return nil }
    return vm.hostMM.translate(vm.guestBase + (UInt64(g.frame.rawValue) << 12))?.frame
}

@Suite("Nested paging")
struct NestedPagingTests {
    @Test("a 2-D walk without walk caches makes 24 references (4-level tables on both sides)", arguments: MachineDescription.presetNames)
    func twoDimensionalWalkReferences(preset: String) throws {
        let (vm, guestMM) = try virtualMachine(MachineDescription.presets[preset]!.withoutWalkCaches)
        let cpu = vm.machine.cpus[0]
        let va = try guestMM.mmap(length: 4 << 20, protection: .readWrite, flags: .private)
        #expect(try cpu.access(va, .write).get() == hostFrame(vm, guestMM, va))
        #expect(cpu.nested!.hostFaults > 0)   // guest tables and the data page were faulted in on the host
        cpu.reset()
        #expect(try cpu.access(va, .read).get() == hostFrame(vm, guestMM, va))
        #expect(cpu.counters.walks == 1)
        #expect(cpu.counters.walkReferences == 24)
        #expect(cpu.counters.faults == 0 && cpu.nested!.hostFaults == 0)
        // Without walk caches, even a warm walk of the next page reads all 24.
        _ = cpu.access(va + 4096, .write)
        #expect(cpu.counters.walkReferences >= 48)
    }

    @Test("with empty but present walk caches, host walks within one 2-D walk reuse each other's entries")
    func emptyCachesFillDuringTheWalk() throws {
        let (vm, guestMM) = try virtualMachine(.zen4)
        let cpu = vm.machine.cpus[0]
        let va = try guestMM.mmap(length: 4 << 20, protection: .readWrite, flags: .private)
        _ = cpu.access(va, .write)
        cpu.reset()
        _ = cpu.access(va, .read)
        // Guest tables and the data page lie in one host 2 MiB region: the first host walk takes 4
        // references, the four later ones 1 each via the host PDE cache, plus 4 guest entries.
        #expect(cpu.counters.walkReferences == 4 + 4 * 1 + 4)
    }

    @Test("warm paging-structure and nested TLBs cut the next page's 2-D walk to two references")
    func warmCachesShortenWalks() throws {
        let (vm, guestMM) = try virtualMachine()
        let cpu = vm.machine.cpus[0]
        let va = try guestMM.mmap(length: 4 << 20, protection: .readWrite, flags: .private)
        touchPages(cpu, va, 2 * 4096, .write)
        cpu.reset()
        _ = cpu.access(va, .read)
        _ = cpu.access(va + 4096, .read)
        // Guest PDE cache → the guest PTE (its table's host frame is in the nested TLB): 1 reference;
        // the data page's host walk starts at the host PTE via the host PDE cache: 1 reference.
        #expect(cpu.counters.walkReferences == 12 + 2)
        #expect(try cpu.access(va + 4096, .read).get() == hostFrame(vm, guestMM, va + 4096))
    }

    @Test("guest THP × host THP: references of a 2-D walk without walk caches, and the TLB entry's size",
          arguments: [(false, false, 24, PageSize.size4K), (true, false, 19, .size4K), (false, true, 19, .size4K), (true, true, 15, .size2M)])
    func guestAndHostPageSizes(guestTHP: Bool, hostTHP: Bool, references: Int, entrySize: PageSize) throws {
        let (vm, guestMM) = try virtualMachine(MachineDescription.zen4.withoutWalkCaches, guestMemory: 64 << 20, hostTHP: hostTHP)
        let cpu = vm.machine.cpus[0]
        let raw = try guestMM.mmap(length: 8 << 20, protection: .readWrite, flags: .private)
        let va = raw.alignedUp(2 << 20)
        try guestMM.madvise(va, length: 4 << 20, advice: guestTHP ? .hugepage : .noHugepage)
        #expect(try cpu.access(va, .write).get() == hostFrame(vm, guestMM, va))
        #expect((guestMM.translate(va)?.level == .pmd) == guestTHP)
        touchPages(cpu, va, 4 << 20, .write)
        cpu.reset()
        #expect(try cpu.access(va + 4096, .read).get() == hostFrame(vm, guestMM, va + 4096))
        #expect(cpu.counters.walkReferences == references)
        #expect(cpu.cachedTranslation(va + 4096)?.size == entrySize)
        // The TLB reaches the rest of the 2 MiB only when both sides map it huge.
        let walks = cpu.counters.walks
        #expect(try cpu.access(va + (1 << 20), .read).get() == hostFrame(vm, guestMM, va + (1 << 20)))
        #expect(cpu.counters.walks == walks + (entrySize == .size2M ? 0 : 1))
        #expect(cpu.nested!.splinteredFills == (guestTHP && !hostTHP ? 2 : 0))
    }

    @Test("guest TLB entries hold host frames; a host change to guest memory reaches them")
    func hostChangesReachGuestTranslations() throws {
        let (vm, guestMM) = try virtualMachine()
        let cpu = vm.machine.cpus[0]
        let va = try guestMM.mmap(length: 1 << 20, protection: .readWrite, flags: .private)
        touchPages(cpu, va, 16 * 4096, .write)
        let before = try cpu.access(va, .read).get()
        // The host drops the guest page's backing (as balloon/free-page reporting would).
        let gfn = guestMM.translate(va)!.frame
        let hva = vm.guestBase + (UInt64(gfn.rawValue) << 12)
        try vm.hostMM.madvise(hva, length: 4096, advice: .dontNeed)
        #expect(cpu.cachedTranslation(va) == nil)
        let faults = cpu.nested!.hostFaults
        let after = try cpu.access(va, .read).get()
        #expect(cpu.nested!.hostFaults == faults + 1)
        #expect(after == hostFrame(vm, guestMM, va))
        #expect(vm.hostMM.translate(hva) != nil)
        _ = before
    }

    @Test("guest munmap shoots down the guest translations on every guest CPU that ran the process")
    func guestShootdowns() throws {
        let (vm, guestMM) = try virtualMachine(cpus: 2)
        let m = vm.machine
        m.cpus[1].switchTo(guestMM)
        let va = try guestMM.mmap(length: 1 << 20, protection: .readWrite, flags: .private)
        touchPages(m.cpus[0], va, 4096, .write)
        touchPages(m.cpus[1], va, 4096)
        try m.run(on: 1) { try guestMM.munmap(va, length: 4096) }
        #expect(m.cpus[0].cachedTranslation(va) == nil && m.cpus[1].cachedTranslation(va) == nil)
        #expect(m.flushCounters == TLBFlushCounters(remoteFlush: 1, remoteFlushReceived: 1, localFlushAll: 0, localFlushOne: 1))
    }
}
