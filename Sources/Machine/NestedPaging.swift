import VMCore
import PhysicalMemory
import Kernel

/// One CPU's nested-paging state: where guest-physical memory lives in the host process, the host's
/// page tables, the nested TLB (guest-physical → host-physical) and the host paging-structure caches.
///
/// A guest TLB miss walks two sets of tables. Every guest table the walk reads sits at a guest-physical
/// address that first needs a host walk, and so does the data page at the end:
///
/// ```
///            gCR3 ─► gPML4E ─► gPDPTE ─► gPDE ─► gPTE ─► data gPA
///   host:     4   +1   4   +1   4    +1   4  +1   4  +1   4          = 24 references, empty caches
/// ```
/// Hardware: AMD APM vol. 2, 15.25 "Nested Paging"; Intel SDM vol. 3C, 29.3 "EPT".
/// Linux/KVM: the host side is the VMM's anonymous memory (`kvm_memory_slot` → `hva`), faulted in by
/// `kvm_mmu_page_fault()` → `hva_to_pfn()` → `handle_mm_fault()` on the host mm.
public final class NestedPaging: @unchecked Sendable {
    public let hostMM: AddressSpace
    /// Unowned: `hostMM` keeps it alive.
    unowned(unsafe) let hostKernel: Kernel
    let hostRoot: PageTable
    /// Host virtual address of guest frame 0.
    public let guestBase: VirtualAddress
    public let nestedTLB: TLBArray
    let hasNestedTLB: Bool
    public let hostPageWalkCache: PageWalkCache
    /// Host faults taken by walks (Linux/KVM: EPT violations / NPT faults that map host memory).
    public internal(set) var hostFaults = 0
    /// TLB fills whose guest page was larger than the host page backing it (the translation is cached
    /// at the host's smaller size).
    public internal(set) var splinteredFills = 0
    /// References to host page tables, and how many of them missed every cache level.
    public var hostReferences = 0
    public var hostReferencesFromMemory = 0
    public var hostLeafReferencesFromMemory = 0

    init(hostMM: AddressSpace, guestBase: VirtualAddress, description d: MachineDescription) {
        self.hostMM = hostMM
        hostKernel = hostMM.kernel
        hostRoot = hostMM.pageTableRoot
        self.guestBase = guestBase
        nestedTLB = TLBArray(entries: max(d.nestedTLB.entries, 1), ways: max(d.nestedTLB.ways, 1), pageSizes: d.nestedTLB.pageSizes)
        hasNestedTLB = d.nestedTLB.entries > 0
        hostPageWalkCache = PageWalkCache(pml4: d.pml4Cache, pdpt: d.pdptCache, pd: d.pdCache)
    }

    func reset() {
        nestedTLB.invalidateEverything()
        hostPageWalkCache.pml4.invalidateEverything(); hostPageWalkCache.pdpt.invalidateEverything()
        hostPageWalkCache.pd.invalidateEverything()
        hostFaults = 0; splinteredFills = 0; hostReferences = 0; hostReferencesFromMemory = 0; hostLeafReferencesFromMemory = 0
    }
}

extension CPU {
    /// Translates guest frame `gfn` to the host frame behind it, through the nested TLB or a host walk
    /// (faulting host memory in as KVM does on an NPT/EPT violation). Adds the references' latency to
    /// `cost`. Returns the host frame and the size of the host page that maps it.
    func hostFrame(_ n: NestedPaging, guestFrame gfn: UInt32, write: Bool, cost: inout Double) -> (UInt32, PageSize) {
        let gpa = UInt64(gfn) << 12
        var s = PageSize.size1G.rawValue
        while n.hasNestedTLB && s >= 0 {
            let size = PageSize(rawValue: s).unsafelyUnwrapped
            s -= 1
            guard n.nestedTLB.holds(size) else { continue }
            let slot = n.nestedTLB.lookup(page: gpa >> size.shift, size: size, asid: 0)
            if slot >= 0 {
                let e = TLBEntry(rawValue: n.nestedTLB.payload(slot))
                if !write || (e.isWritable && e.isDirty) {
                    return (e.frame &+ UInt32(truncatingIfNeeded: (gpa & (size.bytes &- 1)) >> 12), size)
                }
            }
        }
        let hva = n.guestBase.rawValue &+ gpa
        for _ in 0..<4 {
            if let (entry, size) = hostWalk(n, hva, write: write, cost: &cost) {
                if n.hasNestedTLB { n.nestedTLB.insert(page: gpa >> size.shift, size: size, asid: 0, payload: entry.rawValue) }
                return (entry.frame &+ UInt32(truncatingIfNeeded: (gpa & (size.bytes &- 1)) >> 12), size)
            }
            n.hostFaults &+= 1
            let outcome = n.hostMM.handleFault(at: VirtualAddress(hva), access: write ? .write : .read)
            counters.faultCycles += machineDescription.timing.baseFaultCycles
            precondition(outcome == .handled, "host cannot back guest frame \(gfn): \(outcome)")
        }
        preconditionFailure("host fault at \(VirtualAddress(hva)) did not map it")
    }

    /// One host walk (the second dimension): entries read through the cache model, A/D bits set.
    private func hostWalk(_ n: NestedPaging, _ hva: UInt64, write: Bool, cost: inout Double) -> (TLBEntry, PageSize)? {
        var level = PageTableLevel.pgd
        var table = n.hostRoot
        if let known = n.hostPageWalkCache.deepest(hva, asid: 0) {
            counters.pageWalkCacheHits &+= 1
            level = known.level
            table = n.hostKernel.pageTable(frame: PFN(known.frame))
        }
        while true {
            let i = Int(truncatingIfNeeded: (hva >> level.shift) & 511)
            let before = counters.walkReferencesFromMemory
            cost += readEntry(at: (UInt64(table.pfn.rawValue) << 12) | (UInt64(i) << 3))
            n.hostReferences &+= 1
            n.hostReferencesFromMemory &+= counters.walkReferencesFromMemory &- before
            if level == .pte { n.hostLeafReferencesFromMemory &+= counters.walkReferencesFromMemory &- before }
            counters.walkReferences &+= 1
            let entry = table[i]
            guard entry.isPresent else { return nil }
            if level == .pte || entry.isHuge {
                if write && !entry.isWritable { return nil }
                let wanted = PageTableEntry.accessedBit | (write ? PageTableEntry.dirtyBit : 0)
                if entry.rawValue & wanted != wanted { table.setHardwareBits(i, wanted) }
                let size = PageSize(leafLevel: level)
                return (TLBEntry(frame: entry.pfn.rawValue, writable: entry.isWritable, dirty: write || entry.isDirty,
                                 executable: true, user: true), size)
            }
            n.hostPageWalkCache.fill(level, hva, asid: 0, frame: entry.pfn.rawValue)
            table = n.hostKernel.pageTable(at: entry)
            level = level.lower.unsafelyUnwrapped
        }
    }

    /// The two-dimensional walk: the guest's tables, each read at a host-physical address found by a
    /// host walk, then the data page's own host translation. Returns an entry whose frame is a host
    /// frame and whose size is the smaller of the guest and host page sizes.
    func walk2D(_ n: NestedPaging, _ v: UInt64, _ kind: MemoryAccess) -> WalkResult {
        counters.walks &+= 1
        var cost = walkStartCycles
        defer { counters.walkCycles += independentAccesses ? cost / mlp : cost; lastDataLine = .max }
        let guestKernel = kernel.unsafelyUnwrapped
        var level = PageTableLevel.pgd
        var table = root.unsafelyUnwrapped
        if let known = pageWalkCache.deepest(v, asid: asid) {
            counters.pageWalkCacheHits &+= 1
            level = known.level
            table = guestKernel.pageTable(frame: PFN(known.frame))
        }
        while true {
            let i = Int(truncatingIfNeeded: (v >> level.shift) & 511)
            let (hostTableFrame, _) = hostFrame(n, guestFrame: table.pfn.rawValue, write: false, cost: &cost)
            cost += readEntry(at: (UInt64(hostTableFrame) << 12) | (UInt64(i) << 3))
            counters.walkReferences &+= 1
            let entry = table[i]
            guard entry.isPresent else { return .notMapped }
            if level == .pte || entry.isHuge {
                switch kind {
                case .read: break
                case .write: guard entry.isWritable else { return .notMapped }
                case .execute: guard entry.isExecutable else { return .notMapped }
                }
                let wanted = PageTableEntry.accessedBit | (kind == .write ? PageTableEntry.dirtyBit : 0)
                if entry.rawValue & wanted != wanted { table.setHardwareBits(i, wanted) }
                let guestSize = PageSize(leafLevel: level)
                let guestFrame = entry.pfn.rawValue &+ UInt32(truncatingIfNeeded: (v & (guestSize.bytes &- 1)) >> 12)
                let (hostFrame, hostSize) = hostFrame(n, guestFrame: guestFrame, write: kind == .write, cost: &cost)
                let size = min(guestSize, hostSize)
                if hostSize < guestSize { n.splinteredFills &+= 1 }
                let first = hostFrame &- UInt32(truncatingIfNeeded: (v & (size.bytes &- 1)) >> 12)
                return .mapped(TLBEntry(frame: first, writable: entry.isWritable, dirty: kind == .write || entry.isDirty,
                                        executable: entry.isExecutable, user: entry.isUser), size)
            }
            if !entry.isAccessed { table.setHardwareBits(i, PageTableEntry.accessedBit) }
            pageWalkCache.fill(level, v, asid: asid, frame: entry.pfn.rawValue)
            table = guestKernel.pageTable(at: entry)
            level = level.lower.unsafelyUnwrapped
        }
    }
}

/// A virtual machine: a guest kernel whose physical memory is an anonymous region of a host process
/// (the VMM), and guest CPUs that walk both. The host region can use THP like any other memory, so
/// guest THP × host THP combinations can be compared.
///
/// Linux/KVM: a memslot backed by the VMM's anonymous memory; host changes reach the guest's cached
/// translations through an MMU notifier on the host mm (`GuestMemoryNotifier`).
public final class VirtualMachine: @unchecked Sendable {
    /// The guest side: guest kernel, guest CPUs (TLBs hold guest-virtual → host-physical).
    public let machine: Machine
    public var guest: Kernel { machine.kernel }
    public let hostMM: AddressSpace
    public let guestBase: VirtualAddress
    public let guestBytes: UInt64

    /// Maps `guest.memoryBytes` of anonymous memory in `hostMM`, 2 MiB-aligned, with `hostAdvice`
    /// (e.g. `.hugepage`) applied, and builds a guest kernel on it.
    public init(hostMM: AddressSpace, guest configuration: KernelConfiguration, description: MachineDescription,
                cpuCount: Int = 1, hostAdvice: Advice? = nil) throws(Errno) {
        let bytes = configuration.memoryBytes
        let align = PageGeometry.pmdSize
        let raw = try hostMM.mmap(length: bytes + align, protection: .readWrite, flags: .private)
        let base = raw.alignedUp(align)
        if base > raw { try hostMM.munmap(raw, length: base - raw) }
        let tail = (raw + bytes + align) - (base + bytes)
        if tail > 0 { try hostMM.munmap(base + bytes, length: tail) }
        if let hostAdvice { try hostMM.madvise(base, length: bytes, advice: hostAdvice) }
        self.hostMM = hostMM
        guestBase = base
        guestBytes = bytes
        machine = Machine(kernel: Kernel(configuration), description: description, cpuCount: cpuCount)
        for cpu in machine.cpus {
            cpu.nested = NestedPaging(hostMM: hostMM, guestBase: base, description: description)
        }
        hostMM.registerMMUNotifier(GuestMemoryNotifier(self))
    }

    /// Host frames of guest memory changed: drop nested translations and every guest translation
    /// built on them.
    func hostRangeChanged(start: VirtualAddress, end: VirtualAddress) {
        let lo = max(start, guestBase), hi = min(end, guestBase + guestBytes)
        guard lo < hi else { return }
        for cpu in machine.cpus {
            guard let n = cpu.nested else { continue }
            n.nestedTLB.invalidate(asid: 0, start: lo - guestBase, end: hi - guestBase)
            n.hostPageWalkCache.invalidate(asid: 0, start: lo.rawValue, end: hi.rawValue)
            for a in cpu.tlb.l1Data { a.invalidateEverything() }
            for a in cpu.tlb.l1Instruction { a.invalidateEverything() }
            for a in cpu.tlb.l2 { a.invalidateEverything() }
            cpu.dropFilter()
        }
    }
}

/// The VM's secondary MMU on the host mm: host changes to guest memory drop the nested translations
/// and the guest translations built on them before the change (Linux/KVM:
/// `kvm_mmu_notifier_invalidate_range_start()` → `kvm_flush_remote_tlbs()`).
final class GuestMemoryNotifier: MMUNotifier, @unchecked Sendable {
    weak var vm: VirtualMachine?
    init(_ vm: VirtualMachine) { self.vm = vm }
    func invalidateRangeStart(_ mm: AddressSpace, _ start: VirtualAddress, _ end: VirtualAddress) {
        vm?.hostRangeChanged(start: start, end: end)
    }
    func invalidateRangeEnd(_ mm: AddressSpace, _ start: VirtualAddress, _ end: VirtualAddress) {}
    func release(_ mm: AddressSpace) {
        vm?.hostRangeChanged(start: VirtualAddress(0), end: VirtualAddress(PageGeometry.userAddressLimit))
    }
}
