import VMCore
import Kernel

/// What an access does to its page: kept apart in traces and counters, as a PMU keeps
/// `mem_inst_retired.all_loads`, `…all_stores` and instruction fetches apart.
public enum AccessKind: UInt8, Sendable, Hashable, CaseIterable {
    case load = 0, store = 1, fetch = 2

    /// The MMU's view of the access.
    @inlinable public var memoryAccess: MemoryAccess {
        switch self {
        case .load: .read
        case .store: .write
        case .fetch: .execute
        }
    }
}

/// A system call or scheduling event of a program, in program order with its accesses. Addresses are
/// the ones the real program got (replay maps them with `MAP_FIXED`), so a trace is self-contained.
public enum WorkloadEvent: Sendable, Hashable {
    /// `mmap(address, length, protection, MAP_PRIVATE or MAP_SHARED | MAP_ANONYMOUS)`.
    case mmap(address: UInt64, length: UInt64, protection: VMCore.Protection, shared: Bool)
    case munmap(address: UInt64, length: UInt64)
    case mprotect(address: UInt64, length: UInt64, protection: VMCore.Protection)
    case madvise(address: UInt64, length: UInt64, advice: MadviseAdvice)
    /// `mremap(old, oldLength, newLength, MREMAP_MAYMOVE|MREMAP_FIXED, newAddress)`.
    case mremap(address: UInt64, oldLength: UInt64, newLength: UInt64, newAddress: UInt64)
    /// `brk(address)`.
    case brk(address: UInt64)
    /// `get_mempolicy(&node, NULL, 0, address, MPOL_F_NODE | MPOL_F_ADDR)`: which NUMA node holds the
    /// page at `address` (the kernel looks the page up with GUP, faulting it in when absent).
    case getMempolicy(address: UInt64)
    /// A new thread of the caller's process (Linux: `clone(CLONE_VM)`).
    case spawn(thread: Int)
    /// A new process whose only thread is `child` (Linux: `fork()`).
    case fork(child: Int)
    /// The caller's process exits (Linux: `exit_group()`).
    case exit
    /// Every thread sleeps: time in which background daemons (khugepaged) may act.
    case idle(milliseconds: UInt64)
    /// Set-up (mapping and first touch) ends; the measured phase begins.
    case beginMeasurement
}

/// Where a workload's events go: a machine that runs them (`MachineExecutor`), a trace file
/// (`TraceWriter`), or a test's census. Generators and the trace reader are generic over it, so the
/// hot loop calls the sink directly, without existentials.
public protocol WorkloadSink {
    /// `count` ≥ 1 consecutive accesses of one kind by `thread`, all in the 4 KiB page of `address`.
    mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int)
    /// A system call or scheduling event made by `thread`.
    mutating func event(thread: Int, _ event: WorkloadEvent)
    /// A page run: `count` ≥ 1 consecutive accesses of one kind by `thread` at `address`,
    /// `address + stride`, …, `address + (count - 1) × stride`, all in the 4 KiB page of `address`
    /// (`stride` ≥ 1). It means exactly `count` calls of `access(thread:address:kind:count: 1)` at
    /// those addresses, which is what the default does; a sink may take it whole (`MachineExecutor`
    /// translates the page once and charges each access's data line as the per-access path would).
    mutating func accessRun(thread: Int, address: UInt64, stride: UInt64, count: Int, kind: AccessKind)
    /// One access of `kind` by `thread` at each of `addresses`, in order. It means exactly one call of
    /// `access(thread:address:kind:count: 1)` per address, which is what the default does; a sink
    /// may take them at once (`MachineExecutor` queues those before its next tick in one loop).
    mutating func accesses(thread: Int, addresses: UnsafeBufferPointer<UInt64>, kind: AccessKind)
}

extension WorkloadSink {
    /// One `access(…count: 1)` per access of the run, in order.
    @inlinable
    public mutating func accessRun(thread: Int, address: UInt64, stride: UInt64, count: Int, kind: AccessKind) {
        var a = address
        for _ in 0..<count {
            access(thread: thread, address: a, kind: kind, count: 1)
            a &+= stride
        }
    }

    /// One `access(…count: 1)` per address, in order.
    @inlinable
    public mutating func accesses(thread: Int, addresses: UnsafeBufferPointer<UInt64>, kind: AccessKind) {
        for a in addresses { access(thread: thread, address: a, kind: kind, count: 1) }
    }
}

extension MadviseAdvice {
    /// The advice's number in traces (its position in `MadviseAdvice.allCases`, which only grows at the end).
    public var traceCode: UInt8 { UInt8(MadviseAdvice.allCases.firstIndex(of: self)!) }
    public init?(traceCode: UInt8) {
        guard Int(traceCode) < MadviseAdvice.allCases.count else { return nil }
        self = MadviseAdvice.allCases[Int(traceCode)]
    }
}
