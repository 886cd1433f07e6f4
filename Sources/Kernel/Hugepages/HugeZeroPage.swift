import Synchronization
import VMCore
import PhysicalMemory

/// The huge zero page: one 2 MiB folio of zeros that read faults in huge-page-enabled VMAs map
/// read-only, so reading untouched memory costs neither memory nor a 2 MiB clear (Linux 3.8+:
/// `huge_zero_page`; the 2.6.38 design allocated a real huge page on a read fault, as this model does
/// when `use_zero_page` is 0).
///
/// Its refcount is one for the kernel plus one per PMD mapping it. It is allocated on first use
/// (`thp_zero_page_alloc`) and freed only when nothing maps it and memory is short (Linux: the
/// shrinker `shrink_huge_zero_page_scan()`; here `releaseUnusedHugeZeroPage()`, which a failed
/// huge-page allocation calls).
final class HugeZeroPage: Sendable {
    /// The head while it exists.
    let head = SpinLocked<PFN?>(nil)
    /// The head's PFN + 1, or 0, for lockless checks.
    let headWord = Atomic<UInt32>(0)
}

extension Kernel {
    /// The huge zero page with a reference for the caller, allocating it on first use; nil when no
    /// order-9 block is free (Linux: `mm_get_huge_zero_folio()` → `get_huge_zero_folio()`).
    /// Its allocation, if this call makes it, is recorded in `fault`.
    func getHugeZeroPage(_ fault: inout FaultContext) -> PFN? {
        hugeZeroPage.head.withLock { current -> PFN? in
            if let head = current {
                memory.frames.addRefcount(head, 1)
                return head
            }
            guard let head = memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .zeroPage) else {
                vmstat.count(.thpZeroPageAllocFailed)
                return nil
            }
            countAllocation(pages: PageGeometry.pmdOrder.pages)
            fault.zeroed(pages: PageGeometry.pmdOrder.pages)
            vmstat.count(.thpZeroPageAlloc)
            memory.frames.addRefcount(head, 1)  // 1 for the kernel, 1 for the caller
            current = head
            hugeZeroPage.headWord.store(head.rawValue + 1, ordering: .releasing)
            return head
        }
    }

    /// Drops a mapping's reference (Linux: `put_huge_zero_page()`); the kernel's own reference stays.
    func putHugeZeroPage(_ head: PFN) {
        let remaining = memory.frames.addRefcount(head, -1)
        precondition(remaining >= 1, "huge zero page lost the kernel's reference")
    }

    /// Whether `pfn` is the head of the huge zero page.
    @inline(__always) func isHugeZeroPage(_ pfn: PFN) -> Bool {
        hugeZeroPage.headWord.load(ordering: .acquiring) == pfn.rawValue + 1
    }

    /// The huge zero page's head, if it exists.
    public var hugeZeroPageFrame: PFN? {
        let word = hugeZeroPage.headWord.load(ordering: .acquiring)
        return word == 0 ? nil : PFN(word - 1)
    }

    /// Frees the huge zero page when nothing maps it; returns whether it did (Linux:
    /// `shrink_huge_zero_page_scan()`).
    @discardableResult
    public func releaseUnusedHugeZeroPage() -> Bool {
        hugeZeroPage.head.withLock { current -> Bool in
            guard let head = current, memory.frames.refcount(head) == 1 else { return false }
            hugeZeroPage.headWord.store(0, ordering: .releasing)
            current = nil
            memory.frames.setRefcount(head, 0)
            vmstat.count(.pgfree, PageGeometry.pmdOrder.pages)
            memory.freeFolio(head)
            return true
        }
    }
}
