import VMCore
import PhysicalMemory

extension Kernel {
    /// Checks every invariant the model keeps and returns a description of each violation (empty when
    /// all hold). Call it with the system quiescent (Linux: the `VM_BUG_ON` family, made exhaustive).
    ///
    /// - every frame is owned exactly once: free lists, a page table reachable from one mm, an anonymous
    ///   page some PTE maps, a shmem page in one object's cache, or the zero page;
    /// - each page's mapcount equals the entries that map it (a huge page's head counts its PMDs, its
    ///   tails nothing), and its refcount equals the mapcount (plus one for the shmem or swap cache);
    /// - every huge PMD lies inside one VMA, has exactly one deposited PTE table, is not left marked
    ///   splitting, and is listed in the split's reverse map; the huge zero page's refcount is its PMDs
    ///   plus the kernel's;
    /// - a writable private PTE maps a page nobody else maps (COW is never bypassed);
    /// - no PTE maps an address outside a VMA; VMAs are sorted, aligned and disjoint;
    /// - the counters behind meminfo agree with the frames; the allocator's own invariants hold;
    /// - khugepaged has one slot per registered mm (`checkKhugepagedInvariants`);
    /// - each swap slot's use count equals the swap entries naming it, and the swap cache's pages hold
    ///   their slots' bytes and are mapped read-only (`checkSwapInvariants`);
    /// - every mapped anonymous folio is on one LRU list or isolated, with flags and counts that agree
    ///   (`checkLRUInvariants`).
    public func checkInvariants() -> [String] {
        var problems = memory.checkPhysicalInvariants()
        problems += memoryCgroups.checkInvariants(memory.frames)
        let frames = memory.frames
        let mappings = FrameScratch<Int32>(count: memory.totalPages)
        // Today's design counts PMD mappings apart (the folio's entire mapcount).
        let pmdMappings = FrameScratch<Int32>(count: memory.totalPages)
        let tableSeen = FrameScratch<Bool>(count: memory.totalPages)
        let shmemOwner = FrameScratch<Int>(count: memory.totalPages)
        var objectsSeen = Set<ObjectIdentifier>()
        var hugeZeroMappings: Int32 = 0
        // A page in the swap cache holds one reference more than its mappings, and may be mapped nowhere.
        let swapCached = FrameScratch<Int32>(count: memory.totalPages)
        for pfn in swapDevice.cacheContents().values where pfn.index < memory.totalPages { swapCached[pfn.index] = 1 }

        for mm in addressSpaces {
            mm.mmapLock.readLock()
            defer { mm.mmapLock.unlock() }
            var previousEnd = VirtualAddress(0)
            for vma in mm.vmas.areas {
                if !(vma.start < vma.end) || !vma.start.isAligned(PageGeometry.pageSize) || !vma.end.isAligned(PageGeometry.pageSize) {
                    problems.append("mm \(mm.pid): VMA \(vma.start)-\(vma.end) is empty or misaligned")
                }
                if vma.start < previousEnd { problems.append("mm \(mm.pid): VMA at \(vma.start) overlaps its predecessor") }
                previousEnd = vma.end
                if let object = vma.sharedObject, objectsSeen.insert(ObjectIdentifier(object)).inserted {
                    for pfn in object.cachedFrames {
                        shmemOwner[pfn.index] += 1
                    }
                }
            }
            mm.checkTables(mm.root, level: .pgd, base: VirtualAddress(0), mappings, pmdMappings, tableSeen, &hugeZeroMappings, &problems)
        }

        // The split's reverse map lists exactly the huge PMDs that map anonymous huge pages.
        let listed = FrameScratch<Int32>(count: memory.totalPages)
        let spaces = liveSpaces.withLock { $0 }
        for (head, list) in hugeMappings.all() {
            guard Int(head) < memory.totalPages else { problems.append("huge mappings name \(PFN(head)) beyond memory"); continue }
            listed[Int(head)] = Int32(list.count)
            for m in list {
                guard let mm = spaces[m.pid]?.space else { problems.append("huge mappings list \(PFN(head)) in an address space that is gone"); continue }
                if mm.residentFrame(m.address) != PFN(head) {
                    problems.append("huge mappings list \(PFN(head)) at \(m.address) in mm \(mm.pid), which does not map it")
                }
            }
        }

        var tables = 0, anonMapped = 0, shmemPages = 0, anonHuge = 0
        let hugeZero = hugeZeroPageFrame
        for i in 0..<memory.totalPages {
            let pfn = PFN(i)
            let kind = frames.kind(pfn)
            let mapcount = frames.mapcount(pfn), refcount = frames.refcount(pfn)
            let flags = frames.flags(pfn)
            switch kind {
            case .free:
                if mappings[i] != 0 { problems.append("\(pfn) is free but mapped \(mappings[i]) times") }
            case .pageTable:
                tables += 1
                if !tableSeen[i] { problems.append("page table \(pfn) is reachable from no mm (leaked)") }
            case .anonymous where mapcountsPerPage:
                break  // checkFolioInvariants
            case .anonymous where flags.contains(.tail):
                // 2010: a tail's refcount holds the pins taken through it; it has no mapcount of its own.
                if mapcount != 0 || mappings[i] != 0 { problems.append("tail \(pfn) is mapped (mapcount \(mapcount), \(mappings[i]) entries)") }
                if refcount != 0 { problems.append("tail \(pfn) holds \(refcount) pins with the system quiescent") }
            case .anonymous:
                let huge = flags.contains(.head)
                if mapcount > 0 {
                    anonMapped += huge ? (anonPagesCountHugePages ? frames.order(pfn).pages : 0) : 1
                    if huge { anonHuge += 1 }
                }
                if mapcount != mappings[i] { problems.append("\(pfn): mapcount \(mapcount) but \(mappings[i]) entries map it") }
                if refcount != mapcount + swapCached[i] { problems.append("\(pfn): refcount \(refcount) but mapcount \(mapcount)\(swapCached[i] > 0 ? " + 1 for the swap cache" : "")") }
                if mappings[i] == 0 && swapCached[i] == 0 { problems.append("anonymous \(pfn) is mapped nowhere (leaked)") }
                if huge && frames.order(pfn) != PageGeometry.pmdOrder { problems.append("anonymous folio \(pfn) has \(frames.order(pfn))") }
                if huge && listed[i] != mapcount { problems.append("huge page \(pfn): mapcount \(mapcount) but \(listed[i]) listed mappings") }
                if !huge && listed[i] != 0 { problems.append("\(pfn) is not huge but has listed huge mappings") }
            case .shmem:
                shmemPages += 1
                if mapcount != mappings[i] { problems.append("shmem \(pfn): mapcount \(mapcount) but \(mappings[i]) PTEs map it") }
                if refcount != mapcount + 1 { problems.append("shmem \(pfn): refcount \(refcount) but mapcount \(mapcount) + 1 for the cache") }
                if shmemOwner[i] != 1 { problems.append("shmem \(pfn) is cached by \(shmemOwner[i]) objects") }
            case .zeroPage:
                if let head = hugeZero, pfn >= head, pfn.index < head.index + PageGeometry.pmdOrder.pages {
                    if pfn == head && refcount != 1 + hugeZeroMappings {
                        problems.append("huge zero page: refcount \(refcount) but \(hugeZeroMappings) PMDs + 1")
                    }
                } else if pfn != zeroPage {
                    problems.append("\(pfn) claims to be the zero page")
                }
            case .kernel:
                break
            }
        }
        if mapcountsPerPage {
            problems += checkFolioInvariants(mappings, pmdMappings, swapCached)
        } else if anonHuge != vmstat[.nrAnonTransparentHugepages] {
            problems.append("nr_anon_transparent_hugepages \(vmstat[.nrAnonTransparentHugepages]) but \(anonHuge) mapped huge pages")
        }
        if tables != vmstat[.nrPageTablePages] { problems.append("nr_page_table_pages \(vmstat[.nrPageTablePages]) but \(tables) table frames") }
        if !mapcountsPerPage && anonMapped != vmstat[.nrAnonPages] {
            problems.append("nr_anon_pages \(vmstat[.nrAnonPages]) but \(anonMapped) mapped anonymous pages")
        }
        if shmemPages != vmstat[.nrShmem] { problems.append("nr_shmem \(vmstat[.nrShmem]) but \(shmemPages) shmem pages") }
        problems += checkKhugepagedInvariants()
        problems += checkSwapInvariants()
        problems += checkLRUInvariants()
        return problems
    }
}

extension AddressSpace {
    /// Walks one table for the invariant checker, counting mappings and table ownership.
    func checkTables(_ table: PageTable, level: PageTableLevel, base: VirtualAddress,
                     _ mappings: FrameScratch<Int32>, _ pmdMappings: FrameScratch<Int32>, _ tableSeen: FrameScratch<Bool>,
                     _ hugeZeroMappings: inout Int32, _ problems: inout [String]) {
        let frames = kernel.memory.frames
        if frames.kind(table.pfn) != .pageTable { problems.append("mm \(pid): table \(table.pfn) has kind \(frames.kind(table.pfn))") }
        if tableSeen[table.pfn.index] { problems.append("mm \(pid): table \(table.pfn) is linked twice") }
        tableSeen[table.pfn.index] = true
        var hugeEntries = 0
        for i in 0..<PageGeometry.entriesPerTable {
            let entry = table[i]
            if entry.isNone { continue }
            let va = base + UInt64(i) * level.entrySpan
            if level == .pte && entry.isSwapEntry { continue }  // checkSwapInvariants
            if let lower = level.lower, !entry.isHuge {
                checkTables(kernel.table(at: entry), level: lower, base: va, mappings, pmdMappings, tableSeen, &hugeZeroMappings, &problems)
                continue
            }
            if entry.isHuge {
                hugeEntries += 1
                if level != .pmd { problems.append("mm \(pid): huge entry at \(level) for \(va)") ; continue }
                if entry.isSplitting { problems.append("mm \(pid): PMD at \(va) is still marked splitting") }
            }
            guard let vma = vmas.vma(containing: va) else {
                problems.append("mm \(pid): \(entry) maps \(va), which no VMA covers")
                continue
            }
            if entry.isHuge && vma.end - va < PageGeometry.pmdSize {
                problems.append("mm \(pid): huge PMD at \(va) runs past its VMA's end \(vma.end)")
            }
            if entry.isSpecial {
                let expected = entry.isHuge ? kernel.hugeZeroPageFrame : kernel.zeroPage
                if entry.pfn != expected || entry.isWritable { problems.append("mm \(pid): bad special entry at \(va): \(entry)") }
                if entry.isHuge { hugeZeroMappings += 1 }
                continue
            }
            guard entry.pfn.index < mappings.count else { problems.append("mm \(pid): \(va) maps \(entry.pfn) beyond memory"); continue }
            let perPage = kernel.mapcountsPerPage
            if perPage && entry.isHuge { pmdMappings[entry.pfn.index] += 1 } else { mappings[entry.pfn.index] += 1 }
            let kind = frames.kind(entry.pfn)
            if vma.isShared ? kind != .shmem : kind != .anonymous {
                problems.append("mm \(pid): \(va) in a \(vma.isShared ? "shared" : "private") VMA maps a \(kind) frame")
            }
            if perPage ? entry.isHuge && !frames.flags(entry.pfn).contains(.head) : entry.isHuge != frames.flags(entry.pfn).contains(.head) {
                problems.append("mm \(pid): \(entry.isHuge ? "huge PMD" : "PTE") at \(va) maps \(entry.pfn), \(entry.isHuge ? "not" : "") a huge page's head")
            }
            let mapcount = perPage ? (entry.isHuge ? kernel.entireMapcount(entry.pfn) + frames.mapcount(entry.pfn)
                                      : frames.mapcount(entry.pfn) + (kernel.isInLargeFolio(entry.pfn) ? kernel.entireMapcount(frames.head(of: entry.pfn)) : 0))
                : frames.mapcount(entry.pfn)
            if !vma.isShared && entry.isWritable && mapcount != 1 {
                problems.append("mm \(pid): writable entry at \(va) maps \(entry.pfn), which \(mapcount) entries map")
            }
        }
        if level == .pmd {
            // One deposited PTE table per huge PMD, each empty and owned by nothing else.
            let deposits = depositedTables(in: table)
            if deposits.count != hugeEntries {
                problems.append("mm \(pid): PMD table \(table.pfn) has \(hugeEntries) huge PMDs but \(deposits.count) deposited tables")
            }
            for pfn in deposits {
                if frames.kind(pfn) != .pageTable { problems.append("mm \(pid): deposited \(pfn) has kind \(frames.kind(pfn))") }
                if tableSeen[pfn.index] { problems.append("mm \(pid): deposited table \(pfn) is linked twice") }
                tableSeen[pfn.index] = true
                if !kernel.table(at: PageTableEntry(pfn: pfn, bits: tablePointerBits)).isEmpty() {
                    problems.append("mm \(pid): deposited table \(pfn) is not empty")
                }
            }
        } else if frames.depositLink(table.pfn) != nil && level != .pte {
            problems.append("mm \(pid): \(level) table \(table.pfn) has deposited tables")
        }
    }
}

extension Kernel {
    /// The frame checks of today's design, where a large folio may be mapped by PMDs and PTEs at once:
    /// each page's mapcount is its PTEs, the folio's entire mapcount its PMDs, `pagesMapped` the pages
    /// PTEs map (with ENTIRELY_MAPPED while a PMD does), the head's refcount every mapping (no pins with
    /// the system quiescent), and the deferred-split queue holds exactly the heads flagged so.
    func checkFolioInvariants(_ mappings: FrameScratch<Int32>, _ pmdMappings: FrameScratch<Int32>, _ swapCached: FrameScratch<Int32>) -> [String] {
        var problems: [String] = []
        let frames = memory.frames
        var anonMapped = 0, anonHuge = 0
        let listed = FrameScratch<Int32>(count: memory.totalPages)
        for (head, list) in hugeMappings.all() where Int(head) < memory.totalPages { listed[Int(head)] = Int32(list.count) }
        let queued = Set(allDeferredSplitFolios())
        var i = 0
        while i < memory.totalPages {
            let pfn = PFN(i)
            let flags = frames.flags(pfn)
            guard frames.kind(pfn) == .anonymous else {
                if pmdMappings[i] != 0 { problems.append("\(pfn) is \(frames.kind(pfn)) but \(pmdMappings[i]) PMDs map it") }
                i += 1
                continue
            }
            if flags.contains(.tail) { problems.append("tail \(pfn) outside a folio's range"); i += 1; continue }
            let pages = frames.order(pfn).pages
            let entire = flags.contains(.head) ? frames.folioField(pfn, .entireMapcount) : 0
            if entire != pmdMappings[i] { problems.append("\(pfn): entire mapcount \(entire) but \(pmdMappings[i]) PMDs map it") }
            if listed[i] != pmdMappings[i] { problems.append("\(pfn): \(pmdMappings[i]) PMDs but \(listed[i]) listed huge mappings") }
            var total = entire, mappedPages: Int32 = 0
            for j in 0..<pages {
                let page = pfn + j
                if j > 0 && (!frames.flags(page).contains(.tail) || frames.head(of: page) != pfn) {
                    problems.append("\(page) should be a tail of \(pfn)")
                }
                let mapcount = frames.mapcount(page)
                if mapcount != mappings[page.index] { problems.append("\(page): mapcount \(mapcount) but \(mappings[page.index]) PTEs map it") }
                if j > 0 && pmdMappings[page.index] != 0 { problems.append("tail \(page) is mapped by a PMD") }
                if j > 3 && frames.refcount(page) != 0 { problems.append("tail \(page) has refcount \(frames.refcount(page))") }
                total += mapcount
                if mapcount > 0 { mappedPages += 1 }
            }
            if total == 0 && swapCached[i] == 0 { problems.append("anonymous folio \(pfn) is mapped nowhere (leaked)") }
            if frames.refcount(pfn) != total + swapCached[i] {
                problems.append("\(pfn): refcount \(frames.refcount(pfn)) but \(total) mappings\(swapCached[i] > 0 ? " + 1 for the swap cache" : "")")
            }
            if pages > 1 {
                let field = frames.folioField(pfn, .pagesMapped)
                let expected = mappedPages + (entire > 0 ? FrameTable.entirelyMapped : 0)
                if field != expected { problems.append("folio \(pfn): pages mapped \(field) but \(expected)") }
                if frames.folioField(pfn, .pincount) != 0 { problems.append("folio \(pfn) is pinned with the system quiescent") }
                if flags.contains(.deferredSplit) != queued.contains(pfn.rawValue) {
                    problems.append("folio \(pfn): deferred-split flag \(flags.contains(.deferredSplit)) but queued \(queued.contains(pfn.rawValue))")
                }
                if entire > 0 { anonHuge += 1 }
                anonMapped += entire > 0 ? pages : Int(mappedPages)
            } else if total > 0 {
                anonMapped += 1
            }
            i += pages
        }
        for head in queued where !frames.flags(PFN(head)).contains(.head) { problems.append("\(PFN(head)) is queued for a deferred split but is no folio head") }
        if anonHuge != vmstat[.nrAnonTransparentHugepages] {
            problems.append("nr_anon_transparent_hugepages \(vmstat[.nrAnonTransparentHugepages]) but \(anonHuge) PMD-mapped folios")
        }
        if anonMapped != vmstat[.nrAnonPages] { problems.append("nr_anon_pages \(vmstat[.nrAnonPages]) but \(anonMapped) mapped anonymous pages") }
        return problems
    }
}

/// Per-frame scratch counts for the invariant checker, zeroed host memory the host backs only where
/// they are written (the frames a run used), so checking a 1 TiB machine does not fill 1 GiB per array.
final class FrameScratch<T: BitwiseCopyable> {
    private let values: UnsafeMutablePointer<T>
    let count: Int

    /// `count` values whose bytes are all zero (`T` must be valid so: 0, false).
    init(count: Int) {
        self.count = count
        values = HostMemory.allocate(T.self, count: count)
    }

    deinit { HostMemory.release(values, count: count) }

    subscript(_ i: Int) -> T {
        get { precondition(i >= 0 && i < count); return values[i] }
        set { precondition(i >= 0 && i < count); values[i] = newValue }
    }
}
