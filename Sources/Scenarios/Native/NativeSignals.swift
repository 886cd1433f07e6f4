#if canImport(Glibc)
import Glibc

/// SIGINT, SIGTERM and SIGHUP while a native run holds the host: held back, not delivered, so that
/// the run can put the host back (tunables, swap file, cgroups, debugfs, its processes) before it ends.
///
/// The host must stay single-threaded (it forks), so there is no signal thread and no dispatch
/// source; and a C handler may do almost nothing safely. Instead the run blocks the three signals
/// once it holds the host (`block()`); a signal that arrives stays pending, and the host takes it
/// synchronously (`sigtimedwait()` with a zero timeout, `takePending()`) at the points where it
/// waits: before each request to a scenario process and every second while one runs, every 20 ms
/// while it waits for khugepaged, before writing a tunable, and when the run ends. The restore then
/// runs as ordinary code with the signals still blocked, so more of them (a second Ctrl-C) stay
/// pending and cannot cut it short; only SIGKILL can. A signal the process was started with
/// ignored (`nohup`'s SIGHUP, SIGINT in a background job) stays ignored. Workers get the mask back
/// as it was, so a terminal's Ctrl-C, sent to the whole process group, ends them at once.
enum NativeSignals {
    /// The signals that end a run: hang-up, interrupt, terminate.
    static let stopping: [Int32] = [SIGHUP, SIGINT, SIGTERM]

    /// Blocks the stopping signals this process does not ignore; returns what `unblock` needs.
    /// Linux: `sigprocmask(SIG_BLOCK)`.
    static func block() -> Blocked {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in stopping where !isIgnored(signal) { sigaddset(&set, signal) }
        var previous = sigset_t()
        sigprocmask(SIG_BLOCK, &set, &previous)
        return Blocked(set: set, previous: previous)
    }

    /// What `block()` held back, and the mask before it.
    struct Blocked {
        fileprivate var set: sigset_t
        fileprivate var previous: sigset_t

        /// A pending stopping signal, taken (no longer pending), or nil. Linux: `sigtimedwait()`, zero timeout.
        func takePending() -> Int32? {
            var set = self.set
            var zero = timespec(tv_sec: 0, tv_nsec: 0)
            let signal = sigtimedwait(&set, nil, &zero)
            return signal > 0 ? signal : nil
        }

        /// Puts the mask back as it was before `block()` (in the host after a run, in a new worker).
        func unblock() {
            var previous = self.previous
            sigprocmask(SIG_SETMASK, &previous, nil)
        }
    }

    /// Whether `signal`'s disposition is `SIG_IGN` (then a blocked one would still be queued, and
    /// taking it would stop a run the user asked not to stop).
    private static func isIgnored(_ signal: Int32) -> Bool {
        var current = sigaction()
        guard sigaction(signal, nil, &current) == 0 else { return false }
        return unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self) == 1
    }

    static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGHUP: "SIGHUP"
        case SIGINT: "SIGINT"
        case SIGTERM: "SIGTERM"
        default: "signal \(signal)"
        }
    }

    /// Prints one line, the signal and what the run put back, and exits with 128 + the signal (the
    /// status a shell reports for a process the signal killed).
    static func exit(after signal: Int32, _ teardown: NativeTeardown) -> Never {
        printToStandardError("thpsim: \(name(signal)): stopped the native run; \(teardown.summary)")
        Glibc.exit(128 + signal)
    }
}

/// What ending a native run put back, and what it could not.
struct NativeTeardown {
    /// The scenario processes the run had not ended (killed now, or already dead of the signal), all reaped.
    var stopped: [Int32] = []
    var restored: [String] = []
    var notRestored: [String] = []
    var swapFile: String?
    var swapProblem: String?
    var cgroupsRemoved: [String] = []
    var cgroupsNotRemoved: [String] = []
    var unmountedDebugfs = false

    /// Everything in one clause list: `killed …; restored …; …`.
    var summary: String {
        var parts: [String] = []
        parts.append(stopped.isEmpty ? "no scenario process was left" : "stopped scenario processes " + stopped.map(String.init).joined(separator: ", "))
        parts.append(restored.isEmpty ? "no tunable had been changed" : "restored " + restored.joined(separator: ", "))
        if !notRestored.isEmpty { parts.append("could not restore " + notRestored.joined(separator: ", ")) }
        if let swapFile { parts.append(swapProblem.map { "swap file \(swapFile): \($0)" } ?? "removed the swap file \(swapFile)") }
        if !cgroupsRemoved.isEmpty { parts.append("removed the cgroups " + cgroupsRemoved.joined(separator: ", ")) }
        if !cgroupsNotRemoved.isEmpty { parts.append("could not remove the cgroups " + cgroupsNotRemoved.joined(separator: ", ")) }
        if unmountedDebugfs { parts.append("unmounted debugfs") }
        return parts.joined(separator: "; ")
    }
}
#endif
