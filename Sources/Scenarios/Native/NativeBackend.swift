#if canImport(Glibc)
import Glibc

/// Runs scenarios on the live Linux kernel of this machine: every scenario process is a real
/// process, forked from the host, that performs real system calls and touches on request.
///
/// The host (this object) never maps scenario memory itself: it forks the `parent` worker at
/// `start`, and workers fork further workers at `fork`, each served over its own pipes
/// (`NativeChannel`, made before the first fork because pipes cannot be passed afterwards).
/// The host reads `/proc/PID/smaps`, `/proc/vmstat` and `/proc/meminfo`, sets and restores the
/// sysfs tunables, and owns the swap file and debugfs. Touches that would fault are detected with
/// `/proc/self/maps` before touching (`NativeMaps`). From `start` to `finish` it holds the host
/// (`NativeHostLock`) and holds back SIGINT, SIGTERM and SIGHUP, which end the run only after
/// everything above is put back (`NativeSignals`).
///
/// - Precondition for `start`: the host is single-threaded, so `fork()` is safe; otherwise the
///   run is skipped. The `thpsim` command is; a test runner is not, so tests run `thpsim`.
public final class NativeScenarioBackend: ScenarioBackend {
    /// A worker: its channel index and process id.
    public struct Process: Sendable, Hashable {
        var channel: Int
        public var pid: Int32
    }

    public var name: String { "native" }
    public var countersAreSystemWide: Bool { true }

    private var channels: [NativeChannel] = []
    private var live: [Int32: Process] = [:]
    /// Every scenario process ever created, to reap the ones that became the host's children.
    private var created: [Int32] = []
    private var nextChannel = 1
    private var firstWorker: pid_t = 0
    /// Whether the first worker was forked (and the host closed the workers' pipe ends).
    private var started = false
    private let tunables = NativeTunables()
    private let debugfs = NativeDebugfs()
    private var swap: NativeSwapFile?
    private var previousSIGPIPE: sighandler_t?
    /// The run's memory cgroups (scenarios that use them), and which cgroup each process was put in.
    private var cgroups: NativeCgroups?
    private var membership: [Int32: String] = [:]
    /// Processes that ended with `exit` (not killed).
    private var exited: Set<Int32> = []
    /// How long one request may take before the worker is presumed stuck.
    private let requestTimeout = 300.0
    /// Held from `start` to `finish`: one native run at a time on this machine (`NativeHostLock`).
    private var hostLock: NativeHostLock?
    /// SIGINT, SIGTERM and SIGHUP, blocked while the run holds the host (`NativeSignals`); nil otherwise.
    private var signals: NativeSignals.Blocked?

    public init() {}

    /// Whether `vmstat()` also reads the mTHP counters in sysfs: only for a scenario that checks them,
    /// so that every other vmstat snapshot stays one read of `/proc/vmstat`.
    private var readsMTHPCounters = false

    public func start(_ scenario: Scenario) throws(ScenarioError) -> Process {
        readsMTHPCounters = scenario.checksMTHPCounters
        guard geteuid() == 0 else { throw .unsupported("native runs need root (to set THP tunables and read other processes' smaps)") }
        guard access(NativeTunables.root, F_OK) == 0 else { throw .unsupported("this kernel has no \(NativeTunables.root)") }
        if hostLock == nil {
            switch NativeHostLock.acquire(timeout: 900) {
            case .success(let (lock, leftover)):
                hostLock = lock
                if let leftover {
                    // A run killed outright left the host changed: put it back before anything else.
                    let undone = NativeRecovery.undo(leftover.changes)
                    printToStandardError("thpsim: native run \(leftover.pid) ended without putting the host back; \(undone)")
                    lock.clearJournal()
                }
                tunables.willChange = { name, value in lock.record(.tunable(name: name, original: value)) }
                debugfs.willMount = { lock.record(.debugfs) }
            case .failure(let error): throw error
            }
        }
        let threads = NativeSyscalls.readFile("/proc/self/status")?.split(separator: "\n")
            .first { $0.hasPrefix("Threads:") }.flatMap { NativeProcFiles.field($0)?.1 } ?? 0
        guard threads == 1 else {
            throw .unsupported("native runs fork the scenario's processes and need a single-threaded host (this one has \(threads) threads); run them with the thpsim command")
        }
        // From here to `finish` the host may be changed: a stopping signal waits until it is put back.
        if signals == nil { signals = NativeSignals.block() }
        if scenario.usesCgroups {
            switch NativeCgroups.open() {
            case .success(let c):
                cgroups = c
                let lock = hostLock
                c.willMake = { lock?.record(.cgroup(path: $0)) }
            case .failure(let reason): throw reason
            }
        }
        let clusters = scenario.swap?.clusters == true
        if scenario.uses(.pageout), clusters || !NativeSwapFile.swapIsActive {
            // `swap … clusters=yes`: a swap area with 2 MiB clusters, used before any other.
            let lock = hostLock
            swap = try NativeSwapFile.create(bytes: clusters ? max(scenario.swap!.bytes, 64 << 20) : 256 << 20, clusters: clusters,
                                             willMake: { lock?.record(.swap(path: $0)) }, didAttach: { lock?.record(.loop(device: $0)) })
        }
        stopIfSignalled()
        for _ in 0 ... scenario.forkCount {
            guard let channel = NativeChannel.make() else { throw .run("pipe() failed: \(NativeSyscalls.lastErrno)") }
            channels.append(channel)
        }
        previousSIGPIPE = signal(SIGPIPE, SIG_IGN)
        NativeSyscalls.becomeSubreaper()
        let pid = Glibc.fork()
        if pid == 0 {
            for channel in channels { channel.closeHostEnds() }
            signals?.unblock()
            signal(SIGCHLD, SIG_IGN)
            NativeWorker.serve(own: 0, channels: channels)
        }
        guard pid > 0 else { throw .run("fork() failed: \(NativeSyscalls.lastErrno)") }
        firstWorker = pid
        started = true
        for channel in channels { channel.closeWorkerEnds() }
        let parent = Process(channel: 0, pid: pid)
        live[pid] = parent
        return parent
    }

    public func setTunable(_ knob: Knob) throws(ScenarioError) {
        stopIfSignalled()
        try tunables.set(knob)
    }

    public func mmap(in process: Process, address: UInt64?, length: UInt64, protection: Protection, shared: Bool, stack: Bool)
        throws(ScenarioError) -> Result<UInt64, ScenarioErrno> {
        let r = try call(process, NativeRequest(.mmap, address ?? 0, length, UInt64(NativeSyscalls.protectionBits(protection)),
                                                shared ? 1 : 0, address == nil ? 0 : 1, stack ? 1 : 0))
        return r.status == 0 ? .success(r.value) : .failure(ScenarioErrno(code: Int32(r.status)))
    }

    public func munmap(in process: Process, address: UInt64, length: UInt64) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        outcome(try call(process, NativeRequest(.munmap, address, length)))
    }

    public func mprotect(in process: Process, address: UInt64, length: UInt64, protection: Protection)
        throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        outcome(try call(process, NativeRequest(.mprotect, address, length, UInt64(NativeSyscalls.protectionBits(protection)))))
    }

    public func mremap(in process: Process, address: UInt64, oldLength: UInt64, newLength: UInt64, destination: UInt64?)
        throws(ScenarioError) -> Result<UInt64, ScenarioErrno> {
        let r = try call(process, NativeRequest(.mremap, address, oldLength, newLength, destination == nil ? 0 : 1, destination ?? 0))
        return r.status == 0 ? .success(r.value) : .failure(ScenarioErrno(code: Int32(r.status)))
    }

    public func madvise(in process: Process, address: UInt64, length: UInt64, advice: Advice)
        throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        outcome(try call(process, NativeRequest(.madvise, address, length, UInt64(NativeSyscalls.adviceValue(advice)))))
    }

    public func touch(in process: Process, address: UInt64, length: UInt64, access: TouchAccess)
        throws(ScenarioError) -> TouchOutcome {
        let request = switch access {
        case .read: NativeRequest(.touchRead, address, length)
        case .write(let p): NativeRequest(.touchWrite, address, length, p.sequence, p.firstOffset)
        }
        let r: NativeResponse
        do { r = try call(process, request) } catch {
            // A worker its cgroup's OOM killer killed mid-touch (SIGKILL). Its pipe closes while it is
            // still exiting, so let it finish dying (bounded) before asking. Where in the range it died
            // is not known here; the touch's start stands for it.
            let deadline = NativeChannel.monotonicSeconds() + 5
            while Self.isAlive(process.pid) && NativeChannel.monotonicSeconds() < deadline { usleep(1000) }
            if try wasKilled(process) { return .killed(address: address) }
            throw error
        }
        if r.status == NativeResponse.faulted { return .segv(address: r.value) }
        guard r.status == 0 else { throw .run("the touch could not run: \(ScenarioErrno(code: Int32(r.status)))") }
        return .completed
    }

    public func readData(in process: Process, address: UInt64, length: UInt64) throws(ScenarioError) -> DataRead {
        let r = try call(process, NativeRequest(.readData, address, length))
        if r.status == NativeResponse.faulted { return .unmapped(address: r.value) }
        guard r.status == 0 else {
            throw .run("reading 0x\(String(r.value, radix: 16)) failed: \(ScenarioErrno(code: Int32(r.status)))")
        }
        return .bytes(r.payload)
    }

    public func fork(_ process: Process) throws(ScenarioError) -> Result<Process, ScenarioErrno> {
        guard nextChannel < channels.count else { throw .run("more forks than the scenario has fork commands") }
        let channel = nextChannel
        let r = try call(process, NativeRequest(.fork, UInt64(channel)))
        guard r.status == 0 else { return .failure(ScenarioErrno(code: Int32(r.status))) }
        nextChannel += 1
        let child = Process(channel: channel, pid: Int32(truncatingIfNeeded: r.value))
        live[child.pid] = child
        membership[child.pid] = membership[process.pid]   // cgroup_post_fork(): the parent's cgroup
        created.append(child.pid)
        return .success(child)
    }

    public func exit(_ process: Process) throws(ScenarioError) {
        _ = try call(process, NativeRequest(.exit))
        exited.insert(process.pid)
        live[process.pid] = nil
        if process.pid == firstWorker { reapFirstWorker() }
    }

    public func runKhugepaged(fullScans: Int) throws(ScenarioError) {
        try tunables.waitForKhugepaged(fullScans: fullScans, polling: stopIfSignalled)
    }

    public func split(in process: Process, address: UInt64, length: UInt64) throws(ScenarioError) {
        try debugfs.split(pid: process.pid, start: address, end: address &+ length)
    }

    /// A long-term pin held by the process's own io_uring instance, whose registered buffer is the
    /// range (`NativePins`: `IORING_REGISTER_BUFFERS` → `pin_user_pages(FOLL_WRITE | FOLL_LONGTERM)`).
    public func pin(in process: Process, address: UInt64, length: UInt64) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        let r = try call(process, NativeRequest(.pin, address, length))
        if r.status == Int64(ENOSYS) || r.status == Int64(EPERM) {
            throw .unsupported("pin needs io_uring's registered buffers, which this kernel refuses (\(ScenarioErrno(code: Int32(r.status)).name); /proc/sys/kernel/io_uring_disabled)")
        }
        return outcome(r)
    }

    public func unpin(in process: Process, address: UInt64, length: UInt64) throws(ScenarioError) {
        let r = try call(process, NativeRequest(.unpin, address, length))
        guard r.status == 0 else { throw .run("unpin of \(length) bytes at 0x\(String(address, radix: 16)) failed: \(ScenarioErrno(code: Int32(r.status)).name)") }
    }

    public func smaps(of process: Process, vmaStart: UInt64) throws(ScenarioError) -> [String: Int64]? {
        guard let text = NativeSyscalls.readFile("/proc/\(process.pid)/smaps") else {
            throw .run("cannot read /proc/\(process.pid)/smaps: \(NativeSyscalls.lastErrno)")
        }
        return NativeProcFiles.smapsEntry(text, start: vmaStart)
    }

    /// `/proc/vmstat`, and, for a scenario with `expect mthp`, the mTHP counters of every size this
    /// kernel has (`/sys/kernel/mm/transparent_hugepage/hugepages-64kB/stats/anon_fault_alloc` as
    /// `hugepages-64kB/stats/anon_fault_alloc`, …; none before Linux 6.9).
    public func vmstat() throws(ScenarioError) -> [String: Int64] {
        guard let text = NativeSyscalls.readFile("/proc/vmstat") else { throw .run("cannot read /proc/vmstat") }
        var values = NativeProcFiles.vmstat(text)
        guard readsMTHPCounters else { return values }
        let base = "/sys/kernel/mm/transparent_hugepage/"
        for order in 2...9 {
            let folder = "hugepages-\(4 << order)kB/stats/"
            for name in MTHPCounters.names {
                if let text = NativeSyscalls.readFile(base + folder + name),
                   let value = Int64(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                    values[folder + name] = value
                }
            }
        }
        return values
    }

    public func meminfo() throws(ScenarioError) -> [String: Int64] {
        guard let text = NativeSyscalls.readFile("/proc/meminfo") else { throw .run("cannot read /proc/meminfo") }
        return NativeProcFiles.meminfo(text)
    }

    private func cgroupsOrSkip() throws(ScenarioError) -> NativeCgroups {
        guard let cgroups else { throw .unsupported("the native run has no memory cgroups") }
        return cgroups
    }

    /// Linux: `mkdir` below the host's own memory cgroup (`NativeCgroups`).
    public func createCgroup(_ name: String) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        try cgroupsOrSkip().create(name)
    }

    public func writeCgroup(_ name: String, file: String, value: String) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        let cgroups = try cgroupsOrSkip()
        if let mismatch = cgroups.protectionMismatch(file) { throw .unsupported(mismatch) }
        return try cgroups.write(name, file: file, value: value)
    }

    /// Compares the host's cgroup2 mount options with the scenario's (`NativeCgroups.mount(options:)`).
    public func mountCgroups(options: [String]) throws(ScenarioError) {
        try cgroupsOrSkip().mount(options: options)
    }

    /// Linux: `rmdir` of the cgroup's directory.
    public func removeCgroup(_ name: String) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        try cgroupsOrSkip().remove(name)
    }

    /// Writes the worker's pid to the cgroup's `cgroup.procs` (the host's own cgroup for the root).
    public func joinCgroup(_ process: Process, _ name: String?) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        let result = try cgroupsOrSkip().join(process.pid, name)
        if case .success = result { membership[process.pid] = name }
        return result
    }

    /// Writes the worker's `/proc/PID/oom_score_adj` (as root, so lowering it is allowed).
    public func setOOMScoreAdj(_ process: Process, _ value: Int) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        let status = NativeSyscalls.writeFile("/proc/\(process.pid)/oom_score_adj", "\(value)")
        return status == 0 ? .success(()) : .failure(ScenarioErrno(code: status))
    }

    public func readCgroup(_ name: String, file: String) throws(ScenarioError) -> String {
        try cgroupsOrSkip().read(name, file: file)
    }

    public func missingCgroupKeyReason(file: String, key: String) -> String? {
        cgroups?.missingKeyReason(file: file, key: key)
    }

    /// A worker in a cgroup that is gone without `exit`, while its cgroup counts an OOM kill.
    public func wasKilled(_ process: Process) throws(ScenarioError) -> Bool {
        guard let cgroups, let name = membership[process.pid], !exited.contains(process.pid),
              !Self.isAlive(process.pid), cgroups.oomKills(name) > 0 else { return false }
        // Reap the host's own child at once: a zombie's kernel stack stays charged to the cgroup.
        if process.pid == firstWorker { reapFirstWorker() }
        return true
    }

    /// Kills every worker, restores the tunables, removes the swap file, unmounts debugfs if mounted
    /// here, removes the cgroups, and lets the next run in. A stopping signal that arrived meanwhile
    /// ends the process here (`NativeSignals`), once all of that is done.
    public func finish() {
        let teardown = tearDown()
        if !teardown.notRestored.isEmpty { printToStandardError("thpsim: could not restore \(teardown.notRestored.joined(separator: " "))") }
        if let swapFile = teardown.swapFile, let problem = teardown.swapProblem { printToStandardError("thpsim: swap file \(swapFile): \(problem)") }
        if !teardown.cgroupsNotRemoved.isEmpty { printToStandardError("thpsim: could not remove the cgroups \(teardown.cgroupsNotRemoved.joined(separator: ", "))") }
        if let signals {
            if let signal = signals.takePending() { NativeSignals.exit(after: signal, teardown) }
            signals.unblock()
        }
        signals = nil
    }

    /// Ends the run here if a stopping signal is pending: puts the host back, prints one line, exits
    /// with 128 + the signal. Called where the host waits (`NativeSignals`).
    private func stopIfSignalled() {
        guard let signal = signals?.takePending() else { return }
        NativeSignals.exit(after: signal, tearDown())
    }

    /// Everything `finish` undoes, in order, with the stopping signals still blocked; what it did.
    private func tearDown() -> NativeTeardown {
        var done = NativeTeardown()
        done.stopped = live.keys.sorted()
        // Children first, while their parents still reap them; orphans are the host's (subreaper).
        for pid in created { kill(pid, SIGKILL) }
        let deadline = NativeChannel.monotonicSeconds() + 5
        for pid in created {
            var status: Int32 = 0
            while waitpid(pid, &status, WNOHANG) == 0 || Self.state(pid) != "gone" {
                if NativeChannel.monotonicSeconds() > deadline { break }
                usleep(1000)
            }
        }
        created.removeAll()
        live.removeAll()
        reapFirstWorker()
        for channel in channels {
            if started { channel.closeHostEnds() } else { channel.closeAll() }
        }
        started = false
        channels.removeAll()
        (done.restored, done.notRestored) = tunables.restore()
        if let swap {
            done.swapFile = swap.path
            done.swapProblem = swap.remove()
        }
        swap = nil
        done.unmountedDebugfs = debugfs.unmountIfMounted()
        if let result = cgroups?.removeAll() { (done.cgroupsRemoved, done.cgroupsNotRemoved) = (result.removed, result.failed) }
        cgroups = nil
        membership.removeAll()
        exited.removeAll()
        if let previousSIGPIPE { signal(SIGPIPE, previousSIGPIPE) }
        previousSIGPIPE = nil
        hostLock?.release()
        hostLock = nil
        tunables.willChange = nil
        debugfs.willMount = nil
        return done
    }

    // MARK: Talking to workers

    private func outcome(_ r: NativeResponse) -> Result<Void, ScenarioErrno> {
        r.status == 0 ? .success(()) : .failure(ScenarioErrno(code: Int32(r.status)))
    }

    /// Sends one request and waits for its response; a worker that dies or hangs stops the run.
    /// A stopping signal ends the run before the request, every second while it runs, and when the
    /// process dies of it (a terminal's Ctrl-C reaches the workers too).
    private func call(_ process: Process, _ request: NativeRequest) throws(ScenarioError) -> NativeResponse {
        stopIfSignalled()
        let channel = channels[process.channel]
        var words = request.words
        guard withUnsafeBytes(of: &words, { NativeChannel.writeAll(channel.requestWrite, $0) }) else {
            stopIfSignalled()
            throw .run("native process \(process.pid) is gone (writing its request failed: \(NativeSyscalls.lastErrno))")
        }
        let deadline = NativeChannel.monotonicSeconds() + requestTimeout
        let alive = { [self] in
            stopIfSignalled()
            return Self.isAlive(process.pid)
        }
        var header: (UInt64, UInt64, UInt64) = (0, 0, 0)
        guard withUnsafeMutableBytes(of: &header, { NativeChannel.readAll(channel.responseRead, $0, deadline: deadline, alive: alive) }) else {
            stopIfSignalled()
            throw .run("native process \(process.pid) died or stopped answering (\(Self.state(process.pid)))")
        }
        var response = NativeResponse(status: Int64(bitPattern: header.0), value: header.1)
        if header.2 > 0 {
            response.payload = [UInt8](repeating: 0, count: Int(header.2))
            guard response.payload.withUnsafeMutableBytes({ NativeChannel.readAll(channel.responseRead, $0, deadline: deadline, alive: alive) }) else {
                stopIfSignalled()
                throw .run("native process \(process.pid) died while sending data")
            }
        }
        return response
    }

    /// Whether a worker still runs: its `/proc` entry exists and is not a zombie.
    private static func isAlive(_ pid: Int32) -> Bool {
        let s = state(pid)
        return s != "gone" && s != "Z" && s != "X"
    }

    /// The state letter from `/proc/PID/stat` (after the command name in parentheses), or `gone`.
    private static func state(_ pid: Int32) -> String {
        guard let stat = NativeSyscalls.readFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return "gone" }
        return stat[stat.index(after: close)...].split(separator: " ").first.map(String.init) ?? "gone"
    }

    private func reapFirstWorker() {
        guard firstWorker > 0 else { return }
        var status: Int32 = 0
        kill(firstWorker, SIGKILL)
        while waitpid(firstWorker, &status, 0) < 0 && errno == EINTR {}
        firstWorker = 0
    }
}

func printToStandardError(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
#endif
