import VMCore
import PhysicalMemory
import Kernel

/// How a walk ended.
public enum WalkResult: Sendable, Hashable {
    /// A leaf entry maps the address and permits the access: what the TLB caches.
    case mapped(TLBEntry, PageSize)
    /// No present entry, or one that forbids the access: the MMU raises #PF.
    case notMapped
}

extension CPU {
    /// Walks the loaded address space's page tables for `v`, as the hardware page-miss handler does:
    /// starts below the root when a paging-structure cache knows a lower table, reads one entry per
    /// level through the cache model (one memory reference each), checks the leaf's permissions and
    /// sets its accessed bit (and dirty bit for a write) with an atomic OR, and fills the
    /// paging-structure caches on the way down.
    ///
    /// Hardware: Intel SDM vol. 3A, 4.4-4.8 and 4.10.3; AMD APM vol. 2, 5.3. Linux's software view of
    /// the same walk is `follow_page_mask()`, and its reader of the bits `ptep_test_and_clear_young()`.
    @inline(__always)
    func walk(_ v: UInt64, _ kind: MemoryAccess) -> WalkResult {
        counters.walks &+= 1
        var cost = walkStartCycles
        defer { counters.walkCycles += independentAccesses ? cost / mlp : cost; lastDataLine = .max }
        let kernel = kernel.unsafelyUnwrapped
        var level = PageTableLevel.pgd
        var table = root.unsafelyUnwrapped
        if let known = pageWalkCache.deepest(v, asid: asid) {
            counters.pageWalkCacheHits &+= 1
            level = known.level
            table = kernel.pageTable(frame: PFN(known.frame))
        }
        while true {
            let i = Int(truncatingIfNeeded: (v >> level.shift) & 511)
            cost += readEntry(at: (UInt64(table.pfn.rawValue) << 12) | (UInt64(i) << 3))
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
                return .mapped(TLBEntry(frame: entry.pfn.rawValue, writable: entry.isWritable,
                                        dirty: kind == .write || entry.isDirty, executable: entry.isExecutable,
                                        user: entry.isUser),
                               PageSize(leafLevel: level))
            }
            if !entry.isAccessed { table.setHardwareBits(i, PageTableEntry.accessedBit) }
            pageWalkCache.fill(level, v, asid: asid, frame: entry.pfn.rawValue)
            table = kernel.pageTable(at: entry)
            level = level.lower.unsafelyUnwrapped
        }
    }
}
