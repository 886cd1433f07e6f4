import VMCore
import PhysicalMemory

extension AddressSpace {
    /// Changes the protection of `[start, start + length)` (Linux: `do_mprotect_pkey()` →
    /// `mprotect_fixup()` → `change_protection()`), splitting and merging VMAs.
    ///
    /// Errors: EINVAL for a misaligned start; ENOMEM when the range is not fully mapped (VMAs before the
    /// first hole keep their new protection, as in Linux).
    public func mprotect(_ start: VirtualAddress, length: UInt64, protection: Protection) throws(Errno) {
        guard start.isAligned(PageGeometry.pageSize) else { throw .EINVAL }
        let rounded = VirtualAddress(length).alignedUp(PageGeometry.pageSize).rawValue
        guard rounded >= length, start.rawValue <= UInt64.max - rounded else { throw .ENOMEM }
        guard rounded > 0 else { return }
        let end = start + rounded
        try mmapLock.withWriteLock { () throws(Errno) in
            guard vmas.index(containing: start) != nil else { throw .ENOMEM }
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
                changeProtection(vma)
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
    func changeProtection(_ vma: VMA) {
        invalidatingSecondaryMMUs(vma.start, vma.end) { changeProtectionRange(vma) }
        kernel.flushTLB(self, vma.start, vma.end)
    }

    private func changeProtectionRange(_ vma: VMA) {
        let prot = vma.flags.protection
        forEachPTETable(vma.start, vma.end, huge: { pmd, index, _, whole in
            guard whole else { return .split }
            return changeHugePMD(pmd, index, vma) == .handled ? .handled : .retry
        }) { table, from, to in
            let lock = kernel.splitLock(table)
            lock.spinLock()
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
                }
                va = va + PageGeometry.pageSize
            }
            lock.spinUnlock()
            return true
        }
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
