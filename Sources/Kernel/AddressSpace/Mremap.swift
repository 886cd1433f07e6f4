import VMCore
import PhysicalMemory

/// Flags of `mremap` (Linux: `MREMAP_*`).
public struct RemapFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The mapping may move if it cannot grow in place (Linux: `MREMAP_MAYMOVE`).
    public static let mayMove = RemapFlags(rawValue: 1)
    /// Move to exactly the given address (Linux: `MREMAP_FIXED`; needs `mayMove`).
    public static let fixed = RemapFlags(rawValue: 2)
}

extension AddressSpace {
    /// Grows, shrinks or moves a mapping (Linux: the `mremap` system call → `mremap_to()`,
    /// `vma_expandable()`, `move_vma()` → `move_page_tables()`). Pages move with their page-table
    /// entries: nothing is copied, and the data follows.
    ///
    /// Errors as Linux: EINVAL for a misaligned address, a zero new size, `fixed` without `mayMove`, an
    /// overlapping or misaligned destination, or a zero old size of a private mapping; EFAULT when the
    /// old range is not inside one VMA; ENOMEM when it can neither grow in place nor move.
    public func mremap(_ old: VirtualAddress, oldSize: UInt64, newSize: UInt64, flags: RemapFlags = [],
                       newAddress: VirtualAddress? = nil) throws(Errno) -> VirtualAddress {
        var zap = ZapRecord(), moved = TableWalkRecord()
        return try mremap(old, oldSize: oldSize, newSize: newSize, flags: flags, newAddress: newAddress,
                          recording: &zap, moved: &moved)
    }

    /// `mremap`, adding to `zap` what its unmapping did (the destination's old pages, the part given up
    /// when shrinking) and to `moved` what moving the entries did (each PTE table whose entries moved,
    /// each huge PMD moved whole, each split), for simulated time's charge of the call.
    public func mremap(_ old: VirtualAddress, oldSize: UInt64, newSize: UInt64, flags: RemapFlags = [],
                       newAddress: VirtualAddress? = nil, recording zap: inout ZapRecord,
                       moved: inout TableWalkRecord) throws(Errno) -> VirtualAddress {
        if flags.contains(.fixed) && !flags.contains(.mayMove) { throw .EINVAL }
        guard old.isAligned(PageGeometry.pageSize) else { throw .EINVAL }
        let oldLength = VirtualAddress(oldSize).alignedUp(PageGeometry.pageSize).rawValue
        let newLength = VirtualAddress(newSize).alignedUp(PageGeometry.pageSize).rawValue
        guard newLength != 0 else { throw .EINVAL }
        guard oldLength <= PageGeometry.userAddressLimit, newLength <= PageGeometry.userAddressLimit else { throw .EINVAL }

        return try mmapLock.withWriteLock { () throws(Errno) -> VirtualAddress in
            if flags.contains(.fixed) {
                guard let destination = newAddress, destination.isAligned(PageGeometry.pageSize) else { throw .EINVAL }
                guard destination.rawValue <= PageGeometry.userAddressLimit - newLength else { throw .EINVAL }
                // Source and destination ranges may not overlap.
                if destination < old + oldLength && old < destination + newLength { throw .EINVAL }
                guard let vmaIndex = vmas.index(containing: old) else { throw .EFAULT }
                try checkOldRange(vmas[vmaIndex], old, oldLength)
                unmapLocked(destination, destination + newLength, recording: &zap)
                var length = oldLength
                if oldLength > newLength {
                    unmapLocked(old + newLength, old + oldLength, recording: &zap)
                    length = newLength
                }
                return try moveMapping(old, length: length, newLength: newLength, to: destination, &zap, &moved)
            }
            guard let vmaIndex = vmas.index(containing: old) else { throw .EFAULT }
            try checkOldRange(vmas[vmaIndex], old, oldLength)
            if oldLength >= newLength {
                unmapLocked(old + newLength, old + oldLength, recording: &zap)
                return old
            }
            let vma = vmas[vmaIndex]
            let growth = newLength - oldLength
            if vma.end == old + oldLength, vma.end.rawValue <= PageGeometry.userAddressLimit - growth,
               !vmas.intersects(vma.end, vma.end + growth) {
                // Grow in place (Linux: `vma_expandable()` then `vma_expand()`).
                if vma.flags.contains(.account) {
                    guard overcommitAllows(pages: (vma.length + growth) >> PageGeometry.pageShift) else { throw .ENOMEM }
                }
                vmas[vmaIndex].end = vma.end + growth
                mergeVMAs(around: vmaIndex..<(vmaIndex + 1))
                return old
            }
            guard flags.contains(.mayMove) else { throw .ENOMEM }
            let destination = try unmappedArea(length: newLength, hint: nil)
            return try moveMapping(old, length: oldLength, newLength: newLength, to: destination, &zap, &moved)
        }
    }

    /// Checks that `[old, old + length)` lies in `vma` and that a zero length is only used on shared
    /// mappings (Linux: `resize_is_valid()`, `vma_to_resize()`).
    private func checkOldRange(_ vma: VMA, _ old: VirtualAddress, _ length: UInt64) throws(Errno) {
        if length == 0 && !vma.isShared { throw .EINVAL }
        guard length <= vma.end - old else { throw .EFAULT }
    }

    /// Moves `[old, old + length)` to `destination`, the new VMA spanning `newLength` bytes, then removes
    /// the old range (Linux: `move_vma()`).
    private func moveMapping(_ old: VirtualAddress, length: UInt64, newLength: UInt64, to destination: VirtualAddress,
                             _ zap: inout ZapRecord, _ moves: inout TableWalkRecord) throws(Errno) -> VirtualAddress {
        guard vmas.count + 2 < Self.maxMapCount else { throw .ENOMEM }
        let source = vmas.vma(containing: old)!
        var moved = source
        moved.start = destination
        moved.end = destination + newLength
        moved.pgoff = source.pageIndex(of: old)
        // Move the entries first, so a failure leaves the source intact (Linux: `move_page_tables()`
        // followed by the reverse move on failure).
        let done = invalidatingSecondaryMMUs(old, old + length) {
            movePageTables(from: old, to: destination, length: length, &moves)
        }
        if done < length {
            _ = invalidatingSecondaryMMUs(destination, destination + done) {
                movePageTables(from: destination, to: old, length: done, &moves)
            }
            freeTables(destination, destination + newLength)
            throw .ENOMEM
        }
        kernel.flushTLB(self, old, old + length)
        insertVMA(moved)
        // The old range's entries are empty now; removing it frees its tables.
        unmapLocked(old, old + length, recording: &zap)
        let i = vmas.firstIndex(endingAbove: destination)
        mergeVMAs(around: i..<(i + 1))
        return destination
    }

    /// Moves the entries of `[source, source + length)` to `destination`: a huge PMD whole when both
    /// sides are 2 MiB-aligned and the rest of the range covers it, otherwise split and moved PTE by PTE
    /// (Linux: `move_page_tables()` → `move_huge_pmd()`, `split_huge_pmd()`, `move_ptes()`). Returns
    /// how many bytes moved; less than `length` when a table could not be allocated.
    private func movePageTables(from source: VirtualAddress, to destination: VirtualAddress, length: UInt64,
                                _ record: inout TableWalkRecord) -> UInt64 {
        var done: UInt64 = 0
        while done < length {
            let from = source + done, to = destination + done
            if let (pmd, index) = walk(from, to: .pmd, allocate: false), pmd[index].isHuge {
                if from.isAligned(PageGeometry.pmdSize) && to.isAligned(PageGeometry.pmdSize)
                    && length - done >= PageGeometry.pmdSize {
                    switch moveHugePMD(from: from, to: to) {
                    case .handled:
                        record.hugePMDs.append(from.rawValue)
                        done += PageGeometry.pmdSize
                        continue
                    case .outOfMemory: return done
                    case .notHuge, .splitFirst: break
                    }
                }
                record.pmdSplits.append(from.alignedDown(PageGeometry.pmdSize).rawValue)
                splitHugePMD(pmd, index, from.alignedDown(PageGeometry.pmdSize))
            }
            if !moveEntry(from: from, to: to, &record) { return done }
            done += PageGeometry.pageSize
        }
        return done
    }

    /// Moves one PTE to a new address, allocating tables at the destination (Linux: `move_ptes()`).
    /// False when a table could not be allocated.
    /// The move is added to `record`, under the source table's range.
    private func moveEntry(from source: VirtualAddress, to destination: VirtualAddress, _ record: inout TableWalkRecord) -> Bool {
        guard let (pmd, pmdIndex) = walk(source, to: .pmd, allocate: false) else { return true }
        let pmdEntry = pmd[pmdIndex]
        if pmdEntry.isNone { return true }
        precondition(!pmdEntry.isHuge, "moving a PTE out of a huge PMD that was not split")
        let from = kernel.table(at: pmdEntry)
        if from[source.tableIndex(.pte)].isNone { return true }
        guard let (dpmd, dIndex) = walk(destination, to: .pmd, allocate: true),
              let to = pteTable(under: dpmd, dIndex) else { return false }
        let fromLock = kernel.splitLock(from), toLock = kernel.splitLock(to)
        fromLock.spinLock()
        if toLock != fromLock { toLock.spinLock() }
        let entry = from.exchange(source.tableIndex(.pte), .none)
        to.set(destination.tableIndex(.pte), entry)
        if toLock != fromLock { toLock.spinUnlock() }
        fromLock.spinUnlock()
        let range = source.rawValue >> 21
        if let last = record.pteTables.indices.last, record.pteTables[last].range == range {
            record.pteTables[last].entries += 1
        } else {
            record.pteTables.append(ZapRecord.Table(range: range, entries: 1))
        }
        return true
    }
}
