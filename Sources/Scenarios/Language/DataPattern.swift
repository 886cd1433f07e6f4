/// The bytes that a `write` stores: a function of the write's sequence number and of the offset
/// from the written address's region, so every backend writes the same bytes at the same place
/// and a later write changes them.
///
/// Byte `i` of a write stores `byte(at: i)`; `firstOffset` is the region offset of byte 0.
public struct DataPattern: Sendable, Hashable {
    /// The write's sequence number in the scenario, from 1.
    public var sequence: UInt64
    /// The region-relative offset of the first byte (`A+4K` → 4096).
    public var firstOffset: UInt64

    public init(sequence: UInt64, firstOffset: UInt64) {
        self.sequence = sequence
        self.firstOffset = firstOffset
    }

    /// The byte stored at index `i` of the write.
    @inlinable
    public func byte(at i: UInt64) -> UInt8 {
        let offset = firstOffset &+ i
        let word = Self.mix(sequence &* 0x9E37_79B9_7F4A_7C15 ^ (offset >> 3))
        return UInt8(truncatingIfNeeded: word >> ((offset & 7) << 3))
    }

    /// The bytes `i ..< i + count` of the write.
    public func bytes(from i: UInt64 = 0, count: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            fill(UnsafeMutableRawBufferPointer(buffer), from: i)
            initialized = count
        }
    }

    /// Stores the bytes `i ..< i + buffer.count` of the write into `buffer`, a word at a time where it can.
    public func fill(_ buffer: UnsafeMutableRawBufferPointer, from i: UInt64 = 0) {
        var k = 0
        while k < buffer.count {
            let offset = firstOffset &+ i &+ UInt64(k)
            if offset & 7 == 0, buffer.count - k >= 8 {
                let word = Self.mix(sequence &* 0x9E37_79B9_7F4A_7C15 ^ (offset >> 3))
                buffer.storeBytes(of: word.littleEndian, toByteOffset: k, as: UInt64.self)
                k += 8
            } else {
                buffer[k] = byte(at: i &+ UInt64(k))
                k += 1
            }
        }
    }

    /// SplitMix64's finaliser: a cheap, well-spread bijection on 64-bit words.
    @inlinable
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
