import Synchronization
import VMCore
import PhysicalMemory

/// Counting the mappings of a page or a folio (Linux: `mm/rmap.c`'s `folio_add_*_rmap_*()` and
/// `folio_remove_rmap_*()`), as the design says where they count.
///
/// In the 2010 design (`FolioMapcounts.compoundHead`) a huge page is mapped by PMDs only, and its
/// head's mapcount counts them. In today's design (`.perPage`) a large folio may be mapped by PMDs and
/// by PTEs at once:
///
/// ```
///  head          tail 1            tail 2        tail 3                 tails 4…
/// +-------------+-----------------+-------------+----------------------+--------
/// | refcount:   | word 1: entire  | word 1:     | word 1: pages mapped | refcount 0
/// | every map & | mapcount (PMDs) | pincount    | by PTEs, + ENTIRELY_  |
/// | reference   |                 | (FOLL_PIN)  | MAPPED while a PMD is |
/// | mapcount:   | mapcount: its   | mapcount:   | mapcount: its own     | mapcount: own
/// | its own PTEs| own PTEs        | own PTEs    | PTEs                  | PTEs
/// +-------------+-----------------+-------------+----------------------+--------
/// ```
/// `nr_anon_pages` (Linux 4.8+: `NR_ANON_MAPPED`) counts each page once while anything maps it, which
/// the ENTIRELY_MAPPED bit makes exact without a lock: a PMD's first mapping adds the pages no PTE
/// maps, a page's first PTE adds it only when no PMD maps the folio.
extension Kernel {
    /// Whether each page of a large folio counts the PTEs that map it, beside the folio's entire
    /// mapcount of PMDs (today), or the compound head counts the PMDs and no PTE maps a compound page
    /// (2010). The one place the design's mapcount scheme is read (`KernelDesign.mapcounts`).
    @inline(__always) var mapcountsPerPage: Bool { design.mapcounts == .perPage }

    /// The PMDs that map the folio `head` (Linux: `folio_entire_mapcount()`; 2.6.38: `page_mapcount()`
    /// of a compound head).
    @inline(__always) func entireMapcount(_ head: PFN) -> Int32 {
        !mapcountsPerPage ? memory.frames.mapcount(head) : memory.frames.folioField(head, .entireMapcount)
    }

    /// Every mapping of the folio `head`, PMDs and PTEs (Linux: `folio_mapcount()`).
    func folioMapcount(_ head: PFN) -> Int32 {
        let frames = memory.frames
        let flags = frames.flags(head)
        guard flags.contains(.head) else { return frames.mapcount(head) }
        guard mapcountsPerPage else { return frames.mapcount(head) }
        var total = frames.folioField(head, .entireMapcount)
        for i in 0..<frames.order(head).pages { total += frames.mapcount(head + i) }
        return total
    }

    /// Whether `pfn` belongs to a folio of more than one page.
    @inline(__always) func isInLargeFolio(_ pfn: PFN) -> Bool {
        !memory.frames.flags(pfn).isDisjoint(with: [.head, .tail])
    }
}

extension AddressSpace {
    /// Records one more PTE mapping of a page, which may be part of a large folio (Linux:
    /// `folio_add_anon_rmap_pte()`, `folio_add_new_anon_rmap()`).
    @inline(__always) func mapPage(_ pfn: PFN) {
        let frames = kernel.memory.frames
        guard frames.addMapcount(pfn, 1) == 1, frames.kind(pfn) == .anonymous else { return }
        let flags = frames.flags(pfn)
        if flags.isDisjoint(with: [.head, .tail]) {
            kernel.vmstat.modify(.nrAnonPages, 1)
            return
        }
        let head = flags.contains(.head) ? pfn : frames.head(of: pfn)
        if frames.addFolioField(head, .pagesMapped, 1) < FrameTable.entirelyMapped {
            kernel.vmstat.modify(.nrAnonPages, 1)
        }
    }

    /// Drops one PTE mapping of a page, keeping the reference for the caller to put after the flush.
    /// A large folio left partly mapped is queued for a deferred split (Linux: `folio_remove_rmap_pte()`
    /// → `deferred_split_folio()`).
    func removeMapping(_ pfn: PFN) {
        let frames = kernel.memory.frames
        guard frames.addMapcount(pfn, -1) == 0, frames.kind(pfn) == .anonymous else { return }
        let flags = frames.flags(pfn)
        if flags.isDisjoint(with: [.head, .tail]) {
            kernel.vmstat.modify(.nrAnonPages, -1)
            return
        }
        let head = flags.contains(.head) ? pfn : frames.head(of: pfn)
        let mapped = frames.addFolioField(head, .pagesMapped, -1)
        // While a PMD maps the folio, the page is still mapped. Otherwise it is unmapped now, and if
        // other pages stay mapped, part of the folio is unused.
        if mapped < FrameTable.entirelyMapped {
            kernel.vmstat.modify(.nrAnonPages, -1)
            if mapped > 0 { kernel.deferredSplitFolio(head) }
        }
    }

    /// Records a new PMD mapping of the huge page `head` at `haddr`: its mapcount, the counters behind
    /// `AnonHugePages` (and `AnonPages`, by design) when it was not PMD-mapped, and the reverse map of
    /// PMD mappings (Linux: `folio_add_anon_rmap_pmd()`; 2.6.38: `page_add_anon_rmap()` of a compound
    /// page).
    /// - Precondition: the PMD lock is held; the caller's reference becomes the mapping's.
    func mapHugePage(_ head: PFN, at haddr: VirtualAddress) {
        let frames = kernel.memory.frames
        if !kernel.mapcountsPerPage {
            if frames.addMapcount(head, 1) == 1 {
                if kernel.anonPagesCountHugePages { kernel.vmstat.modify(.nrAnonPages, PageGeometry.pmdOrder.pages) }
                kernel.vmstat.modify(.nrAnonTransparentHugepages, 1)
            }
        } else {
            if frames.addFolioField(head, .entireMapcount, 1) == 1 {
                let mapped = frames.addFolioField(head, .pagesMapped, FrameTable.entirelyMapped) - FrameTable.entirelyMapped
                kernel.vmstat.modify(.nrAnonPages, frames.order(head).pages - Int(mapped))
                kernel.vmstat.modify(.nrAnonTransparentHugepages, 1)
            }
        }
        kernel.addHugeMapping(head, self, haddr)
    }

    /// Drops the PMD mapping of `head` at `haddr`; the caller puts the mapping's reference. In today's
    /// design a folio still mapped by PTEs afterwards is queued for a deferred split (Linux:
    /// `folio_remove_rmap_pmd()`; 2.6.38: `page_remove_rmap()` of a compound page).
    /// - Precondition: the PMD lock is held.
    func unmapHugePage(_ head: PFN, at haddr: VirtualAddress) {
        let frames = kernel.memory.frames
        kernel.removeHugeMapping(head, self, haddr)
        if !kernel.mapcountsPerPage {
            if frames.addMapcount(head, -1) == 0 {
                if kernel.anonPagesCountHugePages { kernel.vmstat.modify(.nrAnonPages, -PageGeometry.pmdOrder.pages) }
                kernel.vmstat.modify(.nrAnonTransparentHugepages, -1)
            }
        } else {
            if frames.addFolioField(head, .entireMapcount, -1) == 0 {
                let mapped = frames.addFolioField(head, .pagesMapped, -FrameTable.entirelyMapped)
                let unmapped = frames.order(head).pages - Int(mapped)
                kernel.vmstat.modify(.nrAnonPages, -unmapped)
                kernel.vmstat.modify(.nrAnonTransparentHugepages, -1)
                // Some pages went unmapped while PTEs keep others mapped.
                if unmapped > 0 && mapped > 0 { kernel.deferredSplitFolio(head) }
            }
        }
    }
}
