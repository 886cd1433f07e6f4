import VMCore
import PhysicalMemory

/// The swap cache: a page that stands for a swap slot while some swap entries still name the slot and
/// some process maps the page (or is about to), so that processes sharing a swapped-out page after
/// fork share one page again when they swap it in, and a page partly unmapped to swap needs no second
/// write (Linux: `mm/swap_state.c`).
///
/// ```
///  mm A: PTE ──► page (read-only, PG_swapcache) ◄── cache[slot]     refcount = mappings + 1
///  mm B: PTE = swap entry(slot) ───────────────────► slot, count 1   bytes(slot) == bytes(page)
/// ```
/// The cache's reference keeps a write from reusing the page in place (`do_wp_page()` copies), so the
/// page's bytes stay the slot's. The entry goes when the slot's last swap entry does
/// (`Kernel.swapFree`), or when reclaim finds the page mapped nowhere (`shrinkSwapCache`).
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

    /// One swap entry naming `slot` is gone (zap, swap-in, collapse); with the last, the slot is
    /// freed and its cached page leaves the cache (Linux: `swap_free()`, `free_swap_and_cache()`).
    func swapFree(_ slot: Int) {
        if let page = swapDevice.release(slot).uncached { dropFromSwapCache(page) }
    }

    /// Removes `pfn` from the swap cache if the cache's is its only reference — no mapping, no pin —
    /// besides `isolated` (the reference of a reclaimer that isolated it, which then frees it), and
    /// frees it when that was the last; returns whether it did (Linux: `__remove_mapping()` of a clean
    /// swap-cache folio in `shrink_folio_list()`). A slot no entry names any more is freed with it.
    @discardableResult
    func removeUnusedFromSwapCache(_ pfn: PFN, isolated: Bool = false) -> Bool {
        let frames = memory.frames
        let expected: Int32 = isolated ? 2 : 1
        let (removed, freedSlot) = swapDevice.map.withLock { m -> (Bool, Int?) in
            // Lookups take their reference under this lock, so the check holds until it is released.
            guard let slot = m.cachedSlot[pfn], frames.refcount(pfn) == expected, frames.mapcount(pfn) == 0 else { return (false, nil) }
            m.cache[slot] = nil
            m.cachedSlot[pfn] = nil
            guard m.counts[slot] == nil else { return (true, nil) }
            m.setUsed(slot, false)
            return (true, slot)
        }
        if let freedSlot { swapDevice.storage.discard(freedSlot) }
        if removed { dropFromSwapCache(pfn) }
        return removed
    }

    /// Frees every cached page that nothing maps or holds any more (their slots keep the bytes); returns
    /// how many (reclaim does this first: Linux finds such pages on the inactive list, clean).
    func shrinkSwapCache() -> Int {
        // In PFN order: a dictionary's own order changes from process to process, and a seeded run
        // must replay exactly.
        let pages = swapDevice.map.withLock { $0.cachedSlot.keys.sorted() }
        var freed = 0
        for pfn in pages where removeUnusedFromSwapCache(pfn) { freed += 1 }
        return freed
    }
}
