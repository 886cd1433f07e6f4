import Synchronization
import VMCore
import PhysicalMemory

/// Where each PMD-mapped huge page is mapped: (address space, address) per huge PMD, kept by the
/// paths that install, copy, move and clear huge PMDs, and read by `split_huge_page()` to find every
/// PMD it must split.
///
/// Linux finds them through the page's `anon_vma` (Linux 2.6.38: `__split_huge_page()` walks
/// `anon_vma->head` under `page_lock_anon_vma()`, computing each VMA's address from `page->index`).
/// The model keeps the mappers per huge page instead: exact, independent of how VMAs split and merge.
/// Against concurrent fork and mremap, the split marks every PMD it knows as splitting and reads the
/// list again until no unmarked mapper remains (a new mapper can only come from copying or moving
/// an unmarked PMD, under that PMD's lock).
///
/// Almost every huge page has one mapper, so each 2 MiB block of memory has a slot of its own, one
/// cache line holding its lock and its first mapper; only a page that fork shares has more, kept in
/// a table beside (`extra`). A fault adds its mapping without allocating, and CPUs faulting different
/// huge pages write different lines (docs/performance.md, concurrent huge faults). Mappers are named
/// by pid, not by reference, so that recording one touches nothing the address space's other CPUs
/// write; readers find the address space through the kernel's process list (`Kernel.hugeMappers(of:)`).
///
/// ```
///  slot of block b (64 B):  | lock | pid of the first mapper + 1 (0: none) | its address | pad |
///  extra:  [head PFN: [(pid, address)]]   the second and later mappers, under the slot's lock
/// ```
/// The slot locks are leaves: nothing else is taken while one is held, but `extra`'s lock.
final class HugeMappings: @unchecked Sendable {
    /// A mapping as `Kernel.hugeMappers(of:)` reads it.
    struct Mapping: @unchecked Sendable {
        /// The address space, looked up when the list was read; nil when it is being destroyed (it
        /// removes its mappings under its own locks as it exits, which may be from its `deinit`, so a
        /// reader that finds it gone waits for that removal).
        weak var mm: AddressSpace?
        let pid: Int
        let address: VirtualAddress
        func isSame(as other: Mapping) -> Bool { pid == other.pid && address == other.address }
    }

    /// A mapping as recorded: the mapper's pid and the PMD's address.
    struct Entry: Equatable {
        let pid: Int
        let address: VirtualAddress
    }

    private static let slotBytes = 64
    private let slots: UnsafeMutableRawPointer
    private let slotCount: Int
    private let extra = SpinLocked<[UInt32: [Entry]]>([:])

    /// Slots for huge pages anywhere in `totalPages` frames.
    init(totalPages: Int) {
        slotCount = totalPages / PageGeometry.pmdOrder.pages + 1
        // Zeroed, and backed by the host only where huge pages have been.
        slots = HostMemory.allocate(bytes: slotCount * Self.slotBytes)
    }

    deinit { HostMemory.release(slots, bytes: slotCount * Self.slotBytes) }

    @inline(__always) private func slot(_ head: PFN) -> UnsafeMutableRawPointer {
        let index = Int(head.rawValue >> PageGeometry.pmdOrder.rawValue)
        precondition(head.isAligned(order: PageGeometry.pmdOrder) && index < slotCount, "\(head) cannot head a PMD-mapped page")
        return slots + index &* Self.slotBytes
    }

    /// Calls `body` with the first-mapper words of `head`'s slot, its lock held.
    @inline(__always) private func withSlot<R>(_ head: PFN, _ body: (_ pid: UnsafeMutablePointer<UInt64>,
                                                                      _ address: UnsafeMutablePointer<UInt64>) -> R) -> R {
        let s = slot(head)
        let lock = s.assumingMemoryBound(to: Atomic<UInt32>.self)
        lock.acquireLeafLock()
        defer { lock.releaseLeafLock() }
        return body((s + 8).assumingMemoryBound(to: UInt64.self), (s + 16).assumingMemoryBound(to: UInt64.self))
    }

    /// Records that `mm` maps the huge page `head` with the PMD at `address`.
    func add(_ head: PFN, _ mm: AddressSpace, _ address: VirtualAddress) {
        let pid = mm.pid
        withSlot(head) { first, firstAddress in
            if first.pointee == 0 {
                first.pointee = UInt64(pid + 1)
                firstAddress.pointee = address.rawValue
            } else {
                extra.withLock { $0[head.rawValue, default: []].append(Entry(pid: pid, address: address)) }
            }
        }
    }

    /// Forgets one mapping.
    func remove(_ head: PFN, _ mm: AddressSpace, _ address: VirtualAddress) {
        let entry = Entry(pid: mm.pid, address: address)
        withSlot(head) { first, firstAddress in
            if first.pointee == UInt64(entry.pid + 1) && firstAddress.pointee == address.rawValue {
                // The first goes: a later mapper, if any, takes its place.
                if let next = extra.withLock({ table -> Entry? in
                    guard var list = table[head.rawValue] else { return nil }
                    let next = list.removeFirst()
                    table[head.rawValue] = list.isEmpty ? nil : list
                    return next
                }) {
                    first.pointee = UInt64(next.pid + 1)
                    firstAddress.pointee = next.address.rawValue
                } else {
                    first.pointee = 0
                    firstAddress.pointee = 0
                }
                return
            }
            extra.withLock { table in
                guard let i = table[head.rawValue]?.firstIndex(of: entry) else {
                    preconditionFailure("\(head) has no huge mapping at \(address) in mm \(mm.pid)")
                }
                if table[head.rawValue]!.count == 1 { table[head.rawValue] = nil } else { table[head.rawValue]!.remove(at: i) }
            }
        }
    }

    /// The mappings of `head` now, first mapper first (none for a folio no PMD can map).
    func entries(of head: PFN) -> [Entry] {
        guard head.isAligned(order: PageGeometry.pmdOrder) else { return [] }
        return withSlot(head) { first, firstAddress in
            guard first.pointee != 0 else { return [] }
            let firstEntry = Entry(pid: Int(first.pointee) - 1, address: VirtualAddress(firstAddress.pointee))
            return [firstEntry] + extra.withLock { $0[head.rawValue] ?? [] }
        }
    }

    /// Every recorded mapping, for the invariant checker.
    func all() -> [UInt32: [Entry]] {
        var out: [UInt32: [Entry]] = [:]
        for index in 0..<slotCount {
            let head = PFN(UInt32(index) << UInt32(PageGeometry.pmdOrder.rawValue))
            let list = entries(of: head)
            if !list.isEmpty { out[head.rawValue] = list }
        }
        return out
    }
}

extension Kernel {
    /// Records that `mm` maps the huge page `head` with the PMD at `address`.
    ///
    /// The paths that change huge PMDs run in address-space methods; they call this kernel method
    /// rather than `kernel.hugeMappings.add`, because Swift retains an object two references away
    /// from `self` around such a call, and every CPU retaining the same object writes the same line
    /// (docs/performance.md, concurrent huge faults).
    func addHugeMapping(_ head: PFN, _ mm: AddressSpace, _ address: VirtualAddress) {
        hugeMappings.add(head, mm, address)
    }

    /// Forgets one mapping of `head` (see `addHugeMapping`).
    func removeHugeMapping(_ head: PFN, _ mm: AddressSpace, _ address: VirtualAddress) {
        hugeMappings.remove(head, mm, address)
    }

    /// The PMD mappings of the huge page `head` now, each with its address space looked up (nil for
    /// one being destroyed).
    func hugeMappers(of head: PFN) -> [HugeMappings.Mapping] {
        let entries = hugeMappings.entries(of: head)
        guard !entries.isEmpty else { return [] }
        return liveSpaces.withLock { spaces in
            entries.map { HugeMappings.Mapping(mm: spaces[$0.pid]?.space, pid: $0.pid, address: $0.address) }
        }
    }
}
