#if canImport(Glibc)
import Glibc

/// Long-term pins held by a native scenario process between scenario lines, as a driver holds the
/// pages of a DMA buffer: each `pin` is an io_uring instance of the worker's own whose one registered
/// buffer is the range. Registering pins every page of it (Linux: `io_sqe_buffers_register()` →
/// `io_pin_pages()` → `pin_user_pages_fast(FOLL_WRITE | FOLL_LONGTERM)`, faulting pages in and
/// setting `MMF_HAS_PINNED`); unregistering unpins them (`io_sqe_buffers_unregister()` →
/// `unpin_user_pages()`). Only the worker's single thread touches the table.
enum NativePins {
    #if arch(x86_64) || arch(arm64)
    /// `io_uring_setup` and `io_uring_register` (the same numbers on every architecture since 5.1).
    static let setupNumber = 425
    static let registerNumber = 427
    #endif
    /// `IORING_REGISTER_BUFFERS`, `IORING_UNREGISTER_BUFFERS`.
    static let registerBuffers = 0
    static let unregisterBuffers = 1

    /// The pins held: range and ring descriptor.
    nonisolated(unsafe) private static var held: [(address: UInt64, length: UInt64, ring: Int32)] = []

    /// Pins `[address, address + length)`; 0 or the errno (EFAULT outside a mapping, ENOSYS or
    /// EPERM where io_uring is off).
    static func pin(address: UInt64, length: UInt64) -> Int32 {
        // struct io_uring_params: 120 bytes, zeroed (no flags; the kernel fills in the offsets).
        var params = [UInt8](repeating: 0, count: 120)
        let ring = params.withUnsafeMutableBytes { Int32(truncatingIfNeeded: NativeSyscalls.syscall(setupNumber, 1, Int(bitPattern: $0.baseAddress))) }
        guard ring >= 0 else { return errno }
        var vector = iovec(iov_base: UnsafeMutableRawPointer(bitPattern: UInt(address)), iov_len: Int(bitPattern: UInt(length)))
        let r = withUnsafeMutablePointer(to: &vector) {
            NativeSyscalls.syscall(registerNumber, Int(ring), registerBuffers, Int(bitPattern: UnsafeMutableRawPointer($0)), 1)
        }
        if r < 0 {
            let e = errno
            close(ring)
            return e
        }
        held.append((address, length, ring))
        return 0
    }

    /// Releases the pin of exactly this range; 0, or ENOENT when none is held.
    static func unpin(address: UInt64, length: UInt64) -> Int32 {
        guard let i = held.firstIndex(where: { $0.address == address && $0.length == length }) else { return ENOENT }
        let ring = held.remove(at: i).ring
        // Unregistered now, synchronously: closing the ring alone frees it later, from a workqueue.
        let r = NativeSyscalls.syscall(registerNumber, Int(ring), unregisterBuffers, 0, 0)
        let e = r < 0 ? errno : 0
        close(ring)
        return e
    }

    /// Drops the table in a forked child: its copies of the rings' descriptors are closed, which
    /// leaves the parent's registrations, and so its pins, in place.
    static func forget() {
        for pin in held { close(pin.ring) }
        held.removeAll()
    }
}
#endif
