#if canImport(Glibc)
import Glibc

/// The system calls the native backend needs that Swift's Glibc module does not import
/// (`mremap` and `syscall` are variadic in C; `swapon` lives in `<sys/swap.h>`), and Linux's
/// constants for the `madvise` advice glibc may not know yet.
enum NativeSyscalls {
    typealias SyscallFunction = @convention(c) (Int, Int, Int, Int, Int, Int, Int) -> Int
    typealias SwapFunction = @convention(c) (UnsafePointer<CChar>, Int32) -> Int32
    typealias SwapoffFunction = @convention(c) (UnsafePointer<CChar>) -> Int32

    /// glibc's `syscall()`, called with a fixed argument count: it only moves registers, so the
    /// variadic prototype does not matter on x86-64 and arm64.
    static func syscall(_ number: Int, _ a: Int = 0, _ b: Int = 0, _ c: Int = 0, _ d: Int = 0, _ e: Int = 0) -> Int {
        guard let symbol = dlsym(nil, "syscall") else { errno = ENOSYS; return -1 }
        return unsafeBitCast(symbol, to: SyscallFunction.self)(number, a, b, c, d, e, 0)
    }

    #if arch(x86_64)
    static let mremapNumber = 25
    #elseif arch(arm64)
    static let mremapNumber = 216
    #endif

    static let mremapMayMove = 1
    static let mremapFixed = 2

    /// Linux: `mremap(old, old_len, new_len, MREMAP_MAYMOVE [| MREMAP_FIXED], new)`; the errno on failure.
    static func mremap(_ old: UInt64, _ oldLength: UInt64, _ newLength: UInt64, destination: UInt64?) -> Result<UInt64, ScenarioErrno> {
        let flags = mremapMayMove | (destination == nil ? 0 : mremapFixed)
        let r = syscall(mremapNumber, Int(bitPattern: UInt(old)), Int(bitPattern: UInt(oldLength)),
                        Int(bitPattern: UInt(newLength)), flags, Int(bitPattern: UInt(destination ?? 0)))
        return r == -1 ? .failure(ScenarioErrno(code: errno)) : .success(UInt64(UInt(bitPattern: r)))
    }

    /// Makes this process the reaper of its orphaned descendants, so that scenario processes whose
    /// parent exited are reaped by the host and not left as zombies. Linux: `prctl(PR_SET_CHILD_SUBREAPER, 1)`.
    static func becomeSubreaper() {
        typealias Prctl = @convention(c) (Int32, UInt, UInt, UInt, UInt) -> Int32
        guard let symbol = dlsym(nil, "prctl") else { return }
        _ = unsafeBitCast(symbol, to: Prctl.self)(36, 1, 0, 0, 0)
    }

    /// Linux: `swapon(path, flags)` (`SWAP_FLAG_PREFER | priority` to be used before other areas).
    static func swapon(_ path: String, flags: Int32 = 0) -> Int32 {
        guard let symbol = dlsym(nil, "swapon") else { errno = ENOSYS; return -1 }
        return unsafeBitCast(symbol, to: SwapFunction.self)(path, flags)
    }

    /// `SWAP_FLAG_PREFER` with the highest priority (`<sys/swap.h>`: 0x8000 | 32767).
    static let swapPreferFirst: Int32 = 0x8000 | 0x7fff

    /// Linux: `swapoff(path)`.
    static func swapoff(_ path: String) -> Int32 {
        guard let symbol = dlsym(nil, "swapoff") else { errno = ENOSYS; return -1 }
        return unsafeBitCast(symbol, to: SwapoffFunction.self)(path)
    }

    /// `MADV_*` values from `include/uapi/asm-generic/mman-common.h`.
    static func adviceValue(_ advice: Advice) -> Int32 {
        switch advice {
        case .dontneed: 4
        case .dontfork: 10
        case .dofork: 11
        case .hugepage: 14
        case .nohugepage: 15
        case .pageout: 21
        case .collapse: 25
        }
    }

    static func protectionBits(_ p: Protection) -> Int32 {
        (p.readable ? PROT_READ : 0) | (p.writable ? PROT_WRITE : 0) | (p.executable ? PROT_EXEC : 0)
    }

    /// The whole content of a (small, procfs or sysfs) file, or nil with `errno` set.
    static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue } else { return nil } }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0 ..< n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Writes `text` to a sysfs or debugfs file in one `write()`; 0 or the errno.
    static func writeFile(_ path: String, _ text: String) -> Int32 {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let utf8 = Array(text.utf8)
        let n = utf8.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        return n == utf8.count ? 0 : (n < 0 ? errno : EIO)
    }

    /// The current errno as a scenario value.
    static var lastErrno: ScenarioErrno { ScenarioErrno(code: errno) }
}
#endif
