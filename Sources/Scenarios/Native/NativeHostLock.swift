#if canImport(Glibc)
import Glibc

/// One native run at a time on a machine. A native run changes host-wide state — the THP tunables,
/// khugepaged's settings, a swap file, debugfs, memory cgroups — and restores it when it finishes,
/// so two runs at once (two test runs, or tests run in parallel) would read each other's settings
/// and restore the wrong ones. Each run holds an exclusive `flock` on a file while it runs; the
/// kernel drops the lock when the process ends, however it ends, so a killed run never leaves it held.
///
/// **The journal.** Below the holder's pid, the file lists each change the run made to the host
/// before making it, with what puts it back (`Change`), and the run empties it once it has put the
/// host back. A run killed outright (SIGKILL, a machine's OOM killer, a CI timeout), which cannot put
/// anything back, leaves its journal: the next run finds it when it takes the lock and undoes it
/// first (`NativeRecovery`), so the host's THP settings do not stay changed.
final class NativeHostLock {
    /// A change to the host and how to undo it, one journal line each.
    enum Change: Equatable {
        /// A THP tunable (path below `/sys/kernel/mm/transparent_hugepage/`) and its value before.
        case tunable(name: String, original: String)
        /// A memory cgroup directory made.
        case cgroup(path: String)
        /// A swap file made and enabled.
        case swap(path: String)
        /// A loop device attached to the swap file, and swapped on.
        case loop(device: String)
        /// debugfs mounted at its mount point.
        case debugfs

        var line: String {
            switch self {
            case .tunable(let name, let original): "tunable \(name)=\(original)"
            case .cgroup(let path): "cgroup \(path)"
            case .swap(let path): "swap \(path)"
            case .loop(let device): "loop \(device)"
            case .debugfs: "debugfs"
            }
        }

        init?(line: Substring) {
            let parts = line.split(separator: " ", maxSplits: 1)
            switch (parts.first, parts.count) {
            case ("tunable", 2):
                guard let eq = parts[1].firstIndex(of: "=") else { return nil }
                self = .tunable(name: String(parts[1][..<eq]), original: String(parts[1][parts[1].index(after: eq)...]))
            case ("cgroup", 2): self = .cgroup(path: String(parts[1]))
            case ("swap", 2): self = .swap(path: String(parts[1]))
            case ("loop", 2): self = .loop(device: String(parts[1]))
            case ("debugfs", 1): self = .debugfs
            default: return nil
            }
        }
    }

    /// What a run that ended without putting the host back left in the journal: its pid and changes.
    struct Leftover {
        var pid: String
        var changes: [Change]
    }

    /// The lock file every native run of this machine shares.
    static let defaultPath = "/tmp/thpsim-native.lock"

    private let descriptor: Int32
    /// The journal of a run killed outright, found at `acquire` and not yet undone (`clearJournal`):
    /// `release` leaves it in the file for the next run.
    private var inherited: Leftover?

    private init(descriptor: Int32, inherited: Leftover?) {
        self.descriptor = descriptor
        self.inherited = inherited
    }

    /// Takes the lock at `path`, waiting up to `timeout` seconds while another run holds it; the
    /// failure names the file and, when it can, the process that holds it.
    static func acquire(path: String = defaultPath, timeout: Double) -> Result<(NativeHostLock, Leftover?), ScenarioError> {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return .failure(.run("cannot open the native runs' lock file \(path): \(NativeSyscalls.lastErrno)")) }
        let deadline = NativeChannel.monotonicSeconds() + timeout
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let error = errno
            guard error == EWOULDBLOCK || error == EINTR else {
                close(fd)
                return .failure(.run("cannot lock \(path): \(String(cString: strerror(error)))"))
            }
            if NativeChannel.monotonicSeconds() >= deadline {
                let holder = NativeSyscalls.readFile(path)?.split(separator: "\n").first.map(String.init) ?? "another process"
                close(fd)
                return .failure(.run("another native run (\(holder)) has held \(path) for \(Int(timeout)) s: native runs change host-wide THP settings and run one at a time"))
            }
            usleep(20_000)
        }
        // A journal left by a run that could not put the host back.
        let lines = (NativeSyscalls.readFile(path) ?? "").split(separator: "\n")
        let changes = lines.dropFirst().compactMap { Change(line: $0) }
        let leftover = changes.isEmpty ? nil
            : Leftover(pid: lines.first.map { String($0.dropFirst("pid ".count)) } ?? "unknown", changes: changes)
        // Who holds it, for a run that waits; the leftover journal stays below until it is undone.
        var text = "pid \(getpid())\n"
        for change in changes { text += change.line + "\n" }
        _ = ftruncate(fd, 0)
        _ = text.withCString { pwrite(fd, $0, strlen($0), 0) }
        return .success((NativeHostLock(descriptor: fd, inherited: leftover), leftover))
    }

    /// Adds a change to the journal before it is made.
    func record(_ change: NativeHostLock.Change) {
        let line = change.line + "\n"
        let end = lseek(descriptor, 0, SEEK_END)
        _ = line.withCString { pwrite(descriptor, $0, strlen($0), end) }
    }

    /// Empties the journal once what it lists is undone, keeping the holder's line.
    func clearJournal() {
        inherited = nil
        let text = "pid \(getpid())\n"
        _ = ftruncate(descriptor, 0)
        _ = text.withCString { pwrite(descriptor, $0, strlen($0), 0) }
    }

    /// Lets the next run in, with an empty journal: the run has put back what it changed. A
    /// journal inherited and not undone stays, under the dead run's pid, for the next run.
    func release() {
        _ = ftruncate(descriptor, 0)
        if let inherited {
            let text = "pid \(inherited.pid)\n" + inherited.changes.map { $0.line + "\n" }.joined()
            _ = text.withCString { pwrite(descriptor, $0, strlen($0), 0) }
        }
        _ = flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
#endif
