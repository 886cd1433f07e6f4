import VMCore

/// Linux 6.18, as this machine's kernel runs it: a folio may be mapped by a PMD and by PTEs at once, so
/// splitting a PMD (`split_huge_pmd()`, which cannot fail) and splitting the folio (`split_huge_page()`,
/// which fails while pins exist) are separate; pins live in the folio only; a partially unmapped folio
/// waits on the deferred-split queue; fork copies pages that may be pinned; a write to a shared THP
/// copies 4 KiB (5.8+); large anonymous mappings are aligned to 2 MiB (6.7+); anonymous folios of 16 KiB
/// to 1 MiB (6.8+).
extension KernelDesign {
    /// Linux 6.18. Boot settings are those of the distribution kernel here (`enabled=madvise`,
    /// `defrag=madvise`, `use_zero_page=1`, every `hugepages-<size>kB/enabled` below 2 MiB `never`).
    public static let linux6_18 = KernelDesign(
        id: .linux6_18,
        // Mechanism variants.
        pmdLock: .splitPMDLock,               // a lock per PMD table (3.13+)
        tailPagePins: false,                  // references and pins live in the folio
        hugeCOWReuse: .anonExclusive,         // PageAnonExclusive, or every reference is this PMD's (5.19+)
        hugeCOWCopy: .splitPMDCopyPage,       // split the PMD, copy the 4 KiB written (5.8+)
        anonPagesCountHugePages: true,        // NR_ANON_MAPPED counts every mapped page (4.8+)
        mapcounts: .perPage,                  // per-page mapcounts and the entire mapcount
        splitPMDSplitsPage: false,            // split_huge_pmd() apart from split_huge_page() (4.5+)
        supportsMTHP: true,                   // multi-size THP (6.8+)
        swapsOutTHPWhole: true,               // THP_SWAP into a 512-slot cluster (4.13+)
        pinsAreVisible: true,                 // FOLL_PIN (5.7+); fork copies maybe-pinned pages (5.9+)
        swapCacheReuse: .anonExclusive,       // swapped-in pages stay cached, mapped exclusive (5.19+)
        swapsZeroFilledPagesWithoutIO: true,  // the swap zero map (6.12+)
        swapReadahead: .adaptive,             // swapin_nr_pages() (3.14+); by VMA on SSDs (4.14+)
        alignsLargeAnonymousMappings: true,   // thp_get_unmapped_area() for anonymous memory (6.7+)
        anonLRU: KernelDesign.AnonLRUPolicy(newPagesActive: false, activateOnFirstReference: false,
                                            ratioFromZoneSize: false),
        spinLocks: .queued,                   // qspinlock (4.2+)
        // Policy, settings, knobs.
        policy: .linux6_18,
        defaultSettings: TransparentHugepageSettings(enabled: .madvise, defrag: .madvise, useZeroPage: true),
        knobs: [.enabled, .defrag, .useZeroPage, .shrinkUnderused, .perSizeEnabled])
}

/// Linux 6.18's hugepage policy: at a fault, a huge PMD where `enabled` allows it, else at a write
/// fault the largest multi-size THP order `hugepages-<size>kB/enabled` allows (each `inherit`ing
/// `enabled`), else 4 KiB; khugepaged collapses where `enabled` allows a huge PMD; MADV_COLLAPSE
/// ignores `enabled`; every partially unmapped large folio and every new THP go on the deferred-split
/// queue, whose shrinker also splits underused THPs when `shrink_underused` is on (Linux 6.18:
/// `thp_vma_allowable_orders()`, `deferred_split_folio()`, `thp_underused()`).
public struct Linux6_18Policy: HugepagePolicy {
    public init() {}

    @inline(__always)
    public func faultOrders(in vma: VMA, at address: VirtualAddress, among candidates: FolioOrders,
                            settings: TransparentHugepageSettings) -> FolioOrders {
        if vma.isShared || vma.flags.contains(.noHugepage) { return [] }
        var orders: FolioOrders = candidates.contains(.pmd) && settings.allowsHugepages(in: vma) ? .pmd : []
        // Every size below 2 MiB `never` (the boot default): nothing more to look at.
        let small = candidates.intersection(.belowPMD)
        guard !small.isEmpty, settings.perSizeBits & 0x3FFF != 0x3FFF else { return orders }
        for order in TransparentHugepageSettings.anonymousOrders where small.contains(order: order) {
            if settings.allowsHugepages(in: vma, order: order) { orders.insert(FolioOrders(order: order)) }
        }
        return orders
    }

    public func khugepagedMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool {
        settings.allowsHugepages(in: vma)
    }

    public func madviseMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool {
        !vma.isShared && !vma.flags.contains(.noHugepage)
    }

    @inline(__always) public func defersSplit(partiallyMapped: Bool) -> Bool { true }

    public func splitsUnderused(settings: TransparentHugepageSettings) -> Bool { settings.shrinkUnderused }
}
