#if canImport(Glibc)
import Glibc

/// debugfs, mounted on demand, for `split_huge_pages`.
final class NativeDebugfs {
    static let mountPoint = "/sys/kernel/debug"
    private var mountedHere = false
    /// Called before debugfs is mounted (the host lock's journal).
    var willMount: (() -> Void)?

    /// Splits the huge pages mapped in `[start, end)` of process `pid`. Linux: `split_huge_pages_pid()`
    /// through debugfs `split_huge_pages`, written as `<pid>,0x<start>,0x<end>`.
    func split(pid: pid_t, start: UInt64, end: UInt64) throws(ScenarioError) {
        let file = "\(Self.mountPoint)/split_huge_pages"
        if access(file, F_OK) != 0 {
            willMount?()
            guard mount("none", Self.mountPoint, "debugfs", 0, nil) == 0 else {
                throw .unsupported("debugfs is not mounted and mounting it failed: \(NativeSyscalls.lastErrno)")
            }
            mountedHere = true
            guard access(file, F_OK) == 0 else { throw .unsupported("this kernel has no debugfs split_huge_pages") }
        }
        let error = NativeSyscalls.writeFile(file, "\(pid),0x\(String(start, radix: 16)),0x\(String(end, radix: 16))")
        if error == EPERM || error == EACCES {
            throw .unsupported("this kernel refuses writes to debugfs (\(ScenarioErrno(code: error))), so split_huge_pages cannot be used")
        }
        if error != 0 { throw .run("writing \(file) failed: \(ScenarioErrno(code: error))") }
    }

    /// Unmounts debugfs if this run mounted it; whether it did.
    @discardableResult
    func unmountIfMounted() -> Bool {
        defer { mountedHere = false }
        return mountedHere && umount2(Self.mountPoint, 0) == 0
    }
}
#endif
