#if canImport(Glibc)
import Glibc

/// A temporary swap file so that `madvise(MADV_PAGEOUT)` can reclaim anonymous memory natively.
///
/// Made only when the scenario pages out and the machine has no swap: the file is written in full
/// (swap files may not have holes), given a version-1 swap header (what `mkswap` writes; Linux:
/// `union swap_header`), enabled with `swapon()`, and disabled and removed by `remove()`.
///
/// For `swap SIZE clusters=yes` the file backs a loop device marked non-rotational instead, enabled
/// first among the machine's swap areas: a swap partition on an SSD, whose 2 MiB clusters let Linux
/// write a THP whole (`SWP_SOLIDSTATE` and `swap_cluster_info`; a swap file on this machine's disk
/// has none).
final class NativeSwapFile {
    /// The file.
    let path: String
    /// The loop device swapped on, for a device with clusters.
    let device: String?

    private init(path: String, device: String?) { self.path = path; self.device = device }

    /// Whether some swap area is already active (`/proc/swaps` lists more than its header).
    static var swapIsActive: Bool {
        (NativeSyscalls.readFile("/proc/swaps")?.split(separator: "\n").count ?? 0) > 1
    }

    /// Creates and enables a swap file of `bytes` in `directory` — on a non-rotational loop device
    /// with `clusters` — calling `willMake` with the file's path first (the host lock's journal).
    static func create(bytes: UInt64 = 256 << 20, directory: String = "/var/tmp", clusters: Bool = false,
                       willMake: (String) -> Void = { _ in }, didAttach: (String) -> Void = { _ in }) throws(ScenarioError) -> NativeSwapFile {
        let path = "\(directory)/thpsim-swap-\(getpid())"
        willMake(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .unsupported("cannot create a swap file at \(path): \(NativeSyscalls.lastErrno)") }
        let page = 4096
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var ok = true
        var written: UInt64 = 0
        while ok, written < bytes {
            ok = buffer.withUnsafeBytes { NativeChannel.writeAll(fd, $0) }
            written += UInt64(buffer.count)
        }
        // The header: version 1, the last usable page, no bad pages, and the magic at the end of page 0.
        buffer = [UInt8](repeating: 0, count: page)
        buffer.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: UInt32(1), toByteOffset: 1024, as: UInt32.self)
            raw.storeBytes(of: UInt32(bytes / UInt64(page) - 1), toByteOffset: 1028, as: UInt32.self)
        }
        for (i, byte) in "SWAPSPACE2".utf8.enumerated() { buffer[page - 10 + i] = byte }
        ok = ok && buffer.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, page, 0) } == page && fsync(fd) == 0
        close(fd)
        guard ok else {
            unlink(path)
            throw .unsupported("cannot write the swap file \(path): \(NativeSyscalls.lastErrno)")
        }
        var device: String?
        if clusters {
            do throws(ScenarioError) { device = try NativeLoopDevice.attach(path, nonRotational: true) } catch {
                unlink(path)
                throw error
            }
            didAttach(device!)
        }
        guard NativeSyscalls.swapon(device ?? path, flags: clusters ? NativeSyscalls.swapPreferFirst : 0) == 0 else {
            let error = NativeSyscalls.lastErrno
            if let device { NativeLoopDevice.detach(device) }
            unlink(path)
            throw .unsupported("swapon \(device ?? path) failed: \(error)")
        }
        return NativeSwapFile(path: path, device: device)
    }

    /// Disables and deletes the swap file (and its loop device); a message if that failed.
    func remove() -> String? {
        defer { unlink(path) }
        let off = NativeSyscalls.swapoff(device ?? path) == 0 ? nil : "swapoff \(device ?? path) failed: \(NativeSyscalls.lastErrno)"
        if let device { NativeLoopDevice.detach(device) }
        return off
    }
}

/// Loop devices, for a swap area on a block device (Linux: `drivers/block/loop.c`).
enum NativeLoopDevice {
    /// `LOOP_SET_FD`, `LOOP_CLR_FD`, `LOOP_CTL_GET_FREE` (`<linux/loop.h>`).
    static let setFD: UInt = 0x4C00
    static let clearFD: UInt = 0x4C01
    static let getFree: UInt = 0x4C82

    typealias Ioctl = @convention(c) (Int32, UInt, Int) -> Int32

    private static func ioctl(_ fd: Int32, _ request: UInt, _ argument: Int) -> Int32 {
        guard let symbol = dlsym(nil, "ioctl") else { errno = ENOSYS; return -1 }
        return unsafeBitCast(symbol, to: Ioctl.self)(fd, request, argument)
    }

    /// Attaches `file` to a free loop device, marked non-rotational (its queue's `rotational` 0, as
    /// an SSD); the device's path.
    static func attach(_ file: String, nonRotational: Bool) throws(ScenarioError) -> String {
        let control = open("/dev/loop-control", O_RDWR | O_CLOEXEC)
        guard control >= 0 else { throw .unsupported("no loop devices here (/dev/loop-control: \(NativeSyscalls.lastErrno))") }
        let number = ioctl(control, getFree, 0)
        close(control)
        guard number >= 0 else { throw .unsupported("no free loop device (\(NativeSyscalls.lastErrno))") }
        let device = "/dev/loop\(number)"
        let backing = open(file, O_RDWR | O_CLOEXEC)
        let loop = open(device, O_RDWR | O_CLOEXEC)
        defer { if backing >= 0 { close(backing) }; if loop >= 0 { close(loop) } }
        guard backing >= 0, loop >= 0, ioctl(loop, setFD, Int(backing)) == 0 else {
            throw .unsupported("cannot attach \(file) to \(device): \(NativeSyscalls.lastErrno)")
        }
        if nonRotational, NativeSyscalls.writeFile("/sys/block/loop\(number)/queue/rotational", "0") != 0 {
            detach(device)
            throw .unsupported("cannot mark \(device) non-rotational: \(NativeSyscalls.lastErrno)")
        }
        return device
    }

    /// Detaches the loop device's file.
    static func detach(_ device: String) {
        let loop = open(device, O_RDWR | O_CLOEXEC)
        guard loop >= 0 else { return }
        _ = ioctl(loop, clearFD, 0)
        close(loop)
    }
}
#endif
