#if canImport(Glibc)
import Glibc
#endif

/// Zeroed host memory for the simulator's own large tables (the frame table, the cache model's sets),
/// backed by transparent huge pages where the host allows it (`MADV_HUGEPAGE`, which a host set to
/// `enabled=madvise` needs): lookups into these arrays are random, and on 4 KiB host pages each one
/// would also miss the host's TLB. Elements must be valid when all their bytes are zero. Large
/// allocations are anonymous mappings the host fills on first touch, so tables sized for the whole
/// simulated memory cost the host only the parts a run uses.
public enum HostMemory {
    public static let hugePage = 2 << 20

    /// `count` zeroed elements; free with `release(_:count:)`.
    public static func allocate<T: ~Copyable>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let bytes = count * MemoryLayout<T>.stride
        #if canImport(Glibc)
        if bytes >= hugePage {
            let length = (bytes + hugePage - 1) / hugePage * hugePage
            if let raw = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED {
                _ = madvise(raw, length, MADV_HUGEPAGE)
                return raw.bindMemory(to: T.self, capacity: count)
            }
        }
        #endif
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: max(bytes, 1))
        return p.bindMemory(to: T.self, capacity: count)
    }

    /// `bytes` zeroed bytes aligned to 64; free with `release(_:bytes:)`.
    public static func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(allocate(SIMD64<UInt8>.self, count: (bytes + 63) / 64))
    }

    public static func release(_ pointer: UnsafeMutableRawPointer, bytes: Int) {
        release(pointer.assumingMemoryBound(to: SIMD64<UInt8>.self), count: (bytes + 63) / 64)
    }

    public static func release<T: ~Copyable>(_ pointer: UnsafeMutablePointer<T>, count: Int) {
        let bytes = count * MemoryLayout<T>.stride
        #if canImport(Glibc)
        if bytes >= hugePage {
            munmap(pointer, (bytes + hugePage - 1) / hugePage * hugePage)
            return
        }
        #endif
        UnsafeMutableRawPointer(pointer).deallocate()
    }
}
