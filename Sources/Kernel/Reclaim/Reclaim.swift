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
}

/// Reclaim: free memory by swapping out anonymous pages that were not used recently.
///
/// The model keeps no LRU lists; like Linux's multi-generational LRU, which finds young pages by
/// walking page tables (`walk_mm()`), it walks the processes' page tables, and gives each page a
/// second chance: a young PTE (or huge PMD) loses its accessed bit, an old one is reclaimed — a huge
/// page is split first (2.6.38; today's design writes it whole to a device with clusters), a small
/// page nobody pins goes to swap, everywhere it is mapped when fork shared it. A cursor remembers
/// where the last walk stopped, so successive reclaims go round memory like a clock.
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
    /// The clock hand: the pid and address where the last walk stopped.
    let hand = SpinLocked<(pid: Int, address: VirtualAddress)>((0, VirtualAddress(0)))
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
        if memory.freePages < memory.buddy.watermarks.low { kswapd.wake() }
    }

    /// Reclaims up to `target` pages by walking page tables from the clock hand, at most twice round
    /// (the first pass may only age young pages); returns how many pages were freed. Counted as
    /// kswapd's or direct reclaim's (`pgscan_*`, `pgsteal_*`) as `reclaimer` says (Linux:
    /// `shrink_node()`).
    /// - Precondition: no page-table lock is held (mmap locks for reading may be).
    @discardableResult
    public func reclaim(pages target: Int, by reclaimer: Reclaimer = .kswapd) -> Int {
        guard target > 0 else { return 0 }
        let before = memory.freePages
        // Swap-cache pages nothing maps any more are on no page table: free them first (Linux finds
        // them on the inactive list, clean, and `__remove_mapping()` frees them).
        let uncached = shrinkSwapCache()
        if uncached > 0 { countReclaim(scanned: uncached, stolen: uncached, by: reclaimer) }
        // The shrinkers next: split partially mapped THPs, freeing their unused pages (Linux:
        // `shrink_slab()` → `deferred_split_scan()`).
        if deferredSplitScan() + uncached >= target {
            kswapd.count(memory.freePages - before)
            return memory.freePages - before
        }
        let spaces = addressSpaces.filter { !$0.hasExited }
        guard !spaces.isEmpty else { return 0 }
        var (pid, address) = kswapd.hand.withLock { $0 }
        let start = spaces.firstIndex { $0.pid >= pid } ?? 0
        if start < spaces.count && spaces[start].pid != pid { address = VirtualAddress(0) }
        // Two rounds over every mm: the first ages, the second finds what the first made old.
        for step in 0..<(2 * spaces.count + 1) {
            let mm = spaces[(start + step) % spaces.count]
            let from = step == 0 ? address : VirtualAddress(0)
            var shared: [PFN] = []
            var stoppedAt = mm.reclaimOldPages(from: from, by: reclaimer, shared: &shared,
                                               until: { self.memory.freePages - before >= target })
            if !shared.isEmpty {
                reclaimSharedPages(shared, by: reclaimer)
                if stoppedAt == nil && memory.freePages - before >= target { stoppedAt = VirtualAddress(0) }
            }
            if let stoppedAt {
                kswapd.hand.withLock { $0 = (mm.pid, stoppedAt) }
                kswapd.count(max(0, memory.freePages - before))
                return memory.freePages - before
            }
        }
        pid = 0
        kswapd.hand.withLock { $0 = (pid, VirtualAddress(0)) }
        kswapd.count(max(0, memory.freePages - before))
        return max(0, memory.freePages - before)
    }

    /// Direct reclaim by an allocation that found nothing free: reclaim a batch (Linux:
    /// `SWAP_CLUSTER_MAX`, 32 pages) and report whether anything was freed; one `allocstall_normal`
    /// (Linux: `try_to_free_pages()` → `do_try_to_free_pages()`).
    func directReclaim(pages: Int = 32) -> Bool {
        vmstat.count(.allocstallNormal)
        return reclaim(pages: pages, by: .direct) > 0
    }

    /// Counts pages reclaim looked at and freed (Linux: `PGSCAN_KSWAPD`/`PGSCAN_DIRECT` with
    /// `PGSCAN_ANON`, `PGSTEAL_KSWAPD`/`PGSTEAL_DIRECT` with `PGSTEAL_ANON`).
    @inline(__always) func countReclaim(scanned: Int = 0, stolen: Int = 0, by reclaimer: Reclaimer) {
        if scanned > 0 {
            vmstat.count(reclaimer == .kswapd ? .pgscanKswapd : .pgscanDirect, scanned)
            vmstat.count(.pgscanAnon, scanned)
        }
        if stolen > 0 {
            vmstat.count(reclaimer == .kswapd ? .pgstealKswapd : .pgstealDirect, stolen)
            vmstat.count(.pgstealAnon, stolen)
        }
    }

    /// Writes page `pfn`'s bytes to `slot` (data mode) and counts the write (Linux: `swap_writepage()`,
    /// `count_vm_events(PSWPOUT)` and the block layer's `PGPGOUT`, in KiB).
    func writeToSwap(_ pfn: PFN, _ slot: Int) {
        if let storage = memory.storage { swapDevice.write(slot, UnsafeRawBufferPointer(storage.bytes(of: pfn))) }
        vmstat.count(.pswpout)
        vmstat.count(.pgpgout, Int(PageGeometry.pageSize >> 10))
    }

    /// Counts pages read from swap (Linux: `PSWPIN`, and the block layer's `PGPGIN` in KiB).
    func countSwapIn(pages: Int) {
        vmstat.count(.pswpin, pages)
        vmstat.count(.pgpgin, pages * Int(PageGeometry.pageSize >> 10))
    }

    /// Allocates a frame for a page table, reclaiming directly once when none is free (Linux:
    /// `pagetable_alloc()` with `GFP_PGTABLE_USER`, which may reclaim).
    func allocateTableFrame() -> PFN? {
        if let pfn = memory.allocateFolio(order: .base, kind: .pageTable, zeroed: false) { return pfn }
        kswapd.wake()
        guard directReclaim() else { return nil }
        return memory.allocateFolio(order: .base, kind: .pageTable, zeroed: false)
    }

    /// Allocates a base page for an anonymous fault, reclaiming directly once when none is free
    /// (Linux: `__alloc_pages_slowpath()` → `__alloc_pages_direct_reclaim()`).
    func allocateAnonymousPage(zeroed: Bool = true) -> PFN? {
        if let pfn = memory.allocateFolio(order: .base, kind: .anonymous, zeroed: zeroed) { return pfn }
        kswapd.wake()
        guard directReclaim() else { return nil }
        return memory.allocateFolio(order: .base, kind: .anonymous, zeroed: zeroed)
    }
}

extension AddressSpace {
    /// One step of the reclaim walk over this mm from `start`: young entries are aged, old huge pages
    /// written whole or split, old exclusive small pages swapped out, and old pages other processes
    /// map too collected in `shared` (with a reference each); stops (returning the address reached)
    /// once `enough()` holds, or returns nil at the end of the mm.
    func reclaimOldPages(from start: VirtualAddress, by reclaimer: Reclaimer, shared: inout [PFN],
                         until enough: () -> Bool) -> VirtualAddress? {
        // A trylock, as MGLRU's walk: the allocating thread may hold this mm's lock for writing (fork).
        guard mmapLock.tryReadLock() else { return nil }
        defer { mmapLock.unlock() }
        return { () -> VirtualAddress? in
            guard !hasExited else { return nil }
            for vma in vmas.areas where vma.end > start && !vma.isShared {
                let from = max(vma.start, start)
                var stoppedAt: VirtualAddress?
                _ = invalidatingSecondaryMMUs(from, vma.end) {
                    forEachPTETable(from, vma.end, huge: { pmd, index, haddr, whole in
                        let lock = pmdLock(pmd)
                        lock.spinLock()
                        let entry = pmd[index]
                        if entry.isHuge && !entry.isSplitting && !entry.isSpecial && entry.isAccessed {
                            pmd.set(index, entry.makingOld())
                            lock.spinUnlock()
                            return .handled
                        }
                        if !kernel.design.splitPMDSplitsPage && entry.isHuge && !entry.isSplitting && !entry.isSpecial
                            && whole && swapOutHugePMD(pmd, index, haddr, entry, reclaimer: reclaimer) {
                            lock.spinUnlock()
                            kernel.flushTLB(self, haddr, haddr + PageGeometry.pmdSize)
                            kernel.putPage(entry.pfn)
                            if enough() && stoppedAt == nil { stoppedAt = haddr + PageGeometry.pmdSize }
                            return .handled
                        }
                        if !kernel.design.splitPMDSplitsPage && entry.isHuge && !entry.isSplitting && !entry.isSpecial {
                            // Today: split the folio, then swap its pages out one by one.
                            return swapOutFallback(pmd, index, entry, lock)
                        }
                        lock.spinUnlock()
                        return entry.isSpecial ? .handled : .split
                    }) { table, lo, hi in
                        // A THP written whole just now was enough.
                        if stoppedAt != nil { return false }
                        splitLargeFolios(table, lo, hi, onlyOld: true)
                        if let reached = swapOut(table, lo, hi, reclaimer: reclaimer, shared: &shared, until: enough) {
                            stoppedAt = reached
                            return false
                        }
                        return true
                    }
                }
                kernel.flushTLB(self, from, vma.end)
                if let stoppedAt { return stoppedAt }
            }
            return nil
        }()
    }
}
