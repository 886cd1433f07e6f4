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
        let access: MemoryAccess = write ? .write : .read
        let walked = PageTableWalk.resolve(VirtualAddress(hva), walk: { () -> ((TLBEntry, PageSize)?, present: Bool) in
            var observer = HostWalk(cpu: self, nested: n, cost: cost)
            let result = PageTableWalk.walk(hva, access, root: n.hostRoot, &observer)
            cost = observer.cost
            switch result {
            case .mapped(let entry, let level):
                return ((TLBEntry(frame: entry.pfn.rawValue, writable: entry.isWritable, dirty: write || entry.isDirty,
                                  executable: true, user: true), PageSize(leafLevel: level)), false)
            case .notPresent: return (nil, false)
            case .protection: return (nil, true)
            }
        }, fault: { present in
            n.hostFaults &+= 1
            var fault = FaultContext(cpu: id, address: VirtualAddress(hva), access: access, present: present)
            let outcome = n.hostMM.handleFault(&fault)
            tally.faultCycles += machineDescription.timing.baseFaultCycles
            precondition(outcome == .handled, "host cannot back guest frame \(gfn): \(outcome)")
            return outcome
        })
        guard case .success(let (entry, size)) = walked else { preconditionFailure("host fault at \(VirtualAddress(hva)) did not map it") }
        if n.hasNestedTLB { n.nestedTLB.insert(page: gpa >> size.shift, size: size, asid: 0, payload: entry.rawValue) }
        return (entry.frame &+ UInt32(truncatingIfNeeded: (gpa & (size.bytes &- 1)) >> 12), size)
    }

    /// The two-dimensional walk: the guest's tables (`PageTableWalk` observed by `GuestWalk`), each
    /// read at a host-physical address found by a host walk, then the data page's own host translation.
    /// Returns an entry whose frame is a host frame and whose size is the smaller of the guest and
    /// host page sizes.
    func walk2D(_ n: NestedPaging, _ v: UInt64, _ kind: MemoryAccess) -> WalkResult {
        tally.walks &+= 1
        var observer = GuestWalk(cpu: self, nested: n, kernel: kernel.unsafelyUnwrapped, asid: asid, cost: walkStartCycles)
        defer { tally.walkCycles += independentAccesses ? observer.cost / mlp : observer.cost; lastDataLine = .max }
        switch PageTableWalk.walk(v, kind, root: root.unsafelyUnwrapped, &observer) {
        case .notPresent: return .notPresent
        case .protection: return .protection
        case .mapped(let entry, let level):
            let guestSize = PageSize(leafLevel: level)
            let guestFrame = entry.pfn.rawValue &+ UInt32(truncatingIfNeeded: (v & (guestSize.bytes &- 1)) >> 12)
            let (hostFrame, hostSize) = hostFrame(n, guestFrame: guestFrame, write: kind == .write, cost: &observer.cost)
            let size = min(guestSize, hostSize)
            if hostSize < guestSize { n.splinteredFills &+= 1 }
            let first = hostFrame &- UInt32(truncatingIfNeeded: (v & (size.bytes &- 1)) >> 12)
            return .mapped(TLBEntry(frame: first, writable: entry.isWritable, dirty: kind == .write || entry.isDirty,
                                    executable: entry.isExecutable, user: entry.isUser), size)
        }
    }
}

/// The host dimension's observer: the host's paging-structure caches, each reference through the
/// guest CPU's cache model and counted as a host reference (by level, from memory or not).
struct HostWalk: PageWalkObserver {
    unowned(unsafe) let cpu: CPU
    unowned(unsafe) let nested: NestedPaging
    var cost: Double

    @inline(__always)
    mutating func start(_ va: UInt64, root: PageTable) -> (table: PageTable, level: PageTableLevel) {
        guard let known = nested.hostPageWalkCache.deepest(va, asid: 0) else { return (root, .pgd) }
        cpu.tally.pageWalkCacheHits &+= 1
        return (nested.hostKernel.pageTable(frame: PFN(known.frame)), known.level)
    }

    @inline(__always)
    mutating func willRead(_ table: PageTable, _ index: Int, level: PageTableLevel) {
        let before = cpu.tally.walkReferencesFromMemory
        cost += cpu.readEntry(at: (UInt64(table.pfn.rawValue) << 12) | (UInt64(index) << 3), level: level)
        let fromMemory = cpu.tally.walkReferencesFromMemory &- before
        nested.hostReferences &+= 1
        nested.hostReferencesFromMemory &+= fromMemory
        if level == .pte { nested.hostLeafReferencesFromMemory &+= fromMemory }
        cpu.tally.walkReferences &+= 1
    }

    @inline(__always)
    mutating func descend(_ va: UInt64, from level: PageTableLevel, through entry: PageTableEntry) -> PageTable {
        nested.hostPageWalkCache.fill(level, va, asid: 0, frame: entry.pfn.rawValue)
        return nested.hostKernel.pageTable(at: entry)
    }
}

/// The guest dimension's observer: the guest CPU's paging-structure caches, and before each guest
/// entry is read, a host walk (composed: `CPU.hostFrame`, itself `PageTableWalk` observed by
/// `HostWalk`) that finds the host frame holding the guest table.
struct GuestWalk: PageWalkObserver {
    unowned(unsafe) let cpu: CPU
    unowned(unsafe) let nested: NestedPaging
    unowned(unsafe) let kernel: Kernel
    let asid: UInt16
    var cost: Double

    @inline(__always)
    mutating func start(_ va: UInt64, root: PageTable) -> (table: PageTable, level: PageTableLevel) {
        cpu.walkStart(va, root: root, asid: asid, kernel: kernel)
    }

    @inline(__always)
    mutating func willRead(_ table: PageTable, _ index: Int, level: PageTableLevel) {
        let (hostTableFrame, _) = cpu.hostFrame(nested, guestFrame: table.pfn.rawValue, write: false, cost: &cost)
        cost += cpu.readEntry(at: (UInt64(hostTableFrame) << 12) | (UInt64(index) << 3), level: level)
        cpu.tally.walkReferences &+= 1
    }

    @inline(__always)
    mutating func descend(_ va: UInt64, from level: PageTableLevel, through entry: PageTableEntry) -> PageTable {
        cpu.walkDescend(va, from: level, through: entry, asid: asid, kernel: kernel)
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
