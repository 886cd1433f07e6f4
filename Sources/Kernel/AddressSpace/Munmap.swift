import VMCore

extension AddressSpace {
    /// Removes the mappings in `[start, start + length)` (Linux: `do_vmi_munmap()`): splits VMAs at the
    /// ends, zaps the pages, frees page tables no VMA needs any more. Unmapping a hole is no error.
    ///
    /// Errors: EINVAL for a misaligned start, a zero length, or a range past the user address limit;
    /// ENOMEM when splitting would exceed `max_map_count`.
    public func munmap(_ start: VirtualAddress, length: UInt64) throws(Errno) {
        var record = ZapRecord()
        try munmap(start, length: length, recording: &record)
    }

    /// `munmap`, adding what its zaps did to `record` (for simulated time's charge of the call).
    public func munmap(_ start: VirtualAddress, length: UInt64, recording record: inout ZapRecord) throws(Errno) {
        guard start.isAligned(PageGeometry.pageSize), length > 0 else { throw .EINVAL }
        let rounded = VirtualAddress(length).alignedUp(PageGeometry.pageSize).rawValue
        guard rounded != 0, start.rawValue <= PageGeometry.userAddressLimit,
              rounded <= PageGeometry.userAddressLimit - start.rawValue else { throw .EINVAL }
        try mmapLock.withWriteLock { () throws(Errno) in
            if let i = vmas.index(containing: start), vmas[i].start < start, vmas[i].end > start + rounded,
               vmas.count >= Self.maxMapCount {
                throw .ENOMEM
            }
            unmapLocked(start, start + rounded, recording: &record)
        }
    }

    /// munmap's work, under the write lock (also used by MAP_FIXED, mremap and brk).
    func unmapLocked(_ start: VirtualAddress, _ end: VirtualAddress) {
        var record = ZapRecord()
        unmapLocked(start, end, recording: &record)
    }

    /// `unmapLocked`, adding what its zaps did to `record`.
    func unmapLocked(_ start: VirtualAddress, _ end: VirtualAddress, recording record: inout ZapRecord) {
        guard vmas.intersects(start, end) else { return }
        // A boundary inside a huge PMD splits it with its VMA (`vma_adjust_trans_huge()`).
        for boundary in [start, end] where !boundary.isAligned(PageGeometry.pmdSize) {
            if let i = vmas.index(containing: boundary), vmas[i].start < boundary,
               let (pmd, index) = walk(boundary, to: .pmd, allocate: false), pmd[index].isHuge,
               record.pmdSplits.last != boundary.alignedDown(PageGeometry.pmdSize).rawValue {
                // (Both ends in one huge PMD split it once.)
                record.pmdSplits.append(boundary.alignedDown(PageGeometry.pmdSize).rawValue)
            }
        }
        splitAtBoundaries(start, end)
        let range = vmas.indices(intersecting: start, end)
        for i in range.reversed() {
            let vma = vmas[i]
            zap(vma.start, vma.end, recording: &record)
            removeVMA(at: i)
        }
        freeTables(start, end)
    }
}
