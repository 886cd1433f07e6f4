import VMCore
import PhysicalMemory

/// The swap cache: a page that stands for a swap slot, so that processes sharing a swapped-out page
/// after fork share one page again when they swap it in, a page swapped in and only read goes back to
/// swap without a write, and a page partly unmapped to swap needs no second write (Linux:
/// `mm/swap_state.c`).
///
/// ```
///  mm A: PTE ──► page (PG_swapcache) ◄── cache[slot]         refcount = mappings + 1
///  mm B: PTE = swap entry(slot) ─────────► slot, count 1     bytes(slot) == bytes(page) unless dirty
/// ```
/// A swap-in keeps the page in the cache — its slot held, charged and counted in `SwapCached` — until
/// something frees it (`freeSwap`): a write fault that takes the page over, the last unmapping
/// (`freeSwapCacheIfUnmapped`), reclaim of an unmapped page, or swap running short (a swap-in with more
/// than half the device in use frees at once, and an allocation that finds no free slot frees the
/// slots only cached pages hold). How a write treats a cached page is the design's
/// (`KernelDesign.SwapCacheReuse`): the 2010 design maps it read-only and takes it out of the cache at
/// the write; today's maps it writable when no one else has it, keeping it cached, and writes it back
/// to the same slot when reclaim finds it dirty.
extension Kernel {
    /// The cached page of `slot`, with a reference taken for the caller; nil if none (Linux:
    /// `swap_cache_get_folio()`).
    func lookupSwapCache(_ slot: Int) -> PFN? {
        swapDevice.map.withLock { m -> PFN? in
            guard let page = m.cache[slot] else { return nil }
            getPage(page)
            return page
        }
    }

    /// Makes `pfn` stand for `slot`, taking the cache's reference; false (nothing done) if another
    /// page got there first (Linux: `add_to_swap_cache()`, which fails with -EEXIST).
    func addToSwapCache(_ pfn: PFN, slot: Int) -> Bool {
        swapDevice.map.withLock { addToSwapCache(pfn, slot: slot, &$0) }
    }

    /// `addToSwapCache` with the swap device's lock held (`m` is what it guards).
    func addToSwapCache(_ pfn: PFN, slot: Int, _ m: inout SwapDevice.Map) -> Bool {
        precondition(m.isUsed(slot), "caching free swap slot \(slot)")
        guard m.cache[slot] == nil else { return false }
        precondition(m.cachedSlot[pfn] == nil, "\(pfn) already stands for swap slot \(m.cachedSlot[pfn]!)")
        m.cache[slot] = pfn
        m.cachedSlot[pfn] = slot
        getPage(pfn)
        memory.frames.insertFlags(pfn, .swapCache)
        return true
    }

    /// Makes `target`, a copy of the cached page `pfn` that `mapcount` entries are about to map, stand
    /// for its slot instead, if nothing but the mappings, the cache and the migration's isolation holds
    /// `pfn`; the cache's reference moves with it (Linux: `__folio_migrate_mapping()` for a swap-cache
    /// folio, expecting `folio_expected_ref_count()` + 1).
    func replaceInSwapCache(_ pfn: PFN, with target: PFN, mapcount: Int32) -> Bool {
        let frames = memory.frames
        return swapDevice.map.withLock { m -> Bool in
            guard let slot = m.cachedSlot[pfn], frames.refcount(pfn) == mapcount + 2 else { return false }
            m.cache[slot] = target
            m.cachedSlot[pfn] = nil
            m.cachedSlot[target] = slot
            if m.readahead.remove(pfn) != nil { m.readahead.insert(target) }
            frames.addRefcount(target, 1)
            frames.insertFlags(target, .swapCache)
            frames.removeFlags(pfn, .swapCache)
            frames.addRefcount(pfn, -1)
            return true
        }
    }

    /// The slot a cached page stands for.
    func swapCacheSlot(of pfn: PFN) -> Int? { swapDevice.map.withLock { $0.cachedSlot[pfn] } }

    /// Drops the cache's reference on a page the device has just removed from the cache (freeing it
    /// if nothing else holds it) (Linux: `folio_free_swap()` → `delete_from_swap_cache()`).
    func dropFromSwapCache(_ pfn: PFN) {
        memory.frames.removeFlags(pfn, .swapCache)
        putPage(pfn)
    }

    /// The one place the design's `swapCacheReuse` is read.
    @inline(__always) var swapCacheRules: KernelDesign.SwapCacheReuse { design.swapCacheReuse }

    /// Whether the swap entries that replace the mappings of `pfn` are marked exclusive: today, when
    /// the page (a THP's head for the whole folio) is exclusive to its one mapping (Linux 5.19+:
    /// `try_to_unmap_one()` → `pte_swp_mkexclusive()` for a `PageAnonExclusive` page); never in 2010.
    func marksSwapEntriesExclusive(_ pfn: PFN) -> Bool {
        swapCacheRules == .anonExclusive && memory.frames.flags(pfn).contains(.anonExclusive)
    }

    /// Whether swap is short for the page `pfn`: more than half the device in use, or (today's design)
    /// a cgroup from the page's up using half its `memory.swap.high` or `memory.swap.max` or more (Linux:
    /// `mem_cgroup_swap_full()`; 2.6.38: `vm_swap_full()`).
    func swapIsShort(for pfn: PFN) -> Bool {
        if swapDevice.isMoreThanHalfFull { return true }
        guard swapCacheRules == .anonExclusive else { return false }
        var level = memoryCgroups.owner(of: pfn)
        while let c = level {
            let used = c.swapPages.load(ordering: .relaxed)
            if used * 2 >= c.swapHighPages.load(ordering: .relaxed) || used * 2 >= c.swapMaxPages.load(ordering: .relaxed) { return true }
            level = c.parent
        }
        return false
    }

    /// Frees the slot of the cached page `pfn` if no swap entry names it, taking the page out of the
    /// cache: its bytes are in memory only from now on, so it is dirty (Linux: `folio_free_swap()`,
    /// 2.6.38: `try_to_free_swap()`). Returns whether it did.
    @discardableResult
    func freeSwap(_ pfn: PFN) -> Bool {
        guard swapDevice.freeSlot(of: pfn) else { return false }
        memory.frames.insertFlags(pfn, .dirty)
        dropFromSwapCache(pfn)
        return true
    }

    /// After the last mapping of `pfn` went: frees its swap if it is cached and no entry names its
    /// slot (Linux: `free_swap_cache()` from `free_pages_and_swap_cache()` and `wp_page_copy()`).
    /// - Precondition: the caller holds a reference to the page.
    func freeSwapCacheIfUnmapped(_ pfn: PFN) {
        let frames = memory.frames
        guard frames.flags(pfn).contains(.swapCache), frames.mapcount(pfn) == 0 else { return }
        freeSwap(pfn)
    }

    /// One swap entry naming `slot` is gone (zap, collapse). With the last, the slot is freed; a page
    /// cached for it keeps it while something maps the page and swap is not short (Linux:
    /// `free_swap_and_cache()` → `__try_to_reclaim_swap()` with `TTRS_UNMAPPED | TTRS_FULL`).
    func swapFree(_ slot: Int) {
        guard let page = swapDevice.release(slot).cachedOnly else { return }
        if memory.frames.mapcount(page) == 0 || swapIsShort(for: page) { freeSwap(page) }
    }

    /// Frees every slot that only a cached page holds, for an allocation that found none free; returns
    /// how many (Linux: the swap allocator's `__try_to_reclaim_swap()` of `SWAP_HAS_CACHE`-only slots
    /// when swap is full).
    func freeCacheOnlySlots() -> Int {
        var freed = 0
        for page in swapDevice.cacheOnlyPages() where freeSwap(page) { freed += 1 }
        return freed
    }

    /// Takes `count` free swap slots (`SwapDevice.allocate`), first freeing the slots only cached pages
    /// hold when none are free (Linux: `folio_alloc_swap()`).
    func allocateSwap(count: Int = 1, uses: Int32) -> Int? {
        if let first = swapDevice.allocate(count: count, uses: uses) { return first }
        guard freeCacheOnlySlots() > 0 else { return nil }
        return swapDevice.allocate(count: count, uses: uses)
    }

    /// Removes `pfn` from the swap cache if the cache's is its only reference — no mapping, no pin —
    /// besides `isolated` (the reference of a reclaimer that isolated it, which then frees it), and
    /// frees it when that was the last; returns whether it did (Linux: `__remove_mapping()` of a clean
    /// swap-cache folio in `shrink_folio_list()`). A dirty page whose slot entries still name is written
    /// there first (`pageout()`); a slot no entry names is freed with it.
    @discardableResult
    func removeUnusedFromSwapCache(_ pfn: PFN, isolated: Bool = false) -> Bool {
        let frames = memory.frames
        let expected: Int32 = isolated ? 2 : 1
        // Lookups take their reference under the device's lock, so the check holds while it is held.
        let unused = { frames.refcount(pfn) == expected && frames.mapcount(pfn) == 0 }
        if swapDevice.freeSlot(of: pfn, whenUnused: unused) {
            dropFromSwapCache(pfn)
            return true
        }
        guard swapDevice.uncache(pfn, whenUnused: unused, writing: { slot, m in
            if frames.removeFlags(pfn, .dirty).contains(.dirty) { writeToSwap(pfn, slot, &m) }
        }) else { return false }
        dropFromSwapCache(pfn)
        return true
    }

    /// A page MADV_PAGEOUT just wrote to its slot stays in the swap cache: the write is asynchronous
    /// (a block device or swap file), so `shrink_folio_list()` keeps the folio under writeback, and
    /// when the write ends `folio_end_writeback()` moves it to the inactive list's cold end
    /// (`folio_rotate_reclaimable()`, for the PG_reclaim it set) for the next reclaim to free; until
    /// then it stays charged to its cgroup and counts in SwapCached, and a fault on its slot maps it
    /// without reading (a minor fault). Measured on Linux 6.18.44 with a swap file: 8 MiB paged out
    /// left SwapCached at 8,184 kB and `memory.current` unchanged, still so 3 s later, and reading it
    /// back counted no `pswpin` and no major fault. An active page stays where it is.
    func keepWrittenInSwapCache(_ pfn: PFN) {
        guard !memory.frames.flags(pfn).contains(.active), lru.isolate(pfn) else { return }
        lru.putBack(pfn, on: .inactive, cold: true)
        putPage(pfn)
    }

    /// Frees every cached page that nothing maps or holds any more (their slots keep the bytes); returns
    /// how many (reclaim does this first: Linux finds such pages on the inactive list, clean).
    @discardableResult
    public func shrinkSwapCache() -> Int {
        // In PFN order: a dictionary's own order changes from process to process, and a seeded run
        // must replay exactly.
        let pages = swapDevice.map.withLock { $0.cachedSlot.keys.sorted() }
        var freed = 0
        for pfn in pages where removeUnusedFromSwapCache(pfn) { freed += 1 }
        return freed
    }
}
