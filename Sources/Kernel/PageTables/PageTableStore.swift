import Synchronization
import VMCore
import PhysicalMemory

/// Where the entries of every page table live: 512 atomic 64-bit entries per table, in chunks that
/// never move, so a lockless walker can hold a table while others allocate.
///
/// A page table is a frame of kind `.pageTable` whose link word names its slot here; an upper-level
/// entry holds the PFN of the table below, as on x86-64, and a walk goes PFN → slot → entries. Each
/// slot also carries the table's split lock (Linux: the `ptl` in the page-table page's `struct ptdesc`).
///
/// ```
/// directory ──► chunk 0: [ slot 0: 512 entries | slot 1 | … | slot 63 ]   locks: [ptl 0 … ptl 63]
///           ──► chunk 1: [ slot 64 … ]
/// ```
public final class PageTableStore: @unchecked Sendable {
    public static let slotsPerChunk = 64
    private let directory: UnsafeMutablePointer<UnsafeMutablePointer<Atomic<UInt64>>?>
    private let lockDirectory: UnsafeMutablePointer<UnsafeMutablePointer<Atomic<UInt32>>?>
    private let chunkCapacity: Int
    private struct Slots { var free: [UInt32] = []; var next: UInt32 = 0; var chunks = 0 }
    private let slots = SpinLocked(Slots())

    /// A store that can hold up to `maxTables` tables at once.
    public init(maxTables: Int) {
        chunkCapacity = maxTables / Self.slotsPerChunk + 1
        directory = .allocate(capacity: chunkCapacity)
        directory.initialize(repeating: nil, count: chunkCapacity)
        lockDirectory = .allocate(capacity: chunkCapacity)
        lockDirectory.initialize(repeating: nil, count: chunkCapacity)
    }

    deinit {
        let chunks = slots.withLock { $0.chunks }
        for c in 0..<chunks {
            directory[c]!.deinitialize(count: Self.slotsPerChunk * 512); directory[c]!.deallocate()
            lockDirectory[c]!.deinitialize(count: Self.slotsPerChunk); lockDirectory[c]!.deallocate()
        }
        directory.deallocate()
        lockDirectory.deallocate()
    }

    /// Takes a slot whose entries are all empty.
    func allocateSlot() -> UInt32 {
        slots.withLock { s in
            if let slot = s.free.popLast() { return slot }
            let slot = s.next
            let chunk = Int(slot) / Self.slotsPerChunk
            if chunk == s.chunks {
                precondition(chunk < chunkCapacity, "page-table store exhausted")
                let entries = UnsafeMutablePointer<Atomic<UInt64>>.allocate(capacity: Self.slotsPerChunk * 512)
                for i in 0..<(Self.slotsPerChunk * 512) { (entries + i).initialize(to: Atomic(0)) }
                let locks = UnsafeMutablePointer<Atomic<UInt32>>.allocate(capacity: Self.slotsPerChunk)
                for i in 0..<Self.slotsPerChunk { (locks + i).initialize(to: Atomic(0)) }
                directory[chunk] = entries
                lockDirectory[chunk] = locks
                s.chunks += 1
            }
            s.next += 1
            return slot
        }
    }

    /// Returns a slot whose entries have all been cleared.
    func freeSlot(_ slot: UInt32) {
        slots.withLock { $0.free.append(slot) }
    }

    /// Chunks allocated so far (each holds 64 tables' entries and never shrinks).
    var chunkCount: Int { slots.withLock { $0.chunks } }

    /// The 512 entries of a table.
    @inline(__always) func entries(_ slot: UInt32) -> UnsafeMutablePointer<Atomic<UInt64>> {
        let s = Int(slot)
        return directory[s / Self.slotsPerChunk].unsafelyUnwrapped + (s % Self.slotsPerChunk) * 512
    }

    /// The split lock of a table (Linux: `pte_lockptr()`, `pmd_lockptr()`).
    @inline(__always) func lock(_ slot: UInt32) -> UnsafeMutablePointer<Atomic<UInt32>> {
        let s = Int(slot)
        return lockDirectory[s / Self.slotsPerChunk].unsafelyUnwrapped + s % Self.slotsPerChunk
    }
}

/// A page table as the kernel holds it while walking: its frame, and its entries.
public struct PageTable: @unchecked Sendable {
    public let pfn: PFN
    @usableFromInline let slot: UInt32
    @usableFromInline let entries: UnsafeMutablePointer<Atomic<UInt64>>

    @inlinable init(pfn: PFN, slot: UInt32, entries: UnsafeMutablePointer<Atomic<UInt64>>) {
        self.pfn = pfn; self.slot = slot; self.entries = entries
    }

    /// Reads entry `index` (Linux: `ptep_get()`, `pmdp_get_lockless()`).
    @inlinable public subscript(index: Int) -> PageTableEntry {
        PageTableEntry(rawValue: entries[index].load(ordering: .acquiring))
    }

    /// Writes entry `index` (Linux: `set_pte_at()`, `set_pmd_at()`, `pte_clear()`).
    @inlinable func set(_ index: Int, _ entry: PageTableEntry) {
        entries[index].store(entry.rawValue, ordering: .releasing)
    }

    /// Replaces entry `index` and returns what it held (Linux: `ptep_get_and_clear()`).
    @inlinable func exchange(_ index: Int, _ entry: PageTableEntry) -> PageTableEntry {
        PageTableEntry(rawValue: entries[index].exchange(entry.rawValue, ordering: .acquiringAndReleasing))
    }

    /// Whether every entry is empty.
    func isEmpty() -> Bool {
        for i in 0..<PageGeometry.entriesPerTable where entries[i].load(ordering: .relaxed) != 0 { return false }
        return true
    }
}
