import VMCore

/// A parsed scenario file: its statements in order, with the design and memory it asks for.
public struct Scenario: Sendable {
    /// The file name as given on the command line; locations use it.
    public var file: String
    public var statements: [Statement]
    /// `design NAME`, for the model (ignored natively).
    public var design: String?
    /// `memory SIZE`, the model's physical memory in bytes (ignored natively).
    public var memoryBytes: UInt64?
    /// `swap SIZE [clusters=yes]`, the model's swap device (natively, `clusters=yes` only: a
    /// non-rotational loop device).
    public var swap: SwapRequest?

    /// The number of `fork` commands: a bound on the processes a run creates besides `parent`.
    public var forkCount: Int {
        statements.count { if case .fork = $0.command { true } else { false } }
    }

    /// Whether any statement creates, joins or checks a memory cgroup.
    public var usesCgroups: Bool {
        statements.contains {
            switch $0.command {
            case .cgroup, .inCgroup, .rmdirCgroup, .cgroupMount, .expect(.cgroup), .expect(.killed): true
            default: false
            }
        }
    }

    /// Whether any statement checks a multi-size THP counter (`expect mthp`: a vmstat check of a
    /// `hugepages-<size>kB/stats/` field).
    public var checksMTHPCounters: Bool {
        statements.contains {
            if case .expect(.vmstat(let checks)) = $0.command { checks.contains { $0.field.contains("/") } } else { false }
        }
    }

    /// Whether any statement uses `advice`.
    public func uses(_ advice: Advice) -> Bool {
        statements.contains { if case .madvise(_, _, let a) = $0.command { a == advice } else { false } }
    }
}

/// One command line with its location and its source text (without the comment).
public struct Statement: Sendable {
    public var location: SourceLocation
    public var text: String
    public var command: Command
}

extension Statement {
    /// The checks of an `expect` statement as written, one per result; empty for other commands.
    public var checkTexts: [String] {
        switch command {
        case .expect(.smaps(_, let checks)), .expect(.vmstat(let checks)), .expect(.meminfo(let checks)),
             .expect(.cgroup(_, _, let checks)): checks.map(\.text)
        case .expect: [text]
        default: []
        }
    }
}

/// A scenario command, one per line.
public enum Command: Sendable {
    case design(String)
    case memory(UInt64)
    case swap(SwapRequest)
    /// `cgroup-mount OPTION[,OPTION…]`: how the cgroup v2 hierarchy is mounted (`mount -o`); the model
    /// has `memory_recursiveprot`.
    case cgroupMount([String])
    case set([Knob])
    case mmap(MmapRequest)
    case madvise(AddressExpression, UInt64, Advice)
    /// Stores the pattern to every byte of the range, or with a stride to one byte every `stride` bytes.
    case write(AddressExpression, UInt64, stride: UInt64?)
    case read(AddressExpression, UInt64)
    case munmap(AddressExpression, UInt64)
    case mprotect(AddressExpression, UInt64, Protection)
    /// Old address, old size, new size, optional fixed destination (`to=`).
    case mremap(AddressExpression, UInt64, UInt64, to: AddressExpression?)
    case fork(String)
    case on(String)
    case exit
    case khugepaged(fullScans: Int)
    case split(AddressExpression, UInt64)
    /// Pins the pages of the range as a driver's DMA would (natively: an io_uring registered buffer).
    case pin(AddressExpression, UInt64)
    /// Releases the pins an earlier `pin` of exactly this range took.
    case unpin(AddressExpression, UInt64)
    case mark
    /// `cgroup NAME [FILE=VALUE ...]`: creates the memory cgroup if new, then writes its files in order.
    case cgroup(String, [Knob])
    /// `in NAME`: the current process joins the cgroup (`root`: the root cgroup).
    case inCgroup(String)
    /// `rmdir NAME`: removes the cgroup (it must have no processes and no cgroups below it).
    case rmdirCgroup(String)
    /// `oom_score_adj N`: the current process's `/proc/PID/oom_score_adj` (-1000…1000).
    case oomScoreAdj(Int)
    case expect(Expectation)

    /// The command's keyword, as written.
    public var keyword: String {
        switch self {
        case .design: "design"
        case .memory: "memory"
        case .swap: "swap"
        case .cgroupMount: "cgroup-mount"
        case .set: "set"
        case .mmap: "mmap"
        case .madvise: "madvise"
        case .write: "write"
        case .read: "read"
        case .munmap: "munmap"
        case .mprotect: "mprotect"
        case .mremap: "mremap"
        case .fork: "fork"
        case .on: "on"
        case .exit: "exit"
        case .khugepaged: "khugepaged"
        case .split: "split"
        case .pin: "pin"
        case .unpin: "unpin"
        case .mark: "mark"
        case .cgroup: "cgroup"
        case .inCgroup: "in"
        case .rmdirCgroup: "rmdir"
        case .oomScoreAdj: "oom_score_adj"
        case .expect: "expect"
        }
    }
}

/// A THP tunable: a path below `/sys/kernel/mm/transparent_hugepage/` and the value to write.
public struct Knob: Sendable, Hashable {
    public var name: String
    public var value: String
}

/// The operands of `mmap NAME SIZE [at=ADDR] [prot=P] [shared=yes] [stack=yes] [align=4K]`.
public struct MmapRequest: Sendable {
    public var name: String
    public var length: UInt64
    /// A fixed address (`MAP_FIXED`), or nil to let the kernel choose.
    public var fixedAddress: AddressExpression?
    public var protection: Protection
    /// `MAP_SHARED | MAP_ANONYMOUS` instead of `MAP_PRIVATE | MAP_ANONYMOUS`.
    public var shared: Bool
    /// Whether the interpreter aligns the start to 2 MiB (the default) or takes any page (`align=4K`).
    public var hugeAligned: Bool
    /// `MAP_STACK` (`stack=yes`), as glibc maps a thread's stack (`allocate_stack()`); Linux 6.7+
    /// makes such a mapping `VM_NOHUGEPAGE` (`calc_vm_flag_bits()`).
    public var stack: Bool = false
}

/// A region name with an optional byte offset: `A`, `A+2M-4K`.
public struct AddressExpression: Sendable, Hashable, CustomStringConvertible {
    public var region: String
    public var offset: Int64

    public init(region: String, offset: Int64 = 0) {
        self.region = region
        self.offset = offset
    }

    public var description: String {
        if offset == 0 { return region }
        let magnitude = offset.magnitude
        return "\(region)\(offset < 0 ? "-" : "+")\(ByteCountText.format(magnitude))"
    }
}

/// Memory protection as written in scenarios; `PROT_*` bits.
public enum Protection: String, Sendable, CaseIterable {
    case none, r, rw, rx, rwx

    public var readable: Bool { self != .none }
    public var writable: Bool { self == .rw || self == .rwx }
    public var executable: Bool { self == .rx || self == .rwx }
}

/// `madvise` advice, named as in scenarios; each maps to one `MADV_*` value.
public enum Advice: String, Sendable, CaseIterable {
    case hugepage, nohugepage, dontneed, dontfork, dofork, collapse, pageout
}

/// How an observed number is compared with the expected one.
public enum Comparison: String, Sendable, CaseIterable {
    /// `=`: equal.
    case equal = "="
    /// `+=`: the change since the scenario began or the last `mark` equals the value.
    case delta = "+="
    /// `>=`: at least.
    case atLeast = ">="
    /// `<=`: at most.
    case atMost = "<="

    /// Whether `observed` satisfies the comparison against `expected` (a delta is compared as equal).
    public func holds(observed: Int64, expected: Int64) -> Bool {
        switch self {
        case .equal, .delta: observed == expected
        case .atLeast: observed >= expected
        case .atMost: observed <= expected
        }
    }
}

/// One `Field=Value` check of an `expect smaps|vmstat|meminfo` line.
///
/// `value` is in the unit Linux prints for the field: kB for `… kB` fields (`2048kB` and `2M` both
/// mean 2048), a plain count otherwise.
public struct CounterCheck: Sendable, Hashable {
    public var field: String
    public var comparison: Comparison
    public var value: Int64
    /// The check as written, e.g. `AnonHugePages=2048kB`.
    public var text: String
}

/// What an `expect` line checks.
public enum Expectation: Sendable {
    /// Fields of the smaps entry of the VMA that starts at the address.
    case smaps(AddressExpression, [CounterCheck])
    case vmstat([CounterCheck])
    case meminfo([CounterCheck])
    /// The bytes of the range equal what earlier writes put there, or zero.
    case data(AddressExpression, UInt64)
    /// The previous call's errno, or nil for success (`expect result 0`, `expect result ok`).
    case result(ScenarioErrno?)
    /// The previous touch faulted.
    case segv
    /// Files of a memory cgroup: a keyed file (`memory.events`, `memory.stat`) and its keys, or
    /// single-value files (`memory.current<=20M`). Values are bytes or counts, as Linux prints them.
    case cgroup(String, file: String?, [CounterCheck])
    /// The process (the current one when nil) was killed by its cgroup's OOM killer.
    case killed(String?)
}

/// The files of `/sys/kernel/mm/transparent_hugepage/hugepages-<size>kB/stats/` in Linux 6.18, which
/// `expect mthp` checks (Linux: `mthp_stats`; `nr_anon` and `nr_anon_partially_mapped` count folios).
public enum MTHPCounters {
    public static let names = ["anon_fault_alloc", "anon_fault_fallback", "anon_fault_fallback_charge",
                               "zswpout", "swpin", "swpin_fallback", "swpin_fallback_charge", "swpout",
                               "swpout_fallback", "shmem_alloc", "shmem_fallback", "shmem_fallback_charge",
                               "split", "split_failed", "split_deferred", "nr_anon", "nr_anon_partially_mapped"]
}

/// The memory cgroup files scenarios write and check (cgroup v2 names).
public enum CgroupFiles {
    /// Files `cgroup NAME FILE=VALUE` may write.
    public static let writable = ["memory.max", "memory.high", "memory.swap.max", "memory.swap.high", "memory.min", "memory.low",
                                  "memory.reclaim", "memory.oom.group"]
    /// Files holding one value, which `expect cgroup NAME FILE<op>VALUE` checks.
    public static let singleValued = ["memory.current", "memory.peak", "memory.max", "memory.high",
                                      "memory.swap.max", "memory.swap.high", "memory.swap.current", "memory.min", "memory.low",
                                      "memory.oom.group"]
    /// Files of `key value` lines, which `expect cgroup NAME FILE KEY<op>VALUE` checks.
    public static let keyed = ["memory.events", "memory.events.local", "memory.stat", "memory.swap.events"]
    /// Every file the model has.
    public static var all: [String] { Array(Set(writable + singleValued + keyed)).sorted() }
    /// The name of the root cgroup in `in root`; no cgroup may take it.
    public static let rootName = "root"
}

/// Formatting of byte counts the way scenarios write them (`4K`, `2M`, or plain bytes).
enum ByteCountText {
    static func format(_ bytes: UInt64) -> String {
        for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] where bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift)\(unit)"
        }
        return "\(bytes)"
    }
}

/// `swap SIZE [clusters=yes|no]`: the model's swap device — its size, and whether it hands out 2 MiB
/// clusters so that a THP can be written whole (a swap partition on an SSD in Linux) rather than
/// falling back as with a swap file.
public struct SwapRequest: Sendable, Equatable {
    public var bytes: UInt64
    public var clusters: Bool
}
