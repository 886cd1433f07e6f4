import VMCore
import PhysicalMemory

extension AddressSpace {
    /// Creates a child address space that shares this one's pages copy-on-write (Linux: `dup_mmap()` →
    /// `copy_page_range()` → `copy_pte_range()`).
    ///
    /// Private writable pages become read-only in both parent and child, and each gains a mapping and
    /// a reference; the first write on either side copies (or reuses once the other side is gone).
    /// Shared mappings keep their entries as they are. VMAs marked `dontfork` are left out.
    /// When the machine runs out of memory for the child's page tables, the system-wide OOM killer
    /// kills the process with the highest badness and the fork starts again (Linux: the page-table
    /// allocations' `__alloc_pages_may_oom()`); throws ENOMEM when it cannot free any, or when this
    /// process is the one chosen (which then exits, as after a fault). Nothing is left behind then.
    public func fork() throws(Errno) -> AddressSpace {
        var record = TableWalkRecord()
        return try fork(recording: &record)
    }

    /// `fork`, adding to `record` what copying the page tables did: each of the parent's PTE tables
    /// locked and the entries copied from it, the entries write-protected, each huge PMD copied whole,
    /// each split, the pages copied because they may be pinned (for simulated time's charge).
    public func fork(recording record: inout TableWalkRecord) throws(Errno) -> AddressSpace {
        while true {
            var machineOutOfMemory = false
            do throws(Errno) {
                return try forkOnce(recording: &record, machineOutOfMemory: &machineOutOfMemory)
            } catch {
                // The mmap lock is released here, as the OOM killer needs (it reads every mm).
                guard error == .ENOMEM, machineOutOfMemory, !oomKilled.load(ordering: .relaxed),
                      let victim = kernel.outOfMemorySystemWide(faulting: self), victim !== self,
                      !oomKilled.load(ordering: .relaxed) else {
                    if oomKilled.load(ordering: .relaxed) { exit() }
                    throw error
                }
            }
        }
    }

    /// One attempt of `fork`; sets `machineOutOfMemory` when it fails because no page was free for a
    /// table after reclaim (not a cgroup's limit: fork charges its tables without reclaim).
    private func forkOnce(recording record: inout TableWalkRecord, machineOutOfMemory: inout Bool) throws(Errno) -> AddressSpace {
        try mmapLock.withWriteLock { () throws(Errno) -> AddressSpace in
            guard !hasExited else { throw .ENOMEM }
            guard let child = AddressSpace(kernel: kernel, pid: kernel.allocatePID(), startBrk: startBrk, family: anonFamily) else {
                machineOutOfMemory = kernel.isOutOfMemory
                throw .ENOMEM
            }
            child.brk = brk
            // The child inherits `oom_score_adj` (Linux: `copy_signal()`).
            child.oomScoreAdj.store(oomScoreAdj.load(ordering: .relaxed), ordering: .relaxed)
            kernel.register(child)
            // The child starts in its parent's cgroup (Linux: `cgroup_post_fork()`).
            // Its PGD is charged there too (Linux: `pgd_alloc()` with `GFP_PGTABLE_USER`, run by the parent).
            if let memcg {
                kernel.attach(child, to: memcg)
                _ = child.chargeTable(child.root, mayReclaim: false)
            }
            // Linux: khugepaged_fork().
            if isRegisteredWithKhugepaged { kernel.khugepaged.enter(child, now: kernel.clock.now) }
            for vma in vmas.areas where !vma.flags.contains(.dontCopy) {
                var copy = vma
                if copy.anonVMA != 0 { copy.anonVMA = kernel.allocateAnonVMAIdentity() }
                child.insertVMA(copy)
                // Write-protecting the parent's private entries weakens them: secondary MMUs drop theirs.
                let copied = vma.isShared ? copyPageRange(vma, into: child, &record)
                    : invalidatingSecondaryMMUs(vma.start, vma.end) { copyPageRange(vma, into: child, &record) }
                if !copied {
                    machineOutOfMemory = kernel.isOutOfMemory
                    child.exit()
                    throw .ENOMEM
                }
            }
            kernel.flushTLB(self, VirtualAddress(0), VirtualAddress(PageGeometry.userAddressLimit))
            return child
        }
    }

    /// Copies the entries of one VMA into the child, huge PMDs whole (Linux: `copy_pmd_range()` →
    /// `copy_huge_pmd()`, `copy_pte_range()`, `copy_present_pte()`).
    private func copyPageRange(_ vma: VMA, into child: AddressSpace, _ record: inout TableWalkRecord) -> Bool {
        let frames = kernel.memory.frames
        return forEachPTETable(vma.start, vma.end, huge: { pmd, index, haddr, whole in
            guard whole else {
                record.pmdSplits.append(haddr.rawValue)
                return .split
            }
            switch copyHugePMD(pmd, index, haddr, into: child) {
            case .handled:
                record.hugePMDs.append(haddr.rawValue)
                return .handled
            case .notHuge: return .retry
            case .splitFirst:
                record.pmdSplits.append(haddr.rawValue)
                return .split
            case .outOfMemory: return .stop
            }
        }) { table, from, to in
            guard let (childPMD, childIndex) = child.walk(from, to: .pmd, allocate: true),
                  let childTable = child.pteTable(under: childPMD, childIndex) else { return false }
            let lock = kernel.splitLock(table)
            lock.spinLock()
            var copiedEntries = 0
            defer {
                lock.spinUnlock()
                record.pteTables.append(ZapRecord.Table(range: from.rawValue >> 21, entries: copiedEntries))
            }
            var va = from
            while va < to {
                let index = va.tableIndex(.pte)
                var entry = table[index]
                if entry.isMapped {
                    if !entry.isSpecial && !vma.isShared && kernel.needsCOWForDMA(entry.pfn) {
                        // The parent's page may be pinned for DMA: the child gets a copy, the parent keeps
                        // the page it pinned, writable (Linux 5.9+: `copy_present_page()`).
                        guard let copy = copyPinnedPage(entry, vma, for: child) else { return false }
                        child.mapPage(copy.pfn)
                        child.addNewAnonFolioToLRU(copy.pfn, vma, at: va)
                        childTable.set(index, copy)
                        record.pagesCopied += 1
                        copiedEntries += 1
                        va = va + PageGeometry.pageSize
                        continue
                    }
                    if !entry.isSpecial {
                        kernel.getPage(entry.pfn)
                        child.mapPage(entry.pfn)
                        if !vma.isShared {
                            frames.removeFlags(entry.pfn, .anonExclusive)
                            if entry.isWritable {
                                entry = entry.writeProtected()
                                table.set(index, entry)
                                record.entriesWriteProtected += 1
                            }
                        }
                    }
                    childTable.set(index, entry)
                    copiedEntries += 1
                } else if entry.isSwapEntry {
                    kernel.swapDevice.duplicate(entry.swapSlot)
                    // Shared now: neither entry is exclusive any more (`copy_nonpresent_pte()`).
                    if entry.isSwapExclusive {
                        entry = PageTableEntry(rawValue: entry.rawValue & ~PageTableEntry.swapExclusiveBit)
                        table.set(index, entry)
                    }
                    childTable.set(index, entry)
                    copiedEntries += 1
                }
                va = va + PageGeometry.pageSize
            }
            return true
        }
    }

    /// A copy of the page `entry` maps, for the child, as the entry the child maps it with: writable
    /// when the VMA is, dirty and exclusive. Nil when no page is free (fork fails with ENOMEM). The
    /// allocation does not reclaim: the caller holds a page-table lock (Linux preallocates instead).
    /// The copy is charged to the child's cgroup, without reclaim; over `memory.max` fork fails too
    /// (Linux: `folio_prealloc()` → `mem_cgroup_charge()` in `copy_present_page()`'s caller).
    private func copyPinnedPage(_ entry: PageTableEntry, _ vma: VMA, for child: AddressSpace) -> PageTableEntry? {
        guard let copy = kernel.memory.allocateFolio(order: .base, kind: .anonymous, zeroed: false) else { return nil }
        kernel.countAllocation(pages: 1)
        guard child.chargeWithoutReclaim(copy, order: .base) else {
            kernel.putPage(copy)
            return nil
        }
        kernel.memory.frames.insertFlags(copy, [.anonExclusive, .swapBacked])
        if let storage = kernel.memory.storage { storage.copy(from: entry.pfn, to: copy) }
        var bits = entry.rawValue & ~PageTableEntry.pfnMask | PageTableEntry.dirtyBit
        if vma.flags.contains(.write) { bits |= PageTableEntry.writableBit }
        return PageTableEntry(pfn: copy, bits: bits)
    }
}
