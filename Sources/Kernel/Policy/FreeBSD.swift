import VMCore

/// FreeBSD's superpages: reservation-based allocation and promotion in place (Navarro, Iyer, Druschel
/// and Cox, "Practical, transparent operating system support for superpages", OSDI 2002; FreeBSD's
/// `sys/vm/vm_reserv.c` and `pmap_promote_pde()` in `sys/amd64/amd64/pmap.c`), run on Linux 6.18's
/// mechanism (`Reservations.swift`).
///
/// - No huge page at a fault and no multi-size THP: the first touch of a page in a 2 MiB-aligned range
///   that fits the VMA reserves a 2 MiB block and maps the page at its offset, zeroed; later first
///   touches in the range take their pages from the block (`vm_reserv_alloc_page()`).
/// - A fully populated reservation is remapped by one PMD in place (`pmap_promote_pde()`), when
///   `promote` is 1 (`vm.pmap.pg_ps_enabled`).
/// - No khugepaged and no MADV_COLLAPSE: FreeBSD promotes only fully populated reservations.
/// - A partly populated reservation waits on the deferred-split queue, in order of last change; under
///   memory pressure the one changed least recently is broken (`vm_reserv_reclaim_inactive()`).
/// - Where reservations are made follows `enabled` and `MADV_*` as Linux's huge pages do (`always`:
///   every anonymous VMA; `madvise`: those given MADV_HUGEPAGE; `never`: none), so that a grid's
///   `never` cell is the same program with 4 KiB pages.
public struct FreeBSDPolicy: ReservationPolicy {
    /// Whether fully populated reservations are promoted (FreeBSD: `vm.pmap.pg_ps_enabled`, default 1).
    public var promotes: Bool

    public init(promotes: Bool = true) {
        self.promotes = promotes
    }

    public func reservation(in vma: VMA, at address: VirtualAddress,
                            settings: TransparentHugepageSettings) -> ReservationRules? {
        settings.allowsHugepages(in: vma) ? ReservationRules(promotes: promotes) : nil
    }
}

/// A policy that serves anonymous memory from reservations, as FreeBSD does (`FreeBSDPolicy`, and
/// `QuicksilverPolicy` on top of it): no huge page and no multi-size THP at a fault, no khugepaged, no
/// MADV_COLLAPSE; a partly populated reservation waits on the deferred-split queue, whose shrinker
/// breaks reservations; the underused-THP shrinker does not apply.
public protocol ReservationPolicy: HugepagePolicy {}

extension ReservationPolicy {
    public func faultOrders(in vma: VMA, at address: VirtualAddress, among candidates: FolioOrders,
                            settings: TransparentHugepageSettings) -> FolioOrders { [] }

    public func khugepagedMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool { false }

    public func madviseMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool { false }

    /// A partly populated reservation goes on the queue its shrinker breaks reservations from.
    public func defersSplit(partiallyMapped: Bool) -> Bool { partiallyMapped }

    public func splitsUnderused(settings: TransparentHugepageSettings) -> Bool { false }

    public var reservesPages: Bool { true }
}
