import Synchronization
import VMCore

/// The simulated CPUs' "interrupts disabled" windows in which gup-fast walks page tables without locks.
///
/// On x86 Linux, gup-fast runs with interrupts off, and everything that frees what it might be looking
/// at — a page table (`tlb_remove_table()`), a page after `zap_pte_range()`, a huge PMD being split
/// (`pmdp_splitting_flush()`) — first sends a TLB-shootdown IPI and waits for every CPU to take it,
/// which a CPU with interrupts off cannot do until its walk is over. The model makes that wait explicit:
/// each CPU has a sequence number, odd while inside a lockless walk; `waitForLocklessWalkers()` is the
/// IPI: it waits until every CPU that was inside has left (a grace period). `Kernel.flushTLB` calls it,
/// so every flush is also the barrier, as on x86.
///
/// ```
///  CPU 0  gup-fast: [enter ─ read PMD ─ get_page ─ exit]
///  CPU 1  munmap:        clear PMD ─ flushTLB(wait for CPU 0 to exit) ─ put_page ─ free table
/// ```
final class LocklessWalkers: @unchecked Sendable {
    let count: Int
    private let sequences: UnsafeMutablePointer<Atomic<UInt64>>

    init(cpus: Int) {
        count = cpus
        sequences = .allocate(capacity: cpus)
        for i in 0..<cpus { (sequences + i).initialize(to: Atomic(0)) }
    }

    deinit {
        sequences.deinitialize(count: count)
        sequences.deallocate()
    }

    /// Linux: `local_irq_save()` before the walk.
    @inline(__always) func enter(_ cpu: Int) {
        precondition(cpu >= 0 && cpu < count, "CPU \(cpu) outside 0..<\(count)")
        let old = sequences[cpu].wrappingAdd(1, ordering: .sequentiallyConsistent).oldValue
        precondition(old & 1 == 0, "CPU \(cpu) entered a lockless walk twice")
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Linux: `local_irq_restore()` after the walk.
    @inline(__always) func exit(_ cpu: Int) {
        sequences[cpu].wrappingAdd(1, ordering: .sequentiallyConsistent)
    }

    /// Waits until every CPU that is inside a lockless walk now has left it (the IPI's wait).
    func waitForWalkers() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        for cpu in 0..<count {
            let seen = sequences[cpu].load(ordering: .sequentiallyConsistent)
            guard seen & 1 == 1 else { continue }
            while sequences[cpu].load(ordering: .sequentiallyConsistent) == seen { Scheduling.pause() }
        }
    }
}

extension Kernel {
    /// Runs `body` as a lockless page-table walk on simulated CPU `cpu` (interrupts off): nothing it
    /// sees is freed before it returns.
    @inline(__always)
    func locklessWalk<R>(cpu: Int, _ body: () -> R) -> R {
        locklessWalkers.enter(cpu)
        defer { locklessWalkers.exit(cpu) }
        return body()
    }

    /// Waits for every lockless walk in progress to finish (Linux: the TLB-shootdown IPI, or
    /// `tlb_remove_table_sync_one()`).
    func waitForLocklessWalkers() { locklessWalkers.waitForWalkers() }
}
