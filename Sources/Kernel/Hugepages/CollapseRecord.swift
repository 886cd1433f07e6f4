import VMCore

/// What one collapse by khugepaged (or by MADV_COLLAPSE, on the caller's CPU) did, recorded for whoever
/// charges its cost on the kernel thread's CPU (simulated time: `SimulatedTime.chargeCollapse`), as
/// `FaultContext` records a fault. Linux
/// keeps no such record; the work is `collapse_huge_page()`'s under the target mm's mmap lock held
/// for writing.
///
/// ```
///  khugepaged ──► collapse(haddr) succeeded ──► CollapseRecord(pid, haddr, pages copied, freed)
///  executor   ◄── Kernel.takeCollapseRecords() after the kernel threads ran
/// ```
public struct CollapseRecord: Sendable, Hashable {
    /// The target process.
    public var pid: Int
    /// The 2 MiB range collapsed.
    public var address: UInt64
    /// PTEs that mapped a page, each page copied into the huge page and its mapping dropped (the rest
    /// of the 512 subpages were zeroed or read from swap).
    public var pagesCopied = 0
    /// The small folios whose last reference the collapse dropped.
    public var freed = FolioRelease()

    public init(pid: Int, address: UInt64) {
        self.pid = pid
        self.address = address
    }
}

/// khugepaged's collapses since they were last taken, kept only while someone asks for them.
struct CollapseLog {
    var recording = false
    var records: [CollapseRecord] = []
}

extension Kernel {
    /// Starts or stops keeping a record of each collapse khugepaged makes (off by default: nobody reads
    /// them outside simulated time).
    public func recordCollapses(_ on: Bool) {
        collapseLog.withLock { $0.recording = on; if !on { $0.records = [] } }
    }

    /// The collapses recorded since the last call, in the order they were made.
    public func takeCollapseRecords() -> [CollapseRecord] {
        collapseLog.withLock { log in
            defer { log.records = [] }
            return log.records
        }
    }

    /// Keeps `record` if collapses are being recorded.
    func noteCollapse(_ record: CollapseRecord) {
        collapseLog.withLock { if $0.recording { $0.records.append(record) } }
    }
}
