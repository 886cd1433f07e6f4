/// Constants of the thpsim trace format (docs/trace-format.md).
///
/// ```
/// file   := header block* end
/// header := "THPTRACE" version:u16le flags:u16le reserved:u32le            (16 bytes)
/// block  := 'B' rawLength:varint storedLength:varint records:varint method:u8 checksum:u32le payload
/// end    := 'E' records:varint                                            (then end of file)
/// ```
/// A block's payload decompresses (method 0: stored, 1: `BlockCompression`) to `rawLength` bytes of
/// records whose FNV-1a-32 is `checksum`. Records are a tag byte and varint fields; each block starts
/// with thread 0 and previous page 0, so blocks decode independently.
public enum TraceFormat {
    public static let magic: [UInt8] = Array("THPTRACE".utf8)
    public static let version: UInt16 = 1
    public static let headerBytes = 16
    public static let blockTag: UInt8 = 0x42   // 'B'
    public static let endTag: UInt8 = 0x45     // 'E'
    /// A message chunk of a capture stream (never in a file).
    public static let messageTag: UInt8 = 0x4D // 'M'
    /// Blocks are cut once their records reach this many bytes.
    public static let targetBlockBytes = 64 << 10
    /// No block may claim more raw bytes than this (bounds the reader's memory).
    public static let maxBlockBytes = 4 << 20
    /// Thread ids are below this.
    public static let maxThreads = 1 << 16
    /// Page numbers are below this (the 47-bit user address space).
    public static let pageLimit: UInt64 = 1 << 35

    /// The 16 bytes a trace file starts with: magic, version, zero flags and reserved word.
    static var header: [UInt8] {
        var bytes = magic
        bytes.appendLE(version)
        bytes.appendLE(UInt16(0))
        bytes.appendLE(UInt32(0))
        return bytes
    }

    /// Record tags.
    public enum Tag: UInt8 {
        case load = 0x01, store = 0x02, fetch = 0x03
        case thread = 0x04
        case mmap = 0x10, munmap = 0x11, mprotect = 0x12, madvise = 0x13, mremap = 0x14, brk = 0x15
        case spawn = 0x16, fork = 0x17, exit = 0x18, idle = 0x19, beginMeasurement = 0x1A, getMempolicy = 0x1B
    }

    /// FNV-1a, 32 bits.
    @inlinable static func checksum(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt32 {
        var h: UInt32 = 0x811C_9DC5
        for b in bytes { h = (h ^ UInt32(b)) &* 0x0100_0193 }
        return h
    }
}

/// Appends LEB128 varints and fixed-width fields to a byte array.
extension Array where Element == UInt8 {
    @inline(__always) mutating func appendVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 { append(UInt8(truncatingIfNeeded: v) | 0x80); v >>= 7 }
        append(UInt8(v))
    }
    @inline(__always) mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}

@inline(__always) func zigzag(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }
@inline(__always) func unzigzag(_ v: UInt64) -> Int64 { Int64(bitPattern: v >> 1) ^ -Int64(bitPattern: v & 1) }
