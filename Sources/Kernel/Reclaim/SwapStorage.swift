#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import VMCore

/// Where a swap device keeps the bytes of its slots: the device decides which slot holds what, the
/// storage only moves 4 KiB blocks (Linux: the block device or file under `swap_writepage()` /
/// `swap_read_folio()`, reached through `sis->bdev` or `swap_iocb`).
///
/// Only data-mode kernels write or read; in metadata mode a device never touches its storage.
public protocol SwapStorage: AnyObject, Sendable {
    /// Stores one page's bytes in `slot`.
    /// - Precondition: `bytes.count` is 4096.
    func write(_ slot: Int, _ bytes: UnsafeRawBufferPointer)
    /// Reads `slot`'s bytes, as last written, into `buffer`.
    /// - Precondition: the slot was written since it was last discarded; `buffer.count` is 4096.
    func read(_ slot: Int, into buffer: UnsafeMutableRawBufferPointer)
    /// The slot's bytes are no longer needed (Linux: `discard_swap_cluster()` for a freed slot).
    func discard(_ slot: Int)
}

/// Swap storage in host memory, one array per written slot (a RAM disk or zram without compression).
public final class MemorySwapStorage: SwapStorage {
    private let blocks = SpinLocked<[Int: [UInt8]]>([:])

    public init() {}

    public func write(_ slot: Int, _ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == Int(PageGeometry.pageSize), "swap writes whole pages")
        let copy = [UInt8](bytes)
        blocks.withLock { $0[slot] = copy }
    }

    public func read(_ slot: Int, into buffer: UnsafeMutableRawBufferPointer) {
        let block = blocks.withLock { $0[slot] }
        guard let block else { preconditionFailure("reading swap slot \(slot), which holds no data") }
        block.withUnsafeBytes { buffer.copyMemory(from: $0) }
    }

    public func discard(_ slot: Int) { _ = blocks.withLock { $0.removeValue(forKey: slot) } }

    /// Slots holding data now (for tests).
    public var blockCount: Int { blocks.withLock { $0.count } }
}

/// Why a swap file could not be set up.
public struct SwapStorageError: Error, CustomStringConvertible, Equatable {
    public var description: String
}

/// Swap storage in a host file: slot *n* is the 4 KiB at offset *n* × 4096, as in a swap partition or
/// a swap file's extents (Linux: `swapon()` on a file, `swap_writepage()` → `__swap_writepage()`).
/// The file is created in `directory` and unlinked at once, so it disappears with the process and never
/// needs cleaning up; it is sparse, so slots never written take no disk space.
public final class FileSwapStorage: SwapStorage {
    private let descriptor: Int32
    /// The directory the file was created in.
    public let directory: String

    /// Creates the backing file in `directory` (for example `NSTemporaryDirectory()` or `/var/tmp`).
    public init(directory: String) throws(SwapStorageError) {
        self.directory = directory
        var template = Array((directory.hasSuffix("/") ? directory : directory + "/").utf8CString.dropLast())
            + Array("thpsim-swap-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw SwapStorageError(description: "cannot create a swap file in \(directory): \(String(cString: strerror(errno)))")
        }
        _ = template.withUnsafeBufferPointer { unlink($0.baseAddress!) }
        descriptor = fd
    }

    deinit { close(descriptor) }

    public func write(_ slot: Int, _ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == Int(PageGeometry.pageSize), "swap writes whole pages")
        var done = 0
        while done < bytes.count {
            let n = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(slot) * off_t(bytes.count) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { preconditionFailure("writing swap slot \(slot) to the swap file failed: \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    public func read(_ slot: Int, into buffer: UnsafeMutableRawBufferPointer) {
        var done = 0
        while done < buffer.count {
            let n = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(slot) * off_t(buffer.count) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { preconditionFailure("reading swap slot \(slot) from the swap file failed: \(n == 0 ? "end of file" : String(cString: strerror(errno)))") }
            done += n
        }
    }

    /// Keeps the blocks: a freed slot's bytes are overwritten when the slot is used again, as in a swap
    /// file without discard (`swapon` without `--discard`).
    public func discard(_ slot: Int) {}
}
