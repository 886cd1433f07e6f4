import Synchronization
import VMCore
import PhysicalMemory

/// Where the entries of every page table live: 512 atomic 64-bit entries per table, in chunks that
/// never move, so a lockless walker can hold a table while others allocate.
///
/// A page table is a frame of kind `.pageTable` whose link word names its slot here; an upper-level
/// entry holds the PFN of the table below, as on x86-64, and a walk goes PFN → slot → entries. Each
/// slot also carries the table's split lock (Linux: the `ptl` in the page-table page's `struct ptdesc`),
/// alone on its cache line: locks of neighbouring tables taken by different CPUs must not share one.
///
/// ```
/// directory ──► chunk 0: [ slot 0: 512 entries | slot 1 | … | slot 63 ]   locks: [ptl 0 … ptl 63]
///           ──► chunk 1: [ slot 64 … ]                                     hints: [512 slots × 64]
/// owners: [ frame of slot 0 (+1; 0: free) | slot 1 | … ]
/// ```
/// Host-side only, for the Machine's walkers: beside each entry, the slot of the table it pointed at
/// when a walker last went down through it (a hint), and for each slot the frame whose table it
/// holds. A walk goes entry → hint → owner check → entries, and reads the frame record (PFN → slot)
/// only when the check fails: hints and owners of the upper tables are small and stay in the host's
/// caches, where a frame record per table does not (`Kernel.pageTable(below:in:at:)`).
public final class PageTableStore: @unchecked Sendable {
    /// A computed constant, not a `static let`: read from another module (the Machine's walker,
    /// through `entries(_:)`) a `static let` is an addressor call.
    @inlinable public static var slotsPerChunk: Int { 64 }
    /// Lock words per slot: one 4-byte lock and padding to 64 bytes.
    private static let lockStride = 16
    @usableFromInline let directory: UnsafeMutablePointer<UnsafeMutablePointer<Atomic<UInt64>>?>
    private let lockDirectory: UnsafeMutablePointer<UnsafeMutablePointer<Atomic<UInt32>>?>
    /// Per chunk, 512 hints per slot: the slot of the table entry `i` pointed at when last looked at.
    @usableFromInline let hintDirectory: UnsafeMutablePointer<UnsafeMutablePointer<Atomic<UInt32>>?>
    /// Per slot, the PFN of the table that holds it, plus one (0: free).
    @usableFromInline let owners: UnsafeMutablePointer<Atomic<UInt32>>
    private let chunkCapacity: Int
    private struct Slots { var free: [UInt32] = []; var next: UInt32 = 0; var chunks = 0 }
    private let slots = SpinLocked(Slots())
    /// Free slots each CPU keeps, so that a fault's table (the one a huge PMD deposits, say) takes
    /// no lock another CPU takes; `slotBatch` move at once to or from `slots`.
    private let perCPUSlots: PerCPUStacks
    private static let slotBatch = 16

    /// A store that can hold up to `maxTables` tables at once, with free-slot caches for `cpus` CPUs.
    public init(maxTables: Int, cpus: Int = SimulatedCPU.defaultCount) {
        perCPUSlots = PerCPUStacks(capacities: [2 * PageTableStore.slotBatch], cpus: cpus)
        chunkCapacity = maxTables / Self.slotsPerChunk + 1
        // Zeroed (nil) and backed by the host only as chunks come.
        directory = HostMemory.allocate(UnsafeMutablePointer<Atomic<UInt64>>?.self, count: chunkCapacity)
        lockDirectory = HostMemory.allocate(UnsafeMutablePointer<Atomic<UInt32>>?.self, count: chunkCapacity)
        hintDirectory = HostMemory.allocate(UnsafeMutablePointer<Atomic<UInt32>>?.self, count: chunkCapacity)
        owners = HostMemory.allocate(Atomic<UInt32>.self, count: chunkCapacity * Self.slotsPerChunk)
    }

    deinit {
        perCPUSlots.release()
        let chunks = slots.withLock { $0.chunks }
        for c in 0..<chunks {
            directory[c]!.deinitialize(count: Self.slotsPerChunk * 512); directory[c]!.deallocate()
            lockDirectory[c]!.deinitialize(count: Self.slotsPerChunk * Self.lockStride)
            UnsafeMutableRawPointer(lockDirectory[c]!).deallocate()
            HostMemory.release(hintDirectory[c]!, count: Self.slotsPerChunk * 512)
        }
        HostMemory.release(directory, count: chunkCapacity)
        HostMemory.release(lockDirectory, count: chunkCapacity)
        HostMemory.release(hintDirectory, count: chunkCapacity)
        HostMemory.release(owners, count: chunkCapacity * Self.slotsPerChunk)
    }

    /// Takes a slot whose entries are all empty: from this CPU's free slots, refilled from the shared
    /// list when empty.
    func allocateSlot() -> UInt32 {
        let cpu = SimulatedCPU.current
        if let slot = perCPUSlots.withStripe(cpu, { $0.pop(0) }) { return slot }
        return withUnsafeTemporaryAllocation(of: UInt32.self, capacity: Self.slotBatch) { batch in
            let n = slots.withLock { s -> Int in
                var n = 0
                while n < Self.slotBatch, let slot = s.free.popLast() {
                    batch[n] = slot
                    n += 1
                }
                return n
            }
            // What does not fit (another thread sharing this CPU's cache refilled it meanwhile) goes back.
            let kept = perCPUSlots.withStripe(cpu) { stripe -> Int in
                var kept = 0
                while kept < n - 1 && stripe.push(0, batch[kept]) { kept += 1 }
                return kept
            }
            if kept < n - 1 { slots.withLock { $0.free.append(contentsOf: batch[kept..<(n - 1)]) } }
            return n > 0 ? batch[n - 1] : newSlot()
        }
    }

    /// A slot never used before, in a new chunk when the last one is full.
    private func newSlot() -> UInt32 {
        slots.withLock { s in
            let slot = s.next
            let chunk = Int(slot) / Self.slotsPerChunk
            if chunk == s.chunks {
                precondition(chunk < chunkCapacity, "page-table store exhausted")
                let entries = UnsafeMutablePointer<Atomic<UInt64>>.allocate(capacity: Self.slotsPerChunk * 512)
                for i in 0..<(Self.slotsPerChunk * 512) { (entries + i).initialize(to: Atomic(0)) }
                let lockWords = Self.slotsPerChunk * Self.lockStride
                let locks = UnsafeMutableRawPointer.allocate(byteCount: lockWords * 4, alignment: 64)
                    .bindMemory(to: Atomic<UInt32>.self, capacity: lockWords)
                for i in 0..<lockWords { (locks + i).initialize(to: Atomic(0)) }
                directory[chunk] = entries
                lockDirectory[chunk] = locks
                hintDirectory[chunk] = HostMemory.allocate(Atomic<UInt32>.self, count: Self.slotsPerChunk * 512)
                s.chunks += 1
            }
            s.next += 1
            return slot
        }
    }

    /// Returns a slot whose entries have all been cleared, to this CPU's free slots; a full stack
    /// spills its older half to the shared list.
    func freeSlot(_ slot: UInt32) {
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: Self.slotBatch) { spill in
            let n = perCPUSlots.withStripe(SimulatedCPU.current) { stripe -> Int in
                if stripe.push(0, slot) { return 0 }
                stripe.removeOldest(0, Self.slotBatch, into: spill.baseAddress!)
                let pushed = stripe.push(0, slot)
                precondition(pushed, "a per-CPU slot stack refused a slot after spilling")
                return Self.slotBatch
            }
            if n > 0 { slots.withLock { $0.free.append(contentsOf: spill[0..<n]) } }
        }
    }

    /// Chunks allocated so far (each holds 64 tables' entries and never shrinks).
    var chunkCount: Int { slots.withLock { $0.chunks } }

    /// The 512 entries of a table (inlinable: the Machine's walker reaches every table through it).
    @inlinable @inline(__always) func entries(_ slot: UInt32) -> UnsafeMutablePointer<Atomic<UInt64>> {
        let s = Int(slot)
        return directory[s / Self.slotsPerChunk].unsafelyUnwrapped + (s % Self.slotsPerChunk) * 512
    }

    /// The hints beside the 512 entries of a table (one per entry: a slot).
    @inlinable @inline(__always) func hints(_ slot: UInt32) -> UnsafeMutablePointer<Atomic<UInt32>> {
        let s = Int(slot)
        return hintDirectory[s / Self.slotsPerChunk].unsafelyUnwrapped + (s % Self.slotsPerChunk) * 512
    }

    /// Records that the table in frame `pfn` holds `slot` (nil: the slot is free), before the table
    /// is linked anywhere and after it is unlinked everywhere.
    func setOwner(_ slot: UInt32, _ pfn: PFN?) {
        owners[Int(slot)].store(pfn.map { $0.rawValue &+ 1 } ?? 0, ordering: .releasing)
    }

    /// The split lock of a table (Linux: `pte_lockptr()`, `pmd_lockptr()`).
    @inline(__always) func lock(_ slot: UInt32) -> UnsafeMutablePointer<Atomic<UInt32>> {
        let s = Int(slot)
        return lockDirectory[s / Self.slotsPerChunk].unsafelyUnwrapped + (s % Self.slotsPerChunk) * Self.lockStride
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
