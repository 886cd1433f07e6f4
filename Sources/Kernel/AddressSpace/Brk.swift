import VMCore

extension AddressSpace {
    /// Moves the program break (Linux: the `brk` system call and `do_brk_flags()`). Returns the new
    /// break, or the old one when the request is refused — `brk` reports failure that way, not by errno.
    /// The heap is private anonymous read-write memory named `[heap]`.
    @discardableResult
    public func setBreak(_ requested: VirtualAddress) -> VirtualAddress {
        var record = ZapRecord()
        return setBreak(requested, recording: &record)
    }

    /// `setBreak`, adding what a shrinking break's unmapping did to `record` (for simulated time).
    @discardableResult
    public func setBreak(_ requested: VirtualAddress, recording record: inout ZapRecord) -> VirtualAddress {
        mmapLock.withWriteLock { () -> VirtualAddress in
            guard !hasExited, requested >= startBrk else { return brk }
            let newEnd = requested.alignedUp(PageGeometry.pageSize)
            let oldEnd = brk.alignedUp(PageGeometry.pageSize)
            if newEnd == oldEnd { brk = requested; return brk }
            if newEnd < oldEnd {
                unmapLocked(newEnd, oldEnd, recording: &record)
                brk = requested
                return brk
            }
            // Growing: refuse to run into the next mapping (Linux also keeps a guard gap; not modelled).
            guard newEnd.rawValue <= PageGeometry.userAddressLimit,
                  !vmas.intersects(oldEnd, newEnd),
                  vmas.count < Self.maxMapCount,
                  overcommitAllows(pages: (newEnd - oldEnd) >> PageGeometry.pageShift) else { return brk }
            let flags = VMFlags([.read, .write, .mayRead, .mayWrite, .mayExec, .account])
            insertVMA(VMA(start: oldEnd, end: newEnd, flags: flags, pgoff: oldEnd.pageNumber,
                          anonVMA: 0, sharedObject: nil, name: "[heap]"))
            let i = vmas.firstIndex(endingAbove: oldEnd)
            mergeVMAs(around: i..<(i + 1))
            brk = requested
            return brk
        }
    }
}
