import Synchronization
import VMCore
import PhysicalMemory

/// Who reclaims, for the counters (Linux: `current_is_kswapd()` choosing `PGSTEAL_KSWAPD` or
/// `PGSTEAL_DIRECT` in `shrink_inactive_list()`).
public enum Reclaimer: Sendable {
    /// kswapd, woken by a watermark.
    case kswapd
    /// The allocating task, in direct reclaim.
    case direct
    /// A memory cgroup's reclaim (over `memory.max` or `memory.high`, `memory.reclaim`): counted in
    /// `pgscan_anon` and `pgsteal_anon` but in none of `/proc/vmstat`'s per-reclaimer counters, as
    /// Linux counts `PGSCAN_*`/`PGSTEAL_*` and `ALLOCSTALL` only `if (!cgroup_reclaim(sc))`
    /// (`shrink_inactive_list()`, `do_try_to_free_pages()`).
    case cgroup
}

/// Reclaim: free memory by swapping out anonymous pages that were not used recently, found on the
/// LRU lists (`LRU.swift`, `ShrinkLRU.swift`).
///
/// kswapd wakes when an allocation leaves free memory below the low watermark and reclaims, when
/// simulated time next moves, until it is above the high one; an allocation that finds nothing free
/// reclaims directly (Linux: `kswapd()`, `balance_pgdat()`, `__alloc_pages_direct_reclaim()`,
/// `try_to_free_pages()`).
public final class Kswapd: Sendable {
    private let pending = Atomic<Bool>(false)
    private let reclaimed = Atomic<Int>(0)
    /// Pages freed by reclaim, kswapd's and direct: `pgsteal_kswapd` + `pgsteal_direct`, plus the pages
    /// the deferred-split shrinker gave back (which Linux counts apart from pgsteal).
    public var pagesReclaimed: Int { reclaimed.load(ordering: .relaxed) }
    func count(_ pages: Int) { reclaimed.add(pages, ordering: .relaxed) }
    init() {}

    /// Linux: `wakeup_kswapd()`.
    func wake() { pending.store(true, ordering: .releasing) }

    /// Whether kswapd was woken and has not run yet.
    public var isWoken: Bool { pending.load(ordering: .acquiring) }

    /// Reclaims until free memory is above the high watermark, if woken (Linux: `balance_pgdat()`).
    func runIfWoken(_ kernel: Kernel) {
        guard pending.exchange(false, ordering: .acquiringAndReleasing) else { return }
        let high = kernel.memory.buddy.watermarks.high
        let free = kernel.memory.freePages
        if free < high { kernel.reclaim(pages: high - free, by: .kswapd) }
    }
}

extension Kernel {
    /// Wakes kswapd when free memory fell below the low watermark (Linux: the `wakeup_kswapd()` of
    /// the allocator's slow path; here checked after each counted allocation).
    @inline(__always) func checkWatermarks() {
        if !memory.hasFreePages(above: memory.buddy.watermarks.low - 1) { kswapd.wake() }
    }

    /// Reclaims up to `target` pages and returns how many were freed, counted as kswapd's or direct
    /// reclaim's (`pgscan_*`, `pgsteal_*`) as `reclaimer` says. First clean swap-cache pages nothing
    /// maps, then the shrinkers (the deferred-split queue), then the LRU lists at falling priorities:
    /// at priority p each list is scanned for its size >> p pages, in batches of 32
    /// (`SWAP_CLUSTER_MAX`), the inactive list reclaimed and the active one deactivated while the
    /// inactive list is low, until `target` pages are free (Linux: `shrink_node()` →
    /// `shrink_lruvec()`, `get_scan_count()` with anonymous pages only, `DEF_PRIORITY` 12). Without a
    /// free swap slot the anonymous lists are not scanned (Linux: `can_reclaim_anon_pages()`), nor
    /// those of a cgroup at its `memory.swap.max` or below one that is (`mayStillSwap`).
    /// - Precondition: no page-table lock is held (mmap locks for reading may be).
    @discardableResult
    public func reclaim(pages target: Int, by reclaimer: Reclaimer = .kswapd) -> Int {
        var work = ReclaimWork()
        return reclaim(pages: target, by: reclaimer, &work)
    }

    /// `reclaim(pages:by:)` adding the pages it freed and wrote to swap to `work`.
    @discardableResult
    func reclaim(pages target: Int, by reclaimer: Reclaimer, _ work: inout ReclaimWork) -> Int {
        guard target > 0 else { return 0 }
        let before = memory.freePages
        func freed() -> Int { memory.freePages - before }
        // Swap-cache pages nothing maps any more (Linux finds them on the inactive list, clean, and
        // `__remove_mapping()` frees them).
        let uncached = shrinkSwapCache()
        if uncached > 0 { countReclaim(scanned: uncached, stolen: uncached, by: reclaimer) }
        // The shrinkers next: split partially mapped THPs, freeing their unused pages (Linux:
        // `shrink_slab()` → `deferred_split_scan()`).
        _ = deferredSplitScan()
        // `memory.min` and `memory.low` (`MemoryProtection.swift`), looked at once some cgroup has one.
        var protection: ReclaimProtection? = memoryCgroups.anyProtection ? ReclaimProtection(target: nil) : nil
        var priority = Self.defaultPriority
        while true {
            while priority >= 0 && freed() < target && swapDevice.usedSlots < swapDevice.capacity {
                // Each memory cgroup's lists in turn (Linux: `shrink_node_memcgs()`): kswapd visits every
                // one at each priority, each for a batch at least; direct reclaim stops at the cgroup
                // that reaches the target, and the next direct reclaim starts after it (`partial`, the
                // shared `mem_cgroup_reclaim_cookie`).
                let inUse = lru.lruvecsInUse
                let cursor = lru.directReclaimCursor.load(ordering: .relaxed)
                let start = reclaimer == .direct ? (inUse.firstIndex { $0 > cursor } ?? 0) : 0
                for lruvec in inUse[start...] + inUse[..<start] {
                    if reclaimer == .direct && freed() >= target { break }
                    let memcg = memoryCgroups.cgroup(index: lruvec)
                    let verdict = protection?.verdict(for: memcg, in: memoryCgroups) ?? .scan
                    if verdict != .skip && mayStillSwap(memcg) {
                        shrinkLruvec(lruvec, priority: priority, by: reclaimer, verdict, &work.swappedOut) { freed() >= target }
                    }
                    if reclaimer == .direct { lru.directReclaimCursor.store(lruvec, ordering: .relaxed) }
                }
                priority -= 1
            }
            // Direct reclaim that freed nothing while it spared `memory.low`: once more without it,
            // another stall (`do_try_to_free_pages()` counts `ALLOCSTALL` at its `retry:`).
            guard reclaimer == .direct, protection?.shouldRetry(freedNothing: freed() <= 0) == true else { break }
            vmstat.count(.allocstallNormal)
            priority = Self.defaultPriority
        }
        let result = max(0, freed())
        kswapd.count(result)
        work.reclaimed &+= result
        return result
    }

    /// One pass over the lists of `lruvec` at `priority`: its inactive and active lists' sizes shifted
    /// right by `priority`, taken in batches of `SWAP_CLUSTER_MAX` — the first whatever `done()` says,
    /// the others until `done()` — the active list
    /// deactivated while the inactive one is low, and aged once more at the end even when nothing was
    /// taken from it (Linux: `shrink_lruvec()` with `get_scan_count()`'s `lruvec_size >> priority`).
    /// A cgroup with `memory.min` or `memory.low` has its lists' sizes scaled first (`verdict`).
    func shrinkLruvec(_ lruvec: Int, priority: Int, by reclaimer: Reclaimer, _ verdict: ReclaimProtection.Verdict = .scan,
                      _ swappedOut: inout Int, done: () -> Bool) {
        let sizes = lru.pages(of: lruvec)
        var inactive = ReclaimProtection.scanSize(sizes.inactive, verdict) >> priority
        var active = ReclaimProtection.scanSize(sizes.active, verdict) >> priority
        var first = true
        while (inactive > 0 || active > 0) && (first || !done()) {
            first = false
            if inactive > 0 {
                let batch = min(inactive, Self.swapClusterMax)
                inactive -= batch
                _ = shrinkInactiveList(batch, by: reclaimer, &swappedOut, lruvec: lruvec)
            }
            if active > 0 {
                let batch = min(active, Self.swapClusterMax)
                active -= batch
                if inactiveIsLow(lruvec: lruvec) { shrinkActiveList(batch, lruvec: lruvec) }
            }
        }
        if inactiveIsLow(lruvec: lruvec) { shrinkActiveList(Self.swapClusterMax, lruvec: lruvec) }
    }

    /// Linux: `DEF_PRIORITY`.
    static let defaultPriority = 12
    /// Linux: `SWAP_CLUSTER_MAX`.
    static let swapClusterMax = 32

    /// Direct reclaim by an allocation that found nothing free: reclaim a batch (Linux:
    /// `SWAP_CLUSTER_MAX`, 32 pages) and report whether anything was freed; one `allocstall_normal`
    /// (Linux: `try_to_free_pages()` → `do_try_to_free_pages()`).
    func directReclaim(pages: Int = 32, _ work: inout ReclaimWork) -> Bool {
        vmstat.count(.allocstallNormal)
        return reclaim(pages: pages, by: .direct, &work) > 0
    }

    /// Counts pages reclaim looked at and freed (Linux: `PGSCAN_KSWAPD`/`PGSCAN_DIRECT` with
    /// `PGSCAN_ANON`, `PGSTEAL_KSWAPD`/`PGSTEAL_DIRECT` with `PGSTEAL_ANON`; a cgroup's reclaim the
    /// `_ANON` ones only).
    @inline(__always) func countReclaim(scanned: Int = 0, stolen: Int = 0, by reclaimer: Reclaimer) {
        if scanned > 0 {
            switch reclaimer {
            case .kswapd: vmstat.count(.pgscanKswapd, scanned)
            case .direct: vmstat.count(.pgscanDirect, scanned)
            case .cgroup: break
            }
            vmstat.count(.pgscanAnon, scanned)
        }
        if stolen > 0 {
            switch reclaimer {
            case .kswapd: vmstat.count(.pgstealKswapd, stolen)
            case .direct: vmstat.count(.pgstealDirect, stolen)
            case .cgroup: break
            }
            vmstat.count(.pgstealAnon, stolen)
        }
    }

    /// Writes page `pfn`'s bytes to `slot` (data mode) and counts the write (Linux: `swap_writepage()`,
    /// `count_vm_events(PSWPOUT)` and the block layer's `PGPGOUT`, in KiB). Today's design writes
    /// nothing for a page that is all zeros: the slot goes in the device's zero map, counted as
    /// `swpout_zero` (Linux 6.12+: `is_folio_zero_filled()`, `swap_zeromap_folio_set()`). Returns
    /// whether the page went to the device (false for the zero map: nothing is in flight).
    @discardableResult
    func writeToSwap(_ pfn: PFN, _ slot: Int) -> Bool {
        swapDevice.map.withLock { writeToSwap(pfn, slot, &$0) }
    }

    /// `writeToSwap(_:_:)` with the swap device's lock held (`m` is what it guards): also the write-back
    /// of a dirty page leaving the swap cache (`removeUnusedFromSwapCache`).
    @discardableResult
    func writeToSwap(_ pfn: PFN, _ slot: Int, _ m: inout SwapDevice.Map) -> Bool {
        let zero = design.swapsZeroFilledPagesWithoutIO && memory.storage?.isZero(pfn) == true
        writeToSwap(pfn, slot, zeroFilled: zero, &m)
        return !zero
    }

    /// One page to `slot`: a bit in the zero map, or its bytes written (data mode) and counted.
    private func writeToSwap(_ pfn: PFN, _ slot: Int, zeroFilled: Bool, _ m: inout SwapDevice.Map) {
        if zeroFilled {
            swapDevice.writeZeroFilled(slot, &m)
        } else {
            swapDevice.write(slot, memory.storage.map { UnsafeRawBufferPointer($0.bytes(of: pfn)) }, &m)
        }
        countSwapOut(zeroFilled: zeroFilled)
    }

    /// Counts one page written to swap (Linux: `PSWPOUT` and the block layer's `PGPGOUT` in KiB), or
    /// one put in the zero map (`SWPOUT_ZERO`).
    private func countSwapOut(zeroFilled: Bool) {
        if zeroFilled {
            vmstat.count(.swpoutZero)
            return
        }
        vmstat.count(.pswpout)
        vmstat.count(.pgpgout, Int(PageGeometry.pageSize >> 10))
    }

    /// Writes the `count` pages of the folio at `head` to the slots from `first`: in today's design a
    /// folio that is all zeros goes to the zero map whole, any other is written whole, its zero pages
    /// too (Linux 6.12+: `swap_writepage()` tests the folio, not its pages). Returns whether it went
    /// to the device.
    @discardableResult
    func writeFolioToSwap(_ head: PFN, count: Int, first: Int) -> Bool {
        let zero = design.swapsZeroFilledPagesWithoutIO && memory.storage.map { s in (0..<count).allSatisfy { s.isZero(head + $0) } } == true
        for i in 0..<count {
            swapDevice.map.withLock { writeToSwap(head + i, first + i, zeroFilled: zero, &$0) }
        }
        return !zero
    }

    /// Reads `slot` into page `pfn` (data mode) and counts the read; a slot in the zero map fills
    /// zeros without a read and counts `swpin_zero` instead (Linux: `swap_read_folio()`,
    /// `swap_read_folio_zeromap()`). Returns whether the device was read (the fault waited for I/O).
    @discardableResult
    func readFromSwap(_ slot: Int, into pfn: PFN) -> Bool {
        if let storage = memory.storage, swapDevice.read(slot, into: storage.bytes(of: pfn)) {
            vmstat.count(.swpinZero)
            return false
        }
        countSwapIn(pages: 1)
        return true
    }

    /// Counts pages read from swap (Linux: `PSWPIN`, and the block layer's `PGPGIN` in KiB).
    func countSwapIn(pages: Int) {
        vmstat.count(.pswpin, pages)
        vmstat.count(.pgpgin, pages * Int(PageGeometry.pageSize >> 10))
    }

    /// Allocates a frame for a page table, reclaiming directly once when none is free (Linux:
    /// `pagetable_alloc()` with `GFP_PGTABLE_USER`, which may reclaim).
    func allocateTableFrame(_ work: inout ReclaimWork) -> PFN? {
        if let pfn = memory.allocateFolio(order: .base, kind: .pageTable, zeroed: false) { return pfn }
        kswapd.wake()
        guard directReclaim(&work) else { return nil }
        return memory.allocateFolio(order: .base, kind: .pageTable, zeroed: false)
    }

    /// Allocates a base page for an anonymous fault, reclaiming directly once when none is free
    /// (Linux: `__alloc_pages_slowpath()` → `__alloc_pages_direct_reclaim()`).
    /// The direct reclaim it does is added to `work`.
    func allocateAnonymousPage(zeroed: Bool = true, _ work: inout ReclaimWork) -> PFN? {
        if let pfn = memory.allocateFolio(order: .base, kind: .anonymous, zeroed: zeroed) { return pfn }
        kswapd.wake()
        guard directReclaim(&work) else { return nil }
        return memory.allocateFolio(order: .base, kind: .anonymous, zeroed: zeroed)
    }
}
