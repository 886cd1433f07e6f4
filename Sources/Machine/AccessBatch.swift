import VMCore
import Kernel

/// One entry of a batch of program accesses for `CPU.run(_:)`: `count` accesses of one kind to the
/// page of `address`. A run of `count` accesses keeps one access's TLB state: it costs one access
/// through the MMU and `count - 1` L1 TLB hits.
public struct AccessRecord: Sendable {
    public var address: UInt64
    public var count: Int
    public var kind: MemoryAccess

    @inlinable
    public init(address: UInt64, count: Int, kind: MemoryAccess) {
        self.address = address
        self.count = count
        self.kind = kind
    }
}

extension CPU {
    /// The access path's batch entry point: runs `records` in order on this CPU, each through the
    /// TLBs, the walker and the kernel's fault handler as `access(_:_:)` does. A caller outside this
    /// module makes one call per batch, so the per-access loop is compiled here with the TLB arrays,
    /// the cache model and the filter inlined, and nothing of the CPU's internals is exposed.
    ///
    /// Returns how many records completed: all of them, or the index of the record whose access the
    /// kernel could not resolve, with its fault (that record's first access was counted; the records
    /// after it were not run).
    public func run(_ records: UnsafeBufferPointer<AccessRecord>) -> (completed: Int, fault: AccessFault?) {
        for i in records.indices {
            let r = records[i]
            switch access(VirtualAddress(r.address), r.kind) {
            case .success:
                if r.count > 1 {
                    let more = r.count &- 1
                    tally.accesses &+= more
                    tally.l1Hits &+= more
                }
            case .failure(let fault):
                return (i, fault)
            }
        }
        return (records.count, nil)
    }
}
