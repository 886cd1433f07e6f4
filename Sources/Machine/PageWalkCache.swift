import VMCore

/// The paging-structure caches of one CPU: PML4E, PDPTE and PDE caches, each mapping the upper bits
/// of a virtual address to the frame of the next table down, so that a walk can skip the levels
/// above (Intel SDM vol. 3A, 4.10.3; AMD's "page walk cache"). Tagged by ASID like the TLBs.
///
/// ```
///  va[47:39] ─► PML4E cache ─► PDPT frame   (walk starts at the PUD level: 3 references)
///  va[47:30] ─► PDPTE cache ─► PD frame     (starts at the PMD level: 2 references)
///  va[47:21] ─► PDE cache   ─► PT frame     (starts at the PTE level: 1 reference)
/// ```
public final class PageWalkCache: @unchecked Sendable {
    /// Indexed by the level of the entry cached: `.pgd` (PML4E), `.pud` (PDPTE), `.pmd` (PDE).
    public let pml4: TLBArray
    public let pdpt: TLBArray
    public let pd: TLBArray
    /// Which of the three exist (a spec of 0 entries models a core without that cache).
    let hasPML4: Bool, hasPDPT: Bool, hasPD: Bool

    public init(pml4: TLBArraySpec, pdpt: TLBArraySpec, pd: TLBArraySpec) {
        func build(_ s: TLBArraySpec) -> TLBArray { TLBArray(entries: max(s.entries, 1), ways: max(s.ways, 1)) }
        self.pml4 = build(pml4); self.pdpt = build(pdpt); self.pd = build(pd)
        hasPML4 = pml4.entries > 0; hasPDPT = pdpt.entries > 0; hasPD = pd.entries > 0
    }

    /// The deepest cached table for `va`: the level whose table is known and that table's frame.
    @inline(__always)
    public func deepest(_ va: UInt64, asid: UInt16) -> (level: PageTableLevel, frame: UInt32)? {
        if hasPD {
            let s = pd.lookup(page: va >> 21, size: .size4K, asid: asid)
            if s >= 0 { return (.pte, UInt32(truncatingIfNeeded: pd.payload(s))) }
        }
        if hasPDPT {
            let s = pdpt.lookup(page: va >> 30, size: .size4K, asid: asid)
            if s >= 0 { return (.pmd, UInt32(truncatingIfNeeded: pdpt.payload(s))) }
        }
        if hasPML4 {
            let s = pml4.lookup(page: va >> 39, size: .size4K, asid: asid)
            if s >= 0 { return (.pud, UInt32(truncatingIfNeeded: pml4.payload(s))) }
        }
        return nil
    }

    /// Remembers that the entry at `level` for `va` points at the table in `frame`. `absent`: the
    /// caller's `deepest` missed in that cache and nothing filled it since (a walk that descends from
    /// `level` started above it, so its `deepest` missed there).
    @inline(__always)
    public func fill(_ level: PageTableLevel, _ va: UInt64, asid: UInt16, frame: UInt32, absent: Bool = false) {
        switch level {
        case .pgd: if hasPML4 { fillUpper(pml4, va >> 39, asid: asid, frame: frame, absent: absent) }
        case .pud: if hasPDPT { fillUpper(pdpt, va >> 30, asid: asid, frame: frame, absent: absent) }
        default: if hasPD { pd.insert(page: va >> 21, size: .size4K, asid: asid, payload: UInt64(frame), absent: absent) }
        }
    }

    /// A PML4E or PDPTE cache fill, not inlined: walks seldom start above the PDE level, and the
    /// walk inlines the PDE cache's fill only while it stays small.
    @inline(never)
    func fillUpper(_ cache: TLBArray, _ page: UInt64, asid: UInt16, frame: UInt32, absent: Bool) {
        cache.insert(page: page, size: .size4K, asid: asid, payload: UInt64(frame), absent: absent)
    }

    /// Drops entries of `asid` whose span intersects `[start, end)`; a range flush must, since the
    /// tables under it may be freed (Linux: `flush_tlb_mm_range()` with `freed_tables`).
    public func invalidate(asid: UInt16, start: UInt64, end: UInt64) {
        // The arrays hold "4K" tags whose page number is va >> level shift; rescale the range.
        for (a, shift) in [(pml4, PageTableLevel.pgd.shift), (pdpt, PageTableLevel.pud.shift), (pd, PageTableLevel.pmd.shift)] {
            let first = start >> shift, last = (end &- 1) >> shift
            a.invalidate(asid: asid, start: first << 12, end: (last &+ 1) << 12)
        }
    }

    public func invalidateAll(asid: UInt16) {
        pml4.invalidateAll(asid: asid); pdpt.invalidateAll(asid: asid); pd.invalidateAll(asid: asid)
    }
}
