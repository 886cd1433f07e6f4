import VMCore
import Kernel

/// How a system call holds its mm's mmap lock.
public enum MmapLockHold: Sendable {
    /// For writing (`mmap_write_lock()`, `down_write(&mm->mmap_sem)` before 5.8): the calls that change
    /// VMAs — munmap, mmap, mprotect, mremap, brk, fork (the parent's).
    case write
    /// For reading (`mmap_read_lock()`): MADV_DONTNEED.
    case read
    /// Not at all: `exit_mmap()`, when no other task uses the mm (2.6.38 takes no lock there; 6.x takes
    /// it, and nobody else can want it).
    case none
}

/// System calls in simulated time: each charged, after the kernel did it, from what it recorded doing
/// (`ZapRecord`, `TableWalkRecord`), in the order Linux takes the locks.
extension SimulatedTime {
    // MARK: The mmap lock

    /// `down_write()` at `t` by `cpu` on mm `m`: after the readers inside and the writers before it
    /// (`MmapLockTimeline.writerStarts`), then the count's line. Counts the acquisition and its wait;
    /// returns when the writer holds the lock (Linux: `down_write()` → `rwsem_down_write_slowpath()`).
    func downWrite(_ m: Int, cpu: Int, at t: Double) -> Double {
        let mmap = LockClass.mmapLock.rawValue
        acquisitions[mmap] &+= 1
        let start = mmapLocks.writerStarts(m, at: t)
        let wait = start - t + writeLine(.passUnretained(countLines[m]), cpu: cpu, at: start)
        if wait > 0 { contended[mmap] &+= 1 }
        waitCycles[mmap] += wait
        return t + wait
    }

    /// `down_read()` at `t`: after the writers that hold or wait for the lock, then the count's line.
    /// Counts the acquisition and its wait; returns when the reader is inside (Linux: `down_read()` →
    /// `rwsem_down_read_slowpath()`).
    func downRead(_ m: Int, cpu: Int, at t: Double) -> Double {
        let mmap = LockClass.mmapLock.rawValue
        acquisitions[mmap] &+= 1
        let enter = mmapLocks.readerEnters(m, at: t)
        let wait = enter - t + writeLine(.passUnretained(countLines[m]), cpu: cpu, at: enter)
        if wait > 0 { contended[mmap] &+= 1 }
        waitCycles[mmap] += wait
        return t + wait
    }

    /// `up_read()` at `t`, for a reader that asked at `asked`: the count's line; returns when done.
    func upRead(_ m: Int, cpu: Int, asked: Double, at t: Double) -> Double {
        let release = writeLine(.passUnretained(countLines[m]), cpu: cpu, at: t)
        waitCycles[LockClass.mmapLock.rawValue] += release
        mmapLocks.noteRead(cpu: cpu, mm: m, request: asked, end: t + release)
        return t + release
    }

    /// `up_write()` at `t`, for a writer that asked at `asked`: readers and writers that asked since
    /// wait until here.
    func upWrite(_ m: Int, asked: Double, at t: Double) {
        mmapLocks.noteWrite(mm: m, request: asked, end: t, horizon: horizon)
    }

    // MARK: Page-table locks

    /// The PMD lock of `pid`'s `haddr` (the mm's `page_table_lock`, or the PMD table's split lock) for
    /// `hold` cycles from `t`; returns when it is released.
    func pmdLocked(_ haddr: UInt64, pid: Int, mm m: Int, cpu: Int, design: KernelDesign, at t: Double, hold: Double) -> Double {
        if design.pmdLock == .splitPMDLock {
            let lock = splitLock(Self.key(3, pid, haddr >> 30), kind: 1, cpu: cpu).index
            return t + acquire(.passUnretained(lockTimelines[lock]), .pmdPTL, design.spinLocks, cpu: cpu, at: t, hold: hold) + hold
        }
        return t + acquire(.passUnretained(pageTableLocks[m]), .pageTableLock, design.spinLocks, cpu: cpu, at: t, hold: hold) + hold
    }

    /// The split lock of `pid`'s PTE table for the 2 MiB range `range` (an address shifted right by 21)
    /// for `hold` cycles from `t`; returns when it is released.
    func pteLocked(_ range: UInt64, pid: Int, cpu: Int, design: KernelDesign, at t: Double, hold: Double) -> Double {
        let lock = splitLock(Self.key(4, pid, range), kind: 0, cpu: cpu).index
        return t + acquire(.passUnretained(lockTimelines[lock]), .ptl, design.spinLocks, cpu: cpu, at: t, hold: hold) + hold
    }

    /// The split of one huge PMD from `t` (`split_huge_pmd()`: under the PMD lock, 512 PTEs written;
    /// 2.6.38 splits the page, `split_huge_page()`: the PMD marked splitting under `page_table_lock`,
    /// the tails' counts set under `lru_lock`, the PTEs written under `page_table_lock` again). Returns
    /// when it is done.
    func splitPMD(_ haddr: UInt64, pid: Int, mm m: Int, cpu: Int, design: KernelDesign, at start: Double) -> Double {
        let p = parameters
        let entries = Double(PageGeometry.entriesPerTable) * p.splitEntryCycles
        var t = start
        if design.splitPMDSplitsPage {
            t = pmdLocked(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t, hold: p.zapHugePMDHoldCycles)
            t += acquire(.passUnretained(lruLock), .lruLock, design.spinLocks, cpu: cpu, at: t, hold: entries) + entries
        }
        return pmdLocked(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t, hold: p.zapTableHoldCycles + entries)
    }

    /// The page-table part of a zap from `t`, in a fixed order: the splits of huge PMDs covered in part,
    /// each PTE table under its lock for as long as its entries take to clear (`zap_pte_range()`), each
    /// huge PMD cleared whole under the PMD lock (`zap_huge_pmd()`). Returns when it is done.
    func zapTables(_ zap: ZapRecord, pid: Int, mm m: Int, cpu: Int, design: KernelDesign, at start: Double) -> Double {
        let p = parameters
        var t = start
        for haddr in zap.pmdSplits { t = splitPMD(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t) }
        for table in zap.pteTables {
            t = pteLocked(table.range, pid: pid, cpu: cpu, design: design, at: t,
                          hold: p.zapTableHoldCycles + Double(table.entries) * p.zapEntryCycles)
        }
        for haddr in zap.hugePMDs {
            t = pmdLocked(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t, hold: p.zapHugePMDHoldCycles)
        }
        return t
    }

    // MARK: System calls

    /// Charges `cpu`, at its clock `now`, a system call that did no page-table work the kernel recorded;
    /// one that changes VMAs holds `pid`'s mmap lock for writing (`mmap_write_lock()`) for
    /// `mmapWriteHoldCycles`, after the readers inside and the writers before it.
    public func chargeSystemCall(cpu: Int, pid: Int, now: Double, changesVMAs: Bool) {
        systemCalls &+= 1
        let entered = now + parameters.systemCallCycles
        var t = entered
        if changesVMAs {
            let m = mm(pid)
            t = downWrite(m, cpu: cpu, at: entered) + parameters.mmapWriteHoldCycles
            upWrite(m, asked: entered, at: t)
        }
        extraCycles[cpu] += t - now
    }

    /// Charges `cpu` a `munmap()` (`writer`: the mmap lock held for writing) or an
    /// `madvise(MADV_DONTNEED)` (for reading) that did what `zap` records, from its clock `now` before
    /// the call: `chargeZap(_:cpu:pid:design:now:lock:flushCycles:)`.
    public func chargeZap(_ zap: ZapRecord, cpu: Int, pid: Int, design: KernelDesign, now: Double, writer: Bool,
                          flushCycles: Double) {
        chargeZap(zap, cpu: cpu, pid: pid, design: design, now: now, lock: writer ? .write : .read, flushCycles: flushCycles)
    }

    /// Charges `cpu` a call whose page work was the zap `zap` records — munmap, a `MAP_FIXED` mmap over
    /// mapped pages, a shrinking brk or mremap (`lock` `.write`), `MADV_DONTNEED` (`.read`), a
    /// process's teardown (`.none`) — from its clock `now` before the call, in the order Linux takes the
    /// locks (`do_munmap()` → `unmap_region()`; `madvise_dontneed_single_vma()` → `zap_page_range()`;
    /// `exit_mmap()` → `unmap_vmas()`): the system call; the mmap lock (a writer after the readers
    /// inside and the writers before it, with the VMA work, `mmapWriteHoldCycles`; a reader after the
    /// writers that hold or wait for it); the page tables (`zapTables`); the TLB flush the call did
    /// (`flushCycles`, already on the CPU's cycles); then the gathered pages released
    /// (`tlb_finish_mmu()` → `free_pages_and_swap_cache()` → `release_pages()`, `chargeRelease`:
    /// `lru_lock` and `zone->lock`, which other processes' faults take too); `up_write()` or `up_read()`.
    /// A writer's hold covers all of it: faults of the mm on other CPUs wait for its end.
    public func chargeZap(_ zap: ZapRecord, cpu: Int, pid: Int, design: KernelDesign, now: Double, lock: MmapLockHold,
                          flushCycles: Double) {
        systemCalls &+= 1
        let p = parameters
        let m = mm(pid)
        let entered = now + p.systemCallCycles
        var t = entered
        switch lock {
        case .write: t = downWrite(m, cpu: cpu, at: entered) + p.mmapWriteHoldCycles
        case .read: t = downRead(m, cpu: cpu, at: entered)
        case .none: break
        }
        t = zapTables(zap, pid: pid, mm: m, cpu: cpu, design: design, at: t)
        t += flushCycles
        t = chargeRelease(zap.freed, cpu: cpu, spin: design.spinLocks, at: t)
        switch lock {
        case .write: upWrite(m, asked: entered, at: t)
        case .read: t = upRead(m, cpu: cpu, asked: entered, at: t)
        case .none: break
        }
        extraCycles[cpu] += t - now - flushCycles
    }

    /// Charges `cpu` an `mremap()` that unmapped what `zap` records (the destination's old pages, the
    /// part given up when shrinking, the emptied source) and moved what `moved` records, from its clock
    /// `now` before the call (`mremap_to()`, `move_vma()` → `move_page_tables()`, under the mmap lock
    /// held for writing): the system call; `down_write()` and the VMA work; the zap's page tables; each
    /// huge PMD moved whole under the source's PMD lock (`move_huge_pmd()`, `zapHugePMDHoldCycles`);
    /// each huge PMD split first; each source PTE table under its lock while its entries move
    /// (`move_ptes()`: `moveEntryCycles` each); the flushes (`flushCycles`); the pages released; `up_write()`.
    public func chargeRemap(_ zap: ZapRecord, moved: TableWalkRecord, cpu: Int, pid: Int, design: KernelDesign,
                            now: Double, flushCycles: Double) {
        systemCalls &+= 1
        let p = parameters
        let m = mm(pid)
        let entered = now + p.systemCallCycles
        var t = downWrite(m, cpu: cpu, at: entered) + p.mmapWriteHoldCycles
        t = zapTables(zap, pid: pid, mm: m, cpu: cpu, design: design, at: t)
        for haddr in moved.pmdSplits { t = splitPMD(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t) }
        for haddr in moved.hugePMDs {
            t = pmdLocked(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t, hold: p.zapHugePMDHoldCycles)
        }
        for table in moved.pteTables {
            t = pteLocked(table.range, pid: pid, cpu: cpu, design: design, at: t,
                          hold: p.zapTableHoldCycles + Double(table.entries) * p.moveEntryCycles)
        }
        t += flushCycles
        t = chargeRelease(zap.freed, cpu: cpu, spin: design.spinLocks, at: t)
        upWrite(m, asked: entered, at: t)
        extraCycles[cpu] += t - now - flushCycles
    }

    /// Charges `cpu` an `mprotect()` that did what `record` records, from its clock `now` before the call
    /// (`mprotect_fixup()` → `change_protection()`, under the mmap lock held for writing): the system
    /// call; `down_write()` and the VMA work; the split of each huge PMD covered in part (at a VMA
    /// boundary: `vma_adjust_trans_huge()`); each PTE table under its lock while its entries change
    /// (`change_pte_range()`: `protectEntryCycles` per entry changed); each huge PMD changed whole under
    /// the PMD lock (`change_huge_pmd()`, `protectHugePMDHoldCycles`); the flush (`flushCycles`:
    /// `flush_tlb_range()`); `up_write()`. Faults of the mm on other CPUs wait for all of it.
    public func chargeProtection(_ record: TableWalkRecord, cpu: Int, pid: Int, design: KernelDesign, now: Double,
                                 flushCycles: Double) {
        systemCalls &+= 1
        let p = parameters
        let m = mm(pid)
        let entered = now + p.systemCallCycles
        var t = downWrite(m, cpu: cpu, at: entered) + p.mmapWriteHoldCycles
        for haddr in record.pmdSplits { t = splitPMD(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t) }
        for table in record.pteTables {
            t = pteLocked(table.range, pid: pid, cpu: cpu, design: design, at: t,
                          hold: p.zapTableHoldCycles + Double(table.entries) * p.protectEntryCycles)
        }
        for haddr in record.hugePMDs {
            t = pmdLocked(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t, hold: p.protectHugePMDHoldCycles)
        }
        t += flushCycles
        upWrite(m, asked: entered, at: t)
        extraCycles[cpu] += t - now - flushCycles
    }

    /// Charges `cpu` a `fork()` whose copy of the parent's page tables did what `record` records, from
    /// its clock `now` before the call (`dup_mmap()` → `copy_page_range()`, under the parent's mmap lock
    /// held for writing): the system call; `down_write()` on the parent and the VMA work; each huge PMD
    /// split first (6.x, one that may be pinned); each parent PTE table under its lock while its entries
    /// are copied into the child's (`copy_pte_range()`: `forkEntryCycles` per entry, an atomic more per
    /// entry write-protected, `ptep_set_wrprotect()`; a page that may be pinned copied,
    /// `copy_present_page()`: `copyPageCycles` and 8 KiB of the socket's memory bandwidth); each huge
    /// PMD copied whole under the parent's PMD lock (`copy_huge_pmd()`, `forkHugePMDHoldCycles`); the
    /// flush (`flushCycles`: `flush_tlb_mm()`); `up_write()`. The child's locks are new and nobody else
    /// can want them: their time is in the holds. Faults of the parent on other CPUs wait for all of it.
    public func chargeFork(_ record: TableWalkRecord, cpu: Int, pid: Int, design: KernelDesign, now: Double,
                           flushCycles: Double, copyPageCycles: Double) {
        systemCalls &+= 1
        let p = parameters
        let m = mm(pid)
        let entered = now + p.systemCallCycles
        var t = downWrite(m, cpu: cpu, at: entered) + p.mmapWriteHoldCycles
        for haddr in record.pmdSplits { t = splitPMD(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t) }
        // Write-protects and pinned copies are spread over the tables in proportion to their entries.
        let entries = max(1, record.entries)
        let perEntry = p.forkEntryCycles
            + p.atomicCycles * Double(record.entriesWriteProtected) / Double(entries)
            + copyPageCycles * Double(record.pagesCopied) / Double(entries)
        for table in record.pteTables {
            let hold = p.zapTableHoldCycles + Double(table.entries) * perEntry
            t = pteLocked(table.range, pid: pid, cpu: cpu, design: design, at: t, hold: hold)
        }
        t += stream(2 * UInt64(record.pagesCopied) * PageGeometry.pageSize, cpu: cpu, at: t)
        for haddr in record.hugePMDs {
            t = pmdLocked(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t, hold: p.forkHugePMDHoldCycles)
        }
        t += flushCycles
        upWrite(m, asked: entered, at: t)
        extraCycles[cpu] += t - now - flushCycles
    }

    /// Charges `cpu` an `madvise(MADV_PAGEOUT)` that did what `record` records, from its clock `now`
    /// before the call (`madvise_pageout()`, under the mmap lock held for reading): the system call;
    /// `down_read()`; each huge PMD split first (2.6.38: the page's split), each huge PMD swapped out
    /// whole under the PMD lock (6.x, `zapHugePMDHoldCycles`); each PTE table under its lock while the
    /// pages it swaps out are unmapped (`madvise_cold_or_pageout_pte_range()`, `try_to_unmap()`: 100
    /// cycles plus `zapEntryCycles` per page); the flushes (`flushCycles`); the writes
    /// (`swapOutPageCycles` per page, `pageout()`: off the page-table locks); the pages freed
    /// (`chargeRelease`); `up_read()`. Faults of the mm go on meanwhile.
    public func chargePageout(_ record: TableWalkRecord, cpu: Int, pid: Int, design: KernelDesign, now: Double,
                              flushCycles: Double, swapOutPageCycles: Double) {
        systemCalls &+= 1
        let p = parameters
        let m = mm(pid)
        let entered = now + p.systemCallCycles
        var t = downRead(m, cpu: cpu, at: entered)
        for haddr in record.pmdSplits { t = splitPMD(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t) }
        for haddr in record.hugePMDs {
            t = pmdLocked(haddr, pid: pid, mm: m, cpu: cpu, design: design, at: t, hold: p.zapHugePMDHoldCycles)
        }
        for table in record.pteTables {
            t = pteLocked(table.range, pid: pid, cpu: cpu, design: design, at: t,
                          hold: p.zapTableHoldCycles + Double(table.entries) * p.zapEntryCycles)
        }
        t += flushCycles
        t += Double(record.pagesSwappedOut) * swapOutPageCycles
        t = chargeRelease(record.freed, cpu: cpu, spin: design.spinLocks, at: t)
        t = upRead(m, cpu: cpu, asked: entered, at: t)
        extraCycles[cpu] += t - now - flushCycles
    }
}
