import Synchronization
import VMCore
import PhysicalMemory

/// A device doing O_DIRECT-style I/O: it pins a user buffer with GUP, moves data by DMA into or out of
/// the pinned frames when the request completes — later, whatever the program and the kernel did
/// meanwhile — and then unpins (Linux: `bio_iov_iter_get_pages()` at submission, the DMA, and
/// `bio_release_pages()` at completion).
///
/// The pins keep the frames alive: if the program unmaps or the kernel splits the buffer's huge page
/// meanwhile, the DMA still lands in frames nobody else was given. Whether it lands in the frames the
/// program *sees* is the question the 2010 design leaves open after fork (see `docs/concurrency.md`).
public final class DirectIODevice: @unchecked Sendable {
    public let kernel: Kernel

    /// One request in flight.
    public struct Request: Sendable {
        public enum Direction: Sendable { case read, write }
        public let direction: Direction
        /// The pinned pages, one per 4 KiB of the buffer.
        public let pages: [PFN]
        /// Where the buffer starts in its first page.
        public let offset: Int
        public let length: Int
    }

    public init(kernel: Kernel) { self.kernel = kernel }

    /// Pins `[buffer, buffer + length)` for a device read (DMA into memory, so the pages are pinned for
    /// writing, breaking COW first) or write (DMA out of memory), with gup-fast on simulated CPU `cpu`.
    public func submit(_ direction: Request.Direction, in mm: AddressSpace, buffer: VirtualAddress, length: Int,
                       cpu: Int) -> Result<Request, Errno> {
        guard length > 0 else { return .failure(.EINVAL) }
        let first = buffer.alignedDown(PageGeometry.pageSize)
        let last = (buffer + UInt64(length) - 1).alignedDown(PageGeometry.pageSize)
        let count = Int((last - first) >> PageGeometry.pageShift) + 1
        switch mm.pinUserPagesFast(first, count: count, write: direction == .read, cpu: cpu) {
        case .failure(let errno): return .failure(errno)
        case .success(let pages) where pages.count < count:
            kernel.releasePinnedPages(pages)
            return .failure(.EFAULT)
        case .success(let pages):
            return .success(Request(direction: direction, pages: pages, offset: buffer.pageOffset, length: length))
        }
    }

    /// Completes a read: DMA `data` into the pinned frames, then unpin. The bytes go to the frames
    /// pinned at submission, wherever those are mapped now.
    /// - Precondition: data mode; `data.count == request.length`.
    public func completeRead(_ request: Request, data: [UInt8]) {
        precondition(request.direction == .read && data.count == request.length)
        guard let storage = kernel.memory.storage else { preconditionFailure("DMA needs data mode") }
        var done = 0, offset = request.offset
        for page in request.pages {
            let chunk = min(request.length - done, Int(PageGeometry.pageSize) - offset)
            let bytes = storage.bytes(of: page)
            for i in 0..<chunk { bytes[offset + i] = data[done + i] }
            done += chunk
            offset = 0
        }
        kernel.releasePinnedPages(request.pages, dirty: true)
    }

    /// Completes a write: DMA out of the pinned frames, then unpin; returns the bytes the device got.
    public func completeWrite(_ request: Request) -> [UInt8] {
        precondition(request.direction == .write)
        guard let storage = kernel.memory.storage else { preconditionFailure("DMA needs data mode") }
        var out = [UInt8]()
        out.reserveCapacity(request.length)
        var offset = request.offset
        for page in request.pages {
            let chunk = min(request.length - out.count, Int(PageGeometry.pageSize) - offset)
            let bytes = storage.bytes(of: page)
            out.append(contentsOf: bytes[offset..<(offset + chunk)])
            offset = 0
        }
        kernel.releasePinnedPages(request.pages)
        return out
    }
}
