import VMCore
import PhysicalMemory

extension AddressSpace {
    /// Changes the protection of `[start, start + length)` (Linux: `do_mprotect_pkey()` →
    /// `mprotect_fixup()` → `change_protection()`), splitting and merging VMAs.
    ///
    /// Errors: EINVAL for a misaligned start; ENOMEM when the range is not fully mapped (VMAs before the
    /// first hole keep their new protection, as in Linux).
    public func mprotect(_ start: VirtualAddress, length: UInt64, protection: Protection) throws(Errno) {
        var record = TableWalkRecord()
        try mprotect(start, length: length, protection: protection, recording: &record)
    }

    /// `mprotect`, adding to `record` what its walks did: each PTE table locked and the entries whose
    /// protection changed there, each huge PMD changed whole, each huge PMD split (at a VMA boundary
    /// inside it, or covered in part), for simulated time's charge of the call.
    public func mprotect(_ start: VirtualAddress, length: UInt64, protection: Protection,
                         recording record: inout TableWalkRecord) throws(Errno) {
        guard start.isAligned(PageGeometry.pageSize) else { throw .EINVAL }
        let rounded = VirtualAddress(length).alignedUp(PageGeometry.pageSize).rawValue
        guard rounded >= length, start.rawValue <= UInt64.max - rounded else { throw .ENOMEM }
        guard rounded > 0 else { return }
        let end = start + rounded
        try mmapLock.withWriteLock { () throws(Errno) in
            guard vmas.index(containing: start) != nil else { throw .ENOMEM }
            record.pmdSplits += hugePMDsSplitAtBoundaries(start, end)
            splitAtBoundaries(start, end)
            var cursor = start
            var i = vmas.index(containing: start)!
            var changed = i..<i
            var hole = false
            while cursor < end {
                guard i < vmas.count, vmas[i].start == cursor else { hole = true; break }
                var vma = vmas[i]
                var flags = vma.flags.with(protection: protection)
                if !vma.isShared && protection.contains(.write) { flags.insert(.account) }
                vma.flags = flags
                vmas[i] = vma
                changeProtection(vma, recording: &record)
                cursor = vma.end
                changed = changed.lowerBound..<(i + 1)
                i += 1
            }
            mergeVMAs(around: changed)
            if hole { throw .ENOMEM }
        }
    }

    /// Rewrites the protection bits of every mapped PTE of `vma`, and of its huge PMDs in place (Linux:
    /// `change_pte_range()`, `change_huge_pmd()`). A private
    /// page becomes writable at once only when this mapping owns it exclusively; otherwise the next
    /// write takes a COW fault (Linux: `can_change_pte_writable()`).
    func changeProtection(_ vma: VMA, recording record: inout TableWalkRecord) {
        invalidatingSecondaryMMUs(vma.start, vma.end) { changeProtectionRange(vma, &record) }
        kernel.flushTLB(self, vma.start, vma.end)
    }

    private func changeProtectionRange(_ vma: VMA, _ record: inout TableWalkRecord) {
        let prot = vma.flags.protection
        forEachPTETable(vma.start, vma.end, huge: { pmd, index, haddr, whole in
            guard whole else {
                record.pmdSplits.append(haddr.rawValue)
                return .split
            }
            guard changeHugePMD(pmd, index, vma) == .handled else { return .retry }
            record.hugePMDs.append(haddr.rawValue)
            return .handled
        }) { table, from, to in
            let lock = kernel.splitLock(table)
            lock.spinLock()
            var changed = 0
            var va = from
            while va < to {
                let index = va.tableIndex(.pte)
                let old = table[index]
                if old.isMapped {
                    var writable = false
                    if prot.contains(.write) && !old.isSpecial {
                        writable = vma.isShared || kernel.canChangePTEWritable(old.pfn)
                    }
                    table.set(index, old.withProtection(prot, writable: writable))
                    changed += 1
                }
                va = va + PageGeometry.pageSize
            }
            lock.spinUnlock()
            record.pteTables.append(ZapRecord.Table(range: from.rawValue >> 21, entries: changed))
            return true
        }
    }
}

extension AddressSpace {
    /// The 2 MiB ranges of the huge PMDs that splitting VMAs at `start` and `end` will split (a
    /// boundary inside a huge PMD: `vma_adjust_trans_huge()`), each once.
    func hugePMDsSplitAtBoundaries(_ start: VirtualAddress, _ end: VirtualAddress) -> [UInt64] {
        var ranges: [UInt64] = []
        for boundary in [start, end] where !boundary.isAligned(PageGeometry.pmdSize) {
            let haddr = boundary.alignedDown(PageGeometry.pmdSize).rawValue
            if let i = vmas.index(containing: boundary), vmas[i].start < boundary,
               let (pmd, index) = walk(boundary, to: .pmd, allocate: false), pmd[index].isHuge, ranges.last != haddr {
                ranges.append(haddr)
            }
        }
        return ranges
    }
}

extension Kernel {
    /// Whether mprotect may map the private anonymous page `pfn` writable at once, sparing a COW fault:
    /// where pins are counted apart from references the exclusive mark is exact (Linux 5.19+:
    /// `can_change_pte_writable()`); the 2010 design also asks that nobody else holds the page.
    @inline(__always) func canChangePTEWritable(_ pfn: PFN) -> Bool {
        let frames = memory.frames
        guard frames.flags(pfn).contains(.anonExclusive) else { return false }
        return pinsAreVisible || frames.refcount(pfn) == 1 && frames.mapcount(pfn) == 1
    }
}
