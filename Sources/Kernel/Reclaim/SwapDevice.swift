import VMCore
import PhysicalMemory

/// How the swap device is built.
public struct SwapConfiguration: Sendable {
    /// Slots (4 KiB each); nil for as many as memory has pages.
    public var slots: Int?
    /// Whether slots are handed out in 2 MiB clusters, so that a whole THP can be written to 512
    /// contiguous slots (Linux: a swap partition on a non-rotational device, whose `swap_cluster_info`
    /// lets `folio_alloc_swap()` take an order-9 folio whole). Without clusters every THP falls back
    /// (`thp_swpout_fallback`) and is split first, as with this machine's swap file.
    public var clusters: Bool
    /// Where data-mode bytes go; nil for host memory (`MemorySwapStorage`).
    public var storage: (any SwapStorage)?

    public init(slots: Int? = nil, clusters: Bool = false, storage: (any SwapStorage)? = nil) {
        self.slots = slots
        self.clusters = clusters
        self.storage = storage
    }
}

/// A swap device: numbered 4 KiB slots, each with a use count — how many swap entries in page tables
/// name it — and the swap cache, the pages that stand for slots in memory (Linux: `struct
/// swap_info_struct` and its `swap_map`, `folio_alloc_swap()`, `swap_duplicate()`, `swap_free()`;
/// the swap cache's `swap_cache_get_folio()`, `add_to_swap_cache()`, `delete_from_swap_cache()`).
///
/// ```
///  PTE (not present): [ slot | swap bit ] ──► count[slot] = swap entries naming it
///                                             cache[slot] ──► page (PG_swapcache, +1 reference)
///                                             storage[slot] = the bytes (data mode)
/// ```
/// A slot is in use while a swap entry names it or a page stands for it in the cache. The model frees
/// a slot as soon as no entry names it, dropping its cached page (Linux frees it then when swap is
/// full, `vm_swap_full()`, or lazily otherwise): the cache holds exactly the pages that some process
/// maps, or has mapped, while another still has the swap entry. A cached page's bytes equal the
/// slot's: it is mapped read-only, and a write copies it.
///
/// Allocation is next-fit over a bitmap; with `clusters`, an order-9 request takes a cluster (512
/// aligned slots) none of whose slots is in use.
public final class SwapDevice: @unchecked Sendable {
    struct Map {
        var counts: [Int: Int32] = [:]
        /// Slot → the page standing for it, and back.
        var cache: [Int: PFN] = [:]
        var cachedSlot: [PFN: Int] = [:]
        /// One bit per slot in use; zeroed host memory, backed only where slots have been used.
        let used: UnsafeMutableBufferPointer<UInt64>
        /// Per slot, the index of the memory cgroup its swap is charged to (0: none, the root's)
        /// (Linux: `swap_cgroup_record()`); zeroed host memory like `used`.
        let owners: UnsafeMutablePointer<UInt16>
        var cursor = 0
        var inUse = 0

        func isUsed(_ slot: Int) -> Bool { used[slot >> 6] & (1 << UInt64(slot & 63)) != 0 }
        mutating func setUsed(_ slot: Int, _ on: Bool) {
            if on { used[slot >> 6] |= 1 << UInt64(slot & 63) } else { used[slot >> 6] &= ~(1 << UInt64(slot & 63)) }
            inUse += on ? 1 : -1
        }
    }
    /// Slots the device holds (Linux: `si->max`).
    public let capacity: Int
    /// Whether a THP can be written whole (see `SwapConfiguration.clusters`).
    public let hasClusters: Bool
    /// Where the bytes go in data mode.
    public let storage: any SwapStorage
    let map: SpinLocked<Map>

    init(_ configuration: SwapConfiguration, defaultSlots: Int) {
        capacity = configuration.slots ?? defaultSlots
        precondition(capacity >= 0, "a swap device of \(capacity) slots")
        hasClusters = configuration.clusters
        storage = configuration.storage ?? MemorySwapStorage()
        let words = (capacity + 63) / 64
        map = SpinLocked(Map(used: UnsafeMutableBufferPointer(start: HostMemory.allocate(UInt64.self, count: words), count: words),
                             owners: HostMemory.allocate(UInt16.self, count: capacity)))
    }

    deinit {
        map.withLock {
            HostMemory.release($0.used.baseAddress!, count: $0.used.count)
            HostMemory.release($0.owners, count: capacity)
        }
    }

    /// The memory cgroups whose swap the slots are charged to (set by the kernel).
    var cgroups: Unmanaged<MemoryCgroups>?

    /// Charges the `count` slots from `first`, just allocated for a folio charged to `memcg`, to that
    /// cgroup's swap (and every one above it); false when one of them is at its `memory.swap.max`,
    /// the slots then uncharged and for the caller to free (Linux: `folio_alloc_swap()` →
    /// `mem_cgroup_try_charge_swap()`, `swap_cgroup_record()`).
    func charge(_ first: Int, count: Int, to memcg: MemoryCgroup?) -> Bool {
        guard let memcg, let cgroups else { return true }
        guard let id = cgroups._withUnsafeGuaranteedRef({ $0.tryChargeSwap(memcg, pages: count) }) else { return false }
        if id != 0 { map.withLock { m in for slot in first..<(first + count) { m.owners[slot] = id } } }
        return true
    }

    /// Uncharges the swap of a slot just freed, whose owner was `id` (Linux: `mem_cgroup_uncharge_swap()`
    /// from `swap_entries_free()`).
    private func uncharge(_ id: UInt16) {
        guard id != 0, let cgroups else { return }
        cgroups._withUnsafeGuaranteedRef { $0.unchargeSwap(id, pages: 1) }
    }

    /// Slots in use now (Linux: `si->inuse_pages`; meminfo `SwapTotal - SwapFree`).
    public var usedSlots: Int { map.withLock { $0.inUse } }

    /// Pages in the swap cache (meminfo `SwapCached`).
    public var cachedPages: Int { map.withLock { $0.cache.count } }

    /// Takes `count` free slots — one, or with clusters a whole aligned cluster of 512 — each with use
    /// count `uses`; nil when none is free (Linux: `folio_alloc_swap()`, `cluster_alloc_swap_entry()`).
    func allocate(count: Int = 1, uses: Int32) -> Int? {
        map.withLock { m -> Int? in
            guard let first = count == 1 ? Self.findSlot(&m, capacity) : Self.findCluster(&m, capacity, count) else { return nil }
            for slot in first..<(first + count) {
                m.setUsed(slot, true)
                if uses > 0 { m.counts[slot] = uses }
            }
            return first
        }
    }

    private static func findSlot(_ m: inout Map, _ capacity: Int) -> Int? {
        guard m.inUse < capacity else { return nil }
        var word = m.cursor >> 6
        for _ in 0...m.used.count {
            if word >= m.used.count { word = 0 }
            let bits = m.used[word]
            if bits != ~0 {
                let slot = word << 6 | (~bits).trailingZeroBitCount
                if slot < capacity {
                    m.cursor = slot + 1
                    return slot
                }
            }
            word += 1
        }
        return nil
    }

    private static func findCluster(_ m: inout Map, _ capacity: Int, _ count: Int) -> Int? {
        precondition(count % 64 == 0, "clusters are whole bitmap words")
        let words = count / 64, clusters = capacity / count
        guard clusters > 0 else { return nil }
        let start = (m.cursor / count) % clusters
        for step in 0..<clusters {
            let cluster = (start + step) % clusters
            if m.used[(cluster * words)..<((cluster + 1) * words)].allSatisfy({ $0 == 0 }) {
                m.cursor = (cluster + 1) * count
                return cluster * count
            }
        }
        return nil
    }

    /// Writes a page's bytes to `slot` (Linux: `swap_writepage()`).
    func write(_ slot: Int, _ bytes: UnsafeRawBufferPointer) { storage.write(slot, bytes) }

    /// Reads `slot` into `buffer` (Linux: `swap_read_folio()`).
    /// - Precondition: the slot is in use (the caller holds a swap entry naming it, under its lock).
    func read(_ slot: Int, into buffer: UnsafeMutableRawBufferPointer) { storage.read(slot, into: buffer) }

    /// The bytes of a slot in use, as an array.
    func load(_ slot: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Int(PageGeometry.pageSize)) { buffer, count in
            read(slot, into: UnsafeMutableRawBufferPointer(buffer))
            count = buffer.count
        }
    }

    /// One more swap entry names `slot` (Linux: `swap_duplicate()` at fork and in `try_to_unmap()`).
    func duplicate(_ slot: Int) {
        map.withLock { m in
            guard m.isUsed(slot) else { preconditionFailure("duplicating free swap slot \(slot)") }
            m.counts[slot, default: 0] += 1
        }
    }

    /// One swap entry naming `slot` is gone. With the last, the slot is freed and its cached page, if
    /// any, leaves the cache: the caller must drop the cache's reference with `Kernel.dropFromSwapCache`
    /// (Linux: `swap_free()`, and `free_swap_and_cache()` from zap).
    func release(_ slot: Int) -> (left: Int32, uncached: PFN?) {
        release(slot) { _ in }
    }

    /// `release(slot)`, calling `whileNamed` under the same lock when other entries still name the
    /// slot — for a swap-in that caches its page for them, which must happen before another entry's
    /// release can free the slot (Linux's `do_swap_page()` adds the folio to the swap cache before it
    /// calls `swap_free()`).
    func release(_ slot: Int, whileNamed: (inout Map) -> Void) -> (left: Int32, uncached: PFN?) {
        var freedOwner: UInt16 = 0
        let (left, uncached) = map.withLock { m -> (Int32, PFN?) in
            guard let count = m.counts[slot], count > 0 else { preconditionFailure("releasing free swap slot \(slot)") }
            if count > 1 {
                m.counts[slot] = count - 1
                whileNamed(&m)
                return (count - 1, nil)
            }
            let (page, owner) = Self.free(&m, slot)
            freedOwner = owner
            return (0, page)
        }
        if left == 0 {
            storage.discard(slot)
            uncharge(freedOwner)
        }
        return (left, uncached)
    }

    /// Frees a slot no entry names any more, removing its cached page; returns that page and the
    /// cgroup its swap was charged to (its record cleared).
    private static func free(_ m: inout Map, _ slot: Int) -> (page: PFN?, owner: UInt16) {
        m.counts[slot] = nil
        m.setUsed(slot, false)
        let owner = m.owners[slot]
        m.owners[slot] = 0
        guard let page = m.cache.removeValue(forKey: slot) else { return (nil, owner) }
        m.cachedSlot[page] = nil
        return (page, owner)
    }


    /// Frees a slot that no swap entry names and no page stands for (a swap-out that unmapped nothing).
    func freeUnused(_ slot: Int) {
        let owner = map.withLock { m -> UInt16 in
            precondition(m.counts[slot] == nil && m.cache[slot] == nil, "freeing swap slot \(slot), which is still used")
            m.setUsed(slot, false)
            let owner = m.owners[slot]
            m.owners[slot] = 0
            return owner
        }
        storage.discard(slot)
        uncharge(owner)
    }

    /// Swap pages charged per cgroup index, from the slots' records, for the invariant checker.
    func chargedSlots() -> [UInt16: Int] {
        map.withLock { m in
            var charged: [UInt16: Int] = [:]
            for word in 0..<m.used.count where m.used[word] != 0 {
                for bit in 0..<64 where m.used[word] & (1 << UInt64(bit)) != 0 {
                    let owner = m.owners[word << 6 | bit]
                    if owner != 0 { charged[owner, default: 0] += 1 }
                }
            }
            return charged
        }
    }

    /// The use count of every slot entries name, for the invariant checker.
    func counts() -> [Int: Int] { map.withLock { $0.counts.mapValues { Int($0) } } }

    /// Every slot in use, for the invariant checker.
    func slotsInUse() -> Set<Int> {
        map.withLock { m in
            var slots = Set<Int>(minimumCapacity: m.inUse)
            for (w, word) in m.used.enumerated() where word != 0 {
                for bit in 0..<64 where word & (1 << UInt64(bit)) != 0 { slots.insert(w << 6 | bit) }
            }
            return slots
        }
    }

    /// The swap cache, slot → page, for the invariant checker and `SwapCached`.
    func cacheContents() -> [Int: PFN] { map.withLock { $0.cache } }
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
