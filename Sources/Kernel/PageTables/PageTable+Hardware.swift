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

    /// The present PMD entry that points at the last-level table for `va`, read without setting
    /// any bit; nil when an entry on the way is not present or maps a huge page. With the two below
    /// (where the leaf entry lives in host memory, and its table's frame record), a caller that looks
    /// ahead reads the upper levels once for both of its prefetches (`CPU.run`): the Machine's CPUs
    /// prefetch them a few accesses ahead of their walks, so the walk's host cache misses overlap the
    /// accesses before it.
    /// `public @inlinable` so that the Machine's batch loop inlines it (see `pageTable(at:)`).
    @inlinable @inline(__always)
    public func leafTableEntry(_ va: UInt64, root: PageTable) -> PageTableEntry? {
        guard let table = pmdTable(va, root: root) else { return nil }
        return leafTableEntry(va, inPMDTable: table)
    }

    /// The table of PMD entries that covers `va` (1 GiB of address space), read without setting any
    /// bit; nil when the PGD or PUD entry on the way is not present or maps a huge page. A caller
    /// that looks ahead keeps it for the next addresses in the same gigabyte while no kernel code
    /// runs (`CPU.run`).
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

    /// `leafTableEntry(_:root:)` below the table of PMD entries `pmdTable(_:root:)` found for `va`.
    @inlinable @inline(__always)
    public func leafTableEntry(_ va: UInt64, inPMDTable table: PageTable) -> PageTableEntry? {
        let entry = PageTableEntry(rawValue: table.entries[Int(truncatingIfNeeded: (va >> PageTableLevel.pmd.shift) & 511)]
            .load(ordering: .relaxed))
        return entry.isPresent && !entry.isHuge ? entry : nil
    }

    /// Where the last-level entry for `va` lives in host memory, in the table the present, non-huge
    /// PMD entry `pmd` points at (`leafTableEntry`).
    @inlinable @inline(__always)
    public func leafEntryAddress(_ va: UInt64, under pmd: PageTableEntry) -> UnsafeRawPointer {
        UnsafeRawPointer(pageTable(at: pmd).entries + Int(truncatingIfNeeded: (va >> 12) & 511))
    }

    /// Where the frame record of the table the present, non-huge PMD entry `pmd` points at lives in
    /// host memory (the record `pageTable(at:)` reads the table's slot from).
    @inlinable @inline(__always)
    public func tableRecordAddress(under pmd: PageTableEntry) -> UnsafeRawPointer {
        memory.frames.recordAddress(pmd.pfn)
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
