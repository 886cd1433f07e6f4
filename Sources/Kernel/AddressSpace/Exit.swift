import VMCore

extension AddressSpace {
    /// Tears the address space down: every mapping, every page table, the PGD (Linux: `exit_mmap()`
    /// then `mmdrop()`). Calling it twice is harmless.
    public func exit() {
        var record = ZapRecord()
        exit(recording: &record)
    }

    /// `exit`, adding what its zaps did — every mapping's entries cleared, its pages released — to
    /// `record`, for simulated time's charge of the teardown (Linux: `exit_mmap()` → `unmap_vmas()`,
    /// `tlb_finish_mmu()`).
    public func exit(recording record: inout ZapRecord) {
        mmapLock.withWriteLock {
            guard !hasExited else { return }
            releaseSecondaryMMUs()
            for i in (0..<vmas.count).reversed() {
                let vma = vmas[i]
                zap(vma.start, vma.end, recording: &record)
                removeVMA(at: i)
            }
            freeTables(VirtualAddress(0), VirtualAddress(PageGeometry.userAddressLimit))
            kernel.waitForLocklessWalkers()
            kernel.freeTable(root)
            hasExited = true
        }
        kernel.forget(self)
    }
}
