import Synchronization
import VMCore
import PhysicalMemory

/// Where each PMD-mapped huge page is mapped: (address space, address) per huge PMD, kept by the
/// paths that install, copy, move and clear huge PMDs, and read by `split_huge_page()` to find every
/// PMD it must split.
///
/// Linux finds them through the page's `anon_vma` (Linux 2.6.38: `__split_huge_page()` walks
/// `anon_vma->head` under `page_lock_anon_vma()`, computing each VMA's address from `page->index`).
/// The model keeps the mappers per huge page instead: exact, independent of how VMAs split and merge,
/// and cheap because huge pages are few. Its lock is a leaf: nothing else is taken while it is held.
/// Against concurrent fork and mremap, the split marks every PMD it knows as splitting and reads the
/// list again until no unmarked mapper remains (a new mapper can only come from copying or moving
/// an unmarked PMD, under that PMD's lock).
final class HugeMappings: @unchecked Sendable {   // shardRefs: fixed after init, read only
    struct Mapping: @unchecked Sendable {
        /// Weak: an address space removes its mappings (under its own locks) as it exits, which may be
        /// from its `deinit`; a reader that finds it gone waits for that removal.
        weak var mm: AddressSpace?
        let address: VirtualAddress
        /// Identifies the mm even once it is gone.
        let mmID: ObjectIdentifier
        init(mm: AddressSpace, address: VirtualAddress) {
            self.mm = mm
            self.address = address
            mmID = ObjectIdentifier(mm)
        }
        func isSame(as other: Mapping) -> Bool { mmID == other.mmID && address == other.address }
    }

    /// Sharded by head so that CPUs faulting different huge pages rarely share a lock.
    private static let shardCount = 16
    private final class Shard: Sendable {
        let table = SpinLocked<[UInt32: [Mapping]]>([:])
        func withLock<R>(_ body: (inout [UInt32: [Mapping]]) -> R) -> R { table.withLock { body(&$0) } }
    }
    private let shards = (0..<HugeMappings.shardCount).map { _ in Shard() }
    /// The same shards, unretained, so that the fault path does no reference counting for them.
    private let shardRefs: UnsafeMutablePointer<Unmanaged<Shard>>

    init() {
        shardRefs = .allocate(capacity: Self.shardCount)
        for (i, shard) in shards.enumerated() { (shardRefs + i).initialize(to: .passUnretained(shard)) }
    }

    deinit { shardRefs.deallocate() }

    /// Calls `body` with the table of `head`'s shard locked.
    @inline(__always) private func withShard<R>(_ head: PFN, _ body: (inout [UInt32: [Mapping]]) -> R) -> R {
        shardRefs[Int(head.rawValue >> 9) & (Self.shardCount - 1)]._withUnsafeGuaranteedRef { $0.withLock(body) }
    }

    /// Records that `mm` maps the huge page `head` with the PMD at `address`.
    func add(_ head: PFN, _ mm: AddressSpace, _ address: VirtualAddress) {
        withShard(head) { $0[head.rawValue, default: []].append(Mapping(mm: mm, address: address)) }
    }

    /// Forgets one mapping.
    func remove(_ head: PFN, _ mm: AddressSpace, _ address: VirtualAddress) {
        withShard(head) { table in
            guard let i = table[head.rawValue]?.firstIndex(where: { $0.mmID == ObjectIdentifier(mm) && $0.address == address }) else {
                preconditionFailure("\(head) has no huge mapping at \(address) in mm \(mm.pid)")
            }
            // In place: a copy of the list would be a host allocation per unmap.
            if table[head.rawValue]!.count == 1 {
                table[head.rawValue] = nil
            } else {
                table[head.rawValue]!.remove(at: i)
            }
        }
    }

    /// The mappings of `head` now.
    func mappings(of head: PFN) -> [Mapping] {
        withShard(head) { $0[head.rawValue] ?? [] }
    }

    /// Every recorded mapping, for the invariant checker.
    func all() -> [UInt32: [Mapping]] {
        var out: [UInt32: [Mapping]] = [:]
        for shard in shards { shard.withLock { out.merge($0) { a, _ in a } } }
        return out
    }
}
