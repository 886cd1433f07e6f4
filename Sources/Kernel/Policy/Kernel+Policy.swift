import VMCore

/// Which policy a kernel calls: one of Linux's, directly, or one given in its configuration, through
/// an existential.
enum PolicyDispatch: UInt8, Sendable {
    case linux2_6_38
    case linux6_18
    case custom

    /// The policy of `configuration`: the one it names, or its design's.
    init(_ configuration: KernelConfiguration) {
        guard configuration.policy == nil else { self = .custom; return }
        switch configuration.design.policy {
        case .linux2_6_38: self = .linux2_6_38
        case .linux6_18: self = .linux6_18
        }
    }
}

extension KernelConfiguration {
    /// The THP settings at boot: those given, or the design's.
    var bootHugepageSettings: TransparentHugepageSettings { hugepageSettings ?? design.defaultSettings }
}

/// The points where the mechanism asks the hugepage policy. The tag is a trivial value, so the
/// built-in policies cost a switch and an inlined call (no existential, no reference counting); a
/// custom policy costs one existential call per question.
extension Kernel {
    /// The policy this kernel asks (for tests and reports; the kernel itself dispatches below).
    public var hugepagePolicy: any HugepagePolicy {
        switch policyDispatch {
        case .linux2_6_38: Linux2_6_38Policy()
        case .linux6_18: Linux6_18Policy()
        case .custom: customPolicy!
        }
    }

    /// Which of `candidates` a fault at `va` in `vma` may allocate: the policy's choice, less what the
    /// mechanism cannot do (no huge pages in shared memory, whose `shmem_enabled` is not modelled; no
    /// multi-size THP in a design without them).
    @inline(__always)
    func faultOrders(_ vma: VMA, _ va: VirtualAddress, among candidates: FolioOrders,
                     _ settings: TransparentHugepageSettings) -> FolioOrders {
        if vma.isShared { return [] }
        let possible = supportsMTHP ? candidates : candidates.intersection(.pmd)
        if possible.isEmpty { return [] }
        let orders: FolioOrders = switch policyDispatch {
        case .linux2_6_38: Linux2_6_38Policy().faultOrders(in: vma, at: va, among: possible, settings: settings)
        case .linux6_18: Linux6_18Policy().faultOrders(in: vma, at: va, among: possible, settings: settings)
        case .custom: customPolicy!.faultOrders(in: vma, at: va, among: possible, settings: settings)
        }
        return orders.intersection(possible)
    }

    /// Whether a fault at `va` in `vma` may map a huge PMD (the policy's choice only; the range must
    /// still fit the VMA).
    @inline(__always)
    func faultMayMapHugePMD(_ vma: VMA, _ va: VirtualAddress, _ settings: TransparentHugepageSettings) -> Bool {
        faultOrders(vma, va, among: .pmd, settings).contains(.pmd)
    }

    /// Whether khugepaged may collapse ranges of `vma`.
    func khugepagedMayCollapse(_ vma: VMA, _ settings: TransparentHugepageSettings) -> Bool {
        if vma.isShared { return false }
        return switch policyDispatch {
        case .linux2_6_38: Linux2_6_38Policy().khugepagedMayCollapse(vma, settings: settings)
        case .linux6_18: Linux6_18Policy().khugepagedMayCollapse(vma, settings: settings)
        case .custom: customPolicy!.khugepagedMayCollapse(vma, settings: settings)
        }
    }

    /// Whether MADV_COLLAPSE may collapse ranges of `vma`.
    func madviseMayCollapse(_ vma: VMA, _ settings: TransparentHugepageSettings) -> Bool {
        if vma.isShared { return false }
        return switch policyDispatch {
        case .linux2_6_38: Linux2_6_38Policy().madviseMayCollapse(vma, settings: settings)
        case .linux6_18: Linux6_18Policy().madviseMayCollapse(vma, settings: settings)
        case .custom: customPolicy!.madviseMayCollapse(vma, settings: settings)
        }
    }

    /// Whether a large folio goes on the deferred-split queue; never where splitting a PMD splits the
    /// folio with it (no folio is ever partially mapped there).
    @inline(__always)
    func defersSplit(partiallyMapped: Bool) -> Bool {
        guard splitsFoliosSeparately else { return false }
        return switch policyDispatch {
        case .linux2_6_38: Linux2_6_38Policy().defersSplit(partiallyMapped: partiallyMapped)
        case .linux6_18: Linux6_18Policy().defersSplit(partiallyMapped: partiallyMapped)
        case .custom: customPolicy!.defersSplit(partiallyMapped: partiallyMapped)
        }
    }

    /// Whether the deferred-split shrinker splits underused THPs now.
    func splitsUnderused(_ settings: TransparentHugepageSettings) -> Bool {
        switch policyDispatch {
        case .linux2_6_38: Linux2_6_38Policy().splitsUnderused(settings: settings)
        case .linux6_18: Linux6_18Policy().splitsUnderused(settings: settings)
        case .custom: customPolicy!.splitsUnderused(settings: settings)
        }
    }

    /// Whether a fault zeroes its new folio of `order` itself.
    @inline(__always)
    func zeroesAtFault(order: PageOrder) -> Bool {
        let zeroing: PageZeroing = switch policyDispatch {
        case .linux2_6_38: Linux2_6_38Policy().zeroing(order: order)
        case .linux6_18: Linux6_18Policy().zeroing(order: order)
        case .custom: customPolicy!.zeroing(order: order)
        }
        switch zeroing {
        case .atFault, .aheadWhenAvailable: return true
        }
    }

    /// How a first touch at `va` in `vma` takes its page from a reservation, or nil for Linux's
    /// page-at-a-time allocation: Linux's policies make none (one predictable branch on the fault path).
    @inline(__always)
    func reservationRules(_ vma: VMA, _ va: VirtualAddress) -> ReservationRules? {
        guard _slowPath(policyDispatch == .custom), !vma.isShared else { return nil }
        return customPolicy!.reservation(in: vma, at: va, settings: hugepageSettings)
    }

    /// Whether the policy makes reservations, so that a split of a partly populated folio breaks one.
    var policyReservesPages: Bool { policyDispatch == .custom && customPolicy!.reservesPages }
}

/// The hooks of a policy with state. Linux's policies have none, so for them each costs one predictable
/// branch on the tag; a custom policy costs one existential call.
extension Kernel {
    /// Tells a custom policy that a fault mapped a 4 KiB page (or the zero page) at `va` of `vma`.
    @inline(__always)
    func policyNoteAnonymousFault(_ mm: AddressSpace, _ vma: VMA, _ va: VirtualAddress) {
        guard _slowPath(policyDispatch == .custom) else { return }
        customPolicy!.anonymousFaultMapped(mm, vma, at: va, state: policyState)
    }

    /// Tells a custom policy that `[start, end)` of `mm` was unmapped.
    @inline(__always)
    func policyNoteUnmap(_ mm: AddressSpace, _ start: VirtualAddress, _ end: VirtualAddress) {
        guard _slowPath(policyDispatch == .custom) else { return }
        customPolicy!.rangeUnmapped(mm, from: start, to: end, state: policyState)
    }

    /// Whether khugepaged's scan may collapse the range at `haddr` of `mm`.
    func policyAllowsScanCollapse(_ mm: AddressSpace, _ haddr: VirtualAddress) -> Bool {
        guard policyDispatch == .custom else { return true }
        return customPolicy!.khugepagedMayCollapse(mm, range: haddr, state: policyState)
    }

    /// Tells a custom policy what khugepaged's scan did at the range `haddr` of `mm`.
    func policyNoteScanCollapse(_ mm: AddressSpace, _ haddr: VirtualAddress, _ result: CollapseResult) {
        guard policyDispatch == .custom else { return }
        customPolicy!.khugepagedAttempted(mm, range: haddr, queued: false, result: result, state: policyState)
    }

    /// Collapses the ranges a custom policy queued for khugepaged, each costing a range's worth of the
    /// wake-up's `budget` (Linux: Ingens's `osa_khugepaged_schedule_mm_slot()`, which points the scan at
    /// the queued range first). Returns the progress made, the ranges collapsed and whether an allocation failed, which ends
    /// the wake-up's work as a failed allocation in the scan does.
    func collapsePolicyQueue(budget: Int, _ settings: KhugepagedSettings)
        -> (progress: Int, collapsed: Int, allocationFailed: Bool) {
        guard policyDispatch == .custom else { return (0, 0, false) }
        var progress = 0, collapsed = 0
        while progress < budget, let (mm, haddr) = customPolicy!.nextQueuedCollapse(state: policyState) {
            let result = mm.hasExited ? .processExited
                : mm.collapseAttempt(haddr, CollapseControl(isKhugepaged: true, limits: settings)).result
            progress += PageGeometry.entriesPerTable
            customPolicy!.khugepagedAttempted(mm, range: haddr, queued: true, result: result, state: policyState)
            if result == .succeeded { collapsed += 1 }
            if result == .allocationFailed { return (progress, collapsed, true) }
        }
        return (progress, collapsed, false)
    }

    /// Whether ranges wait on a custom policy's queue, so that khugepaged does not sleep; false for
    /// Linux's policies.
    func policyHasQueuedCollapses() -> Bool {
        guard policyDispatch == .custom else { return false }
        return customPolicy!.hasQueuedCollapses(state: policyState)
    }

    /// The mm (pid) a custom policy wants khugepaged's scan to go to next; nil for Linux's policies.
    func policyScanTarget(among pids: [Int]) -> Int? {
        guard policyDispatch == .custom, !pids.isEmpty else { return nil }
        return customPolicy!.khugepagedScanTarget(among: pids, state: policyState)
    }

    /// When a custom policy's kernel threads wake next; nil for Linux's policies.
    func policyThreadWakeup() -> UInt64? {
        guard policyDispatch == .custom else { return nil }
        return customPolicy!.nextThreadWakeup(state: policyState)
    }

    /// Runs a custom policy's kernel threads that are due.
    func runPolicyThreads() {
        guard policyDispatch == .custom else { return }
        customPolicy!.runThreads(self, state: policyState)
    }

    /// Whether a huge fault may take a pre-zeroed block and skip zeroing it.
    @inline(__always)
    func hugeFaultTakesPreZeroed() -> Bool {
        guard _slowPath(policyDispatch == .custom) else { return false }
        return customPolicy!.zeroing(order: PageGeometry.pmdOrder) == .aheadWhenAvailable
    }

    /// Zeroes up to `count` free blocks ahead of their allocation, order 10 first, then order 9; returns
    /// how many it zeroed (HawkEye: `zero_fill_zone_pages()`).
    public func preZeroFreeBlocks(_ count: Int) -> Int {
        var zeroed = 0
        while zeroed < count && (memory.preZeroFreeBlock(order: .max) || memory.preZeroFreeBlock(order: PageGeometry.pmdOrder)) {
            zeroed += 1
        }
        return zeroed
    }

    /// The zero-filled pages above which the underused shrinker splits a THP.
    func underusedZeroPageLimit() -> Int {
        let maxPtesNone = khugepaged.settings.maxPtesNone
        guard policyDispatch == .custom else { return maxPtesNone }
        return customPolicy!.underusedZeroPages(maxPtesNone: maxPtesNone)
    }

    /// The custom policy's counters, `/proc/vmstat` style; none for Linux's policies.
    public var policyCounters: [(name: String, value: Int)] { policyState?.counters ?? [] }
}
