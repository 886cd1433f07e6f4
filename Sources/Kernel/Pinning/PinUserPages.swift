import VMCore
import PhysicalMemory

/// FOLL_PIN: pins that the folio shows, so that fork, COW and page splitting can tell a page that may
/// be under DMA from one that is merely referenced (Linux 5.7+: `pin_user_pages()`,
/// `unpin_user_pages()`, `folio_maybe_dma_pinned()`).
///
/// A pin is a reference with a mark: on a large folio the reference plus one in the folio's pincount;
/// on a small page the refcount rises by `pinCountingBias`, so a count that high means "maybe pinned".
/// The 2010 design has no such mark: its pins are plain references (`getUserPages`).
extension Kernel {
    /// The refcount a pin adds to a small page (Linux: `GUP_PIN_COUNTING_BIAS`).
    public static let pinCountingBias: Int32 = 1024

    /// Whether the folio of `pfn` may be pinned for DMA (Linux: `folio_maybe_dma_pinned()`).
    func folioMaybeDMAPinned(_ pfn: PFN) -> Bool {
        let frames = memory.frames
        let head = frames.head(of: pfn)
        if frames.flags(head).contains(.head) { return frames.folioField(head, .pincount) > 0 }
        return frames.refcount(head) >= Self.pinCountingBias
    }

    /// Whether fork must give the child a copy of the exclusive anonymous page `pfn` rather than share
    /// it, because the parent may have pinned it for DMA (Linux 5.9+: `folio_needs_cow_for_dma()`,
    /// `copy_present_page()`); never in a design whose pins are plain references.
    @inline(__always) func needsCOWForDMA(_ pfn: PFN) -> Bool {
        pinsAreVisible && memory.frames.flags(pfn).contains(.anonExclusive) && folioMaybeDMAPinned(pfn)
    }

    /// Turns a reference that GUP took on `pfn` into a pin (Linux: `try_grab_folio()` with FOLL_PIN).
    func convertReferenceToPin(_ pfn: PFN) {
        let frames = memory.frames
        let head = frames.head(of: pfn)
        if frames.flags(head).contains(.head) {
            frames.addFolioField(head, .pincount, 1)
        } else {
            frames.addRefcount(head, Self.pinCountingBias - 1)
        }
    }

    /// Releases pins taken by `pinUserPages` (Linux: `unpin_user_pages()`).
    public func unpinUserPages(_ pages: [PFN]) {
        let frames = memory.frames
        for page in pages {
            let head = frames.head(of: page)
            if frames.flags(head).contains(.head) {
                let left = frames.addFolioField(head, .pincount, -1)
                precondition(left >= 0, "unpin of \(page), whose folio has no pins")
            } else {
                let count = frames.addRefcount(head, -(Self.pinCountingBias - 1))
                precondition(count >= 1, "unpin of \(page), which was not pinned")
            }
            putPage(page)
        }
    }
}

extension AddressSpace {
    /// Pins `count` pages from `start` with FOLL_PIN, through gup-fast on simulated CPU `cpu` and the
    /// slow path behind it; release them with `Kernel.unpinUserPages`. In the 2010 design, which has no
    /// FOLL_PIN, this is `getUserPagesFast` and the pages are released with `Kernel.putUserPages`
    /// (Linux: `pin_user_pages_fast()`).
    public func pinUserPagesFast(_ start: VirtualAddress, count: Int, write: Bool, cpu: Int) -> Result<[PFN], Errno> {
        let result = getUserPagesFast(start, count: count, write: write, cpu: cpu)
        if kernel.pinsAreVisible, case .success(let pages) = result {
            for page in pages { kernel.convertReferenceToPin(page) }
        }
        return result
    }

    /// `pin_user_pages()`: the slow path only, under the mmap lock.
    public func pinUserPages(_ start: VirtualAddress, count: Int, write: Bool) -> Result<[PFN], Errno> {
        let result = getUserPages(start, count: count, write: write)
        if kernel.pinsAreVisible, case .success(let pages) = result {
            for page in pages { kernel.convertReferenceToPin(page) }
        }
        return result
    }
}

extension Kernel {
    /// Whether `pin_user_pages()` pins are counted apart from references (FOLL_PIN), so that
    /// `folio_maybe_dma_pinned()` can see them and fork, COW and mprotect treat a maybe-pinned
    /// exclusive page as the pinner's. The one place the design's `pinsAreVisible` is read.
    @inline(__always) var pinsAreVisible: Bool { design.pinsAreVisible }

    /// Releases what `pinUserPages`/`pinUserPagesFast` returned, as the design pins; `dirty` after a
    /// device wrote into them, which marks their folios dirty first, so that reclaim writes a page kept
    /// in the swap cache back instead of dropping it (Linux: `unpin_user_pages_dirty_lock()` with
    /// `make_dirty`; 2.6.38: `bio_set_pages_dirty()` before the pages are released).
    public func releasePinnedPages(_ pages: [PFN], dirty: Bool = false) {
        if dirty {
            let frames = memory.frames
            for page in pages { frames.insertFlags(frames.head(of: page), .dirty) }
        }
        if pinsAreVisible { unpinUserPages(pages) } else { putUserPages(pages) }
    }
}
