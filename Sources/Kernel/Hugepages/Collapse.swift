import VMCore
import PhysicalMemory

/// What an attempt to collapse one 2 MiB range found or did, counted like Linux counts it (Linux:
/// `enum scan_result` in mm/khugepaged.c; the names are Linux's without the `SCAN_` prefix).
public enum CollapseResult: String, Sendable, CaseIterable {
    /// A huge PMD now maps the range (`SCAN_SUCCEED`).
    case succeeded
    /// No VMA allows a huge page over the whole range, or the VMA has no anon_vma yet because only
    /// read faults mapping the zero page touched it (`SCAN_VMA_CHECK`, `SCAN_VMA_NULL`, `SCAN_PAGE_ANON`).
    case vmaCheck
    /// No PTE table: nothing was ever touched there (`SCAN_PMD_NULL`/`SCAN_PMD_NONE`).
    case pmdNone
    /// A huge PMD maps it already (`SCAN_PMD_MAPPED`).
    case pmdMapped
    /// More empty or zero-page PTEs than `max_ptes_none` (`SCAN_EXCEED_NONE_PTE`).
    case exceedNonePTE
    /// More swap PTEs than `max_ptes_swap` (`SCAN_EXCEED_SWAP_PTE`).
    case exceedSwapPTE
    /// More PTEs of pages mapped elsewhere too than `max_ptes_shared` (`SCAN_EXCEED_SHARED_PTE`).
    case exceedSharedPTE
    /// A page is pinned: its refcount exceeds its mapcount (`SCAN_PAGE_COUNT`).
    case pageCount
    /// khugepaged found no young PTE and no referenced page (`SCAN_LACK_REFERENCED_PAGE`).
    case lackReferencedPage
    /// No huge page could be allocated (`SCAN_ALLOC_HUGE_PAGE_FAIL`).
    case allocationFailed
    /// The huge page could not be charged to the process's memory cgroup (`SCAN_CGROUP_CHARGE_FAIL`).
    /// Unlike an allocation failure, khugepaged does not sleep `alloc_sleep_millisecs` for it
    /// (`khugepaged_do_scan()` waits only on `SCAN_ALLOC_HUGE_PAGE_FAIL`).
    case chargeFailed
    /// The process exited meanwhile (`SCAN_ANY_PROCESS`).
    case processExited
}

/// Who collapses: khugepaged applies the `max_ptes_*` limits and wants a young PTE; MADV_COLLAPSE
/// ignores both (Linux: `struct collapse_control.is_khugepaged`).
struct CollapseControl {
    let isKhugepaged: Bool
    let limits: KhugepagedSettings
}

/// Collapsing 512 small pages into one huge page, the mechanism khugepaged and MADV_COLLAPSE share.
///
/// ```
///  before                                   after
///  PMD ──► PTE table [p0 p1 ∅ z p4 …]       PMD (huge) ──► new 2 MiB page: copies of p0 p1, zeros, …
///                                           the emptied PTE table becomes the PMD's deposited table
/// ```
/// The range is first examined under the mmap lock for reading; then, without it, a huge page is
/// allocated; then under the mmap lock for **writing** (as 2.6.38's `collapse_huge_page()` took
/// `mmap_sem`) the VMA is revalidated, the PMD is cleared and flushed so that no walker can reach the
/// PTEs, the PTEs are checked again (a pin taken meanwhile makes the collapse back off and restore the
/// PMD), the pages are copied — empty and zero-page PTEs become zeros — and released, and the old
/// table is deposited beside the new huge PMD. Secondary MMUs are invalidated around all of it.
///
/// The rules for a range are today's (Linux 6.18), which the 2010 design's scenarios share where both
/// apply: empty and zero-page PTEs count against `max_ptes_none`, pages mapped by other processes
/// against `max_ptes_shared`, and no PTE needs to be writable. Linux 2.6.38 instead refused a range
/// with any read-only PTE or any page whose count was not 1 (docs/notes.md).
extension AddressSpace {
    /// Tries to collapse the 2 MiB range at `haddr` into a huge page; takes and drops the mmap lock
    /// itself (Linux: `hpage_collapse_scan_pmd()` → `collapse_huge_page()`).
    /// - Precondition: no lock of this mm is held; `haddr` is 2 MiB-aligned.
    func collapse(_ haddr: VirtualAddress, _ control: CollapseControl) -> CollapseResult {
        collapseAttempt(haddr, control).result
    }

    /// `collapse`, adding the record of a collapse that succeeded to `records`.
    func collapse(_ haddr: VirtualAddress, _ control: CollapseControl, recording records: inout [CollapseRecord]) -> CollapseResult {
        var made: CollapseRecord?
        let result = collapseAttempt(haddr, control, recording: &made).result
        if let made { records.append(made) }
        return result
    }

    /// `collapse`, also saying whether the range passed the scan so that the mmap lock was dropped for
    /// the allocation (khugepaged then walks the mm again from its cursor).
    func collapseAttempt(_ haddr: VirtualAddress, _ control: CollapseControl) -> (result: CollapseResult, attempted: Bool) {
        var made: CollapseRecord?
        return collapseAttempt(haddr, control, recording: &made)
    }

    /// `collapseAttempt`, setting `made` to the record of the collapse when it succeeded.
    func collapseAttempt(_ haddr: VirtualAddress, _ control: CollapseControl,
                         recording made: inout CollapseRecord?) -> (result: CollapseResult, attempted: Bool) {
        precondition(haddr.isAligned(PageGeometry.pmdSize))
        let scanned: CollapseResult = mmapLock.withReadLock {
            if hasExited { return .processExited }
            if let problem = collapseVMACheck(haddr, control) { return problem }
            guard let (pmd, index) = walk(haddr, to: .pmd, allocate: false) else { return .pmdNone }
            let entry = pmd[index]
            if entry.isNone { return .pmdNone }
            if entry.isHuge { return .pmdMapped }
            let table = kernel.table(at: entry)
            let lock = kernel.splitLock(table)
            lock.spinLock()
            defer { lock.spinUnlock() }
            return examineForCollapse(table, control)
        }
        guard scanned == .succeeded else { return (scanned, false) }

        // khugepaged compacts when khugepaged/defrag is 1; MADV_COLLAPSE always may (Linux:
        // `alloc_hugepage_khugepaged_gfpmask()`, `collapse_control.gfp`).
        let defrag: HugeAllocationDefrag = !control.isKhugepaged || control.limits.defrag ? .direct : .none
        var compaction = CompactionWork()
        guard let head = kernel.allocateHugePage(zeroed: false, defrag: defrag, &compaction) else {
            kernel.vmstat.count(.thpCollapseAllocFailed)
            return (.allocationFailed, true)
        }
        kernel.vmstat.count(.thpCollapseAlloc)
        guard charge(head, order: PageGeometry.pmdOrder) else {
            // Linux: `SCAN_CGROUP_CHARGE_FAIL` from `alloc_charge_folio()`.
            kernel.putPage(head)
            return (.chargeFailed, true)
        }
        countMemcg(.thpCollapseAlloc)
        var record = CollapseRecord(pid: pid, address: haddr.rawValue)
        let result = mmapLock.withWriteLock { collapseLocked(haddr, head, control, &record) }
        if result != .succeeded { kernel.putPage(head) }
        if result == .succeeded {
            if control.isKhugepaged { kernel.noteCollapse(record) }
            made = record
        }
        return (result, true)
    }

    /// Why no huge page may replace the range at `haddr`, or nil if one may (Linux:
    /// `hugepage_vma_revalidate()` → `thp_vma_allowable_order()`; MADV_COLLAPSE ignores `enabled`).
    /// - Precondition: the mmap lock is held.
    private func collapseVMACheck(_ haddr: VirtualAddress, _ control: CollapseControl) -> CollapseResult? {
        guard let vma = vmas.vma(containing: haddr), hugeRangeFits(vma, haddr), !vma.isShared,
              vma.anonVMA != 0 else { return .vmaCheck }
        let settings = kernel.hugepageSettings
        let allowed = control.isKhugepaged ? kernel.khugepagedMayCollapse(vma, settings)
                                           : kernel.madviseMayCollapse(vma, settings)
        return allowed ? nil : .vmaCheck
    }

    /// Checks the 512 PTEs of `table` against the collapse rules, counting a limit that is exceeded
    /// (Linux: the PTE loops of `hpage_collapse_scan_pmd()` and `__collapse_huge_page_isolate()`).
    /// - Precondition: the table's split lock is held.
    private func examineForCollapse(_ table: PageTable, _ control: CollapseControl) -> CollapseResult {
        let frames = kernel.memory.frames
        var noneOrZero = 0, shared = 0, referenced = 0, unmapped = 0
        for i in 0..<PageGeometry.entriesPerTable {
            let entry = table[i]
            if entry.isSwapEntry {
                unmapped += 1
                if control.isKhugepaged && unmapped > control.limits.maxPtesSwap {
                    kernel.vmstat.count(.thpScanExceedSwapPTE)
                    return .exceedSwapPTE
                }
                continue
            }
            if entry.isNone || entry.isSpecial {
                noneOrZero += 1
                if control.isKhugepaged && noneOrZero > control.limits.maxPtesNone {
                    kernel.vmstat.count(.thpScanExceedNonePTE)
                    return .exceedNonePTE
                }
                continue
            }
            precondition(entry.isMapped, "a PTE that is neither empty nor mapped: \(entry)")
            let pfn = entry.pfn
            precondition(frames.kind(pfn) == .anonymous && (kernel.mapcountsPerPage || !frames.flags(pfn).contains(.head)),
                         "a private anonymous PTE maps \(frames.kind(pfn)) frame \(pfn)")
            let mapcount = frames.mapcount(pfn)
            if mapcount > 1 {
                shared += 1
                if control.isKhugepaged && shared > control.limits.maxPtesShared {
                    kernel.vmstat.count(.thpScanExceedSharePTE)
                    return .exceedSharedPTE
                }
            }
            // A page of a large folio (today's design) counts its references in the folio.
            if kernel.isInLargeFolio(pfn) {
                let head = frames.head(of: pfn)
                if frames.refcount(head) != kernel.folioMapcount(head) { return .pageCount }
            } else if frames.refcount(pfn) != mapcount + swapCacheReference(pfn) {
                return .pageCount
            }
            if entry.isAccessed || frames.flags(pfn).contains(.referenced) { referenced += 1 }
        }
        // With pages to swap in, khugepaged wants half the others young (Linux: the `unmapped &&
        // referenced < HPAGE_PMD_NR / 2` test of `hpage_collapse_scan_pmd()`).
        if control.isKhugepaged && (referenced == 0 || unmapped > 0 && referenced < PageGeometry.entriesPerTable / 2) {
            return .lackReferencedPage
        }
        return .succeeded
    }

    /// The part of a collapse under the mmap write lock: revalidate, isolate, copy, install. The caller
    /// frees `head` unless this succeeds (Linux: `collapse_huge_page()` after `mmap_write_lock()`).
    private func collapseLocked(_ haddr: VirtualAddress, _ head: PFN, _ control: CollapseControl,
                                _ record: inout CollapseRecord) -> CollapseResult {
        if hasExited { return .processExited }
        if let problem = collapseVMACheck(haddr, control) { return problem }
        guard let vma = vmas.vma(containing: haddr),
              let (pmd, index) = walk(haddr, to: .pmd, allocate: false) else { return .pmdNone }
        let old = pmd[index]
        if old.isNone { return .pmdNone }
        if old.isHuge { return .pmdMapped }
        let end = haddr + PageGeometry.pmdSize
        return invalidatingSecondaryMMUs(haddr, end) { () -> CollapseResult in
            // Unhook the PTE table so that no walker (the MMU, gup-fast) reaches the PTEs any more
            // (Linux: `pmdp_collapse_flush()`); a fault now waits for the mmap lock.
            let lock = pmdLock(pmd)
            lock.spinLock()
            pmd.set(index, .none)
            lock.spinUnlock()
            kernel.flushTLB(self, haddr, end)

            let table = kernel.table(at: old)
            let pteLock = kernel.splitLock(table)
            pteLock.spinLock()
            let isolated = examineForCollapse(table, control)
            guard isolated == .succeeded else {
                pteLock.spinUnlock()
                lock.spinLock()
                pmd.set(index, old)
                lock.spinUnlock()
                return isolated
            }
            copyIntoHugePage(table, head, &record)
            pteLock.spinUnlock()

            var bits = PageTableEntry.userBits(vma.flags.protection) | PageTableEntry.hugeBit
                | PageTableEntry.accessedBit | PageTableEntry.dirtyBit
            if vma.flags.contains(.write) { bits |= PageTableEntry.writableBit }
            lock.spinLock()
            depositTable(table, in: pmd)
            mapHugePage(head, at: haddr)
            addNewAnonFolioToLRU(head, vma, at: haddr)
            pmd.set(index, PageTableEntry(pfn: head, bits: bits))
            lock.spinUnlock()
            return .succeeded
        }
    }

    /// The swap cache's reference to the small page `pfn`, which a collapse expects besides the
    /// mappings' today (Linux 6.18: `is_refcount_suitable()`); the 2010 design wants the mapping's
    /// reference alone (2.6.38: `page_count(page) != 1` in `khugepaged_scan_pmd()`), so a page kept in
    /// the swap cache stops the collapse.
    private func swapCacheReference(_ pfn: PFN) -> Int32 {
        kernel.swapCacheRules == .anonExclusive && kernel.memory.frames.flags(pfn).contains(.swapCache) ? 1 : 0
    }

    /// Copies each mapped page into its subpage of `head`, reads swapped ones from swap, zeroes the
    /// subpages of empty and zero-page PTEs, and clears every PTE, dropping the small pages' mappings (Linux:
    /// `__collapse_huge_page_copy()`); adds the pages copied and the folios freed to `record`.
    /// - Precondition: the table's split lock is held and the table is unhooked from its PMD.
    private func copyIntoHugePage(_ table: PageTable, _ head: PFN, _ record: inout CollapseRecord) {
        let storage = kernel.memory.storage
        for i in 0..<PageGeometry.entriesPerTable {
            let entry = table.exchange(i, .none)
            if entry.isNone || entry.isSpecial {
                storage?.zero(head + i)
            } else if entry.isSwapEntry {
                // Swap in straight into the huge page (Linux: `__collapse_huge_page_swapin()` first).
                kernel.readFromSwap(entry.swapSlot, into: head + i)
                kernel.swapFree(entry.swapSlot)
                kernel.vmstat.count(.pgmajfault)
            } else {
                storage?.copy(from: entry.pfn, to: head + i)
                removeMapping(entry.pfn)
                kernel.freeSwapCacheIfUnmapped(entry.pfn)
                record.pagesCopied += 1
                record.freed = record.freed + kernel.putPage(entry.pfn)
            }
        }
    }
}

extension Kernel {
    /// MADV_COLLAPSE's result as an errno (Linux: `madvise_collapse_errno()`): no memory for a huge
    /// page is ENOMEM, a charge the memory cgroup refuses EBUSY, a page that is pinned (a transient
    /// state) EAGAIN, anything else EINVAL.
    static func collapseErrno(_ result: CollapseResult) -> Errno {
        switch result {
        case .allocationFailed: .ENOMEM
        case .exceedNonePTE, .chargeFailed: .EBUSY
        case .pageCount: .EAGAIN
        default: .EINVAL
        }
    }
}

extension AddressSpace {
    /// MADV_COLLAPSE over `[start, end)`: synchronously collapse every aligned 2 MiB range of each VMA,
    /// ignoring `enabled` and the `max_ptes_*` limits; ranges already huge count as collapsed. Throws
    /// EINVAL for a VMA that may not have huge pages (shared, `MADV_NOHUGEPAGE`), and otherwise the
    /// errno of the last range that failed (Linux: `madvise_collapse()`).
    /// - Precondition: no lock of this mm is held.
    /// Each collapse made is added to `records` (for simulated time's charge of the call).
    func madviseCollapse(_ start: VirtualAddress, _ end: VirtualAddress, recording records: inout [CollapseRecord]) throws(Errno) {
        let control = CollapseControl(isKhugepaged: false, limits: kernel.khugepaged.settings)
        let ranges: [(VMA, VirtualAddress, VirtualAddress)] = mmapLock.withReadLock {
            vmas.indices(intersecting: start, end).map { i in
                (vmas[i], max(vmas[i].start, start), min(vmas[i].end, end))
            }
        }
        for (vma, from, to) in ranges {
            if !kernel.madviseMayCollapse(vma, kernel.hugepageSettings) { throw .EINVAL }
            let hstart = from.alignedUp(PageGeometry.pmdSize), hend = to.alignedDown(PageGeometry.pmdSize)
            var haddr = hstart
            var collapsed = 0, total = 0
            var lastFailure: CollapseResult?
            while haddr < hend {
                total += 1
                let result = collapse(haddr, control, recording: &records)
                switch result {
                case .succeeded, .pmdMapped: collapsed += 1
                case .pmdNone, .pageCount, .lackReferencedPage: lastFailure = result
                default: throw Kernel.collapseErrno(result)
                }
                haddr = haddr + PageGeometry.pmdSize
            }
            if collapsed != total, let lastFailure { throw Kernel.collapseErrno(lastFailure) }
        }
    }
}

extension AddressSpace {
    /// Whether part of `[start, end)` is covered by no VMA (madvise's ENOMEM).
    /// - Precondition: the mmap lock is held.
    func rangeHasHole(_ start: VirtualAddress, _ end: VirtualAddress) -> Bool {
        var cursor = start
        for i in vmas.indices(intersecting: start, end) {
            if vmas[i].start > cursor { return true }
            cursor = vmas[i].end
        }
        return cursor < end
    }
}
