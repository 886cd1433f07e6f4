#if canImport(Glibc)
import Glibc

/// A temporary swap file so that `madvise(MADV_PAGEOUT)` can reclaim anonymous memory natively.
///
/// Made only when the scenario pages out and the machine has no swap: the file is written in full
/// (swap files may not have holes), given a version-1 swap header (what `mkswap` writes; Linux:
/// `union swap_header`), enabled with `swapon()`, and disabled and removed by `remove()`.
final class NativeSwapFile {
    let path: String

    private init(path: String) { self.path = path }

    /// Whether some swap area is already active (`/proc/swaps` lists more than its header).
    static var swapIsActive: Bool {
        (NativeSyscalls.readFile("/proc/swaps")?.split(separator: "\n").count ?? 0) > 1
    }

    /// Creates and enables a swap file of `bytes` in `directory`; `willMake` is called with its path
    /// first (the host lock's journal).
    static func create(bytes: UInt64 = 256 << 20, directory: String = "/var/tmp",
                       willMake: (String) -> Void = { _ in }) throws(ScenarioError) -> NativeSwapFile {
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
        guard NativeSyscalls.swapon(path) == 0 else {
            let error = NativeSyscalls.lastErrno
            unlink(path)
            throw .unsupported("swapon \(path) failed: \(error)")
        }
        return NativeSwapFile(path: path)
    }

    /// Disables and deletes the swap file; a message if that failed.
    func remove() -> String? {
        defer { unlink(path) }
        return NativeSyscalls.swapoff(path) == 0 ? nil : "swapoff \(path) failed: \(NativeSyscalls.lastErrno)"
    }
}
#endif
