import VMCore

/// Andrea Arcangeli's design as merged in Linux 2.6.38 (2011): huge pages are mapped by PMDs only,
/// each huge PMD has a PTE table deposited beside it so that `split_huge_page()` can never fail, GUP
/// pins on tail pages are counted in the tail and serialized against splitting by `compound_lock`, and
/// `page_table_lock` guards every huge PMD.
extension KernelDesign {
    /// Linux 2.6.38, with the huge zero page of 3.8 available behind `use_zero_page` (2.6.38's
    /// defaults: `enabled=always`, `defrag=always`; `use_zero_page` is off by default here so that read
    /// faults allocate huge pages as 2.6.38 did).
    public static let linux2_6_38 = KernelDesign(
        id: .linux2_6_38,
        // Mechanism variants.
        pmdLock: .pageTableLock,              // one `page_table_lock` per mm
        tailPagePins: true,                   // get_page() on a tail counts in the tail too
        hugeCOWReuse: .mapcountOne,           // reuse when one PMD maps the page
        hugeCOWCopy: .copyWholeHugePage,      // copy 2 MiB, or 512 small pages as a fallback
        anonPagesCountHugePages: false,       // NR_ANON_PAGES and NR_ANON_TRANSPARENT_HUGEPAGES apart
        mapcounts: .compoundHead,             // the head counts the PMDs; no PTE maps a compound page
        splitPMDSplitsPage: true,             // split_huge_page_pmd() splits the page with every PMD
        supportsMTHP: false,                  // huge pages are 2 MiB only
        swapsOutTHPWhole: false,              // add_to_swap() splits a THP first
        pinsAreVisible: false,                // no FOLL_PIN: a pin is a reference
        swapCacheReuse: .reuseSwapPage,       // reuse_swap_page() at write faults
        swapsZeroFilledPagesWithoutIO: false, // every page written (the zero map came in 6.12)
        swapReadahead: .contiguousSlots,      // valid_swaphandles(): the in-use run of the cluster
        alignsLargeAnonymousMappings: false,  // mmap places anonymous memory anywhere
        anonLRU: KernelDesign.AnonLRUPolicy(newPagesActive: true, activateOnFirstReference: true,
                                            ratioFromZoneSize: true),
        spinLocks: .ticket,                   // x86 ticket spin locks (2.6.25–4.1)
        // Policy, settings, knobs.
        policy: .linux2_6_38,
        defaultSettings: TransparentHugepageSettings(enabled: .always, defrag: .always, useZeroPage: false),
        knobs: [.enabled, .defrag, .useZeroPage, .shrinkUnderused])
}

/// Linux 2.6.38's hugepage policy: a huge PMD at the first fault of an aligned 2 MiB range where
/// `enabled` allows it (`always`, or `madvise` with `MADV_HUGEPAGE`; never with `MADV_NOHUGEPAGE`),
/// otherwise 4 KiB; khugepaged collapses where a fault could have mapped one; MADV_COLLAPSE (6.1) is
/// taken with today's rule; no folio is split later (Linux 2.6.38: `do_huge_pmd_anonymous_page()`
/// under `transparent_hugepage_enabled()`, `khugepaged_enter_vma_merge()`).
public struct Linux2_6_38Policy: HugepagePolicy {
    public init() {}

    @inline(__always)
    public func faultOrders(in vma: VMA, at address: VirtualAddress, among candidates: FolioOrders,
                            settings: TransparentHugepageSettings) -> FolioOrders {
        candidates.contains(.pmd) && settings.allowsHugepages(in: vma) ? .pmd : []
    }

    public func khugepagedMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool {
        settings.allowsHugepages(in: vma)
    }

    public func madviseMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool {
        !vma.isShared && !vma.flags.contains(.noHugepage)
    }

    @inline(__always) public func defersSplit(partiallyMapped: Bool) -> Bool { false }

    public func splitsUnderused(settings: TransparentHugepageSettings) -> Bool { false }
}
