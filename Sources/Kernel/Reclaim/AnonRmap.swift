import VMCore
import PhysicalMemory

/// The reverse map of anonymous folios, for reclaim: from a folio found on an LRU list to the PTEs
/// and PMDs that map it (Linux: `mm/rmap.c`, `rmap_walk_anon()`, `folio_referenced()`,
/// `try_to_unmap()`).
///
/// Linux follows `folio->mapping` to the anon_vma, whose VMAs — the process's and its fork
/// descendants' — it searches at `vma_address()`, computed from `folio->index` and each VMA's
/// `vm_pgoff`. The model records the same two things when the folio goes on a list (`LRULists.add`):
/// its mm's fork family (`AddressSpace.anonFamily`) and its linear page index. It looks in every
/// address space of the family, in every private VMA whose `pgoff` range holds the index (mremap keeps
/// `pgoff`, so a moved page is found at its new address), and keeps only entries that really map the
/// folio's pages. If the entries found are fewer than the folio's mapcount — a mapping the record
/// cannot explain — the folio is kept, never freed.
///
/// ```
///  folio ──► (family F, index i) ──► every mm with anonFamily F ──► VMA with pgoff ≤ i < pgoff + len
///                                                                   ──► va = start + (i − pgoff) × 4 KiB
/// ```
struct AnonMapping {
    let mm: AddressSpace
    /// The PMD's address for a huge mapping, the page's otherwise.
    let address: VirtualAddress
    /// A PMD mapping the whole folio.
    let huge: Bool
    /// The frame this entry maps (the head for a PMD).
    let pfn: PFN
}

extension Kernel {
    /// Every PTE and PMD that maps the folio `head`, found through its recorded origin, with the
    /// mappers' mmap locks taken for reading (trylocks in pid order, as migration takes them); nil,
    /// with nothing held, when a lock is taken or the mappings found do not account for the folio's
    /// mapcount. Release the locks with `unlockMappers`.
    /// - Precondition: the caller isolated `head` (holds a reference), and no page-table lock.
    func lockedAnonMappings(of head: PFN) -> (locked: [AddressSpace], mappings: [AnonMapping])? {
        let frames = memory.frames
        let origin = lru.origin(of: head)
        let pages = UInt64(frames.order(head).pages)
        let family = addressSpaces.filter { $0.anonFamily == origin.family }
        guard let locked = tryReadLockMappers(family) else { return nil }
        var found: [AnonMapping] = []
        for mm in locked {
            for vma in mm.vmas.areas where !vma.isShared {
                let vmaPages = (vma.end - vma.start) >> PageGeometry.pageShift
                let lo = max(origin.index, vma.pgoff), hi = min(origin.index + pages, vma.pgoff + vmaPages)
                guard lo < hi else { continue }
                var i = lo
                while i < hi {
                    let va = vma.start + ((i - vma.pgoff) << PageGeometry.pageShift)
                    guard let (pmd, index) = mm.walk(va, to: .pmd, allocate: false) else { i += 1; continue }
                    let entry = pmd[index]
                    if entry.isHuge {
                        // A PMD maps 512 pages at once: record it once, skip to its end.
                        if entry.isPresent && !entry.isSpecial && entry.pfn == head {
                            found.append(AnonMapping(mm: mm, address: va.alignedDown(PageGeometry.pmdSize), huge: true, pfn: head))
                        }
                        let next = va.alignedDown(PageGeometry.pmdSize) + PageGeometry.pmdSize
                        i += (next - va) >> PageGeometry.pageShift
                        continue
                    }
                    if !entry.isNone {
                        let pte = table(at: entry)[va.tableIndex(.pte)]
                        let pfn = head + Int(i - origin.index)
                        if pte.isMapped && !pte.isSpecial && pte.pfn == pfn {
                            found.append(AnonMapping(mm: mm, address: va, huge: false, pfn: pfn))
                        }
                    }
                    i += 1
                }
            }
        }
        guard found.count == Int(folioMapcount(head)) else {
            unlockMappers(locked)
            return nil
        }
        return (locked, found)
    }

    /// Clears the accessed bit of every mapping in `mappings` and returns how many had it (Linux:
    /// `folio_referenced()` → `folio_referenced_one()` → `ptep_clear_flush_young()`).
    /// - Precondition: the mappers' mmap locks are held.
    func folioReferenced(_ mappings: [AnonMapping]) -> Int {
        var young = 0
        for m in mappings {
            let old = m.mm.exchangeMigrationEntry(m.address, huge: m.huge) { e in
                guard e.isPresent, !e.isSplitting, e.isHuge == m.huge, e.pfn == m.pfn, e.isAccessed else { return nil }
                return e.makingOld()
            }
            if old != nil {
                young += 1
                let size = m.huge ? PageGeometry.pmdSize : PageGeometry.pageSize
                flushTLB(m.mm, m.address, m.address + size)
            }
        }
        return young
    }

    /// What `unmapToSwap` did.
    enum UnmapToSwapResult {
        /// Every mapping is a swap entry now; the page is in the swap cache for the caller to free.
        case unmapped
        /// A reference beyond the mappings, the cache's and the caller's: a pin.
        case pinned
        /// No free swap slot, or the page's cgroup is at its `memory.swap.max` (Linux:
        /// `folio_alloc_swap()` fails either way).
        case swapFull
        /// A mapping changed meanwhile; the page stays in the swap cache, still mapped there.
        case partly
    }

    /// Unmaps the small page `pfn` into swap from every mapping in `mappings`: written to a new slot
    /// (or, if dirty, to the one it already stands for in the swap cache) and added to the swap cache, each PTE
    /// replaced by the slot's swap entry, so that processes sharing it after fork share the slot
    /// (Linux: `shrink_folio_list()` → `add_to_swap()`, `try_to_unmap()` → `try_to_unmap_one()`).
    /// - Precondition: the caller isolated the page (one reference) and holds the mappers' mmap locks.
    func unmapToSwap(_ pfn: PFN, _ mappings: [AnonMapping], _ swappedOut: inout Int) -> UnmapToSwapResult {
        let frames = memory.frames
        let cached = frames.flags(pfn).contains(.swapCache)
        guard frames.refcount(pfn) == frames.mapcount(pfn) + (cached ? 1 : 0) + 1 else { return .pinned }
        // add_to_swap(): one slot for every mapping, the page standing for it meanwhile.
        let slot: Int
        if cached, let existing = swapCacheSlot(of: pfn) {
            slot = existing
        } else {
            guard let fresh = allocateSwap(uses: 0) else { return .swapFull }
            guard swapDevice.charge(fresh, count: 1, to: memoryCgroups.owner(of: pfn)) else {
                swapDevice.freeUnused(fresh)
                return .swapFull
            }
            slot = fresh
            let added = addToSwapCache(pfn, slot: slot)
            precondition(added, "a new swap slot \(slot) had a cached page")
        }
        // try_to_unmap(): each PTE that still maps the page becomes the slot's swap entry.
        var all = true
        for m in mappings {
            let page = m.address
            m.mm.startInvalidatingSecondaryMMUs(page, page + PageGeometry.pageSize)
            let old = m.mm.exchangeMigrationEntry(page, huge: false) { e in
                guard e.isMapped, !e.isSpecial, e.pfn == pfn else { return nil }
                // The PTE's dirty bit goes to the page (`try_to_unmap_one()`: `folio_mark_dirty()`).
                if e.isDirty { frames.insertFlags(pfn, .dirty) }
                swapDevice.duplicate(slot)
                m.mm.removeMapping(pfn)
                return .swapEntry(slot: slot, exclusive: marksSwapEntriesExclusive(pfn))
            }
            if old != nil {
                flushTLB(m.mm, page, page + PageGeometry.pageSize)
                putPage(pfn)
            } else {
                all = false
            }
            m.mm.endInvalidatingSecondaryMMUs(page, page + PageGeometry.pageSize)
        }
        // pageout(): the bytes go to the slot only now, after every PTE that could write the page
        // was replaced and flushed; written before, a store between the copy and the unmap was lost
        // (found by `thpsim stress --seed 12 --lock pmd --deterministic`).
        // A page cached before is written again only if it is dirty (Linux: `pageout()` of a dirty folio).
        if frames.removeFlags(pfn, .dirty).contains(.dirty) || !cached {
            writeToSwap(pfn, slot)
            swappedOut &+= 1
        }
        return all && frames.mapcount(pfn) == 0 ? .unmapped : .partly
    }
}
