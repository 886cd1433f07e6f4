import VMCore

/// The `madvise` advice values the model implements (Linux: `MADV_*`).
public enum Advice: String, Sendable, CaseIterable {
    /// Drop the pages; private anonymous memory reads back as zeros (Linux: `MADV_DONTNEED`).
    case dontNeed = "dontneed"
    /// Mark the range for huge pages (Linux: `MADV_HUGEPAGE`, sets `VM_HUGEPAGE`).
    case hugepage = "hugepage"
    /// Never use huge pages here (Linux: `MADV_NOHUGEPAGE`, sets `VM_NOHUGEPAGE`).
    case noHugepage = "nohugepage"
    /// Do not copy the range into children (Linux: `MADV_DONTFORK`, sets `VM_DONTCOPY`).
    case dontFork = "dontfork"
    /// Undo `dontFork` (Linux: `MADV_DOFORK`).
    case doFork = "dofork"
    /// Collapse the range into huge pages now (Linux: `MADV_COLLAPSE`; see `madviseCollapse`).
    case collapse = "collapse"
    /// Swap the range's exclusive pages out now (Linux: `MADV_PAGEOUT`; see `madvisePageout`).
    case pageout = "pageout"
}

extension AddressSpace {
    /// Gives advice about `[start, start + length)` (Linux: `do_madvise()` → `madvise_walk_vmas()`).
    ///
    /// Errors: EINVAL for a misaligned start or an overflowing range; ENOMEM when part of the range is
    /// unmapped — after the advice was applied to the mapped parts, as Linux does.
    public func madvise(_ start: VirtualAddress, length: UInt64, advice: Advice) throws(Errno) {
        var record = ZapRecord()
        try madvise(start, length: length, advice: advice, recording: &record)
    }

    /// `madvise`, adding what MADV_DONTNEED's zaps did to `record` (for simulated time's charge).
    public func madvise(_ start: VirtualAddress, length: UInt64, advice: Advice,
                        recording record: inout ZapRecord) throws(Errno) {
        var collapses: [CollapseRecord] = []
        try madvise(start, length: length, advice: advice, recording: &record, collapses: &collapses)
    }

    /// `madvise`, adding what MADV_DONTNEED's zaps did to `record` and each collapse MADV_COLLAPSE made
    /// to `collapses` (for simulated time's charge).
    public func madvise(_ start: VirtualAddress, length: UInt64, advice: Advice, recording record: inout ZapRecord,
                        collapses: inout [CollapseRecord]) throws(Errno) {
        var pageout = TableWalkRecord()
        try madvise(start, length: length, advice: advice, recording: &record, collapses: &collapses, pageout: &pageout)
    }

    /// `madvise`, adding also what MADV_PAGEOUT did to `pageout`.
    public func madvise(_ start: VirtualAddress, length: UInt64, advice: Advice, recording record: inout ZapRecord,
                        collapses: inout [CollapseRecord], pageout: inout TableWalkRecord) throws(Errno) {
        guard start.isAligned(PageGeometry.pageSize) else { throw .EINVAL }
        let rounded = VirtualAddress(length).alignedUp(PageGeometry.pageSize).rawValue
        guard rounded >= length, start.rawValue <= UInt64.max - rounded else { throw .EINVAL }
        guard rounded > 0 else { return }
        let end = start + rounded
        if advice == .collapse || advice == .pageout {
            // MADV_COLLAPSE and MADV_PAGEOUT take the mmap lock themselves (for reading; a collapse
            // then for writing per range).
            let hole = mmapLock.withReadLock { rangeHasHole(start, end) }
            if advice == .collapse { try madviseCollapse(start, end, recording: &collapses) } else { madvisePageout(start, end, recording: &pageout) }
            if hole { throw .ENOMEM }
            return
        }
        try mmapLock.withWriteLock { () throws(Errno) in
            var hole = false
            var cursor = start
            for i in vmas.indices(intersecting: start, end) {
                if vmas[i].start > cursor { hole = true }
                cursor = vmas[i].end
            }
            if cursor < end { hole = true }
            switch advice {
            case .dontNeed:
                for i in vmas.indices(intersecting: start, end) {
                    let vma = vmas[i]
                    zap(max(vma.start, start), min(vma.end, end), recording: &record)
                }
            case .collapse, .pageout:
                break
            case .hugepage, .noHugepage, .dontFork, .doFork:
                splitAtBoundaries(start, end)
                let range = vmas.indices(intersecting: start, end)
                for i in range {
                    switch advice {
                    case .hugepage: vmas[i].flags.remove(.noHugepage); vmas[i].flags.insert(.hugepage)
                    case .noHugepage: vmas[i].flags.remove(.hugepage); vmas[i].flags.insert(.noHugepage)
                    case .dontFork: vmas[i].flags.insert(.dontCopy)
                    case .doFork: vmas[i].flags.remove(.dontCopy)
                    case .dontNeed, .collapse, .pageout: break
                    }
                    if advice == .hugepage { khugepagedEnter(vmas[i]) }
                }
                mergeVMAs(around: range)
            }
            if hole { throw .ENOMEM }
        }
    }
}

/// `Advice` under a name that other modules can spell without colliding with the `Kernel` class.
public typealias MadviseAdvice = Advice
