import VMCore
import PhysicalMemory

/// How the swap device is built.
public struct SwapConfiguration: Sendable {
    /// Slots (4 KiB each); nil for as many as memory has pages.
    public var slots: Int?
    /// Whether slots are handed out in 2 MiB clusters, so that a whole THP can be written to 512
    /// contiguous slots (Linux: a swap partition on a non-rotational device, whose `swap_cluster_info`
    /// lets `folio_alloc_swap()` take an order-9 folio whole). Without clusters every THP falls back
    /// (`thp_swpout_fallback`) and is split first, as with this machine's swap file. Being
    /// non-rotational, such a device also makes today's swap-in read ahead by address
    /// (`swap_vma_readahead()`, `SwapReadahead.swift`) rather than by slot cluster.
    public var clusters: Bool
    /// Where data-mode bytes go; nil for host memory (`MemorySwapStorage`).
    public var storage: (any SwapStorage)?
    /// A fault that reads a slot reads up to 2^`pageCluster` slots around it (Linux:
    /// `/proc/sys/vm/page-cluster`, 3 by default: `swap_setup()`; `SwapReadahead.swift`); 0 reads one.
    public var pageCluster: Int

    public init(slots: Int? = nil, clusters: Bool = false, storage: (any SwapStorage)? = nil, pageCluster: Int = 3) {
        precondition((0...SwapConfiguration.maxPageCluster).contains(pageCluster),
                     "page-cluster \(pageCluster) is outside 0...\(SwapConfiguration.maxPageCluster)")
        self.slots = slots
        self.clusters = clusters
        self.storage = storage
        self.pageCluster = pageCluster
    }

    /// The largest `pageCluster` the model takes: a window of at most 512 slots, one 2 MiB cluster
    /// (Linux's sysctl accepts larger values).
    public static let maxPageCluster = 9
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
/// A slot is in use while a swap entry names it or a page stands for it in the cache (Linux:
/// `SWAP_HAS_CACHE`). A slot no entry names stays with its cached page until the kernel frees it
/// (`Kernel.freeSwap`: a write that takes the page over, an unmapping, reclaim, or swap running short)
/// — so a page swapped in and only read keeps its slot, and goes back to swap without a write. A
/// cached page's bytes equal the slot's unless it is dirty (written through a writable mapping since).
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
        /// One bit per slot whose page was all zeros when it went out, so that nothing was written
        /// (Linux 6.12+: `si->zeromap`); zeroed host memory like `used`.
        let zero: UnsafeMutableBufferPointer<UInt64>
        /// One bit per slot taken by a swap-out whose bytes are not written yet: read-ahead leaves it
        /// (Linux: the folio being written stands for the slot in the swap cache from `add_to_swap()`
        /// on, so a read-ahead finds it there; the model's MADV_PAGEOUT and whole-THP swap-outs cache
        /// their pages only after the write). Zeroed host memory like `used`.
        let pending: UnsafeMutableBufferPointer<UInt64>
        /// Pages read ahead into the cache that no fault has found yet (Linux: `PG_readahead` on a
        /// swap-cache folio, set by `swap_cluster_readahead()`, cleared by `swap_cache_get_folio()`).
        var readahead: Set<PFN> = []
        var cursor = 0
        var inUse = 0

        func isUsed(_ slot: Int) -> Bool { used[slot >> 6] & (1 << UInt64(slot & 63)) != 0 }
        mutating func setUsed(_ slot: Int, _ on: Bool) {
            if on { used[slot >> 6] |= 1 << UInt64(slot & 63) } else { used[slot >> 6] &= ~(1 << UInt64(slot & 63)) }
            inUse += on ? 1 : -1
        }
        func isZero(_ slot: Int) -> Bool { zero[slot >> 6] & (1 << UInt64(slot & 63)) != 0 }
        func setZero(_ slot: Int, _ on: Bool) {
            if on { zero[slot >> 6] |= 1 << UInt64(slot & 63) } else { zero[slot >> 6] &= ~(1 << UInt64(slot & 63)) }
        }
        func isPending(_ slot: Int) -> Bool { pending[slot >> 6] & (1 << UInt64(slot & 63)) != 0 }
        func setPending(_ slot: Int, _ on: Bool) {
            if on { pending[slot >> 6] |= 1 << UInt64(slot & 63) } else { pending[slot >> 6] &= ~(1 << UInt64(slot & 63)) }
        }
        /// Whether a read-ahead may read `slot`: swap entries name it, no page stands for it in the
        /// cache, and its bytes are written (Linux: `__read_swap_cache_async()` finds no folio and
        /// `swap_entry_swapped()`).
        func mayReadAhead(_ slot: Int) -> Bool { counts[slot] != nil && cache[slot] == nil && !isPending(slot) }
    }
    /// Slots the device holds (Linux: `si->max`).
    public let capacity: Int
    /// Whether a THP can be written whole (see `SwapConfiguration.clusters`).
    public let hasClusters: Bool
    /// Where the bytes go in data mode.
    public let storage: any SwapStorage
    /// Read-ahead reads up to 2^`pageCluster` slots (`SwapConfiguration.pageCluster`).
    public let pageCluster: Int
    let map: SpinLocked<Map>

    init(_ configuration: SwapConfiguration, defaultSlots: Int) {
        capacity = configuration.slots ?? defaultSlots
        precondition(capacity >= 0, "a swap device of \(capacity) slots")
        hasClusters = configuration.clusters
        storage = configuration.storage ?? MemorySwapStorage()
        pageCluster = configuration.pageCluster
        let words = (capacity + 63) / 64
        func bits() -> UnsafeMutableBufferPointer<UInt64> {
            UnsafeMutableBufferPointer(start: HostMemory.allocate(UInt64.self, count: words), count: words)
        }
        map = SpinLocked(Map(used: bits(), owners: HostMemory.allocate(UInt16.self, count: capacity), zero: bits(),
                             pending: bits()))
    }

    deinit {
        map.withLock {
            HostMemory.release($0.used.baseAddress!, count: $0.used.count)
            HostMemory.release($0.owners, count: capacity)
            HostMemory.release($0.zero.baseAddress!, count: $0.zero.count)
            HostMemory.release($0.pending.baseAddress!, count: $0.pending.count)
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
                m.setPending(slot, true)
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

    /// Writes a page's bytes to `slot`, with the device's lock held (`m` is what it guards), so that
    /// the slot is no longer pending when the lock is released (Linux: `swap_writepage()`); nil bytes
    /// in metadata mode.
    func write(_ slot: Int, _ bytes: UnsafeRawBufferPointer?, _ m: inout Map) {
        m.setZero(slot, false)
        if let bytes { storage.write(slot, bytes) }
        m.setPending(slot, false)
    }

    /// Records that the page going to `slot` is all zeros: nothing is written, and a read fills zeros
    /// (Linux 6.12+: `swap_zeromap_folio_set()`), with the device's lock held.
    func writeZeroFilled(_ slot: Int, _ m: inout Map) {
        m.setZero(slot, true)
        storage.discard(slot)
        m.setPending(slot, false)
    }

    /// Reads `slot` into `buffer`; true when the slot is in the zero map, so that zeros were filled in
    /// without a read (Linux: `swap_read_folio()`, `swap_read_folio_zeromap()`).
    /// - Precondition: the slot is in use (the caller holds a swap entry naming it, under its lock).
    @discardableResult
    func read(_ slot: Int, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        if map.withLock({ $0.isZero(slot) }) {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            return true
        }
        storage.read(slot, into: buffer)
        return false
    }

    /// `read` with the device's lock held (for a read-ahead, which holds it from its check to the
    /// page's caching: no free or new write of the slot comes between); nil `buffer` in metadata mode,
    /// which keeps no zero map.
    func read(_ slot: Int, into buffer: UnsafeMutableRawBufferPointer?, _ m: borrowing Map) -> Bool {
        guard let buffer else { return false }
        if m.isZero(slot) {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            return true
        }
        storage.read(slot, into: buffer)
        return false
    }


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

    /// One swap entry naming `slot` is gone. With the last, the slot is freed — unless a page stands
    /// for it in the cache, which then alone holds it, for the kernel to free or keep (Linux:
    /// `swap_free()`; `free_swap_and_cache()` from zap, whose caller decides with `__try_to_reclaim_swap()`).
    /// Returns the entries left and, when none is, the cached page that holds the slot now.
    func release(_ slot: Int) -> (left: Int32, cachedOnly: PFN?) {
        release(slot) { _ in }
    }

    /// `release(slot)`, calling `first` under the same lock before the entry goes — for a swap-in that
    /// caches its page, which must happen before another entry's release can free the slot (Linux's
    /// `do_swap_page()` adds the folio to the swap cache before it calls `swap_free()`).
    func release(_ slot: Int, first: (inout Map) -> Void) -> (left: Int32, cachedOnly: PFN?) {
        var freedOwner: UInt16?
        let (left, cachedOnly) = map.withLock { m -> (Int32, PFN?) in
            guard let count = m.counts[slot], count > 0 else { preconditionFailure("releasing free swap slot \(slot)") }
            first(&m)
            if count > 1 {
                m.counts[slot] = count - 1
                return (count - 1, nil)
            }
            m.counts[slot] = nil
            if let page = m.cache[slot] { return (0, page) }
            freedOwner = Self.free(&m, slot)
            return (0, nil)
        }
        if let freedOwner {
            storage.discard(slot)
            uncharge(freedOwner)
        }
        return (left, cachedOnly)
    }

    /// Frees the slot `page` stands for if no swap entry names it, taking the page out of the cache;
    /// the caller must then drop the cache's reference with `Kernel.dropFromSwapCache`. False (nothing
    /// done) when the page is not cached or entries still name its slot (Linux: `folio_free_swap()`,
    /// which refuses while `folio_swapped()`). `whenUnused`, if given, must hold too, checked under
    /// the device's lock (lookups take their reference under it).
    func freeSlot(of page: PFN, whenUnused: (() -> Bool)? = nil) -> Bool {
        var freed: (slot: Int, owner: UInt16)?
        map.withLock { m in
            guard let slot = m.cachedSlot[page], m.counts[slot] == nil, whenUnused?() ?? true else { return }
            m.cachedSlot[page] = nil
            m.cache[slot] = nil
            m.readahead.remove(page)
            freed = (slot, Self.free(&m, slot))
        }
        guard let freed else { return false }
        storage.discard(freed.slot)
        uncharge(freed.owner)
        return true
    }

    /// Takes `page` out of the cache when entries still name its slot (which stays theirs) and
    /// `whenUnused()` holds, checked under the device's lock; `writing` is called first, under it, with
    /// the slot (for a dirty page's write-back). False (nothing done) otherwise (Linux:
    /// `__remove_mapping()` → `__delete_from_swap_cache()`).
    func uncache(_ page: PFN, whenUnused: () -> Bool, writing: (Int, inout Map) -> Void) -> Bool {
        map.withLock { m -> Bool in
            guard let slot = m.cachedSlot[page], m.counts[slot] != nil, whenUnused() else { return false }
            writing(slot, &m)
            m.cachedSlot[page] = nil
            m.cache[slot] = nil
            m.readahead.remove(page)
            return true
        }
    }

    /// Marks a slot free that nothing names or caches; returns the cgroup its swap was charged to (its
    /// record cleared).
    private static func free(_ m: inout Map, _ slot: Int) -> UInt16 {
        m.setUsed(slot, false)
        m.setZero(slot, false)
        m.setPending(slot, false)
        let owner = m.owners[slot]
        m.owners[slot] = 0
        return owner
    }

    /// The cgroup index the swap of `slot` is charged to (0: none).
    func owner(of slot: Int) -> UInt16 { map.withLock { $0.owners[slot] } }

    /// Whether more than half of the device's slots are in use (Linux: `vm_swap_full()`, which frees a
    /// swapped-in page's slot at once instead of keeping it in the cache).
    var isMoreThanHalfFull: Bool { map.withLock { $0.inUse * 2 > capacity } }

    /// The cached pages whose slots no entry names, in PFN order (the candidates
    /// `Kernel.freeCacheOnlySlots` frees when the device runs out).
    func cacheOnlyPages() -> [PFN] {
        map.withLock { m in m.cachedSlot.filter { m.counts[$0.value] == nil }.keys.sorted() }
    }

    /// Frees a slot that no swap entry names and no page stands for (a swap-out that unmapped nothing).
    func freeUnused(_ slot: Int) {
        let owner = map.withLock { m -> UInt16 in
            precondition(m.counts[slot] == nil && m.cache[slot] == nil, "freeing swap slot \(slot), which is still used")
            return Self.free(&m, slot)
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

    /// Software bit 3 of a swap entry: the page was exclusive to this mapping when it went to swap,
    /// and no fork has shared the entry since (Linux 5.19+: `_PAGE_SWP_EXCLUSIVE`,
    /// `pte_swp_exclusive()`). Only today's design sets it.
    static let swapExclusiveBit: UInt64 = 1 << 3

    /// A swap entry for `slot`, marked exclusive or not (Linux: `swp_entry_to_pte()`,
    /// `pte_swp_mkexclusive()`).
    static func swapEntry(slot: Int, exclusive: Bool = false) -> PageTableEntry {
        PageTableEntry(rawValue: UInt64(slot) << PageGeometry.pageShift | swapBit | (exclusive ? swapExclusiveBit : 0))
    }

    /// Whether a swap entry is marked exclusive (Linux: `pte_swp_exclusive()`).
    var isSwapExclusive: Bool { rawValue & Self.swapExclusiveBit != 0 }

    /// Whether this PTE is a swap entry (Linux: `is_swap_pte()` for a non-migration entry).
    var isSwapEntry: Bool { rawValue & (Self.swapBit | Self.presentBit | Self.protNoneBit) == Self.swapBit }

    /// The slot a swap entry names (Linux: `swp_offset()`).
    var swapSlot: Int { Int(rawValue >> PageGeometry.pageShift) }
}
