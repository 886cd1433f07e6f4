import Synchronization
import VMCore
import PhysicalMemory

/// A KVM-like secondary MMU: it maps guest pages to the frames behind an mm's addresses by following
/// the primary page tables — taking **no page references** — and keeps itself coherent only through
/// MMU notifiers (Linux: KVM's `kvm_mmu_notifier_invalidate_range_start()`/`_end()`,
/// `mmu_invalidate_seq`, and `hva_to_pfn()` with a reference dropped at once, the "gup without
/// FOLL_GET" of the 2010 thread). Where the primary maps a huge PMD, it maps 2 MiB too.
public final class SecondaryMMU: MMUNotifier, @unchecked Sendable {
    /// One secondary mapping: 4 KiB or 2 MiB of the primary's address space.
    public struct Mapping: Sendable, Hashable {
        public var address: VirtualAddress
        public var frame: PFN
        public var huge: Bool
    }

    private struct State {
        var mappings: [UInt64: Mapping] = [:]   // by address >> 12 (huge ones by their aligned start)
        var invalidationsInProgress = 0
        var sequence: UInt64 = 0
    }
    private let state = SpinLocked(State())
    public let mm: AddressSpace

    /// Creates the secondary MMU and registers it on `mm`.
    public init(mirroring mm: AddressSpace) {
        self.mm = mm
        mm.registerMMUNotifier(self)
    }

    /// The secondary's page fault at `va`: fault the primary in if needed, read its translation, and
    /// install it unless an invalidation ran meanwhile (then retry). Nil when the primary cannot map it.
    @discardableResult
    public func fault(at va: VirtualAddress, write: Bool) -> Mapping? {
        for _ in 0..<64 {
            let sequence = state.withLock { $0.sequence }
            if case .failure = mm.access(va, write ? .write : .read) { return nil }
            // Read the primary under the mmap lock, so its tables cannot be freed meanwhile.
            guard let t = mm.mmapLock.withReadLock({ mm.translate(va) }), !write || t.entry.isWritable else { continue }
            let huge = t.level == .pmd
            let base = huge ? va.alignedDown(PageGeometry.pmdSize) : va.alignedDown(PageGeometry.pageSize)
            let mapping = Mapping(address: base, frame: huge ? t.entry.pfn : t.frame, huge: huge)
            Scheduling.point()
            let installed = state.withLock { s -> Bool in
                // Linux: `mmu_invalidate_retry()`: an invalidation started or ran since we looked.
                guard s.invalidationsInProgress == 0, s.sequence == sequence else { return false }
                s.mappings[base.pageNumber] = mapping
                return true
            }
            if installed { return mapping }
            Scheduling.pause()
        }
        return nil
    }

    /// What the secondary maps now.
    public var mappings: [Mapping] { state.withLock { Array($0.mappings.values) } }

    public func invalidateRangeStart(_ mm: AddressSpace, _ start: VirtualAddress, _ end: VirtualAddress) {
        state.withLock { s in
            s.invalidationsInProgress += 1
            s.sequence &+= 1
            s.mappings = s.mappings.filter { _, m in
                let mEnd = m.address + (m.huge ? PageGeometry.pmdSize : PageGeometry.pageSize)
                return mEnd <= start || m.address >= end
            }
        }
    }

    public func invalidateRangeEnd(_ mm: AddressSpace, _ start: VirtualAddress, _ end: VirtualAddress) {
        state.withLock { s in
            s.invalidationsInProgress -= 1
            s.sequence &+= 1
        }
    }

    public func release(_ mm: AddressSpace) {
        state.withLock { $0.mappings = [:] }
    }
}
