import Synchronization
import VMCore
import PhysicalMemory

/// A swap device in memory: numbered 4 KiB slots, each with a use count — how many swap entries in
/// page tables refer to it — and, in data mode, the bytes written to it (Linux: `struct
/// swap_info_struct`, its `swap_map` counts, `get_swap_page()`, `swap_duplicate()`, `swap_free()`).
///
/// ```
///  PTE (not present): [ slot number | swap bit ]  ──► slots[slot] = (count, bytes)
/// ```
/// There is no swap cache: a swap-in copies the slot's bytes into a new page and drops the entry's
/// use of the slot, so a slot shared after fork is read once by each process that touches it.
public final class SwapDevice: @unchecked Sendable {
    struct Slot {
        var count: Int
        var bytes: [UInt8]?
    }
    struct State {
        var slots: [Int: Slot] = [:]
        var freeSlots: [Int] = []
        var next = 0
    }
    /// Slots the device holds (Linux: `si->max`).
    public let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) { self.capacity = capacity }

    /// Slots in use now (Linux: `si->inuse_pages`; meminfo `SwapTotal - SwapFree`).
    public var usedSlots: Int { state.withLock { $0.slots.count } }

    /// Takes a free slot with use count 1 and stores `bytes` in it (nil in metadata mode); nil when the
    /// device is full (Linux: `folio_alloc_swap()` and the write of `swap_writepage()`).
    func store(_ bytes: [UInt8]?) -> Int? {
        state.withLock { s -> Int? in
            let slot: Int
            if let reused = s.freeSlots.popLast() {
                slot = reused
            } else {
                guard s.next < capacity else { return nil }
                slot = s.next
                s.next += 1
            }
            s.slots[slot] = Slot(count: 1, bytes: bytes)
            return slot
        }
    }

    /// The bytes of a slot in use (Linux: `swap_read_folio()`).
    func load(_ slot: Int) -> [UInt8]? {
        state.withLock { s in
            guard let entry = s.slots[slot] else { preconditionFailure("reading free swap slot \(slot)") }
            return entry.bytes
        }
    }

    /// One more swap entry refers to `slot` (Linux: `swap_duplicate()` at fork).
    func duplicate(_ slot: Int) {
        state.withLock { s in
            guard s.slots[slot] != nil else { preconditionFailure("duplicating free swap slot \(slot)") }
            s.slots[slot]!.count += 1
        }
    }

    /// One swap entry referring to `slot` is gone; the slot is freed with the last. Returns the uses
    /// left (Linux: `swap_free()`).
    @discardableResult
    func release(_ slot: Int) -> Int {
        state.withLock { s in
            guard let entry = s.slots[slot] else { preconditionFailure("releasing free swap slot \(slot)") }
            if entry.count == 1 {
                s.slots[slot] = nil
                s.freeSlots.append(slot)
                return 0
            }
            s.slots[slot]!.count -= 1
            return entry.count - 1
        }
    }

    /// The use count of every slot in use, for the invariant checker.
    func counts() -> [Int: Int] { state.withLock { $0.slots.mapValues(\.count) } }
}

extension PageTableEntry {
    /// The bit that marks a non-present PTE as a swap entry (Linux: the swap type and offset encoding
    /// of `__swp_entry()`; here one bit and the slot number where the PFN would be).
    static let swapBit: UInt64 = 1 << 11

    /// A swap entry for `slot` (Linux: `swp_entry_to_pte()`).
    static func swapEntry(slot: Int) -> PageTableEntry {
        PageTableEntry(rawValue: UInt64(slot) << PageGeometry.pageShift | swapBit)
    }

    /// Whether this PTE is a swap entry (Linux: `is_swap_pte()` for a non-migration entry).
    var isSwapEntry: Bool { rawValue & (Self.swapBit | Self.presentBit | Self.protNoneBit) == Self.swapBit }

    /// The slot a swap entry names (Linux: `swp_offset()`).
    var swapSlot: Int { Int(rawValue >> PageGeometry.pageShift) }
}
