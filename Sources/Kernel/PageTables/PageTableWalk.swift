import Synchronization
import VMCore

/// How a walk of one address ended: the x86 MMU's three answers (Intel SDM vol. 3A, 4.7).
public enum PageWalkResult: Sendable, Hashable {
    /// A present leaf that permits the access: the entry and its level (`.pte`, or `.pmd` for 2 MiB).
    case mapped(PageTableEntry, PageTableLevel)
    /// No present entry on the way: #PF with the error code's P bit clear.
    case notPresent
    /// A present leaf that forbids the access: #PF with the P bit set (a protection fault).
    case protection

    /// The P bit of the fault this walk raises (meaningless for `.mapped`).
    @inlinable public var faultWasPresent: Bool { self == .protection }
}

/// What watches a page-table walk and decides where it starts and how it reaches each next table.
/// The walker (`PageTableWalk.walk`) owns the rules every walk shares — one entry per level, the
/// present bit, the leaf's permission check, the accessed/dirty bits set with an atomic OR — and the
/// observer adds what differs: the software MMU only follows entries; a CPU charges each reference to
/// its cache model and keeps paging-structure caches; a guest CPU under nested paging translates each
/// guest table through a host walk first.
///
/// Observers are generic parameters, so each walk is specialized for its observer (no existential).
/// The walker is `public`, not `package`: Swift 6.3 neither inlines nor specializes an `@inlinable`
/// `package` function in another module (a walk through the Machine ran unspecialized, 55 % slower).
public protocol PageWalkObserver {
    /// The table and level the walk of `va` starts at: the root, or a lower table a paging-structure
    /// cache remembers.
    mutating func start(_ va: UInt64, root: PageTable) -> (table: PageTable, level: PageTableLevel)
    /// The walk is about to read entry `index` of `table`, a table at `level`: one memory reference.
    mutating func willRead(_ table: PageTable, _ index: Int, level: PageTableLevel)
    /// The walk of `va` goes down through the upper-level `entry` of a table at `level`: the table
    /// it points at.
    mutating func descend(_ va: UInt64, from level: PageTableLevel, through entry: PageTableEntry) -> PageTable
    /// `descend(_:from:through:)` knowing where `entry` lives: entry `index` of `table` (a CPU's
    /// walker reaches the next table through the store's hint beside it, `Kernel.pageTable(below:in:at:)`).
    mutating func descend(_ va: UInt64, from level: PageTableLevel, through entry: PageTableEntry,
                          in table: PageTable, at index: Int) -> PageTable
}

extension PageWalkObserver {
    @inlinable @inline(__always)
    public mutating func descend(_ va: UInt64, from level: PageTableLevel, through entry: PageTableEntry,
                                 in table: PageTable, at index: Int) -> PageTable {
        descend(va, from: level, through: entry)
    }
}

/// The one page-table walker: the x86-64 four-level walk of a user access, read locklessly as the MMU
/// reads it (Intel SDM vol. 3A, 4.4–4.8; AMD APM vol. 2, 5.3; Linux's software view is
/// `follow_page_mask()`, its reader of the A/D bits `ptep_test_and_clear_young()`).
///
/// ```
///  observer.start ─► table, level ─► willRead ─► entry ─┬─ not present ─────────────► .notPresent
///                          ▲                            ├─ leaf (PTE, huge PMD): permission?
///                          │                            │     no ──────────────────► .protection
///                          │                            │     yes: set A (and D on a write) ► .mapped
///                          └──── observer.descend ◄─────┴─ upper entry: set A
/// ```
/// The caller provides the lockless-walk window when it needs one (`Kernel.locklessWalk`): the
/// software MMU and gup-fast do; the Machine's CPUs, driven one at a time, do not.
public enum PageTableWalk {
    /// Walks `root`'s tables for `va` and an access of `kind`, as `observer` sees it.
    @inlinable @inline(__always)
    public static func walk<Observer: PageWalkObserver>(
        _ va: UInt64, _ kind: MemoryAccess, root: PageTable, _ observer: inout Observer
    ) -> PageWalkResult {
        var (table, level) = observer.start(va, root: root)
        while true {
            let i = Int(truncatingIfNeeded: (va &>> level.shift) & 511)
            observer.willRead(table, i, level: level)
            let entry = table[i]
            guard entry.isPresent else { return .notPresent }
            if level == .pte || entry.isHuge {
                switch kind {
                case .read: break
                case .write: guard entry.isWritable else { return .protection }
                case .execute: guard entry.isExecutable else { return .protection }
                }
                let wanted = PageTableEntry.accessedBit | (kind == .write ? PageTableEntry.dirtyBit : 0)
                if entry.rawValue & wanted != wanted { table.setHardwareBits(i, wanted) }
                return .mapped(entry, level)
            }
            if !entry.isAccessed { table.setHardwareBits(i, PageTableEntry.accessedBit) }
            table = observer.descend(va, from: level, through: entry, in: table, at: i)
            level = level.lower.unsafelyUnwrapped
        }
    }

    /// Handled faults one access may take before the model calls it a bug. Another CPU may undo a
    /// fault before the retry (unmap it again, split it), so retries are unbounded in principle.
    @inlinable public static var retryLimit: Int { 1_000_000 }

    /// The one retry rule of an access: walk; on a fault raise it (with the walk's P bit) into the
    /// kernel; retry while the kernel reports it handled (Linux: the MMU re-executes the faulting
    /// instruction after `exc_page_fault()` returns). Returns what `walk` found, or the fault the
    /// kernel could not resolve.
    @inlinable @inline(__always)
    public static func resolve<T>(
        _ va: VirtualAddress, walk: () -> (T?, present: Bool), fault: (_ present: Bool) -> FaultOutcome
    ) -> Result<T, AccessFault> {
        for _ in 0..<retryLimit {
            let (found, present) = walk()
            if let found { return .success(found) }
            let outcome = fault(present)
            if outcome != .handled { return .failure(AccessFault(at: va, outcome: outcome)) }
        }
        preconditionFailure("fault at \(va) was handled \(retryLimit) times without becoming accessible")
    }
}

/// The software MMU's observer: starts at the root, reads entries without a cost, reaches each next
/// table through the kernel's table store (the kernel model's `AddressSpace.access(_:_:)`).
struct SoftwareWalk: PageWalkObserver {
    unowned(unsafe) let kernel: Kernel

    init(_ kernel: Kernel) { self.kernel = kernel }

    @inline(__always)
    func start(_ va: UInt64, root: PageTable) -> (table: PageTable, level: PageTableLevel) { (root, .pgd) }

    @inline(__always)
    func willRead(_ table: PageTable, _ index: Int, level: PageTableLevel) {}

    @inline(__always)
    func descend(_ va: UInt64, from level: PageTableLevel, through entry: PageTableEntry) -> PageTable {
        kernel.table(at: entry)
    }
}
