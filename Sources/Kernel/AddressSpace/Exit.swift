import VMCore

extension AddressSpace {
    /// Tears the address space down: every mapping, every page table, the PGD (Linux: `exit_mmap()`
    /// then `mmdrop()`). Calling it twice is harmless.
    public func exit() {
        mmapLock.withWriteLock {
            guard !hasExited else { return }
            releaseSecondaryMMUs()
            for i in (0..<vmas.count).reversed() {
                let vma = vmas[i]
                zap(vma.start, vma.end)
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
