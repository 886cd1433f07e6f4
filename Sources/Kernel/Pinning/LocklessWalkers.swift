import Synchronization
import VMCore

/// The windows in which simulated CPUs walk page tables without locks: gup-fast, and the software MMU's
/// own walk (the hardware walker).
///
/// On x86 Linux, gup-fast runs with interrupts off, and everything that frees what a walker might be
/// looking at — a page table (`tlb_remove_table()`), a page after `zap_pte_range()`, a huge PMD being
/// split (`pmdp_splitting_flush()`) — first sends a TLB-shootdown IPI and waits for every CPU to take
/// it, which a CPU with interrupts off cannot do until its walk is over (and which also ends any
/// hardware walk using the old entries). The model makes that wait explicit: each CPU slot counts the
/// walks in progress on it; `waitForWalkers()` is the IPI: it waits until every slot that had walks in
/// progress has drained (a grace period). `Kernel.flushTLB` calls it, so every flush is also the
/// barrier, as on x86.
///
/// ```
///  CPU 0  gup-fast: [enter ─ read PMD ─ get_page ─ exit]
///  CPU 1  munmap:        clear PMD ─ flushTLB(wait for CPU 0 to exit) ─ put_page ─ free table
/// ```
/// Threads share the slots by number (`cpu & (slots - 1)`), which only makes a waiter wait longer.
final class LocklessWalkers: @unchecked Sendable {
    static let slots = 16
    private let active: UnsafeMutablePointer<Atomic<Int>>
    /// One counter per cache line.
    private static let spacing = 8

    init() {
        active = .allocate(capacity: Self.slots * Self.spacing)
        for i in 0..<(Self.slots * Self.spacing) { (active + i).initialize(to: Atomic(0)) }
    }

    deinit {
        active.deinitialize(count: Self.slots * Self.spacing)
        active.deallocate()
    }

    @inline(__always) private func slot(_ cpu: Int) -> UnsafeMutablePointer<Atomic<Int>> {
        active + (cpu & (Self.slots - 1)) &* Self.spacing
    }

    /// Linux: `local_irq_save()` before the walk. The sequentially consistent add orders it before
    /// the walk's reads, against a freer's clear-then-check.
    @inline(__always) func enter(_ cpu: Int) {
        slot(cpu).pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
    }

    /// Linux: `local_irq_restore()` after the walk.
    @inline(__always) func exit(_ cpu: Int) {
        slot(cpu).pointee.wrappingSubtract(1, ordering: .sequentiallyConsistent)
    }

    /// Waits until every slot that has walks in progress now has drained (the IPI's wait).
    func waitForWalkers() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        for cpu in 0..<Self.slots {
            while slot(cpu).pointee.load(ordering: .sequentiallyConsistent) != 0 { Scheduling.pause() }
        }
    }
}

extension Kernel {
    /// Runs `body` as a lockless page-table walk on simulated CPU `cpu` (interrupts off): nothing it
    /// sees is freed before it returns.
    @inline(__always)
    func locklessWalk<R>(cpu: Int = SimulatedCPU.current, _ body: () -> R) -> R {
        locklessWalkers.enter(cpu)
        defer { locklessWalkers.exit(cpu) }
        return body()
    }

    /// Waits for every lockless walk in progress to finish (Linux: the TLB-shootdown IPI, or
    /// `tlb_remove_table_sync_one()`).
    func waitForLocklessWalkers() { locklessWalkers.waitForWalkers() }
}
