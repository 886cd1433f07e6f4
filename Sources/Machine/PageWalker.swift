import VMCore
import PhysicalMemory
import Kernel

/// How a CPU's walk ended.
public enum WalkResult: Sendable, Hashable {
    /// A leaf entry maps the address and permits the access: what the TLB caches.
    case mapped(TLBEntry, PageSize)
    /// No present entry: the MMU raises #PF with the P bit clear.
    case notPresent
    /// A present leaf that forbids the access: #PF with the P bit set (a protection fault).
    case protection

    /// The TLB entry a kernel walk's leaf becomes for an access of `kind`.
    @inline(__always)
    init(_ result: PageWalkResult, _ kind: MemoryAccess) {
        switch result {
        case .mapped(let entry, let level):
            self = .mapped(TLBEntry(leaf: entry, write: kind == .write), PageSize(leafLevel: level))
        case .notPresent: self = .notPresent
        case .protection: self = .protection
        }
    }
}

/// The CPU's observer of a walk (`PageTableWalk`): starts below the root when a paging-structure cache
/// knows a lower table, reads each entry through the cache model (one memory reference, its latency
/// added to `cost`), and fills the paging-structure caches on the way down.
/// Hardware: Intel SDM vol. 3A, 4.10.3; AMD's page walk cache.
struct CPUWalk: PageWalkObserver {
    /// Unretained: the walk runs inside a call on `cpu`, whose loaded `mm` keeps `kernel` alive, so
    /// the observer's methods (called once or more per level) retain and release neither.
    let cpu: Unmanaged<CPU>
    let kernel: Unmanaged<Kernel>
    let asid: UInt16
    var cost: Double

    @inline(__always)
    init(cpu: CPU, kernel: Kernel, asid: UInt16, cost: Double) {
        self.cpu = .passUnretained(cpu)
        self.kernel = .passUnretained(kernel)
        self.asid = asid
        self.cost = cost
    }

    @inline(__always)
    mutating func start(_ va: UInt64, root: PageTable) -> (table: PageTable, level: PageTableLevel) {
        let asid = asid
        return kernel._withUnsafeGuaranteedRef { k in
            cpu._withUnsafeGuaranteedRef { $0.walkStart(va, root: root, asid: asid, kernel: k) }
        }
    }

    @inline(__always)
    mutating func willRead(_ table: PageTable, _ index: Int, level: PageTableLevel) {
        let address = (UInt64(table.pfn.rawValue) << 12) | (UInt64(index) << 3)
        cost += cpu._withUnsafeGuaranteedRef { cpu in
            cpu.tally.walkReferences &+= 1
            return cpu.readEntry(at: address, level: level)
        }
    }

    @inline(__always)
    mutating func descend(_ va: UInt64, from level: PageTableLevel, through entry: PageTableEntry) -> PageTable {
        let asid = asid
        return kernel._withUnsafeGuaranteedRef { k in
            // The walk started above `level`, so this walk's `deepest` missed in its cache.
            cpu._withUnsafeGuaranteedRef { $0.walkDescend(va, from: level, through: entry, asid: asid, kernel: k, absent: true) }
        }
    }

    /// The next table through the store's hint beside `entry` (`Kernel.pageTable(below:in:at:)`):
    /// the same table, without a host miss on its frame record.
    @inline(__always)
    mutating func descend(_ va: UInt64, from level: PageTableLevel, through entry: PageTableEntry,
                          in table: PageTable, at index: Int) -> PageTable {
        let asid = asid
        return kernel._withUnsafeGuaranteedRef { k in
            cpu._withUnsafeGuaranteedRef { cpu in
                // The walk started above `level`, so this walk's `deepest` missed in its cache.
                cpu.pageWalkCache.fill(level, va, asid: asid, frame: entry.pfn.rawValue, absent: true)
                return k.pageTable(below: entry, in: table, at: index)
            }
        }
    }
}

extension CPU {
    /// Where a walk of `va` starts: below the root when a paging-structure cache knows a lower table
    /// (shared by the CPU's observer and a guest CPU's, `GuestWalk`).
    @inline(__always)
    func walkStart(_ va: UInt64, root: PageTable, asid: UInt16, kernel: Kernel) -> (table: PageTable, level: PageTableLevel) {
        guard let known = pageWalkCache.deepest(va, asid: asid) else { return (root, .pgd) }
        tally.pageWalkCacheHits &+= 1
        return (kernel.pageTable(frame: PFN(known.frame)), known.level)
    }

    /// The next table of a walk, filling the paging-structure cache of `level` on the way down
    /// (`absent`: as `PageWalkCache.fill`).
    @inline(__always)
    func walkDescend(_ va: UInt64, from level: PageTableLevel, through entry: PageTableEntry, asid: UInt16,
                     kernel: Kernel, absent: Bool = false) -> PageTable {
        pageWalkCache.fill(level, va, asid: asid, frame: entry.pfn.rawValue, absent: absent)
        return kernel.pageTable(at: entry)
    }
}

extension CPU {
    /// Walks the loaded address space's page tables for `v`, as the hardware page-miss handler does:
    /// the kernel's one walker (`PageTableWalk`: a present bit per level, the leaf's permissions,
    /// accessed and dirty bits set with an atomic OR) observed by this CPU (`CPUWalk`: paging-structure
    /// caches, one reference per entry through the cache model), and the walk's cycles charged.
    ///
    /// Hardware: Intel SDM vol. 3A, 4.4-4.8 and 4.10.3; AMD APM vol. 2, 5.3. Linux's software view of
    /// the same walk is `follow_page_mask()`, and its reader of the bits `ptep_test_and_clear_young()`.
    @inline(__always)
    func walk(_ v: UInt64, _ kind: MemoryAccess) -> WalkResult {
        tally.walks &+= 1
        var observer = CPUWalk(cpu: self, kernel: kernel.unsafelyUnwrapped, asid: asid, cost: walkStartCycles)
        let result = PageTableWalk.walk(v, kind, root: root.unsafelyUnwrapped, &observer)
        // Pipelined, the cache thread has the cost (`CachePipeline.Kind.walkEnd`).
        if pipelined { emit(CachePipeline.walkEnd) } else {
            tally.walkCycles += independentAccesses ? observer.cost / mlp : observer.cost
        }
        lastDataLine = .max
        return WalkResult(result, kind)
    }
}
