#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import VMCore

/// The bytes behind simulated physical memory in data mode: 4 KiB per frame, in one host mapping that
/// the host kernel fills lazily, so untouched frames cost no host memory.
///
/// Reached only through `bytes(of:)`, `zero`, `copy`: nothing outside this type does pointer arithmetic
/// on physical memory.
public final class FrameStorage: @unchecked Sendable {
    public let frames: Int
    private let base: UnsafeMutableRawPointer
    private let length: Int

    /// Reserves host address space for `frames` frames; nil if the host refuses.
    public init?(frames: Int) {
        self.frames = frames
        length = frames * Int(PageGeometry.pageSize)
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != MAP_FAILED else { return nil }
        base = p
    }

    deinit { munmap(base, length) }

    /// The 4 KiB of frame `pfn`.
    @inlinable public func bytes(of pfn: PFN) -> UnsafeMutableRawBufferPointer {
        precondition(pfn.index < frames)
        return UnsafeMutableRawBufferPointer(start: start(pfn), count: Int(PageGeometry.pageSize))
    }

    @usableFromInline func start(_ pfn: PFN) -> UnsafeMutableRawPointer {
        base + pfn.index * Int(PageGeometry.pageSize)
    }

    /// Fills `pages` frames from `pfn` with zeros (Linux: `clear_page()`, `clear_huge_page()`).
    public func zero(_ pfn: PFN, pages: Int = 1) {
        precondition(pfn.index + pages <= frames)
        memset(start(pfn), 0, pages * Int(PageGeometry.pageSize))
    }

    /// Copies `pages` frames (Linux: `copy_page()`, `copy_user_huge_page()`).
    public func copy(from source: PFN, to destination: PFN, pages: Int = 1) {
        precondition(source.index + pages <= frames && destination.index + pages <= frames)
        memcpy(start(destination), start(source), pages * Int(PageGeometry.pageSize))
    }

    /// Whether every byte of the frame is zero (Linux: `memchr_inv()`-style checks).
    public func isZero(_ pfn: PFN) -> Bool {
        let words = start(pfn).assumingMemoryBound(to: UInt64.self)
        for i in 0..<(Int(PageGeometry.pageSize) / 8) where words[i] != 0 { return false }
        return true
    }
}
