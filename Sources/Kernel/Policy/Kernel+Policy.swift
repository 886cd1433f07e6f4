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
        case .atFault: return true
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
