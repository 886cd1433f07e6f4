import Synchronization
import VMCore
import PhysicalMemory

/// What an attempt to split a large folio did (Linux: the return value of `split_folio()`).
public enum FolioSplitResult: Sendable, Equatable {
    /// The folio is now order-0 pages; the ones nothing mapped were freed.
    case split
    /// References beyond the mappings — pins — keep it whole (Linux: `-EAGAIN` from the failed
    /// `folio_ref_freeze()`, counted as `thp_split_page_failed`).
    case pinned
    /// Its mappings changed, or a mapper's mmap lock was held for writing; try later (Linux: a failed
    /// `folio_trylock()` or unmap, `-EAGAIN`/`-EBUSY`).
    case busy
    /// Not an anonymous large folio of today's design.
    case notSplittable
}

/// `split_huge_page()` of today's design: it splits the *folio* — its mappings stay where they are — and
/// it fails while anyone holds a reference beyond the mappings.
///
/// 1. Every PMD that maps the folio is split into PTEs (`splitHugePMD(mapping:at:)`).
/// 2. Every PTE that maps a page of it is replaced by a migration entry (faults and GUP wait, gup-fast
///    backs off), and its TLB entry flushed.
/// 3. The refcount must now be the mappings plus the caller's reference; it is *frozen* to zero with a
///    compare-and-exchange, so that nothing can take a new one. If anything else holds one — a pin —
///    the entries are put back and the split fails.
/// 4. Each page becomes an order-0 page with its own refcount (its mapcount); pages nothing maps are
///    freed; the entries are put back (Linux 6.18: `__folio_split()` → `unmap_folio()`,
///    `folio_ref_freeze()`, `__split_folio_to_order()`, `remap_page()`).
///
/// With `useZeroPage`, a page whose bytes are all zero is mapped as the shared zero page instead and
/// freed (Linux 6.12+: `RMP_USE_SHARED_ZEROPAGE`, for splits of underused THPs).
extension Kernel {
    /// Splits the large anonymous folio `head` into order-0 pages; see the type's overview.
    /// - Precondition: the caller holds a reference on `head` and no mmap or page-table lock that a
    ///   mapper of the folio holds for writing.
    func splitFolio(_ head: PFN, useZeroPage: Bool = false) -> FolioSplitResult {
        let frames = memory.frames
        guard splitsFoliosSeparately, frames.kind(head) == .anonymous, frames.flags(head).contains(.head) else {
            return .notSplittable
        }
        let pages = frames.order(head).pages
        let range = head.rawValue..<(head.rawValue + UInt32(pages))

        // The mappers' mmap locks, read-held throughout, keep fork, munmap, mremap and mprotect away
        // (Linux relies on the folio lock and the anon_vma lock). Trylocks: the caller may hold one.
        var locked: [AddressSpace] = []
        defer { for mm in locked.reversed() { mm.mmapLock.unlock() } }
        var mappings: [(mm: AddressSpace, address: VirtualAddress)] = []
        for mm in addressSpaces.sorted(by: { $0.pid < $1.pid }) {
            guard mm.mmapLock.tryReadLock() else { return .busy }
            guard !mm.hasExited else { mm.mmapLock.unlock(); continue }
            // 1. PMDs first: afterwards every mapping of the folio is a PTE.
            for m in hugeMappers(of: head) where m.mm === mm { mm.splitHugePMD(mapping: head, at: m.address) }
            let found = mm.ptes(mappingFramesIn: range)
            if found.isEmpty { mm.mmapLock.unlock(); continue }
            locked.append(mm)
            mappings += found.map { (mm, $0) }
        }
        if hugeMappers(of: head).contains(where: { m in !locked.contains { $0 === m.mm } }) { return .busy }

        return splitSerialization.withLock { () -> FolioSplitResult in
            // 2. Unmap with migration entries.
            for (mm, va) in mappings { mm.startInvalidatingSecondaryMMUs(va, va + PageGeometry.pageSize) }
            defer { for (mm, va) in mappings { mm.endInvalidatingSecondaryMMUs(va, va + PageGeometry.pageSize) } }
            var replaced: [(mm: AddressSpace, address: VirtualAddress, old: PageTableEntry)] = []
            func restore(_ entry: (PageTableEntry) -> PageTableEntry = { $0 }) {
                for r in replaced {
                    let back = r.mm.exchangeMigrationEntry(r.address, huge: false) { $0 == .migrationEntry(for: r.old) ? entry(r.old) : nil }
                    precondition(back != nil, "a migration entry at \(r.address) changed under a folio split")
                }
            }
            for (mm, va) in mappings {
                let old = mm.exchangeMigrationEntry(va, huge: false) { current in
                    current.isMapped && !current.isSpecial && range.contains(current.pfn.rawValue) ? .migrationEntry(for: current) : nil
                }
                guard let old else { restore(); return .busy }
                replaced.append((mm, va, old))
            }
            for mm in locked { flushTLB(mm, VirtualAddress(0), VirtualAddress(PageGeometry.userAddressLimit)) }

            // 3. Every mapping was found, and nothing else holds a reference but the caller.
            let mapcount = folioMapcount(head)
            guard Int(mapcount) == replaced.count else { restore(); return .busy }
            let order = frames.order(head)
            guard frames.freezeRefcount(head, expected: mapcount + 1) else {
                restore()
                if order == PageGeometry.pmdOrder { vmstat.count(.thpSplitPageFailed) }
                mthpStats.count(order.rawValue, .splitFailed)
                return .pinned
            }

            // 4. Split the counts: each page keeps its mapcount and takes a reference per mapping.
            unqueueDeferredSplit(head)
            // Under the LRU lock, as the head's list flags must not move while its header is rewritten;
            // the tails that stay mapped join its list (Linux: `__split_unmapped_folio()` under the
            // lruvec lock, `lru_add_split_folio()`).
            lru.lockFlushed()
            memoryCgroups.splitRecord(head, order: order)
            let inherited = frames.flags(head).intersection([.dirty, .swapBacked, .referenced, .active])
            var unused: [PFN] = []
            var kept: [PFN] = []
            for i in 1..<pages {
                let page = head + i
                let flags = inherited.union(frames.flags(page).intersection(.anonExclusive))
                let count = frames.mapcount(page)
                frames.setRefcount(page, count)
                frames.setLink(page, 0)
                frames.setHeader(page, kind: .anonymous, order: .base, flags: flags)
                if count == 0 { unused.append(page) } else { kept.append(page) }
            }
            frames.setHeader(head, kind: .anonymous, order: .base,
                             flags: frames.flags(head).subtracting([.head, .explicitTails, .deferredSplit, .partiallyMapped]))
            lru.addSplitTails(head, oldPages: pages, tails: kept)
            lru.lock.unlock()
            frames.setRefcount(head, frames.mapcount(head) + 1)
            if order == PageGeometry.pmdOrder { vmstat.count(.thpSplitPage) }
            mthpStats.count(order.rawValue, .split)

            // Back into the page tables; all-zero pages become the zero page when asked.
            let storage = memory.storage
            var zeroed = 0
            restore { old in
                guard useZeroPage, let storage, storage.isZero(old.pfn) else { return old }
                zeroed += 1
                return PageTableEntry(pfn: zeroPage, bits: (old.rawValue & ~PageTableEntry.pfnMask
                    & ~(PageTableEntry.writableBit | PageTableEntry.dirtyBit)) | PageTableEntry.specialBit)
            }
            if zeroed > 0 {
                for r in replaced where storage?.isZero(r.old.pfn) == true {
                    r.mm.removeMapping(r.old.pfn)
                    if frames.addRefcount(r.old.pfn, -1) == 0 { unused.append(r.old.pfn) }
                }
            }
            for page in unused where page != head {
                // A tail mapped as the zero page now was on the list.
                if frames.flags(page).contains(.lru) { lru.delete(page) }
                vmstat.count(.pgfree)
                memoryCgroups.uncharge(page, pages: 1)
                memory.freeFolio(page)
            }
            return .split
        }
    }
}

extension AddressSpace {
    /// The addresses of the PTEs in this mm that map a frame in `range` (Linux: the anon_vma walk of
    /// `rmap_walk_anon()`; the model walks the page tables).
    /// - Precondition: the mmap lock is held.
    func ptes(mappingFramesIn range: Range<UInt32>) -> [VirtualAddress] {
        var found: [VirtualAddress] = []
        for vma in vmas.areas where !vma.isShared {
            forEachPTETable(vma.start, vma.end, huge: { _, _, _, _ in .handled }) { table, from, to in
                var va = from
                while va < to {
                    let entry = table[va.tableIndex(.pte)]
                    if entry.isMapped && !entry.isSpecial && range.contains(entry.pfn.rawValue) { found.append(va) }
                    va = va + PageGeometry.pageSize
                }
                return true
            }
        }
        return found
    }
}
