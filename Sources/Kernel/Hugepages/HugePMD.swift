import Synchronization
import VMCore
import PhysicalMemory

/// What a path that works on a whole huge PMD did with it.
enum HugePMDStep: Equatable {
    /// Done with the PMD at PMD level.
    case handled
    /// The PMD is not huge (any more): go on with its PTE table.
    case notHuge
    /// Memory ran out.
    case outOfMemory
    /// The PMD must be split and its PTEs handled one by one (fork of a page that may be pinned).
    case splitFirst
}

extension AddressSpace {
    /// Takes the PMD lock if the entry is a huge PMD that is not being split, returning the entry and
    /// the lock held; waits for a split in progress and returns nil then, or when the entry is not
    /// huge (Linux 2.6.38: `__pmd_trans_huge_lock()`, with its `wait_split_huge_page()`).
    func lockHugePMD(_ pmd: PageTable, _ index: Int) -> (entry: PageTableEntry, lock: UnsafeMutablePointer<Atomic<UInt32>>)? {
        let lock = pmdLock(pmd)
        lock.spinLock()
        let entry = pmd[index]
        guard entry.isHuge else { lock.spinUnlock(); return nil }
        if entry.isSplitting {
            lock.spinUnlock()
            waitForSplit(pmd, index)
            return nil
        }
        return (entry, lock)
    }

    /// Unmaps a whole huge PMD: clear it, free its deposited table, drop the page's mapping; its
    /// reference goes to `gathered`, for the caller to put after the TLB flush (Linux: `zap_huge_pmd()`).
    func zapHugePMD(_ pmd: PageTable, _ index: Int, _ haddr: VirtualAddress, _ gathered: inout [PFN]) -> HugePMDStep {
        guard let (entry, lock) = lockHugePMD(pmd, index) else { return .notHuge }
        pmd.set(index, .none)
        let deposit = withdrawTable(from: pmd)
        if entry.isSpecial {
            kernel.putHugeZeroPage(entry.pfn)
        } else {
            unmapHugePage(entry.pfn, at: haddr)
            gathered.append(entry.pfn)
        }
        lock.spinUnlock()
        kernel.freeTable(deposit)
        return .handled
    }

    /// Changes the protection of a whole huge PMD in place, keeping it huge; it becomes writable only
    /// when this mapping owns the page exclusively (Linux: `change_huge_pmd()`).
    func changeHugePMD(_ pmd: PageTable, _ index: Int, _ vma: VMA) -> HugePMDStep {
        let frames = kernel.memory.frames
        let prot = vma.flags.protection
        guard let (entry, lock) = lockHugePMD(pmd, index) else { return .notHuge }
        var writable = false
        if prot.contains(.write) && !entry.isSpecial {
            let head = entry.pfn
            writable = frames.mapcount(head) == 1 && frames.refcount(head) == 1
                && frames.flags(head).contains(.anonExclusive)
        }
        pmd.set(index, entry.withProtection(prot, writable: writable))
        lock.spinUnlock()
        return .handled
    }

    /// Copies a huge PMD into a child at fork: both map the page write-protected, the child with its
    /// own deposited table; the huge zero page is simply shared (Linux: `copy_huge_pmd()`).
    func copyHugePMD(_ pmd: PageTable, _ index: Int, _ haddr: VirtualAddress, into child: AddressSpace) -> HugePMDStep {
        let frames = kernel.memory.frames
        guard let deposit = kernel.allocateTable() else { return .outOfMemory }
        _ = child.chargeTable(deposit, mayReclaim: false)
        guard let (childPMD, childIndex) = child.walk(haddr, to: .pmd, allocate: true) else {
            kernel.freeTable(deposit)
            return .outOfMemory
        }
        // The child is not yet visible to anyone, so taking its lock first cannot deadlock (Linux takes
        // the destination's lock, then the source's nested).
        let childLock = child.pmdLock(childPMD), lock = pmdLock(pmd)
        childLock.spinLock()
        lock.spinLock()
        var entry = pmd[index]
        guard entry.isHuge, !entry.isSplitting else {
            lock.spinUnlock()
            childLock.spinUnlock()
            kernel.freeTable(deposit)
            if entry.isSplitting { waitForSplit(pmd, index) }
            return .notHuge
        }
        precondition(childPMD[childIndex].isNone, "fork found the child's PMD at \(haddr) in use")
        if !entry.isSpecial && kernel.needsCOWForDMA(entry.pfn) {
            // A page that may be pinned is not shared: split the PMD, and copy per page (Linux 5.9+:
            // `copy_huge_pmd()` → `__split_huge_pmd()`, `-EAGAIN`).
            lock.spinUnlock()
            childLock.spinUnlock()
            kernel.freeTable(deposit)
            return .splitFirst
        }
        if entry.isSpecial {
            frames.addRefcount(entry.pfn, 1)
        } else {
            kernel.getPage(entry.pfn)
            frames.removeFlags(entry.pfn, .anonExclusive)
            child.mapHugePage(entry.pfn, at: haddr)
            if entry.isWritable {
                entry = entry.writeProtected()
                pmd.set(index, entry)
            }
        }
        child.depositTable(deposit, in: childPMD)
        childPMD.set(childIndex, entry)
        lock.spinUnlock()
        childLock.spinUnlock()
        return .handled
    }

    /// Moves a whole huge PMD from `source` to `destination`, both 2 MiB-aligned, with its deposited
    /// table (Linux: `move_huge_pmd()`). `.notHuge` when the source is not a huge PMD or the destination
    /// PMD is in use; the caller then splits and moves PTEs.
    func moveHugePMD(from source: VirtualAddress, to destination: VirtualAddress) -> HugePMDStep {
        guard let (pmd, index) = walk(source, to: .pmd, allocate: false) else { return .notHuge }
        let seen = pmd[index]
        guard seen.isHuge else { return .notHuge }
        guard let (dpmd, dIndex) = walk(destination, to: .pmd, allocate: true) else { return .outOfMemory }
        let lock = pmdLock(pmd), dlock = pmdLock(dpmd)
        lock.spinLock()
        if dlock != lock { dlock.spinLock() }
        defer {
            if dlock != lock { dlock.spinUnlock() }
            lock.spinUnlock()
        }
        let entry = pmd[index]
        guard entry.isHuge, !entry.isSplitting, dpmd[dIndex].isNone else { return .notHuge }
        pmd.set(index, .none)
        if pmd.pfn != dpmd.pfn { depositTable(withdrawTable(from: pmd), in: dpmd) }
        dpmd.set(dIndex, entry)
        if !entry.isSpecial {
            kernel.removeHugeMapping(entry.pfn, self, source)
            kernel.addHugeMapping(entry.pfn, self, destination)
        }
        return .handled
    }
}
