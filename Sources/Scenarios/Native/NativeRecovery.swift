#if canImport(Glibc)
import Glibc

/// Undoes what a native run killed outright left changed on the host, from the journal in the host
/// lock's file (`NativeHostLock`): its THP tunables written back, its memory cgroups removed (once
/// the dead run's processes, which exit when their pipes close, have left them), its swap file
/// disabled and deleted, debugfs unmounted.
enum NativeRecovery {
    /// Undoes `changes`, the last first; a clause list of what was done and what could not be.
    static func undo(_ changes: [NativeHostLock.Change]) -> String {
        var done: [String] = [], failed: [String] = []
        for change in changes.reversed() {
            switch change {
            case .tunable(let name, let original):
                if NativeSyscalls.writeFile("\(NativeTunables.root)/\(name)", original) == 0 {
                    done.append("restored \(name)=\(original)")
                } else {
                    failed.append("could not restore \(name)=\(original) (\(NativeSyscalls.lastErrno))")
                }
            case .cgroup(let path):
                guard access(path, F_OK) == 0 else { continue }
                var tries = 0
                while rmdir(path) != 0 && errno != ENOENT && tries < 500 {
                    tries += 1
                    usleep(10_000)
                }
                if access(path, F_OK) == 0 { failed.append("could not remove the cgroup \(path)") } else { done.append("removed the cgroup \(path)") }
            case .swap(let path):
                guard access(path, F_OK) == 0 else { continue }
                _ = NativeSyscalls.swapoff(path)
                if unlink(path) == 0 { done.append("removed the swap file \(path)") } else { failed.append("could not remove the swap file \(path)") }
            case .loop(let device):
                _ = NativeSyscalls.swapoff(device)
                NativeLoopDevice.detach(device)
                done.append("detached \(device)")
            case .debugfs:
                if umount2(NativeDebugfs.mountPoint, 0) == 0 { done.append("unmounted debugfs") }
            }
        }
        return (done + failed).joined(separator: "; ")
    }
}
#endif
