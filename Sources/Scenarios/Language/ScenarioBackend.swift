/// What runs a scenario: the thpsim model or the live kernel (`NativeScenarioBackend`).
///
/// The interpreter drives a backend one call at a time from one thread, so a backend needs no
/// locking. Calls return Linux's outcome as a value (`Result` with an errno, `TouchOutcome.segv`);
/// a backend throws only when it cannot do what was asked: `ScenarioError.unsupported(reason)`
/// skips the expectations that depend on it, any other error stops the run.
///
/// Addresses and lengths are passed exactly as the scenario computed them, unaligned ones included,
/// so the kernel (real or modelled) decides on `EINVAL`. `Process` names one address space (an mm):
/// the interpreter gets the first from `start` and more from `fork`.
public protocol ScenarioBackend: AnyObject {
    associatedtype Process

    /// `model` or `native`, as reports show it.
    var name: String { get }

    /// Whether counters are shared with activity outside the scenario (the live kernel's vmstat);
    /// the runner then retries a run whose vmstat expectation failed.
    var countersAreSystemWide: Bool { get }

    /// Prepares a run of `scenario` (its design, memory, swap if it pages out) and returns `parent`.
    func start(_ scenario: Scenario) throws(ScenarioError) -> Process

    /// Sets a THP tunable, a path below `/sys/kernel/mm/transparent_hugepage/`.
    func setTunable(_ knob: Knob) throws(ScenarioError)

    /// Maps anonymous memory; returns the start. Linux: `mmap(MAP_ANONYMOUS | MAP_PRIVATE or MAP_SHARED [| MAP_FIXED] [| MAP_STACK])`.
    func mmap(in process: Process, address: UInt64?, length: UInt64, protection: Protection, shared: Bool, stack: Bool)
        throws(ScenarioError) -> Result<UInt64, ScenarioErrno>

    /// Linux: `munmap()`.
    func munmap(in process: Process, address: UInt64, length: UInt64) throws(ScenarioError) -> Result<Void, ScenarioErrno>

    /// Linux: `mprotect()`.
    func mprotect(in process: Process, address: UInt64, length: UInt64, protection: Protection)
        throws(ScenarioError) -> Result<Void, ScenarioErrno>

    /// Moves or resizes a mapping; returns its new start. Linux: `mremap(MREMAP_MAYMOVE [| MREMAP_FIXED])`.
    func mremap(in process: Process, address: UInt64, oldLength: UInt64, newLength: UInt64, destination: UInt64?)
        throws(ScenarioError) -> Result<UInt64, ScenarioErrno>

    /// Linux: `madvise()`.
    func madvise(in process: Process, address: UInt64, length: UInt64, advice: Advice)
        throws(ScenarioError) -> Result<Void, ScenarioErrno>

    /// Touches every page of the range as the CPU would: reads, or writes `pattern` to every byte.
    /// A touch that faults (no VMA, or a VMA without the permission) stops at the first such page.
    func touch(in process: Process, address: UInt64, length: UInt64, access: TouchAccess)
        throws(ScenarioError) -> TouchOutcome

    /// The bytes of the range, for `expect data`; should change as little as it can (no counters,
    /// no LRU), like a debugger's view. A hole in the address space answers `.unmapped`.
    func readData(in process: Process, address: UInt64, length: UInt64) throws(ScenarioError) -> DataRead

    /// A child of `process` that continues from here. Linux: `fork()`.
    func fork(_ process: Process) throws(ScenarioError) -> Result<Process, ScenarioErrno>

    /// Ends `process`. Linux: `exit()`.
    func exit(_ process: Process) throws(ScenarioError)

    /// Lets khugepaged complete `fullScans` more passes over its mm list. Linux: `khugepaged_do_scan()`.
    func runKhugepaged(fullScans: Int) throws(ScenarioError)

    /// Splits every huge page mapped in the range. Linux: debugfs `split_huge_pages` (`split_huge_pages_pid()`).
    func split(in process: Process, address: UInt64, length: UInt64) throws(ScenarioError)

    /// Pins every page of the range for a long-lived DMA (faulting pages in as needed), as a driver
    /// does with `pin_user_pages(FOLL_LONGTERM)` (2.6.38: `get_user_pages()`). The pins stay until
    /// `unpin` of the same range or the end of the run.
    func pin(in process: Process, address: UInt64, length: UInt64) throws(ScenarioError) -> Result<Void, ScenarioErrno>

    /// Releases the pins `pin` took on exactly this range; a range never pinned is an error.
    func unpin(in process: Process, address: UInt64, length: UInt64) throws(ScenarioError)

    /// The numeric fields of the smaps entry of the VMA that starts at `vmaStart` (nil if none starts
    /// there), as Linux prints them: `… kB` fields in kB, the others as counts. Linux: `show_smap()`.
    func smaps(of process: Process, vmaStart: UInt64) throws(ScenarioError) -> [String: Int64]?

    /// `/proc/vmstat`. Linux: `vmstat_show()`.
    func vmstat() throws(ScenarioError) -> [String: Int64]

    /// `/proc/meminfo`, `… kB` fields in kB. Linux: `meminfo_proc_show()`.
    func meminfo() throws(ScenarioError) -> [String: Int64]

    /// Has the cgroup v2 hierarchy mounted with `options` (`cgroup-mount`, before any cgroup is
    /// made); throws `unsupported` where that cannot be had. Linux: `mount -t cgroup2 -o OPTIONS`.
    func mountCgroups(options: [String]) throws(ScenarioError)

    /// Creates the memory cgroup `name` below the root. Linux: `mkdir /sys/fs/cgroup/NAME`.
    func createCgroup(_ name: String) throws(ScenarioError) -> Result<Void, ScenarioErrno>

    /// Writes `value` to a file of the cgroup `name`. Linux: `write()` to `/sys/fs/cgroup/NAME/FILE`.
    func writeCgroup(_ name: String, file: String, value: String) throws(ScenarioError) -> Result<Void, ScenarioErrno>

    /// Removes the cgroup `name`. Linux: `rmdir /sys/fs/cgroup/NAME` (EBUSY while it has processes
    /// or cgroups below it).
    func removeCgroup(_ name: String) throws(ScenarioError) -> Result<Void, ScenarioErrno>

    /// Moves `process` into the cgroup `name` (nil: the root). Linux: its pid to `cgroup.procs`.
    func joinCgroup(_ process: Process, _ name: String?) throws(ScenarioError) -> Result<Void, ScenarioErrno>

    /// Sets `process`'s OOM score adjustment. Linux: writing `/proc/PID/oom_score_adj`.
    func setOOMScoreAdj(_ process: Process, _ value: Int) throws(ScenarioError) -> Result<Void, ScenarioErrno>

    /// The text of a file of the cgroup `name`, as Linux prints it.
    func readCgroup(_ name: String, file: String) throws(ScenarioError) -> String

    /// Whether a cgroup's OOM killer killed `process`.
    func wasKilled(_ process: Process) throws(ScenarioError) -> Bool

    /// Why `key` of the keyed cgroup file `file` cannot be read on this backend (cgroup v1 has no
    /// `memory.events oom`), or nil; the checks of such keys are skipped with this reason.
    func missingCgroupKeyReason(file: String, key: String) -> String?

    /// Ends the run: ends every process and undoes what `start` and `setTunable` changed. Always
    /// called once per `start`, also when `start` threw, so it must cope with a partial start.
    func finish()
}

extension ScenarioBackend {
    public func missingCgroupKeyReason(file: String, key: String) -> String? { nil }
    public func setOOMScoreAdj(_ process: Process, _ value: Int) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        throw .unsupported("the \(name) backend has no oom_score_adj")
    }
    public func mountCgroups(options: [String]) throws(ScenarioError) {
        throw .unsupported("the \(name) backend cannot mount cgroup2 with \(options.joined(separator: ","))")
    }
}

/// How a touch accesses memory.
public enum TouchAccess: Sendable, Hashable {
    case read
    /// Store `pattern` to every byte of the range, in order.
    case write(DataPattern)
}

/// What became of a touch.
public enum TouchOutcome: Sendable, Hashable {
    case completed
    /// The access faulted at `address` (SIGSEGV); bytes before it were touched.
    case segv(address: UInt64)
    /// The access at `address` needed memory the process's cgroup had no room for, and the cgroup's
    /// OOM killer killed the process; bytes before it were touched.
    case killed(address: UInt64)
}

/// The answer to a `readData` request.
public enum DataRead: Sendable, Hashable {
    case bytes([UInt8])
    /// The byte at `address` (and maybe more) is not mapped.
    case unmapped(address: UInt64)
}
