import Synchronization
import VMCore
import PhysicalMemory

/// Swap-out and swap-in of anonymous pages.
///
/// Swap-out (MADV_PAGEOUT today; reclaim later) writes an exclusively mapped, unpinned page to a swap
/// slot and replaces its PTE by a swap entry; the page is freed. In the 2010 design a huge page cannot
/// go to swap whole, so the range is split first (2.6.38: `split_huge_page()` from `add_to_swap()`).
/// Today's kernel tries to write a THP whole (`thp_swpout`), which needs a swap device with free
/// 2 MiB clusters; the model's device allocates slot by slot, so it falls back as a swap file does
/// here (`thp_swpout_fallback`) and splits the folio first (Linux 6.18: `shrink_folio_list()` →
/// `folio_alloc_swap()` fails → `split_folio_to_list()`).
/// A fault on a swap entry reads the slot into a new page (Linux: `do_swap_page()`).
extension AddressSpace {
    /// MADV_PAGEOUT over `[start, end)`: split huge pages, then swap out every page only this PTE maps
    /// and nobody pins; pages mapped elsewhere too (after fork) and shared memory stay (Linux:
    /// `madvise_pageout()` → `madvise_cold_or_pageout_pte_range()` → `reclaim_pages()`).
    /// - Precondition: no lock of this mm is held.
    func madvisePageout(_ start: VirtualAddress, _ end: VirtualAddress) {
        mmapLock.withReadLock {
            for i in vmas.indices(intersecting: start, end) where !vmas[i].isShared {
                let vma = vmas[i]
                let from = max(vma.start, start), to = min(vma.end, end)
                invalidatingSecondaryMMUs(from, to) {
                    forEachPTETable(from, to, huge: { pmd, index, _, _ in
                        // The huge zero page has nothing to swap; a huge page is split first.
                        if pmd[index].isSpecial { return .handled }
                        guard !kernel.design.splitPMDSplitsPage, let (entry, lock) = lockHugePMD(pmd, index) else { return .split }
                        return swapOutFallback(pmd, index, entry, lock)
                    }) { table, lo, hi in
                        splitLargeFolios(table, lo, hi)
                        _ = swapOut(table, lo, hi, onlyOld: false, until: { false })
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
    /// pages can go to swap one by one (with `onlyOld`, only folios mapped here by an old PTE); a pinned
    /// folio stays whole, and its pages in memory (Linux:
    /// the `split_folio()` of `madvise_cold_or_pageout_pte_range()` and `shrink_folio_list()`).
    /// - Precondition: the mmap lock is held for reading; no page-table lock is.
    func splitLargeFolios(_ table: PageTable, _ from: VirtualAddress, _ to: VirtualAddress, onlyOld: Bool = false) {
        guard kernel.design.mapcounts == .perPage else { return }
        let frames = kernel.memory.frames
        let lock = kernel.splitLock(table)
        var heads: [PFN] = []
        lock.spinLock()
        var va = from
        while va < to {
            let entry = table[va.tableIndex(.pte)]
            if entry.isMapped && !entry.isSpecial && !(onlyOld && entry.isAccessed)
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

    /// Swaps out the exclusive pages the PTEs of `table` map in `[from, to)`; with `onlyOld`, a young
    /// PTE only loses its accessed bit (a second chance). Stops when `until()` holds after a swap-out,
    /// returning the next address, or when swap is full (Linux: `shrink_folio_list()` →
    /// `folio_referenced()`, `add_to_swap()`, `try_to_unmap()`, `pageout()`).
    func swapOut(_ table: PageTable, _ from: VirtualAddress, _ to: VirtualAddress, onlyOld: Bool,
                 until enough: () -> Bool) -> VirtualAddress? {
        let frames = kernel.memory.frames
        let lock = kernel.splitLock(table)
        lock.spinLock()
        defer { lock.spinUnlock() }
        var va = from
        while va < to {
            defer { va = va + PageGeometry.pageSize }
            let index = va.tableIndex(.pte)
            let entry = table[index]
            guard entry.isMapped, !entry.isSpecial else { continue }
            let pfn = entry.pfn
            guard frames.kind(pfn) == .anonymous, frames.mapcount(pfn) == 1, frames.refcount(pfn) == 1 else { continue }
            if onlyOld && entry.isAccessed {
                table.set(index, entry.makingOld())
                continue
            }
            let bytes = kernel.memory.storage.map { Array($0.bytes(of: pfn)) }
            guard let slot = kernel.swapDevice.store(bytes) else { return va }
            table.set(index, .swapEntry(slot: slot))
            unmapPage(pfn)
            kernel.vmstat.count(.pswpout)
            if enough() { return va + PageGeometry.pageSize }
        }
        return nil
    }

    /// A fault on a swap entry: read the slot into a new page and map it, writable at once only for a
    /// write to a slot no other entry uses (Linux: `do_swap_page()`, counted as `pgmajfault` and
    /// `pswpin`).
    func swapIn(_ vma: VMA, _ va: VirtualAddress, _ table: PageTable, _ index: Int, _ entry: PageTableEntry,
                _ access: MemoryAccess) -> FaultOutcome {
        guard let pfn = kernel.allocateAnonymousPage(zeroed: false) else { return .outOfMemory }
        kernel.countAllocation(pages: 1)
        let slot = entry.swapSlot
        let lock = kernel.splitLock(table)
        lock.spinLock()
        guard table[index] == entry else {
            // Another thread swapped it in (or the range changed) first.
            lock.spinUnlock()
            kernel.putPage(pfn)
            return .handled
        }
        if let storage = kernel.memory.storage, let bytes = kernel.swapDevice.load(slot) {
            bytes.withUnsafeBytes { storage.bytes(of: pfn).copyMemory(from: $0) }
        }
        let exclusive = kernel.swapDevice.release(slot) == 0
        var bits = PageTableEntry.userBits(vma.flags.protection) | PageTableEntry.accessedBit
        if exclusive {
            kernel.memory.frames.insertFlags(pfn, [.anonExclusive, .swapBacked])
            if access == .write && vma.flags.contains(.write) { bits |= PageTableEntry.writableBit | PageTableEntry.dirtyBit }
        } else {
            kernel.memory.frames.insertFlags(pfn, .swapBacked)
        }
        mapPage(pfn)
        table.set(index, PageTableEntry(pfn: pfn, bits: bits))
        lock.spinUnlock()
        kernel.vmstat.count(.pgmajfault)
        kernel.vmstat.count(.pswpin)
        return .handled
    }

    /// The bytes of the page at `va` if it is swapped out, without swapping it in (as `/proc/PID/mem`
    /// would see them after its fault); nil if it is not in swap (or in metadata mode).
    public func swappedOutBytes(at va: VirtualAddress) -> [UInt8]? {
        mmapLock.withReadLock {
            guard let (pmd, index) = walk(va, to: .pmd, allocate: false), !pmd[index].isNone, !pmd[index].isHuge else { return nil }
            let entry = kernel.table(at: pmd[index])[va.tableIndex(.pte)]
            guard entry.isSwapEntry else { return nil }
            return kernel.swapDevice.load(entry.swapSlot) ?? [UInt8](repeating: 0, count: Int(PageGeometry.pageSize))
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
    /// Every swap entry in every page table refers to a slot in use, and each slot's use count equals
    /// the entries that refer to it; no slot is in use without one (Linux: `swap_map` consistency).
    func checkSwapInvariants() -> [String] {
        var problems: [String] = []
        var references: [Int: Int] = [:]
        for mm in addressSpaces {
            mm.mmapLock.withReadLock {
                for vma in mm.vmas.areas {
                    mm.forEachPTETable(vma.start, vma.end, huge: { _, _, _, _ in .handled }) { table, from, to in
                        var va = from
                        while va < to {
                            let entry = table[va.tableIndex(.pte)]
                            if entry.isSwapEntry {
                                references[entry.swapSlot, default: 0] += 1
                                if vma.isShared { problems.append("mm \(mm.pid): swap entry at \(va) in a shared VMA") }
                            } else if !entry.isNone && !entry.isMapped {
                                problems.append("mm \(mm.pid): PTE at \(va) is neither mapped, empty nor swap: \(entry)")
                            }
                            va = va + PageGeometry.pageSize
                        }
                        return true
                    }
                }
            }
        }
        let counts = swapDevice.counts()
        for (slot, count) in counts where references[slot] != count {
            problems.append("swap slot \(slot): count \(count) but \(references[slot] ?? 0) swap entries")
        }
        for (slot, n) in references where counts[slot] == nil {
            problems.append("\(n) swap entries name slot \(slot), which is free")
        }
        return problems
    }
}
