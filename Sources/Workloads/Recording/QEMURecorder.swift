import Foundation
import Synchronization

/// Why a program could not be recorded: the program, the emulator, the plugin or the stream,
/// named with what to do about it.
public struct RecordError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The exit status `thpsim record` should end with (127: no such program, 126: cannot run it).
    public var exitStatus: Int32
    public init(_ description: String, exitStatus: Int32 = 1) {
        self.description = description
        self.exitStatus = exitStatus
    }
}

/// How a recorded program ended.
public struct ProgramExit: Sendable, Hashable {
    /// Its exit status, when it exited.
    public var status: Int32?
    /// The signal that ended it, when one did.
    public var signal: Int32?
    /// Whether `thpsim record` itself was asked to stop (SIGINT, SIGTERM, SIGHUP) and stopped it.
    public var interrupted = false

    /// The status a shell would report: the exit status, or 128 + the signal.
    public var shellStatus: Int32 { status ?? 128 + (signal ?? 0) }

    public var description: String {
        if let status { return "exited with status \(status)" }
        return "was killed by signal \(signal ?? 0)" + (interrupted ? " (record was interrupted)" : "")
    }
}

/// What the plugin records besides data accesses and system calls, and how it samples: skip the
/// first `skip` instructions, then record `window` instructions every `every` (0: one window; a
/// `window` of 0 with a `skip` records everything after the skip), counted over all threads; system
/// calls and first touches are always recorded. `fetches` adds instruction-fetch runs.
public struct CaptureSampling: Sendable, Hashable {
    public var skip: UInt64 = 0
    public var window: UInt64 = 0
    public var every: UInt64 = 0
    public var fetches = false
    public init(skip: UInt64 = 0, window: UInt64 = 0, every: UInt64 = 0) {
        self.skip = skip; self.window = window; self.every = every
    }
    public var isSampling: Bool { skip > 0 || window > 0 }
    /// What is wrong with the combination, naming the option.
    public var problem: String? {
        if every > 0 && window == 0 { return "--sample-every needs --window" }
        if every > 0 && every < window { return "--sample-every (\(every)) is shorter than --window (\(window))" }
        return nil
    }
}

/// What the capture plugin said besides records: which processes replaced themselves with
/// `execve` (QEMU user mode does not follow it), advice the model ignores, errors.
public final class CaptureMessages: Sendable {
    private struct State {
        var pendingExec: [UInt32: String] = [:]
        var replaced: [(thread: UInt32, path: String)] = []
        var ignoredAdvice: [Int: Int] = [:]
        var errors: [String] = []
        var pluginAPI: Int?
        var implicitPages = 0
        var instructions = 0
    }
    private let state = Mutex(State())

    public init() {}

    /// Takes one message chunk's text.
    public func handle(_ text: String) {
        let words = text.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard let verb = words.first else { return }
        state.withLock { s in
            switch verb {
            case "hello": if words.count > 2 { s.pluginAPI = Int(words[2]) }
            case "execve":
                if words.count >= 2, let t = UInt32(words[1]) { s.pendingExec[t] = words.count > 2 ? String(words[2]) : "" }
            case "execve-failed":
                if words.count >= 2, let t = UInt32(words[1]) { s.pendingExec[t] = nil }
            case "ignored-madvise":
                for pair in text.split(separator: " ").dropFirst() {
                    let kv = pair.split(separator: ":")
                    if kv.count == 2, let a = Int(kv[0]), let n = Int(kv[1]) { s.ignoredAdvice[a, default: 0] += n }
                }
            case "counts":
                for pair in text.split(separator: " ").dropFirst() {
                    let kv = pair.split(separator: "=")
                    guard kv.count == 2, let n = Int(kv[1]) else { continue }
                    if kv[0] == "instructions" { s.instructions += n } else if kv[0] == "implicit" { s.implicitPages += n }
                }
            case "error": s.errors.append(String(text.dropFirst(6)))
            default: break
            }
        }
    }

    /// Threads whose process ran another program with `execve`: that program ran outside the
    /// recorder, so the rest of the process is missing from the trace.
    public var replacedProcesses: [(thread: UInt32, path: String)] {
        state.withLock { s in s.pendingExec.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
    }
    /// madvise calls with advice the model does not model, by Linux advice number.
    public var ignoredAdvice: [Int: Int] { state.withLock { $0.ignoredAdvice } }
    public var errors: [String] { state.withLock { $0.errors } }
    /// Pages mapped in the trace at their first use because no traced call mapped them (the program,
    /// the loader and the stack, which exec set up before tracing began).
    public var implicitPages: Int { state.withLock { $0.implicitPages } }
    /// Instructions the recorded processes executed (QEMU's count, summed over processes).
    public var instructions: Int { state.withLock { $0.instructions } }
    /// The plugin API version QEMU reported (nil: the plugin never started).
    public var pluginAPI: Int? { state.withLock { $0.pluginAPI } }
}

/// Records a program under QEMU's user-mode emulator with thpsim's capture plugin
/// (`Sources/QEMUCapture/capture.c`): QEMU runs the program, the plugin writes trace blocks to a
/// pipe, and this reads the pipe and publishes its bytes to a `CaptureBroadcast`, whose readers
/// write the trace file and/or replay it on the model as it arrives. Nothing but the trace the user
/// asked for reaches the disk.
public enum QEMURecorder {
    /// The plugin's file name; `thpsim record` looks for it beside its own executable.
    public static let pluginFileName = "libthpsim-qemu-capture.so"

    /// `command` ready for QEMU: the program found on `PATH` as `execvp` would, checked to be an
    /// x86-64 ELF executable; a `#!` script becomes its interpreter's command line.
    public static func resolve(_ command: [String]) throws(RecordError) -> [String] {
        guard let name = command.first, !name.isEmpty else { throw RecordError("give the command to record after --", exitStatus: 2) }
        let path = try locate(name)
        let header = readPrefix(path, count: 256)
        if header.starts(with: [0x23, 0x21]) {   // "#!"
            let line = String(decoding: header.dropFirst(2).prefix { $0 != 0x0A }, as: UTF8.self)
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let interpreter = parts.first else { throw RecordError("\(path): a #! line without an interpreter", exitStatus: 126) }
            let inner = try resolve([interpreter] + parts.dropFirst().prefix(1))
            return inner + [path] + command.dropFirst()
        }
        guard header.count >= 20, header.starts(with: [0x7F, 0x45, 0x4C, 0x46]) else {
            throw RecordError("\(path): not an executable program (neither ELF nor a #! script)", exitStatus: 126)
        }
        let machine = UInt16(header[18]) | UInt16(header[19]) << 8
        guard header[4] == 2, machine == 0x3E else {
            throw RecordError("\(path): not an x86-64 program (ELF class \(header[4]), machine 0x\(String(machine, radix: 16))); thpsim records x86-64 programs", exitStatus: 126)
        }
        return [path] + command.dropFirst()
    }

    private static func locate(_ name: String) throws(RecordError) -> String {
        var candidates: [String]
        if name.contains("/") {
            candidates = [name]
        } else {
            let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
            candidates = path.split(separator: ":").map { "\($0.isEmpty ? "." : $0)/\(name)" }
        }
        for c in candidates {
            var s = stat()
            guard stat(c, &s) == 0 else { continue }
            if s.st_mode & S_IFMT == S_IFDIR {
                if name.contains("/") { throw RecordError("\(c): is a directory", exitStatus: 126) }
                continue
            }
            guard access(c, X_OK) == 0 else {
                if name.contains("/") { throw RecordError("\(c): permission denied (not executable)", exitStatus: 126) }
                continue
            }
            return c
        }
        if name.contains("/") { throw RecordError("\(name): no such file", exitStatus: 127) }
        throw RecordError("\(name): command not found on PATH", exitStatus: 127)
    }

    private static func readPrefix(_ path: String, count: Int) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, count) }
        return n > 0 ? Array(bytes[0..<n]) : []
    }

    /// Finds an executable on `PATH` (for `qemu-x86_64`, `valgrind`), or nil.
    public static func findOnPath(_ name: String) -> String? {
        try? locate(name)
    }

    /// Runs `command` (already `resolve`d) under `qemu` with the plugin at `plugin`, publishing the
    /// stream to `broadcast` and ending it when the program is gone. SIGINT, SIGTERM and SIGHUP sent
    /// to thpsim stop the program (SIGTERM, then SIGKILL after 3 s) and the stream ends cleanly.
    /// `progress` is called about once a second with the bytes read so far.
    public static func record(
        _ command: [String], qemu: String, plugin: String, sampling: CaptureSampling = .init(),
        into broadcast: CaptureBroadcast, progress: ((Int) -> Void)? = nil
    ) throws(RecordError) -> ProgramExit {
        guard FileManager.default.isReadableFile(atPath: plugin) else {
            throw RecordError("the QEMU capture plugin \(plugin) is missing: build it with `swift build -c release --product thpsim-qemu-capture` (or give --plugin PATH)")
        }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw RecordError("cannot make a pipe: \(String(cString: strerror(errno)))") }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        var pluginSpec = "\(plugin),fd=\(writeEnd)"
        if sampling.skip > 0 { pluginSpec += ",skip=\(sampling.skip)" }
        if sampling.window > 0 { pluginSpec += ",window=\(sampling.window)" }
        if sampling.every > 0 { pluginSpec += ",every=\(sampling.every)" }
        if sampling.fetches { pluginSpec += ",fetches=1" }
        let arguments = [qemu, "-plugin", pluginSpec] + command
        let pid: pid_t
        do throws(RecordError) { pid = try spawn(arguments) } catch {
            close(readEnd); close(writeEnd)
            throw error
        }
        close(writeEnd)
        let stopper = Stopper(pid: pid)
        defer { stopper.cancel() }

        var buffer = [UInt8](repeating: 0, count: 1 << 18)
        var total = 0
        var lastReport = Date()
        var readFailure: Int32 = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { Foundation.read(readEnd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { readFailure = errno; break }
            if n == 0 { break }
            total += n
            if !broadcast.publish(Array(buffer[0..<n])) {
                // A reader failed (the disk is full, say): stop the program.
                stopper.stop()
                break
            }
            if let progress, Date().timeIntervalSince(lastReport) >= 1 {
                progress(total)
                lastReport = Date()
            }
        }
        close(readEnd)
        broadcast.end()
        let exit = wait(pid, interrupted: stopper)
        if readFailure != 0 { throw RecordError("reading the capture stream failed: \(String(cString: strerror(readFailure)))") }
        return exit
    }

    private static func spawn(_ arguments: [String]) throws(RecordError) -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The program starts with default handling of the signals thpsim catches, and none blocked.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGINT, SIGTERM, SIGHUP, SIGPIPE] { sigaddset(&defaults, s) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid = pid_t()
        let rc = posix_spawnp(&pid, arguments[0], nil, &attributes, &argv, environ)
        guard rc == 0 else {
            if rc == ENOENT {
                throw RecordError("\(arguments[0]) not found: install Debian's qemu-user package (apt-get install qemu-user), or record with --with lackey", exitStatus: 127)
            }
            throw RecordError("cannot start \(arguments[0]): \(String(cString: strerror(rc)))", exitStatus: 126)
        }
        return pid
    }

    private static func wait(_ pid: pid_t, interrupted: Stopper) -> ProgramExit {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        interrupted.exited()
        let signal = status & 0x7F
        var exit = ProgramExit()
        if signal == 0 {
            exit.status = (status >> 8) & 0xFF
        } else {
            exit.signal = signal
        }
        exit.interrupted = interrupted.wasInterrupted
        return exit
    }
}

/// Stops a recorded program when thpsim is asked to stop: catches SIGINT, SIGTERM and SIGHUP while
/// a recording runs, sends the program SIGTERM, and SIGKILL if it is still there 3 s later.
final class Stopper: @unchecked Sendable {
    private let pid: pid_t
    private let queue = DispatchQueue(label: "thpsim.record.signals")
    private var sources: [DispatchSourceSignal] = []
    private let state = Mutex((interrupted: false, exited: false))

    init(pid: pid_t) {
        self.pid = pid
        for s in [SIGINT, SIGTERM, SIGHUP] {
            signal(s, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: s, queue: queue)
            source.setEventHandler { [weak self] in
                self?.state.withLock { $0.interrupted = true }
                self?.stop()
            }
            source.resume()
            sources.append(source)
        }
    }

    var wasInterrupted: Bool { state.withLock { $0.interrupted } }

    /// Sends the program SIGTERM, then SIGKILL after 3 s unless it exited.
    func stop() {
        guard !state.withLock({ $0.exited }) else { return }
        Foundation.kill(pid, SIGTERM)
        queue.asyncAfter(deadline: .now() + 3) { [self] in
            if !state.withLock({ $0.exited }) { Foundation.kill(pid, SIGKILL) }
        }
    }

    func exited() { state.withLock { $0.exited = true } }

    func cancel() {
        for s in sources { s.cancel() }
        for s in [SIGINT, SIGTERM, SIGHUP] { signal(s, SIG_DFL) }
    }
}
