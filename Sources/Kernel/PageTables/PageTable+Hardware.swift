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
    /// `public @inlinable`, not `package`: the Machine's walk calls it once or twice per TLB miss, and
    /// Swift 6.3 does not inline an `@inlinable package` function into another module (as
    /// `PageTableWalk`). It reads the table's frame record (its slot) and nothing else.
    @inlinable @inline(__always) public func pageTable(at entry: PageTableEntry) -> PageTable { pageTable(frame: entry.pfn) }

    /// The table the upper-level `entry`, entry `index` of `parent`, points at, for a hardware walker
    /// (Linux: `pmd_page_vaddr()`), as `pageTable(at:)` finds it but without reading the table's
    /// frame record when it can: the store's hint beside the entry names a slot, and the slot's owner
    /// confirms it (`PageTableStore`); otherwise the frame record gives the slot, which becomes the
    /// hint. Hints are host-side only (several walkers may write one; any slot they leave is checked),
    /// so the table found is the one `pageTable(at:)` finds. Random walks over more tables than the
    /// host's caches hold then miss there once per walk (the entry), not twice.
    @inlinable @inline(__always)
    public func pageTable(below entry: PageTableEntry, in parent: PageTable, at index: Int) -> PageTable {
        let pfn = entry.pfn
        let hint = tables.hints(parent.slot) + index
        let slot = hint.pointee.load(ordering: .relaxed)
        if tables.owners[Int(slot)].load(ordering: .acquiring) == pfn.rawValue &+ 1 {
            return PageTable(pfn: pfn, slot: slot, entries: tables.entries(slot))
        }
        let table = pageTable(frame: pfn)
        hint.pointee.store(table.slot, ordering: .relaxed)
        return table
    }

    /// The table of PMD entries that covers `va` (1 GiB of address space), read without setting any
    /// bit; nil when the PGD or PUD entry on the way is not present or maps a huge page. With the one
    /// below (where the leaf entry lives in host memory) it serves a caller that looks ahead: the
    /// Machine's CPUs prefetch the leaf entry a few accesses ahead of their walks, so the walk's host
    /// cache miss overlaps the accesses before it (`CPU.run`), and keep this table for the next
    /// addresses in the same gigabyte while no kernel code runs.
    /// `public @inlinable` so that the Machine's batch loop inlines it (see `pageTable(at:)`).
    @inlinable @inline(__always)
    public func pmdTable(_ va: UInt64, root: PageTable) -> PageTable? {
        var table = root
        var level = PageTableLevel.pgd
        while true {
            let entry = PageTableEntry(rawValue: table.entries[Int(truncatingIfNeeded: (va &>> level.shift) & 511)]
                .load(ordering: .relaxed))
            guard entry.isPresent && !entry.isHuge else { return nil }
            table = pageTable(at: entry)
            if level == .pud { return table }
            level = level.lower.unsafelyUnwrapped
        }
    }

    /// Where the last-level entry for `va` lives in host memory, below the table of PMD entries
    /// `pmdTable(_:root:)` found for `va` (`pageTable(below:in:at:)`: no frame record read on a hint's
    /// hit); nil when the PMD entry is not present or maps a huge page.
    @inlinable @inline(__always)
    public func leafEntryAddress(_ va: UInt64, inPMDTable table: PageTable) -> UnsafeRawPointer? {
        let index = Int(truncatingIfNeeded: (va >> PageTableLevel.pmd.shift) & 511)
        let entry = PageTableEntry(rawValue: table.entries[index].load(ordering: .relaxed))
        guard entry.isPresent && !entry.isHuge else { return nil }
        return UnsafeRawPointer(pageTable(below: entry, in: table, at: index).entries + Int(truncatingIfNeeded: (va >> 12) & 511))
    }

    /// The table that lives in frame `pfn` (the walker's paging-structure caches keep frames).
    /// - Precondition: `pfn` holds a page table.
    @inlinable @inline(__always) public func pageTable(frame pfn: PFN) -> PageTable {
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
