import Synchronization
import VMCore
import PhysicalMemory

extension AddressSpace {
    /// Handles a page fault at `va` for `access` raised without a walk, so with the P bit clear (the
    /// handler does not read it); what the handler did is not kept. Takes the mmap lock for reading.
    public func handleFault(at va: VirtualAddress, access: MemoryAccess) -> FaultOutcome {
        var fault = FaultContext(address: va, access: access, present: false)
        return handleFault(&fault)
    }

    /// Handles the page fault `fault` describes and records into it what was done (Linux:
    /// `do_user_addr_fault()` → `handle_mm_fault()` with its `struct vm_fault`). Takes the mmap lock
    /// for reading.
    public func handleFault(_ fault: inout FaultContext) -> FaultOutcome {
        var outcome = resolveFault(&fault)
        if _slowPath(fault.reservationToPromote != nil) { promoteReservationAfterFault(&fault) }
        // The machine out of memory, not a cgroup's limit: the system-wide OOM killer frees a process's
        // memory and the fault runs again, until it succeeds or this process is the one chosen.
        while outcome == .outOfMemory && !oomKilled.load(ordering: .relaxed) && kernel.isOutOfMemory,
              let victim = kernel.outOfMemorySystemWide(faulting: self), victim !== self, !oomKilled.load(ordering: .relaxed) {
            outcome = resolveFault(&fault)
        }
        if outcome == .outOfMemory || _slowPath(oomKilled.load(ordering: .relaxed)) {
            // Chosen by an OOM killer during the fault: the process dies (Linux:
            // `pagefault_out_of_memory()` finding the SIGKILL pending).
            if oomKilled.load(ordering: .relaxed) {
                exit()
                outcome = .outOfMemory
            }
        }
        fault.outcome = outcome
        return outcome
    }

    private func resolveFault(_ fault: inout FaultContext) -> FaultOutcome {
        let va = fault.address, access = fault.access
        mmapLock.readLock()
        defer { mmapLock.unlock() }
        guard !hasExited, let index = vmas.index(containing: va) else { return .segv(.mapErr) }
        let vma = vmas[index]
        if let denied = accessError(vma, access) { return denied }
        kernel.vmstat.count(.pgfault)
        countMemcg(.pgfault)
        // A read that maps the zero page needs no anon_vma; a write or a huge fault does (Linux:
        // anon_vma_prepare() in do_anonymous_page() after the zero-page branch, and at the start of
        // do_huge_pmd_anonymous_page()).
        if vma.anonVMA == 0 && !vma.isShared
            && (access == .write || kernel.faultMayMapHugePMD(vma, va, kernel.hugepageSettings) && hugeRangeFits(vma, va)
                || kernel.reservationRules(vma, va) != nil) {
            // anon_vma_prepare() runs under the read lock in Linux with its own lock; the model's VMA
            // list is only written under the write lock, so upgrade briefly.
            fault.waited = .mmapWriteLock
            mmapLock.unlock()
            mmapLock.writeLock()
            if let i = vmas.index(containing: va) { prepareAnonVMA(i) }
            mmapLock.unlock()
            mmapLock.readLock()
            guard let i = vmas.index(containing: va) else { return .segv(.mapErr) }
            return handlePTEFault(vmas[i], &fault)
        }
        return handlePTEFault(vma, &fault)
    }

    /// Whether the VMA forbids the access (Linux: `access_error()`): a write needs VM_WRITE, an
    /// instruction fetch VM_EXEC, and a read any of the three (x86 cannot map write- or exec-only).
    func accessError(_ vma: VMA, _ access: MemoryAccess) -> FaultOutcome? {
        switch access {
        case .write: vma.flags.contains(.write) ? nil : .segv(.accErr)
        case .execute: vma.flags.contains(.exec) ? nil : .segv(.accErr)
        case .read: vma.flags.isDisjoint(with: [.read, .write, .exec]) ? .segv(.accErr) : nil
        }
    }

    /// The fault below the VMA checks: find or make the tables; at an empty PMD in a VMA that allows
    /// huge pages try a huge page, at a huge PMD resolve it there, and otherwise resolve the PTE
    /// (Linux: `__handle_mm_fault()` → `create_huge_pmd()`, `wp_huge_pmd()`, `handle_pte_fault()`).
    /// The PMD is looked at without a lock; each path re-checks it under the PMD lock.
    func handlePTEFault(_ vma: VMA, _ fault: inout FaultContext) -> FaultOutcome {
        let va = fault.address, access = fault.access
        guard let (pmd, pmdIndex) = walk(va, to: .pmd, allocating: &fault.reclaim) else { return .outOfMemory }
        let pmdEntry = pmd[pmdIndex]
        if pmdEntry.isNone {
            let settings = kernel.hugepageSettings
            if kernel.faultMayMapHugePMD(vma, va, settings),
               case .done(let outcome) = hugeAnonymousFault(vma, va, pmd, pmdIndex, settings, &fault) {
                return outcome
            }
        } else if pmdEntry.isHuge {
            if pmdEntry.isSplitting {
                fault.waited = .hugePMDSplit
                waitForSplit(pmd, pmdIndex)
                return .handled
            }
            guard access == .write && !pmdEntry.isWritable else { return hugeSetAccessed(pmd, pmdIndex, access) }
            if case .done(let outcome) = hugeWriteProtectFault(vma, va, pmd, pmdIndex, pmdEntry, &fault) { return outcome }
        }
        guard let table = pteTable(under: pmd, pmdIndex, allocating: &fault.reclaim) else {
            // Either memory ran out, or another CPU mapped a huge page here meanwhile: retry then.
            return pmd[pmdIndex].isHuge ? .handled : .outOfMemory
        }
        let index = va.tableIndex(.pte)
        let entry = table[index]
        if entry.isMigrationEntry {
            fault.waited = .migrationEntry
            waitForMigration(table, index)
            return .handled
        }
        if entry.isSwapEntry { return swapIn(vma, va, table, index, entry, &fault) }
        if !entry.isMapped {
            return vma.isShared ? sharedFault(vma, va, table, index, &fault)
                                : anonymousFault(vma, va, table, index, &fault)
        }
        if access == .write && !entry.isWritable {
            return vma.isShared ? makeSharedWritable(table, index, &fault) : copyOnWrite(vma, va, table, index, &fault)
        }
        // Spurious: another CPU resolved it, or only A/D bits were missing (Linux: `pte_mkyoung()` path).
        let lock = kernel.splitLock(table)
        lock.spinLock()
        let current = table[index]
        if current.isMapped {
            var updated = current.makingYoung()
            if access == .write && current.isWritable { updated = updated.makingDirty() }
            table.set(index, updated)
        }
        lock.spinUnlock()
        return .handled
    }

    /// First touch of private anonymous memory: a read maps the shared zero page read-only, a write
    /// maps a new zeroed page (Linux: `do_anonymous_page()`).
    func anonymousFault(_ vma: VMA, _ va: VirtualAddress, _ table: PageTable, _ index: Int,
                        _ fault: inout FaultContext) -> FaultOutcome {
        let access = fault.access
        if let rules = kernel.reservationRules(vma, va),
           let outcome = reservationFault(vma, va, table, index, rules, &fault) {
            return outcome
        }
        let lock = kernel.splitLock(table)
        let bits = PageTableEntry.userBits(vma.flags.protection)
        if access != .write {
            let zero = PageTableEntry(pfn: kernel.zeroPage, bits: bits | PageTableEntry.specialBit | PageTableEntry.accessedBit)
            lock.spinLock()
            let mapped = table[index].isNone
            if mapped {
                table.set(index, zero)
                fault.mapped = .base
                fault.resolution = .mapped
            }
            lock.spinUnlock()
            if mapped { kernel.policyNoteAnonymousFault(self, vma, va) }
            return .handled
        }
        if let outcome = anonymousLargeFault(vma, va, table, &fault) { return outcome }
        guard let pfn = kernel.allocateAnonymousPage(&fault.reclaim) else { return .outOfMemory }
        kernel.countAllocation(pages: 1)
        guard charge(pfn, order: .base) else {
            kernel.putPage(pfn)
            return .outOfMemory
        }
        fault.zeroed(pages: 1)
        kernel.memory.frames.insertFlags(pfn, [.anonExclusive, .swapBacked])
        let entry = PageTableEntry(pfn: pfn, bits: bits | PageTableEntry.writableBit | PageTableEntry.accessedBit | PageTableEntry.dirtyBit)
        lock.spinLock()
        guard table[index].isNone else {
            // Another CPU mapped it first: give the page back (Linux: the `pte_none()` re-check).
            lock.spinUnlock()
            kernel.putPage(pfn)
            return .handled
        }
        mapPage(pfn)
        addNewAnonFolioToLRU(pfn, vma, at: va)
        table.set(index, entry)
        lock.spinUnlock()
        fault.mapped = .base
        fault.resolution = .mapped
        kernel.policyNoteAnonymousFault(self, vma, va)
        return .handled
    }

    /// Write to a write-protected private page: reuse it when this mapping is its only user, otherwise
    /// copy it (the zero page is always "copied" into a fresh zeroed page) (Linux: `do_wp_page()`,
    /// `wp_page_reuse()`, `wp_page_copy()`).
    func copyOnWrite(_ vma: VMA, _ va: VirtualAddress, _ table: PageTable, _ index: Int,
                     _ fault: inout FaultContext) -> FaultOutcome {
        let frames = kernel.memory.frames
        let lock = kernel.splitLock(table)
        let bits = PageTableEntry.userBits(vma.flags.protection) | PageTableEntry.writableBit
            | PageTableEntry.accessedBit | PageTableEntry.dirtyBit
        lock.spinLock()
        let old = table[index]
        guard old.isMapped, !old.isWritable else { lock.spinUnlock(); return .handled }
        if !old.isSpecial && canReuseOnWrite(old.pfn, table) {
            // Exclusive: nobody else can see the page, so make it writable in place.
            frames.insertFlags(old.pfn, .anonExclusive)
            table.set(index, PageTableEntry(pfn: old.pfn, bits: bits))
            lock.spinUnlock()
            fault.resolution = .copyOnWrite
            return .handled
        }
        lock.spinUnlock()

        guard let copy = kernel.allocateAnonymousPage(zeroed: old.isSpecial, &fault.reclaim) else {
            return .outOfMemory
        }
        kernel.countAllocation(pages: 1)
        guard charge(copy, order: .base) else {
            kernel.putPage(copy)
            return .outOfMemory
        }
        // The zero page's "copy" is a zeroed page (Linux: `wp_page_copy()` with `is_zero_pfn()`).
        if old.isSpecial { fault.zeroed(pages: 1) } else { fault.copied(pages: 1) }
        frames.insertFlags(copy, [.anonExclusive, .swapBacked])
        let page = va.alignedDown(PageGeometry.pageSize)
        let mapped = invalidatingSecondaryMMUs(page, page + PageGeometry.pageSize) { () -> Bool in
            lock.spinLock()
            guard table[index] == old else {
                lock.spinUnlock()
                kernel.putPage(copy)
                return false
            }
            if !old.isSpecial, let storage = kernel.memory.storage { storage.copy(from: old.pfn, to: copy) }
            mapPage(copy)
            addNewAnonFolioToLRU(copy, vma, at: page)
            table.set(index, PageTableEntry(pfn: copy, bits: bits))
            lock.spinUnlock()
            kernel.flushTLB(self, page, page + PageGeometry.pageSize)
            if !old.isSpecial {
                removeMapping(old.pfn)
                // Today's kernel frees the old page's swap once nothing maps it (`wp_page_copy()` →
                // `free_swap_cache()`).
                if kernel.swapCacheRules == .anonExclusive { kernel.freeSwapCacheIfUnmapped(old.pfn) }
                kernel.putPage(old.pfn)
            }
            return true
        }
        if mapped {
            fault.mapped = .base
            fault.resolution = .copyOnWrite
        }
        return .handled
    }

    /// Whether a write may reuse the write-protected private page `pfn` in place. 2010: only this PTE
    /// maps it and nobody holds it. Today: it is marked exclusive; or, of a small folio, the only
    /// reference is this mapping's; or, of a large folio, every reference is a mapping in this PTE table
    /// — a cheap, sound stand-in for Linux's "mapped by one mm only" (Linux 6.18: `do_wp_page()` →
    /// `wp_can_reuse_anon_folio()`; 2.6.38: `reuse_swap_page()`). A page in the swap cache whose only
    /// other reference is the cache's, and whose slot no swap entry names, leaves the cache first and
    /// is reused (`Kernel.freeSwap`) — in either design (an exclusive page today stays cached).
    /// - Precondition: the table's lock is held.
    func canReuseOnWrite(_ pfn: PFN, _ table: PageTable) -> Bool {
        let frames = kernel.memory.frames
        guard kernel.pinsAreVisible else {
            guard frames.mapcount(pfn) == 1 else { return false }
            return frames.refcount(pfn) == 1 || freeSwapForReuse(pfn)
        }
        if frames.flags(pfn).contains(.anonExclusive) { return true }
        guard kernel.isInLargeFolio(pfn) else { return frames.refcount(pfn) == 1 || freeSwapForReuse(pfn) }
        let head = frames.head(of: pfn)
        let references = frames.refcount(head)
        guard kernel.entireMapcount(head) == 0, references <= Int32(PageGeometry.entriesPerTable) else { return false }
        let pages = UInt32(frames.order(head).pages)
        var here: Int32 = 0
        for i in 0..<PageGeometry.entriesPerTable {
            let e = table[i]
            if e.isMapped && !e.isSpecial && e.pfn.rawValue &- head.rawValue < pages { here += 1 }
        }
        return here == references
    }

    /// For a write to the small page `pfn` mapped once: when the swap cache's is its only other
    /// reference, frees its swap and says whether the page is now this mapping's alone (Linux 6.18:
    /// `wp_can_reuse_anon_folio()` → `folio_free_swap()`; 2.6.38: `reuse_swap_page()` →
    /// `delete_from_swap_cache()`).
    private func freeSwapForReuse(_ pfn: PFN) -> Bool {
        let frames = kernel.memory.frames
        guard frames.flags(pfn).contains(.swapCache), frames.refcount(pfn) == 2 else { return false }
        return kernel.freeSwap(pfn) && frames.refcount(pfn) == 1
    }

    /// First touch of shared anonymous memory: map the object's page, writable if the VMA is
    /// (Linux: `do_read_fault()` / `do_shared_fault()` → `shmem_fault()`).
    func sharedFault(_ vma: VMA, _ va: VirtualAddress, _ table: PageTable, _ index: Int,
                     _ fault: inout FaultContext) -> FaultOutcome {
        let access = fault.access
        guard let object = vma.sharedObject else { preconditionFailure("shared VMA without an object") }
        let page = vma.pageIndex(of: va)
        guard page < UInt64(object.pages) else { return .sigbus }
        guard let (pfn, allocated) = object.frame(at: Int(page), kernel: kernel) else { return .outOfMemory }
        if allocated { fault.zeroed(pages: 1) }
        var bits = PageTableEntry.userBits(vma.flags.protection) | PageTableEntry.accessedBit
        if vma.flags.contains(.write) { bits |= PageTableEntry.writableBit }
        if access == .write { bits |= PageTableEntry.dirtyBit }
        let lock = kernel.splitLock(table)
        lock.spinLock()
        guard table[index].isNone else {
            lock.spinUnlock()
            kernel.putPage(pfn)
            return .handled
        }
        mapPage(pfn)
        table.set(index, PageTableEntry(pfn: pfn, bits: bits))
        lock.spinUnlock()
        fault.mapped = .base
        fault.resolution = .mapped
        return .handled
    }

    /// A write to a shared page that is mapped read-only after mprotect gave write back.
    func makeSharedWritable(_ table: PageTable, _ index: Int, _ fault: inout FaultContext) -> FaultOutcome {
        let lock = kernel.splitLock(table)
        lock.spinLock()
        let old = table[index]
        if old.isMapped {
            table.set(index, old.makingWritable().makingDirty().makingYoung())
            fault.resolution = .copyOnWrite
        }
        lock.spinUnlock()
        return .handled
    }
}
