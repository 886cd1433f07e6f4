import VMCore
import PhysicalMemory

/// get_user_pages: references on the exact 4 KiB pages behind user addresses, for I/O that must
/// reach them directly (O_DIRECT, RDMA, vhost). A page of a huge page is pinned through its tail, and
/// the huge page is not split: in the 2010 design the pin counts in the head and in the tail, and a
/// later split gives it to the subpage (see `CompoundPage.swift`).
extension AddressSpace {
    /// Takes a reference on each of `count` pages from `start`, faulting them in as a user access
    /// would; with `write`, a write-protected page is copied first (COW is broken, so the pin holds the
    /// page this process writes). Returns the pages in order — fewer than asked when one could not be
    /// had after the first — or the errno when not even the first could: EFAULT outside a VMA or against
    /// its protection, ENOMEM when memory ran out and no OOM killer freed any for this process (a
    /// machine out of memory calls the system-wide OOM killer, which frees another process's memory
    /// or kills this one, which exits as the call returns) (Linux: `get_user_pages()` →
    /// `__get_user_pages()` → `follow_page_mask()` / `handle_mm_fault()`). Release each with
    /// `Kernel.putPage`.
    ///
    /// A fault that fills a reservation (FreeBSD, Quicksilver) promotes it once the mmap lock is
    /// dropped, under the lock taken for writing as after any fault: FreeBSD's `vm_fault()` promotes at
    /// `pmap_enter()` whether or not the caller holds the page (`vm_fault_quick_hold_pages()`), and a
    /// held page in a superpage stays held.
    public func getUserPages(_ start: VirtualAddress, count: Int, write: Bool) -> Result<[PFN], Errno> {
        var filled: [VirtualAddress] = []
        let result = getUserPagesLocked(start, count: count, write: write, filled: &filled)
        for haddr in filled { mmapLock.withWriteLock { _ = promoteReservation(haddr) } }
        // Chosen by the system-wide OOM killer in one of its faults: the process dies as the call
        // returns (Linux: the SIGKILL `__oom_kill_process()` sent, taken on the way back to user
        // space); the pages it did get stay the caller's to release.
        if _slowPath(oomKilled.load(ordering: .relaxed)) { exit() }
        return result
    }

    /// A GUP fault found no memory: when the machine is out of memory (not a cgroup's limit, whose
    /// OOM killer ran inside the charge), the system-wide OOM killer runs with the mmap lock still
    /// held for reading, as Linux runs it inside the allocation. Returns whether it killed another
    /// process, so the fault runs again; false when this process was chosen or none was left (Linux:
    /// `faultin_page()` → `handle_mm_fault()` → `__alloc_pages_may_oom()` → `out_of_memory()`, then the
    /// allocation's retry; a chosen caller fails with VM_FAULT_OOM, which GUP returns as ENOMEM).
    /// - Precondition: the mmap lock is held for reading, no page-table lock.
    private func killedAnotherForGUPFault() -> Bool {
        guard !oomKilled.load(ordering: .relaxed), kernel.isOutOfMemory,
              let victim = kernel.outOfMemorySystemWide(faulting: self, holdingCurrent: true) else { return false }
        return victim !== self && !oomKilled.load(ordering: .relaxed)
    }

    /// `getUserPages` under the mmap read lock; the reservations its faults filled go into `filled`.
    private func getUserPagesLocked(_ start: VirtualAddress, count: Int, write: Bool,
                                    filled: inout [VirtualAddress]) -> Result<[PFN], Errno> {
        guard count > 0, start.isAligned(PageGeometry.pageSize) else { return .failure(.EINVAL) }
        let end = start + UInt64(count) * PageGeometry.pageSize
        // Give private VMAs their anon_vma identity first (faults below hold the lock for reading).
        mmapLock.withWriteLock {
            for i in vmas.indices(intersecting: start, end) where !vmas[i].isShared { prepareAnonVMA(i) }
        }
        mmapLock.readLock()
        defer { mmapLock.unlock() }
        var pages: [PFN] = []
        pages.reserveCapacity(count)
        for i in 0..<count {
            let va = start + UInt64(i) * PageGeometry.pageSize
            guard !hasExited, let vma = vmas.vma(containing: va), accessError(vma, write ? .write : .read) == nil else {
                return pages.isEmpty ? .failure(.EFAULT) : .success(pages)
            }
            var pinned: PFN? = nil
            for _ in 0..<8 {
                if let pfn = followPage(va, write: write) { pinned = pfn; break }
                kernel.vmstat.count(.pgfault)
                // Linux: `faultin_page()` → `handle_mm_fault()`; no MMU, so no error code but the access.
                var fault = FaultContext(address: va, access: write ? .write : .read, errorCode: write ? .write : [])
                var outcome = handlePTEFault(vma, &fault)
                while outcome == .outOfMemory && killedAnotherForGUPFault() {
                    outcome = handlePTEFault(vma, &fault)
                }
                if let haddr = fault.reservationToPromote { filled.append(haddr) }
                if outcome != .handled {
                    if !pages.isEmpty { return .success(pages) }
                    return .failure(outcome == .outOfMemory ? .ENOMEM : .EFAULT)
                }
            }
            guard let pfn = pinned else { preconditionFailure("GUP at \(va): a handled fault left nothing to follow") }
            pages.append(pfn)
        }
        return .success(pages)
    }

    /// The page mapped at `va` with a reference taken under the lock that guards its entry, or nil when
    /// a fault is needed first (not present, or `write` to a write-protected entry) (Linux:
    /// `follow_page_mask()` with FOLL_GET; for a huge PMD `follow_trans_huge_pmd()`, which waits for a
    /// split in progress instead of splitting).
    /// - Precondition: the mmap lock is held.
    func followPage(_ va: VirtualAddress, write: Bool) -> PFN? {
        var hugePMD = false
        return followPage(va, write: write, hugePMD: &hugePMD)
    }

    /// `followPage(_:write:)`, saying in `hugePMD` whether the page was found through a huge PMD (under
    /// the PMD lock) rather than a PTE (under its table's split lock).
    func followPage(_ va: VirtualAddress, write: Bool, hugePMD: inout Bool) -> PFN? {
        while true {
            guard let (pmd, index) = walk(va, to: .pmd, allocate: false) else { return nil }
            let seen = pmd[index]
            if seen.isNone { return nil }
            if seen.isHuge {
                let lock = pmdLock(pmd)
                lock.spinLock()
                let entry = pmd[index]
                if !entry.isHuge { lock.spinUnlock(); continue }
                if entry.isSplitting {
                    lock.spinUnlock()
                    waitForSplit(pmd, index)
                    continue
                }
                guard entry.isPresent, !write || entry.isWritable else { lock.spinUnlock(); return nil }
                let page = entry.pfn + va.tableIndex(.pte)
                kernel.getPage(page)
                lock.spinUnlock()
                hugePMD = true
                return page
            }
            let table = kernel.table(at: seen)
            let lock = kernel.splitLock(table)
            lock.spinLock()
            defer { lock.spinUnlock() }
            let entry = table[va.tableIndex(.pte)]
            guard entry.isPresent, !write || entry.isWritable else { return nil }
            kernel.getPage(entry.pfn)
            hugePMD = false
            return entry.pfn
        }
    }

    /// gup-fast: walks the page tables without the mmap lock or any page-table lock, as the MMU would,
    /// inside a lockless-walk window on simulated CPU `cpu` (interrupts off), taking a reference on each
    /// page; it stops at anything it cannot handle locklessly — an absent or write-protected entry, the
    /// zero page, a huge PMD being split — and the slow path takes over from there (Linux 2.6.38 x86:
    /// `get_user_pages_fast()` → `gup_pmd_range()`, `gup_huge_pmd()`, `gup_pte_range()`).
    public func getUserPagesFast(_ start: VirtualAddress, count: Int, write: Bool, cpu: Int) -> Result<[PFN], Errno> {
        guard count > 0, start.isAligned(PageGeometry.pageSize) else { return .failure(.EINVAL) }
        var pages: [PFN] = []
        pages.reserveCapacity(count)
        kernel.locklessWalk(cpu: cpu) {
            while pages.count < count {
                let va = start + UInt64(pages.count) * PageGeometry.pageSize
                guard let page = fastFollow(va, write: write) else { break }
                pages.append(page)
            }
        }
        if pages.count == count { return .success(pages) }
        let rest = start + UInt64(pages.count) * PageGeometry.pageSize
        switch getUserPages(rest, count: count - pages.count, write: write) {
        case .success(let more): return .success(pages + more)
        case .failure(let errno): return pages.isEmpty ? .failure(errno) : .success(pages)
        }
    }

    /// One page of gup-fast. The entry is read once; the reference is taken without a lock, which is
    /// safe because whoever removes the entry frees the page only after a TLB flush, and the flush
    /// waits for this walk to end.
    private func fastFollow(_ va: VirtualAddress, write: Bool) -> PFN? {
        var table = root
        var level = PageTableLevel.pgd
        while true {
            let entry = table[va.tableIndex(level)]
            guard entry.isPresent, entry.isUser else { return nil }
            if (level == .pte || entry.isHuge) && write && !entry.isWritable { return nil }
            if level == .pmd && entry.isHuge {
                // A splitting PMD is left to the slow path, which waits (Linux 2.6.38:
                // `pmd_trans_splitting()` in `gup_pmd_range()`).
                guard !entry.isSplitting, !entry.isSpecial else { return nil }
                Scheduling.point()
                let page = entry.pfn + va.tableIndex(.pte)
                kernel.getPage(page)
                return page
            }
            if level == .pte {
                guard !entry.isSpecial else { return nil }
                Scheduling.point()
                kernel.getPage(entry.pfn)
                return entry.pfn
            }
            table = kernel.table(at: entry)
            level = level.lower!
        }
    }
}

extension Kernel {
    /// Releases pages that GUP returned (Linux: `put_page()` on each, or `unpin_user_pages()`).
    public func putUserPages(_ pages: [PFN]) {
        for page in pages { putPage(page) }
    }
}
