import Synchronization
import VMCore

/// A secondary MMU that mirrors an address space's translations (KVM's EPT/NPT, a GPU, an RDMA NIC)
/// and must drop its copies before the primary ones change (Linux: `struct mmu_notifier_ops`).
///
/// The kernel calls `invalidateRangeStart` before it clears, moves, splits, write-protects or
/// replaces entries in `[start, end)`, and `invalidateRangeEnd` after; between the two the secondary
/// MMU must not establish new mappings of the range (KVM's `mmu_invalidate_in_progress`). A secondary
/// MMU takes no page references: it follows the primary tables and relies on these calls.
public protocol MMUNotifier: AnyObject, Sendable {
    /// Linux: `invalidate_range_start()`.
    func invalidateRangeStart(_ mm: AddressSpace, _ start: VirtualAddress, _ end: VirtualAddress)
    /// Linux: `invalidate_range_end()`.
    func invalidateRangeEnd(_ mm: AddressSpace, _ start: VirtualAddress, _ end: VirtualAddress)
    /// The address space is being torn down (Linux: `release()`, from `exit_mmap()`).
    func release(_ mm: AddressSpace)
}

/// The notifiers registered on one mm (Linux: `struct mmu_notifier_subscriptions`).
final class MMUNotifierList: Sendable {
    private let list = SpinLocked<[any MMUNotifier]>([])
    /// Whether any is registered, read without the lock on every invalidation (Linux:
    /// `mm_has_notifiers()`).
    private let count = Atomic<Int>(0)

    func register(_ notifier: any MMUNotifier) {
        list.withLock {
            $0.append(notifier)
            count.store($0.count, ordering: .releasing)
        }
    }

    func unregister(_ notifier: any MMUNotifier) {
        list.withLock {
            $0.removeAll { $0 === notifier }
            count.store($0.count, ordering: .releasing)
        }
    }

    @inline(__always) var isEmpty: Bool { count.load(ordering: .acquiring) == 0 }
    var all: [any MMUNotifier] { list.withLock { $0 } }
}

extension AddressSpace {
    /// Registers a secondary MMU on this mm (Linux: `mmu_notifier_register()`).
    public func registerMMUNotifier(_ notifier: any MMUNotifier) { mmuNotifiers.register(notifier) }

    /// Linux: `mmu_notifier_unregister()`.
    public func unregisterMMUNotifier(_ notifier: any MMUNotifier) { mmuNotifiers.unregister(notifier) }

    /// Runs `body`, which changes entries of `[start, end)`, between `invalidate_range_start` and
    /// `invalidate_range_end` of every registered notifier (Linux: `mmu_notifier_invalidate_range_start()`
    /// / `_end()` around the change). Costs one atomic load when none is registered.
    @inline(__always)
    func invalidatingSecondaryMMUs<R>(_ start: VirtualAddress, _ end: VirtualAddress, _ body: () -> R) -> R {
        if mmuNotifiers.isEmpty { return body() }
        let notifiers = mmuNotifiers.all
        for n in notifiers { n.invalidateRangeStart(self, start, end) }
        defer { for n in notifiers { n.invalidateRangeEnd(self, start, end) } }
        return body()
    }

    /// The two halves of `invalidatingSecondaryMMUs`, for changes that span several steps (a split).
    func startInvalidatingSecondaryMMUs(_ start: VirtualAddress, _ end: VirtualAddress) {
        guard !mmuNotifiers.isEmpty else { return }
        for n in mmuNotifiers.all { n.invalidateRangeStart(self, start, end) }
    }
    func endInvalidatingSecondaryMMUs(_ start: VirtualAddress, _ end: VirtualAddress) {
        guard !mmuNotifiers.isEmpty else { return }
        for n in mmuNotifiers.all { n.invalidateRangeEnd(self, start, end) }
    }

    /// Tells every notifier that the mm is going away (Linux: `mmu_notifier_release()`).
    func releaseSecondaryMMUs() {
        guard !mmuNotifiers.isEmpty else { return }
        for n in mmuNotifiers.all { n.release(self) }
    }
}
