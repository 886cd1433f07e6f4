import VMCore
import PhysicalMemory

/// Reclaim of anonymous pages that several processes map after fork: the page goes to the swap cache
/// with one slot, every PTE that maps it becomes the same swap entry (the slot's count is the number
/// of mappings), and once nothing maps it the page leaves the cache and is freed. A mapping that
/// changed meanwhile stays; the page then stays in the swap cache with the entries that were made.
///
/// ```
///  mm A: PTE ──┐                      mm A: swap entry(s) ──┐
///  mm B: PTE ──┴─► page (mapcount 2)  mm B: swap entry(s) ──┴─► slot s, count 2; page freed
/// ```
/// (Linux: `shrink_folio_list()` → `folio_referenced()` over every mapping, `add_to_swap()`,
/// `try_to_unmap()` → `try_to_unmap_one()` per mapping through the anon_vma rmap walk.)
extension Kernel {
    /// Swaps out each page of `pages` — collected by the reclaim walk, each with a reference the walk
    /// took, which this puts — from every mapping; returns how many pages were freed.
    /// - Precondition: no page-table lock is held.
    @discardableResult
    func reclaimSharedPages(_ pages: [PFN], by reclaimer: Reclaimer) -> Int {
        let rmap = smallPageMappingsIfUnlocked()
        var freed = 0
        for pfn in pages {
            let unmapped = rmap[pfn].map { swapOutEverywhere(pfn, $0, by: reclaimer) } ?? false
            // The walk's reference goes; the cache's keeps the page until it lets go of it here — or
            // frees the slot too when no entry was made.
            putPage(pfn)
            if unmapped && removeUnusedFromSwapCache(pfn) {
                freed += 1
                countReclaim(stolen: 1, by: reclaimer)
            }
        }
        return freed
    }

    /// `smallPageMappings()` for reclaim, which may run inside a fault holding an mmap lock: address
    /// spaces whose lock is not free for reading now are left out (their pages then stay).
    func smallPageMappingsIfUnlocked() -> [PFN: [(AddressSpace, VirtualAddress)]] {
        var rmap: [PFN: [(AddressSpace, VirtualAddress)]] = [:]
        let frames = memory.frames
        for mm in addressSpaces {
            guard mm.mmapLock.tryReadLock() else { continue }
            defer { mm.mmapLock.unlock() }
            guard !mm.hasExited else { continue }
            for vma in mm.vmas.areas where !vma.isShared {
                mm.forEachPTETable(vma.start, vma.end, huge: { _, _, _, _ in .handled }) { table, from, to in
                    var va = from
                    while va < to {
                        let entry = table[va.tableIndex(.pte)]
                        if entry.isMapped && !entry.isSpecial && frames.kind(entry.pfn) == .anonymous && frames.mapcount(entry.pfn) > 1 {
                            rmap[entry.pfn, default: []].append((mm, va))
                        }
                        va = va + PageGeometry.pageSize
                    }
                    return true
                }
            }
        }
        return rmap
    }

    /// Unmaps one shared page into swap from every mapping in `mappings`; true when it went to the swap
    /// cache (it may still be mapped where a mapping changed meanwhile).
    private func swapOutEverywhere(_ pfn: PFN, _ mappings: [(AddressSpace, VirtualAddress)], by reclaimer: Reclaimer) -> Bool {
        let frames = memory.frames
        guard frames.kind(pfn) == .anonymous, !isInLargeFolio(pfn) else { return false }
        // Trylocks, in pid order, as migration: the caller may hold one of them.
        guard let locked = tryReadLockMappers(mappings.map(\.0)) else { return false }
        defer { unlockMappers(locked) }
        // Every mapping must be known, and nothing but the mappings, the cache and the walk's
        // reference may hold the page.
        let cached = frames.flags(pfn).contains(.swapCache)
        guard Int(frames.mapcount(pfn)) == mappings.count,
              frames.refcount(pfn) == frames.mapcount(pfn) + (cached ? 1 : 0) + 1 else { return false }
        // Referenced through any mapping: age it and keep it this time (Linux: `folio_referenced()`).
        var young = false
        for (mm, va) in mappings {
            _ = mm.exchangeMigrationEntry(va, huge: false) { e in
                guard e.isMapped, e.pfn == pfn, e.isAccessed else { return nil }
                young = true
                return e.makingOld()
            }
        }
        if young {
            for (mm, va) in mappings { flushTLB(mm, va, va + PageGeometry.pageSize) }
            return false
        }
        // add_to_swap(): one slot for every mapping, the page standing for it meanwhile.
        let slot: Int
        if cached, let existing = swapCacheSlot(of: pfn) {
            slot = existing
        } else {
            guard let fresh = swapDevice.allocate(uses: 0) else { return false }
            slot = fresh
            writeToSwap(pfn, slot)
            let added = addToSwapCache(pfn, slot: slot)
            precondition(added, "a new swap slot \(slot) had a cached page")
        }
        // try_to_unmap(): each PTE that still maps the page becomes the slot's swap entry.
        for (mm, va) in mappings {
            let page = va.alignedDown(PageGeometry.pageSize)
            mm.startInvalidatingSecondaryMMUs(page, page + PageGeometry.pageSize)
            let old = mm.exchangeMigrationEntry(va, huge: false) { e in
                guard e.isMapped, !e.isSpecial, e.pfn == pfn else { return nil }
                swapDevice.duplicate(slot)
                mm.removeMapping(pfn)
                return .swapEntry(slot: slot)
            }
            if old != nil {
                flushTLB(mm, page, page + PageGeometry.pageSize)
                putPage(pfn)
            }
            mm.endInvalidatingSecondaryMMUs(page, page + PageGeometry.pageSize)
        }
        return true
    }
}
