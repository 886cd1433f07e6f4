import Synchronization
import VMCore
import PhysicalMemory

/// Reclaim from the anonymous LRU lists (Linux: the LRU half of `mm/vmscan.c`).
///
/// ```
///            new folios (6.18)                      new folios (2.6.38)
///                  │                                       │
///                  ▼          shrink_active_list()         ▼
///  inactive: hot … cold ◄──── deactivate (young cleared) ── active: hot … cold
///                    │   ───── activate (referenced) ────►
///                    ▼
///        shrink_inactive_list(): unreferenced → swap (THP: split first, or whole on a clustered
///        device in 6.18); referenced → active or, once (6.18), kept with PG_referenced
/// ```
/// Isolation takes a folio off its list with a reference, under the LRU lock; all work on it (the
/// reverse map, young bits, swap-out, splits) happens off the lock, and it goes back (or is freed)
/// at the end, as in Linux.
extension Kernel {
    /// Reclaims from the inactive list's cold end up to `pages` pages' worth of folios, counting them
    /// as scanned; returns the pages freed (Linux: `shrink_inactive_list()` → `isolate_lru_folios()`,
    /// `shrink_folio_list()`, `move_folios_to_lru()`).
    func shrinkInactiveList(_ pages: Int, by reclaimer: Reclaimer) -> Int {
        var swappedOut = 0
        return shrinkInactiveList(pages, by: reclaimer, &swappedOut)
    }

    /// `shrinkInactiveList(_:by:)` on the lists of `lruvec` (a memory cgroup's index, 0 for the
    /// root's), adding the pages it wrote to swap to `swappedOut`.
    func shrinkInactiveList(_ pages: Int, by reclaimer: Reclaimer, _ swappedOut: inout Int, lruvec: Int = 0) -> Int {
        let (folios, scanned) = lru.isolateFromCold(.inactive, of: lruvec, pages: pages)
        countReclaim(scanned: scanned, by: reclaimer)
        var freed = 0
        for head in folios { freed += shrinkFolio(head, by: reclaimer, &swappedOut) }
        return freed
    }

    /// Moves up to `pages` pages' worth of folios from the active list's cold end to the inactive list,
    /// clearing their young bits: anonymous folios are deactivated whether referenced or not (Linux:
    /// `shrink_active_list()`, counted as `pgrefill` and `pgdeactivate`; only executable file folios
    /// stay active, and the model has none).
    func shrinkActiveList(_ pages: Int, lruvec: Int = 0) {
        let (folios, scanned) = lru.isolateFromCold(.active, of: lruvec, pages: pages)
        vmstat.count(.pgrefill, scanned)
        var deactivated = 0
        for head in folios {
            if folioMapcount(head) > 0, let (locked, mappings) = lockedAnonMappings(of: head) {
                _ = folioReferenced(mappings)
                unlockMappers(locked)
            }
            deactivated += memory.frames.order(head).pages
            lru.putBack(head, on: .inactive)
            putPage(head)
        }
        vmstat.count(.pgdeactivate, deactivated)
    }

    /// Whether the inactive anonymous list is small against the active one: inactive × ratio < active,
    /// the ratio being √(10 × GiB) of the basis (1 below 1 GiB) — the zone's size in 2.6.38, the lists'
    /// size today (Linux: `inactive_is_low()`; 2.6.38: `inactive_anon_is_low()` with
    /// `zone->inactive_ratio`), for the lists of `lruvec`.
    func inactiveIsLow(lruvec: Int = 0) -> Bool {
        let (inactive, active) = lru.pages(of: lruvec)
        let basis = anonLRURules.ratioFromZoneSize ? memory.totalPages : inactive + active
        let gb = basis >> (30 - Int(PageGeometry.pageShift))
        let ratio = gb > 0 ? Self.intSqrt(10 * gb) : 1
        return inactive * ratio < active
    }

    /// The integer square root, rounded down (Linux: `int_sqrt()`).
    static func intSqrt(_ x: Int) -> Int {
        guard x > 1 else { return x }
        var r = Int(Double(x).squareRoot())
        while r * r > x { r -= 1 }
        while (r + 1) * (r + 1) <= x { r += 1 }
        return r
    }

    /// What became of an isolated folio; the pages freed.
    private func shrinkFolio(_ head: PFN, by reclaimer: Reclaimer, _ swappedOut: inout Int) -> Int {
        let frames = memory.frames
        if folioMapcount(head) == 0 {
            // Nothing maps it: a clean swap-cache page goes (`__remove_mapping()`); anything else —
            // a page still pinned after munmap — stays until its holder lets go.
            if frames.flags(head).contains(.swapCache) && removeUnusedFromSwapCache(head, isolated: true) {
                lru.release(head)
                putPage(head)
                countReclaim(stolen: 1, by: reclaimer)
                return 1
            }
            return keep(head, on: .inactive)
        }
        // folio_check_references(): the mappings' young bits, cleared as they are read.
        guard let (locked, mappings) = lockedAnonMappings(of: head) else { return keep(head, on: .inactive) }
        let young = folioReferenced(mappings)
        let wasReferenced = frames.removeFlags(head, .referenced).contains(.referenced)
        if young > 0 {
            unlockMappers(locked)
            if anonLRURules.activateOnFirstReference || wasReferenced || young > 1 { return activate(head) }
            // Looked at once: kept inactive, marked; another reference activates it.
            frames.insertFlags(head, .referenced)
            return keep(head, on: .inactive)
        }
        if frames.order(head) != .base {
            unlockMappers(locked)
            return shrinkLargeFolio(head, mappings, by: reclaimer, &swappedOut)
        }
        let result = unmapToSwap(head, mappings, &swappedOut)
        unlockMappers(locked)
        switch result {
        case .pinned, .swapFull:
            // Linux: `try_to_unmap()` or `folio_alloc_swap()` failed → `activate_locked`.
            return activate(head)
        case .partly:
            return keep(head, on: .inactive)
        case .unmapped:
            guard removeUnusedFromSwapCache(head, isolated: true) else { return keep(head, on: .inactive) }
            lru.release(head)
            putPage(head)
            countReclaim(stolen: 1, by: reclaimer)
            return 1
        }
    }

    /// An unreferenced large folio: today's design writes a THP that one PMD maps whole to a device with
    /// a free cluster; otherwise the folio is split (2.6.38: `add_to_swap()` → `split_huge_page()`;
    /// 6.18: `folio_alloc_swap()` fails → `split_folio_to_list()`, `thp_swpout_fallback`) and its pages
    /// go back to the inactive list's cold end, where the same reclaim meets them next.
    private func shrinkLargeFolio(_ head: PFN, _ mappings: [AnonMapping], by reclaimer: Reclaimer,
                                  _ swappedOut: inout Int) -> Int {
        let frames = memory.frames
        let order = frames.order(head)
        if !splitsFoliosSeparately {
            splitHugePage(head)
            return keep(head, on: .inactive, cold: true)
        }
        if order == PageGeometry.pmdOrder, mappings.count == 1, let m = mappings.first, m.huge,
           swapDevice.hasClusters, swapOutWhole(head, m) {
            swappedOut &+= order.pages
            lru.release(head)
            putPage(head)
            countReclaim(stolen: order.pages, by: reclaimer)
            return order.pages
        }
        if order == PageGeometry.pmdOrder {
            vmstat.count(.thpSwpoutFallback)
            mthpStats.count(order.rawValue, .swpoutFallback)
        }
        switch splitFolio(head) {
        case .split: return keep(head, on: .inactive, cold: true)
        case .pinned: return activate(head)
        case .busy, .notSplittable: return keep(head, on: .inactive)
        }
    }

    /// Writes the THP that PMD mapping `m` maps whole to swap, if it still does and nothing else holds
    /// it; the PMD's reference is put.
    private func swapOutWhole(_ head: PFN, _ m: AnonMapping) -> Bool {
        guard let locked = tryReadLockMappers([m.mm]) else { return false }
        defer { unlockMappers(locked) }
        let mm = m.mm
        guard let (pmd, index) = mm.walk(m.address, to: .pmd, allocate: false) else { return false }
        let end = m.address + PageGeometry.pmdSize
        mm.startInvalidatingSecondaryMMUs(m.address, end)
        defer { mm.endInvalidatingSecondaryMMUs(m.address, end) }
        let lock = mm.pmdLock(pmd)
        lock.spinLock()
        let entry = pmd[index]
        guard entry.isHuge, entry.isPresent, !entry.isSplitting, !entry.isSpecial, entry.pfn == head,
              mm.swapOutHugePMD(pmd, index, m.address, entry, references: 2) else {
            lock.spinUnlock()
            return false
        }
        lock.spinUnlock()
        flushTLB(mm, m.address, end)
        putPage(head)
        return true
    }

    /// Puts an isolated folio back on `list` and drops the isolation's reference; nothing freed.
    private func keep(_ head: PFN, on list: AnonLRU, cold: Bool = false) -> Int {
        lru.putBack(head, on: list, cold: cold)
        putPage(head)
        return 0
    }

    /// Puts an isolated folio on the active list (Linux: `activate_locked`, counted as `pgactivate`);
    /// a page kept in the swap cache gives its slot back there when swap is short (`folio_free_swap()`
    /// when `mem_cgroup_swap_full()`).
    private func activate(_ head: PFN) -> Int {
        vmstat.count(.pgactivate, memory.frames.order(head).pages)
        if memory.frames.flags(head).contains(.swapCache) && swapIsShort(for: head) { freeSwap(head) }
        return keep(head, on: .active)
    }
}
