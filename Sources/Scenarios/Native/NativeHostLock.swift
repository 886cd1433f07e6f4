#if canImport(Glibc)
import Glibc

/// One native run at a time on a machine. A native run changes host-wide state — the THP tunables,
/// khugepaged's settings, a swap file, debugfs, memory cgroups — and restores it when it finishes,
/// so two runs at once (two test runs, or tests run in parallel) would read each other's settings
/// and restore the wrong ones. Each run holds an exclusive `flock` on a file while it runs; the
/// kernel drops the lock when the process ends, however it ends, so a killed run never leaves it held.
struct NativeHostLock {
    /// The lock file every native run of this machine shares.
    static let defaultPath = "/tmp/thpsim-native.lock"

    private let descriptor: Int32

    /// Takes the lock at `path`, waiting up to `timeout` seconds while another run holds it; the
    /// failure names the file and, when it can, the process that holds it.
    static func acquire(path: String = defaultPath, timeout: Double) -> Result<NativeHostLock, ScenarioError> {
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
        // Who holds it, for a run that waits.
        let note = "pid \(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = note.withCString { pwrite(fd, $0, strlen($0), 0) }
        return .success(NativeHostLock(descriptor: fd))
    }

    /// Lets the next run in.
    func release() {
        _ = ftruncate(descriptor, 0)
        _ = flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
#endif
