import VMCore
import PhysicalMemory

/// Entry bits of an upper-level entry that points at a page table (Linux: `_PAGE_TABLE`).
let tablePointerBits = PageTableEntry.presentBit | PageTableEntry.writableBit | PageTableEntry.userBit | PageTableEntry.accessedBit

extension Kernel {
    /// Takes a frame for a page table and gives it an empty slot (Linux: `pagetable_alloc()`,
    /// counted as `NR_PAGETABLE`, meminfo `PageTables`). Nil when memory is exhausted.
    func allocateTable() -> PageTable? {
        var work = ReclaimWork()
        return allocateTable(&work)
    }

    /// `allocateTable()` for a caller that records the direct reclaim it caused (a fault).
    func allocateTable(_ work: inout ReclaimWork) -> PageTable? {
        guard let pfn = allocateTableFrame(&work) else { return nil }
        countAllocation(pages: 1)
        let slot = tables.allocateSlot()
        memory.frames.setLink(pfn, slot)
        tables.setOwner(slot, pfn)
        vmstat.modify(.nrPageTablePages, 1)
        return PageTable(pfn: pfn, slot: slot, entries: tables.entries(slot))
    }

    /// Host memory the page-table store holds, in bytes (it grows with the most tables ever in use).
    public var pageTableStoreBytes: Int { tables.chunkCount * PageTableStore.slotsPerChunk * (512 * 8 + 64 + 512 * 4) }

    /// Frees an empty page table (Linux: `pagetable_free()`).
    /// A table charged to a memory cgroup (`AddressSpace.chargeTable`) leaves its `pagetables` here and
    /// its usage when the frame is freed (Linux: `pagetable_free()` → `__memcg_kmem_uncharge_page()`).
    func freeTable(_ table: PageTable) {
        precondition(table.isEmpty(), "freeing a page table that still has entries")
        tables.setOwner(table.slot, nil)
        tables.freeSlot(table.slot)
        vmstat.modify(.nrPageTablePages, -1)
        if memoryCgroups.active.load(ordering: .relaxed), let memcg = memoryCgroups.owner(of: table.pfn) {
            memcg.pageTablePages.subtract(1, ordering: .relaxed)
        }
        putPage(table.pfn)
    }

    /// The table an upper-level entry points at (Linux: `pmd_page_vaddr()`, `pud_pgtable()`).
    @inline(__always) func table(at entry: PageTableEntry) -> PageTable {
        let pfn = entry.pfn
        let slot = memory.frames.link(pfn)
        return PageTable(pfn: pfn, slot: slot, entries: tables.entries(slot))
    }

    /// The split lock of a table (Linux: `pte_lockptr()`).
    @inline(__always) func splitLock(_ table: PageTable) -> UnsafeMutablePointer<Atomic<UInt32>> {
        tables.lock(table.slot)
    }
}

extension AddressSpace {
    /// The lock that guards the entries of the PMD table `pmdTable`: the mm's `page_table_lock` in the
    /// 2010 design, the table's own split lock in designs with split PMD locks (Linux: `pmd_lockptr()`).
    @inline(__always) func pmdLock(_ pmdTable: PageTable) -> UnsafeMutablePointer<Atomic<UInt32>> {
        switch kernel.design.pmdLock {
        case .pageTableLock: pageTableLock.word
        case .splitPMDLock: kernel.splitLock(pmdTable)
        }
    }
}

import Synchronization

extension AddressSpace {
    /// Walks from the PGD down to the table at `level` that covers `va`, allocating missing tables when
    /// `allocate` (under `page_table_lock`, re-checking after the allocation, as Linux's `__pud_alloc()`
    /// and `__pmd_alloc()` do). Nil when a table is missing and not allocated, when memory is exhausted,
    /// or when a huge entry sits above `level`.
    /// - Precondition: the mmap lock is held.
    @inline(__always)
    func walk(_ va: VirtualAddress, to target: PageTableLevel, allocate: Bool) -> (table: PageTable, index: Int)? {
        var work = ReclaimWork()
        return walk(va, to: target, allocate: allocate, inFault: false, &work)
    }

    /// `walk(_:to:allocate:)` allocating missing tables, recording the direct reclaim that took into
    /// `work` (a fault's).
    @inline(__always)
    func walk(_ va: VirtualAddress, to target: PageTableLevel, allocating work: inout ReclaimWork) -> (table: PageTable, index: Int)? {
        walk(va, to: target, allocate: true, inFault: true, &work)
    }

    @inline(__always)
    private func walk(_ va: VirtualAddress, to target: PageTableLevel, allocate: Bool, inFault: Bool,
                      _ work: inout ReclaimWork) -> (table: PageTable, index: Int)? {
        var table = root
        var level = PageTableLevel.pgd
        while level != target {
            let i = va.tableIndex(level)
            var entry = table[i]
            if entry.isNone {
                guard allocate, let populated = populate(table, i, level: level, inFault: inFault, &work) else { return nil }
                entry = populated
            }
            if entry.isHuge { return nil }
            table = kernel.table(at: entry)
            level = level.lower!
        }
        return (table, va.tableIndex(target))
    }

    /// The PTE table under a PMD entry, allocating it if the entry is empty (Linux: `__pte_alloc()`).
    /// Nil when memory is exhausted or the entry is huge.
    func pteTable(under pmd: PageTable, _ index: Int) -> PageTable? {
        var work = ReclaimWork()
        return pteTable(under: pmd, index, inFault: false, &work)
    }

    /// `pteTable(under:_:)` recording the direct reclaim an allocation took into `work` (a fault's).
    func pteTable(under pmd: PageTable, _ index: Int, allocating work: inout ReclaimWork) -> PageTable? {
        pteTable(under: pmd, index, inFault: true, &work)
    }

    private func pteTable(under pmd: PageTable, _ index: Int, inFault: Bool, _ work: inout ReclaimWork) -> PageTable? {
        var entry = pmd[index]
        if entry.isNone {
            guard let populated = populate(pmd, index, level: .pmd, inFault: inFault, &work) else { return nil }
            entry = populated
        }
        return entry.isHuge ? nil : kernel.table(at: entry)
    }

    /// Fills an empty upper-level entry of `table` (a table at `level`) with a new table: allocate
    /// outside the lock, then install under the lock that guards the entry unless another CPU got
    /// there first, in which case the new table goes back (Linux: `__pte_alloc()` under `pmd_lock()`,
    /// `__pmd_alloc()` and `__pud_alloc()` under `page_table_lock`). Returns the entry now there
    /// (possibly a huge PMD another fault installed), or nil when memory is exhausted. The new table is
    /// charged to the process's memory cgroup (`chargeTable`; in a fault with reclaim), and nil also
    /// means that charge failed.
    private func populate(_ table: PageTable, _ index: Int, level: PageTableLevel, inFault: Bool,
                          _ work: inout ReclaimWork) -> PageTableEntry? {
        guard let fresh = kernel.allocateTable(&work) else { return nil }
        guard chargeTable(fresh, mayReclaim: inFault) else {
            kernel.freeTable(fresh)
            return nil
        }
        let lock = level == .pmd ? pmdLock(table) : pageTableLock.word
        lock.spinLock()
        var entry = table[index]
        let installed = entry.isNone
        if installed {
            entry = PageTableEntry(pfn: fresh.pfn, bits: tablePointerBits)
            table.set(index, entry)
        }
        lock.spinUnlock()
        if !installed { kernel.freeTable(fresh) }
        return entry
    }

    /// Frees every page table under `[start, end)` whose span no VMA intersects any more (Linux:
    /// `free_pgtables()` with its floor and ceiling). Tables still covering a VMA stay.
    /// - Precondition: the mmap lock is held for writing and the range's entries were zapped.
    func freeTables(_ start: VirtualAddress, _ end: VirtualAddress) {
        guard start < end else { return }
        freeTables(in: root, level: .pgd, base: VirtualAddress(0), start, end)
    }

    private func freeTables(in table: PageTable, level: PageTableLevel, base: VirtualAddress,
                            _ start: VirtualAddress, _ end: VirtualAddress) {
        let span = level.entrySpan
        let first = Int((start - base) / span), last = Int((end - 1 - base) / span)
        for i in first...min(last, 511) {
            let entry = table[i]
            guard !entry.isNone, !entry.isHuge, let lower = level.lower else { continue }
            let childStart = base + UInt64(i) * span
            let childEnd = childStart + span
            let child = kernel.table(at: entry)
            if lower != .pte {
                freeTables(in: child, level: lower, base: childStart, max(start, childStart), min(end, childEnd))
            }
            if !vmas.intersects(childStart, childEnd) {
                let lock = level == .pmd ? pmdLock(table) : pageTableLock.word
                lock.spinLock()
                table.set(i, .none)
                lock.spinUnlock()
                if lower == .pmd {
                    precondition(kernel.memory.frames.depositLink(child.pfn) == nil, "freeing a PMD table with deposited tables")
                }
                // A lockless walker may still be reading the table (Linux: `tlb_remove_table()`).
                kernel.waitForLocklessWalkers()
                kernel.freeTable(child)
            }
        }
    }
}
