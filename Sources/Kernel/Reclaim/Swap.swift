import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import VMCore
import PhysicalMemory

/// Swap-out and swap-in of anonymous pages.
///
/// Swap-out (MADV_PAGEOUT and reclaim) writes an unpinned anonymous page to a swap slot and replaces
/// its PTEs by swap entries; reclaim frees the page, MADV_PAGEOUT leaves it in the swap cache until
/// reclaim does (the write is asynchronous: `Kernel.keepWrittenInSwapCache`). MADV_PAGEOUT takes pages only one process maps;
/// reclaim (`ShrinkLRU.swift`) also takes pages shared after fork, unmapping every mapping. In the
/// 2010 design a huge page cannot go to swap whole, so the range is split first (2.6.38:
/// `split_huge_page()` from `add_to_swap()`). Today's kernel writes a THP whole (`thp_swpout`) to a
/// device with free 2 MiB clusters (`SwapConfiguration.clusters`); without them it falls back, as a
/// swap file does on this machine (`thp_swpout_fallback`), and splits the folio first (Linux 6.18:
/// `shrink_folio_list()` → `folio_alloc_swap()` fails → `split_folio_to_list()`).
/// A fault on a swap entry maps the slot's page from the swap cache or reads it into a new one (Linux:
/// `do_swap_page()`).
extension AddressSpace {
    /// MADV_PAGEOUT over `[start, end)`: split huge pages, then swap out every page only this PTE maps
    /// and nobody pins; pages mapped elsewhere too (after fork) and shared memory stay (Linux:
    /// `madvise_pageout()` → `madvise_cold_or_pageout_pte_range()` → `reclaim_pages()`).
    /// - Precondition: no lock of this mm is held.
    func madvisePageout(_ start: VirtualAddress, _ end: VirtualAddress) {
        var record = TableWalkRecord()
        madvisePageout(start, end, recording: &record)
    }

    /// `madvisePageout`, adding to `record` each PTE table it locked and the pages it swapped out
    /// there, each huge PMD swapped out whole or split, and the folios freed (for simulated time).
    func madvisePageout(_ start: VirtualAddress, _ end: VirtualAddress, recording record: inout TableWalkRecord) {
        mmapLock.withReadLock {
            for i in vmas.indices(intersecting: start, end) where !vmas[i].isShared {
                let vma = vmas[i]
                let from = max(vma.start, start), to = min(vma.end, end)
                _ = invalidatingSecondaryMMUs(from, to) {
                    forEachPTETable(from, to, huge: { pmd, index, haddr, whole in
                        // The huge zero page has nothing to swap; a huge page is split first.
                        if pmd[index].isSpecial { return .handled }
                        guard kernel.splitsFoliosSeparately, let (entry, lock) = lockHugePMD(pmd, index) else {
                            record.pmdSplits.append(haddr.rawValue)
                            return .split
                        }
                        if whole && !entry.isSpecial && swapOutHugePMD(pmd, index, haddr, entry) {
                            lock.spinUnlock()
                            kernel.flushTLB(self, haddr, haddr + PageGeometry.pmdSize)
                            record.hugePMDs.append(haddr.rawValue)
                            record.pagesSwappedOut += PageGeometry.pmdOrder.pages
                            record.freed = record.freed + kernel.putPage(entry.pfn)
                            return .handled
                        }
                        return swapOutFallback(pmd, index, entry, lock)
                    }) { table, lo, hi in
                        splitLargeFolios(table, lo, hi)
                        let (pages, freed) = swapOut(table, lo, hi)
                        record.pteTables.append(ZapRecord.Table(range: lo.rawValue >> 21, entries: pages))
                        record.pagesSwappedOut += pages
                        record.freed = record.freed + freed
                        return true
                    }
                }
                kernel.flushTLB(self, from, to)
            }
        }
    }

    /// A PMD-mapped THP that the swap device cannot take whole (today's design): count the fallback,
    /// split the folio (every mapping of it), and go on with the PTEs; a pinned or busy folio stays huge
    /// and is skipped (Linux 6.18: `shrink_folio_list()` → `folio_alloc_swap()` fails →
    /// `split_folio_to_list()`, `THP_SWPOUT_FALLBACK`).
    /// - Precondition: `lock` (the PMD lock) is held and `entry` is the present huge PMD; it is released.
    func swapOutFallback(_ pmd: PageTable, _ index: Int, _ entry: PageTableEntry,
                         _ lock: UnsafeMutablePointer<Atomic<UInt32>>) -> HugePMDAction {
        kernel.getPage(entry.pfn)
        lock.spinUnlock()
        kernel.vmstat.count(.thpSwpoutFallback)
        kernel.mthpStats.count(PageGeometry.pmdOrder.rawValue, .swpoutFallback)
        _ = kernel.splitFolio(entry.pfn)
        kernel.putPage(entry.pfn)
        return pmd[index].isHuge ? .handled : .retry
    }

    /// Splits the large folios (today's design) that PTEs of `table` map in `[from, to)`, so that their
    /// pages can go to swap one by one; a pinned folio stays whole, and its pages in memory (Linux:
    /// the `split_folio()` of `madvise_cold_or_pageout_pte_range()`).
    /// - Precondition: the mmap lock is held for reading; no page-table lock is.
    func splitLargeFolios(_ table: PageTable, _ from: VirtualAddress, _ to: VirtualAddress) {
        guard kernel.splitsFoliosSeparately else { return }
        let frames = kernel.memory.frames
        let lock = kernel.splitLock(table)
        var heads: [PFN] = []
        lock.spinLock()
        var va = from
        while va < to {
            let entry = table[va.tableIndex(.pte)]
            if entry.isMapped && !entry.isSpecial
                && frames.kind(entry.pfn) == .anonymous && kernel.isInLargeFolio(entry.pfn) {
                let head = frames.head(of: entry.pfn)
                if heads.last != head && !heads.contains(head) {
                    kernel.getPage(head)
                    heads.append(head)
                }
            }
            va = va + PageGeometry.pageSize
        }
        lock.spinUnlock()
        for head in heads {
            _ = kernel.splitFolio(head)
            kernel.putPage(head)
        }
    }

    /// MADV_PAGEOUT's swap-out of the pages the PTEs of `table` map in `[from, to)` that only this PTE
    /// maps and nobody pins, ignoring young bits; stops when swap is full. A page already in the swap
    /// cache is not written again unless dirty: its PTE becomes the entry of the slot it stands for. The pages are
    /// not isolated first, as Linux's `reclaim_pages()` does: a freed page leaves its LRU list in the
    /// free path, and a page reclaim has isolated has a reference that makes it look pinned here
    /// (Linux: `madvise_cold_or_pageout_pte_range()` → `reclaim_pages()` → `shrink_folio_list()` with
    /// `ignore_references`). A page written now stays in the swap cache, unmapped
    /// (`Kernel.keepWrittenInSwapCache`); a clean cached one is freed.
    /// Returns the pages swapped out and the folios freed.
    @discardableResult
    func swapOut(_ table: PageTable, _ from: VirtualAddress, _ to: VirtualAddress) -> (pages: Int, freed: FolioRelease) {
        let frames = kernel.memory.frames
        let lock = kernel.splitLock(table)
        lock.spinLock()
        defer { lock.spinUnlock() }
        var unmapped: [(pfn: PFN, slot: Int, write: Bool, cached: Bool)] = []
        var va = from
        scan: while va < to {
            defer { va = va + PageGeometry.pageSize }
            let index = va.tableIndex(.pte)
            let entry = table[index]
            guard entry.isMapped, !entry.isSpecial else { continue }
            let pfn = entry.pfn
            let flags = frames.flags(pfn)
            guard frames.kind(pfn) == .anonymous, flags.isDisjoint(with: [.head, .tail]) else { continue }
            let cached = flags.contains(.swapCache)
            let mapcount = frames.mapcount(pfn)
            // Any reference beyond the mappings and the swap cache's is a pin: leave the page.
            guard frames.refcount(pfn) == mapcount + (cached ? 1 : 0) else { continue }
            // MADV_PAGEOUT leaves pages other processes map (`folio_maybe_mapped_shared()`).
            guard mapcount == 1 else { continue }
            if cached, let existing = kernel.swapCacheSlot(of: pfn) {
                // Written again only if dirty: written through a writable mapping since it was cached.
                kernel.swapDevice.duplicate(existing)
                unmapped.append((pfn, existing, entry.isDirty || flags.contains(.dirty), true))
            } else {
                guard let slot = kernel.allocateSwap(uses: 1) else { break scan }
                // The page's cgroup at its `memory.swap.max`: the page stays (`folio_alloc_swap()`).
                guard kernel.swapDevice.charge(slot, count: 1, to: kernel.memoryCgroups.owner(of: pfn)) else {
                    _ = kernel.swapDevice.release(slot)
                    continue
                }
                unmapped.append((pfn, slot, true, cached))
            }
            table.set(index, .swapEntry(slot: unmapped.last!.slot, exclusive: kernel.marksSwapEntriesExclusive(pfn)))
        }
        guard !unmapped.isEmpty else { return (0, FolioRelease()) }
        // Unmap, flush, then copy (Linux: `try_to_unmap()` before `pageout()`): a store through an
        // old entry still in flight on another CPU ends before the flush does, and lands in the copy.
        // A fault on a new swap entry waits for this PTE lock, so it reads a slot only once the bytes
        // are in.
        kernel.flushTLB(self, from, to)
        var freed = FolioRelease()
        for page in unmapped {
            removeMapping(page.pfn)
            frames.removeFlags(page.pfn, page.write ? .dirty : [])
            if page.write && kernel.writeToSwap(page.pfn, page.slot) {
                // The write goes to the device asynchronously: the page stays in the swap cache, clean
                // and unmapped, at the inactive list's cold end, until reclaim frees it or a fault maps
                // it again (`keepWrittenInSwapCache`).
                // Its exclusivity now lives in the swap entry (`pte_swp_exclusive()`), as when
                // `try_to_unmap_one()` clears PageAnonExclusive.
                frames.removeFlags(page.pfn, .anonExclusive)
                if !page.cached { _ = kernel.addToSwapCache(page.pfn, slot: page.slot) }
                kernel.keepWrittenInSwapCache(page.pfn)
                freed = freed + kernel.putPage(page.pfn)
            } else {
                // Clean and cached already, or all zeros (the zero map: nothing in flight): it goes
                // now (`__remove_mapping()`). A page not cached yet has no cache reference to drop.
                freed = freed + kernel.putPage(page.pfn)
                if page.cached { kernel.removeUnusedFromSwapCache(page.pfn) }
            }
        }
        return (unmapped.count, freed)
    }

    /// Writes a whole PMD-mapped THP to 512 contiguous swap slots and replaces the PMD by a PTE table
    /// of their swap entries, freeing the folio unsplit; false (nothing done) when the folio is mapped
    /// elsewhere too, pinned, or the device has no free cluster — the caller then falls back to a split
    /// (Linux 6.18: `shrink_folio_list()` → `folio_alloc_swap()` of an order-9 folio, counted as
    /// `thp_swpout`; `try_to_unmap()` with `TTU_SPLIT_HUGE_PMD` turns the PMD into PTEs, which become
    /// swap entries `folio->swap + i`).
    ///
    /// ```
    ///  PMD ──► folio (512 pages)   →   PMD ──► deposited table ──► 512 swap entries: slots s … s+511
    /// ```
    /// - Precondition: the PMD lock is held; `entry` is `pmd[index]`, a present, non-special huge PMD
    ///   not being split; `references` are the folio's expected references (the PMD's, and a
    ///   reclaimer's that isolated it). On true the caller unlocks, flushes the range and puts
    ///   `entry.pfn` (the PMD's reference), which frees the folio unless the reclaimer holds it.
    func swapOutHugePMD(_ pmd: PageTable, _ index: Int, _ haddr: VirtualAddress, _ entry: PageTableEntry,
                        references: Int32 = 1) -> Bool {
        let frames = kernel.memory.frames
        let head = entry.pfn
        let pages = PageGeometry.pmdOrder.pages
        guard kernel.swapDevice.hasClusters, kernel.swapsOutTHPWhole,
              frames.kind(head) == .anonymous, frames.order(head) == PageGeometry.pmdOrder,
              frames.refcount(head) == references, kernel.entireMapcount(head) == 1,
              frames.folioField(head, .pagesMapped) == FrameTable.entirelyMapped,
              let first = kernel.allocateSwap(count: pages, uses: 1) else { return false }
        guard kernel.swapDevice.charge(first, count: pages, to: kernel.memoryCgroups.owner(of: head)) else {
            for slot in first..<(first + pages) { _ = kernel.swapDevice.release(slot) }
            return false
        }
        // Write-protect and flush before copying: a store in flight through the huge PMD ends before
        // the flush does, and a later one faults and waits for the PMD lock. The swap entries go in
        // only after the copy, so no fault on them can read a slot before its bytes are written.
        pmd.set(index, entry.without(PageTableEntry.writableBit))
        kernel.flushTLB(self, haddr, haddr + PageGeometry.pmdSize)
        kernel.writeFolioToSwap(head, count: pages, first: first)
        let table = withdrawTable(from: pmd)
        let exclusive = kernel.marksSwapEntriesExclusive(head)
        for i in 0..<pages { table.set(i, .swapEntry(slot: first + i, exclusive: exclusive)) }
        pmd.set(index, PageTableEntry(pfn: table.pfn, bits: tablePointerBits))
        unmapHugePage(head, at: haddr)
        kernel.vmstat.count(.thpSplitPMD)
        kernel.vmstat.count(.thpSwpout)
        kernel.mthpStats.count(PageGeometry.pmdOrder.rawValue, .swpout)
        return true
    }

    /// A fault on a swap entry: map the slot's page — the one in the swap cache if it is there (another
    /// process brought it in, or it never left), otherwise a new page read from the slot into the cache.
    /// While other entries still name the slot the page is mapped read-only, shared. With the last
    /// entry the page keeps the slot in the cache unless swap is short or the fault writes to a page
    /// nothing else holds (`SwapCache.swift`); a page nobody else has is mapped exclusive, and
    /// writable as the design says (Linux: `do_swap_page()`, counted as `pgmajfault`, `pswpin` and
    /// `pgpgin` when read from the device).
    func swapIn(_ vma: VMA, _ va: VirtualAddress, _ table: PageTable, _ index: Int, _ entry: PageTableEntry,
                _ fault: inout FaultContext) -> FaultOutcome {
        let access = fault.access
        let frames = kernel.memory.frames
        let slot = entry.swapSlot
        var page = kernel.lookupSwapCache(slot)
        var fresh: PFN?
        if let cached = page {
            noteSwapCacheHit(cached, at: va, vma)
        } else {
            guard let pfn = kernel.allocateAnonymousPage(zeroed: false, &fault.reclaim) else { return .outOfMemory }
            kernel.countAllocation(pages: 1)
            guard chargeSwapIn(pfn, slot: slot) else {
                kernel.putPage(pfn)
                return .outOfMemory
            }
            frames.insertFlags(pfn, .swapBacked)
            fresh = pfn
            // The slots around it come into the cache too (`SwapReadahead.swift`).
            if kernel.readsAheadByVMA {
                readAheadByVMA(at: va, vma, table, &fault)
            } else {
                let window = kernel.readaheadWindow(around: slot)
                if !window.isEmpty { readAhead(window, around: slot, at: va, vma, &fault) }
            }
        }
        let lock = kernel.splitLock(table)
        lock.spinLock()
        guard table[index] == entry else {
            // Another thread swapped it in (or the range changed) first.
            lock.spinUnlock()
            kernel.putPage(page ?? fresh!)
            if fresh != nil { fault.gaveBack(pages: 1) }
            return .handled
        }
        if let pfn = fresh {
            // The entry holds the slot, so it cannot be freed while the lock is held.
            if kernel.readFromSwap(slot, into: pfn) { fault.pagesSwappedIn &+= 1 }
            kernel.vmstat.count(.pgmajfault)
            page = pfn
        }
        let pfn = page!
        let (left, cachedOnly) = kernel.swapDevice.release(slot) { m in
            // A page read now stands for the slot (unless another process's swap-in cached its own
            // copy meanwhile; then this one stays private). Under the release's lock: otherwise the
            // others' last release could free the slot first.
            if fresh != nil { _ = kernel.addToSwapCache(pfn, slot: slot, &m) }
        }
        let write = access == .write
        if let only = cachedOnly {
            // No entry names the slot any more: keep the cached page for it, or free it now (Linux
            // 6.18: `should_try_to_free_swap()` — swap short, or a write with no other reference than
            // the fault's and the cache's; 2.6.38: `reuse_swap_page()` for a write mapped nowhere else,
            // `vm_swap_full()`).
            let free: Bool
            if only != pfn {
                free = frames.mapcount(only) == 0 || kernel.swapIsShort(for: only)
            } else {
                switch kernel.swapCacheRules {
                case .reuseSwapPage: free = kernel.swapIsShort(for: pfn) || (write && frames.mapcount(pfn) == 0)
                case .anonExclusive: free = kernel.swapIsShort(for: pfn) || (write && frames.refcount(pfn) == 2)
                }
            }
            if free { kernel.freeSwap(only) }
        }
        // Exclusive: today, the entry says so (no fork shared it since the page went to swap), or the
        // page left the cache and only the fault holds it (6.18: `pte_swp_exclusive()` or
        // `folio_ref_count() == 1`); in 2010, no entry names the slot any more and nobody else maps or
        // holds the page (the fault's reference and the cache's, if it stays cached).
        let cached = frames.flags(pfn).contains(.swapCache)
        let exclusive = switch kernel.swapCacheRules {
        case .anonExclusive: entry.isSwapExclusive || (!cached && frames.refcount(pfn) == 1)
        case .reuseSwapPage: left == 0 && frames.mapcount(pfn) == 0 && frames.refcount(pfn) == 1 + (cached ? 1 : 0)
        }
        var bits = PageTableEntry.userBits(vma.flags.protection) | PageTableEntry.accessedBit
        // Today's design maps an exclusive page writable even for a read, cached or not; the 2010
        // design only a page out of the cache, for a write.
        let writable = switch kernel.swapCacheRules {
        case .anonExclusive: exclusive
        case .reuseSwapPage: exclusive && !cached && write
        }
        if writable || (exclusive && !cached) { frames.insertFlags(pfn, .anonExclusive) }
        if writable && vma.flags.contains(.write) {
            bits |= PageTableEntry.writableBit
            if write { bits |= PageTableEntry.dirtyBit }
        }
        // A cached page mapped for the first time (read ahead) learns where it is mapped.
        let firstMapping = fresh == nil && frames.mapcount(pfn) == 0
        mapPage(pfn)
        // A page read just now is new; one from the swap cache is on a list already.
        if fresh != nil {
            addNewAnonFolioToLRU(pfn, vma, at: va)
        } else if firstMapping {
            kernel.lru.setOrigin(pfn, family: anonFamily, index: vma.pageIndex(of: va))
        }
        table.set(index, PageTableEntry(pfn: pfn, bits: bits))
        lock.spinUnlock()
        fault.mapped = .base
        fault.resolution = .mapped
        return .handled
    }

    /// The bytes of the page at `va` if it is swapped out, without swapping it in (as `/proc/PID/mem`
    /// would see them after its fault); nil if it is not in swap (or in metadata mode).
    public func swappedOutBytes(at va: VirtualAddress) -> [UInt8]? {
        mmapLock.withReadLock {
            guard let (pmd, index) = walk(va, to: .pmd, allocate: false), !pmd[index].isNone, !pmd[index].isHuge else { return nil }
            let entry = kernel.table(at: pmd[index])[va.tableIndex(.pte)]
            guard entry.isSwapEntry else { return nil }
            guard kernel.memory.storage != nil else { return [UInt8](repeating: 0, count: Int(PageGeometry.pageSize)) }
            return kernel.swapDevice.load(entry.swapSlot)
        }
    }

    /// Bytes of `vma` that are in swap (smaps `Swap`; Linux: `smaps_pte_entry()` for swap entries).
    func swappedBytes(in vma: VMA) -> UInt64 {
        var bytes: UInt64 = 0
        forEachPTETable(vma.start, vma.end, huge: { _, _, _, _ in .handled }) { table, from, to in
            var va = from
            while va < to {
                if table[va.tableIndex(.pte)].isSwapEntry { bytes += PageGeometry.pageSize }
                va = va + PageGeometry.pageSize
            }
            return true
        }
        return bytes
    }
}

extension Kernel {
    /// Whether a PMD-mapped THP may go to swap whole, into a cluster of 512 slots (Linux 4.13+:
    /// `THP_SWAP`), rather than be split first. The one place the design's `swapsOutTHPWhole` is read.
    @inline(__always) var swapsOutTHPWhole: Bool { design.swapsOutTHPWhole }

    /// Every swap entry in every page table refers to a slot in use, and each slot's use count equals
    /// the entries that refer to it; a slot is in use only while entries name it or a page stands for
    /// it in the swap cache. Each cached page is a 4 KiB anonymous page flagged `swapCache` (and no
    /// other page is), holding the slot's bytes (data mode) unless it is dirty, mapped writable only
    /// when it is exclusive and the design allows it (today's); its refcount is checked with the frames (Linux: `swap_map` consistency, `VM_BUG_ON_FOLIO(!folio_test_swapcache)`).
    func checkSwapInvariants() -> [String] {
        var problems: [String] = []
        var references: [Int: Int] = [:]
        let cache = swapDevice.cacheContents()
        let cachedPages = Set(cache.values)
        let frames = memory.frames
        // Cached pages a dirty PTE maps: written since they were cached, so their slots are stale.
        var dirtyCached = Set<PFN>()
        // Slots named by an entry marked exclusive: no other entry may name them.
        var exclusiveSlots: [Int] = []
        for mm in addressSpaces {
            mm.mmapLock.withReadLock {
                for vma in mm.vmas.areas {
                    mm.forEachPTETable(vma.start, vma.end, huge: { _, _, _, _ in .handled }) { table, from, to in
                        var va = from
                        while va < to {
                            let entry = table[va.tableIndex(.pte)]
                            if entry.isSwapEntry {
                                references[entry.swapSlot, default: 0] += 1
                                if entry.isSwapExclusive { exclusiveSlots.append(entry.swapSlot) }
                                if vma.isShared { problems.append("mm \(mm.pid): swap entry at \(va) in a shared VMA") }
                            } else if !entry.isNone && !entry.isMapped {
                                problems.append("mm \(mm.pid): PTE at \(va) is neither mapped, empty nor swap: \(entry)")
                            } else if entry.isMapped && cachedPages.contains(entry.pfn) {
                                if entry.isDirty { dirtyCached.insert(entry.pfn) }
                                if entry.isWritable && !(swapCacheRules == .anonExclusive
                                                         && frames.flags(entry.pfn).contains(.anonExclusive)) {
                                    problems.append("mm \(mm.pid): PTE at \(va) maps swap-cache page \(entry.pfn) writable, not exclusive")
                                }
                            }
                            va = va + PageGeometry.pageSize
                        }
                        return true
                    }
                }
            }
        }
        let counts = swapDevice.counts()
        for slot in exclusiveSlots where counts[slot] != 1 {
            problems.append("swap slot \(slot) is named by an exclusive entry but its count is \(counts[slot] ?? 0)")
        }
        for (slot, count) in counts where references[slot] != count {
            problems.append("swap slot \(slot): count \(count) but \(references[slot] ?? 0) swap entries")
        }
        let inUse = swapDevice.slotsInUse()
        for (slot, n) in references where !inUse.contains(slot) || counts[slot] == nil {
            problems.append("\(n) swap entries name slot \(slot), which is free")
        }
        for slot in inUse where counts[slot] == nil && cache[slot] == nil {
            problems.append("swap slot \(slot) is in use with no entry and no cached page (leaked)")
        }
        if inUse.count != swapDevice.usedSlots { problems.append("swap device counts \(swapDevice.usedSlots) slots in use but \(inUse.count) are") }
        // Each cgroup's swap counter: the slots charged to it and to the cgroups below it.
        var charged: [ObjectIdentifier: Int] = [:]
        for (id, n) in swapDevice.chargedSlots() {
            var level = memoryCgroups.cgroup(index: Int(id))
            if level == nil { problems.append("\(n) swap slots are charged to cgroup index \(id), which does not exist") }
            while let c = level {
                charged[ObjectIdentifier(c), default: 0] += n
                level = c.parent
            }
        }
        for c in memoryCgroups.allIncludingRemoved where c.swapPages.load(ordering: .relaxed) != charged[ObjectIdentifier(c)] ?? 0 {
            problems.append("cgroup \(c.name): swap counter \(c.swapPages.load(ordering: .relaxed)) but \(charged[ObjectIdentifier(c)] ?? 0) slots charged to it and below")
        }
        for (slot, pfn) in cache {
            if !inUse.contains(slot) { problems.append("swap cache page \(pfn) stands for free slot \(slot)") }
            if frames.kind(pfn) != .anonymous || isInLargeFolio(pfn) { problems.append("swap cache page \(pfn) is not a 4 KiB anonymous page") }
            if !frames.flags(pfn).contains(.swapCache) { problems.append("swap cache page \(pfn) lacks PG_swapcache") }
            if frames.flags(pfn).contains(.anonExclusive) && swapCacheRules != .anonExclusive {
                problems.append("swap cache page \(pfn) is marked exclusive")
            }
            if let storage = memory.storage, !dirtyCached.contains(pfn), !frames.flags(pfn).contains(.dirty),
               !swapDevice.load(slot).withUnsafeBytes({ memcmp($0.baseAddress!, storage.bytes(of: pfn).baseAddress!, $0.count) == 0 }) {
                problems.append("swap cache page \(pfn) differs from its slot \(slot)")
            }
        }
        for i in 0..<memory.totalPages where frames.flags(PFN(i)).contains(.swapCache) && !cachedPages.contains(PFN(i)) {
            problems.append("\(PFN(i)) has PG_swapcache but is in no swap cache")
        }
        return problems
    }
}
