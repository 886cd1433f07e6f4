import Synchronization
import VMCore
import PhysicalMemory

// What the Machine layer's page walker reads: the same tables the kernel writes, reached the way the
// MMU reaches them (CR3 → PGD frame → entry → next frame). `package` access is the model's
// counterpart of the hardware/software interface; nothing here changes kernel state except the
// accessed and dirty bits, which the MMU owns.

extension AddressSpace {
    /// The top-level table the MMU starts from (Linux: `mm->pgd`, loaded into CR3 by `switch_mm()`).
    package var pageTableRoot: PageTable { root }
}

extension Kernel {
    /// The table an upper-level entry points at, for a hardware walker (Linux: `pmd_page_vaddr()`).
    package func pageTable(at entry: PageTableEntry) -> PageTable { table(at: entry) }

    /// The table that lives in frame `pfn` (the walker's paging-structure caches keep frames).
    /// - Precondition: `pfn` holds a page table.
    package func pageTable(frame pfn: PFN) -> PageTable {
        let slot = memory.frames.link(pfn)
        return PageTable(pfn: pfn, slot: slot, entries: tables.entries(slot))
    }
}

extension PageTable {
    /// Sets hardware-owned bits (accessed, dirty) in entry `index` with an atomic OR, as the MMU's
    /// locked update does (Intel SDM vol. 3A, 4.8; Linux reads them with `ptep_test_and_clear_young()`).
    @inlinable public func setHardwareBits(_ index: Int, _ bits: UInt64) {
        entries[index].bitwiseOr(bits, ordering: .relaxed)
    }
}
