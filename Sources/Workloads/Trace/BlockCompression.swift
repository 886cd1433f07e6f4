/// A small LZ77 compressor for trace blocks (Foundation on Linux has no zlib). The compressed form
/// is a sequence of `literalCount:varint literals matchLength:varint [offset:varint]`, where a
/// match length of 0 ends the block and a non-zero one (≥ 4) copies from `offset` bytes back.
/// Matches are found through a 4-byte hash table, like LZ4's fast mode.
enum BlockCompression {
    static let minMatch = 4
    static let hashBits = 14

    static func compress(_ input: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(input.count / 2 + 16)
        var table = [Int32](repeating: -1, count: 1 << hashBits)
        let n = input.count
        input.withUnsafeBufferPointer { src in
            var anchor = 0, i = 0
            @inline(__always) func word(_ p: Int) -> UInt32 {
                UInt32(src[p]) | UInt32(src[p + 1]) << 8 | UInt32(src[p + 2]) << 16 | UInt32(src[p + 3]) << 24
            }
            while i + minMatch <= n {
                let w = word(i)
                let h = Int((w &* 2_654_435_761) >> UInt32(32 - hashBits))
                let candidate = Int(table[h])
                table[h] = Int32(i)
                if candidate >= 0, i - candidate < 1 << 20, word(candidate) == w {
                    var length = minMatch
                    while i + length < n && src[candidate + length] == src[i + length] { length += 1 }
                    out.appendVarint(UInt64(i - anchor))
                    out.append(contentsOf: src[anchor..<i])
                    out.appendVarint(UInt64(length))
                    out.appendVarint(UInt64(i - candidate))
                    i += length
                    anchor = i
                } else {
                    i += 1
                }
            }
            out.appendVarint(UInt64(n - anchor))
            out.append(contentsOf: src[anchor..<n])
            out.appendVarint(0)
        }
        return out
    }

    /// Decompresses into exactly `rawLength` bytes. Errors name the offset within `input`.
    static func decompress(_ input: UnsafeBufferPointer<UInt8>, rawLength: Int, into out: inout [UInt8]) throws(BlockError) {
        var failure: BlockError?
        out = [UInt8](unsafeUninitializedCapacity: rawLength) { dst, initialized in
            initialized = 0
            do throws(BlockError) {
                initialized = try decode(input, into: dst)
            } catch { failure = error }
            if failure == nil && initialized != rawLength {
                failure = BlockError(offset: input.count, expected: "\(rawLength) bytes, not \(initialized)")
            }
            if failure != nil { initialized = 0 }
        }
        if let failure { throw failure }
    }

    /// Decodes into `dst` (never past its end); returns the bytes written.
    private static func decode(_ input: UnsafeBufferPointer<UInt8>, into dst: UnsafeMutableBufferPointer<UInt8>) throws(BlockError) -> Int {
        var p = 0, o = 0
        let limit = dst.count
        @inline(__always) func varint() throws(BlockError) -> Int {
            var v: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard p < input.count else { throw BlockError(offset: p, expected: "a varint, not the end of the block") }
                let b = input[p]; p &+= 1
                v |= UInt64(b & 0x7F) << shift
                if b < 0x80 { break }
                shift += 7
                guard shift < 35 else { throw BlockError(offset: p, expected: "a length below 2^35") }
            }
            return Int(v)
        }
        while true {
            let literals = try varint()
            guard literals <= input.count - p else { throw BlockError(offset: p, expected: "\(literals) literal bytes") }
            guard literals <= limit - o else { throw BlockError(offset: p, expected: "no more than \(limit) bytes") }
            if literals <= 16 && input.count - p >= 16 && limit - o >= 16 {
                // Short runs (most of them in traces): two word copies instead of a memcpy call; the
                // bytes written past the run lie inside `dst` and are overwritten by what follows.
                copy16(from: UnsafeRawPointer(input.baseAddress! + p), to: UnsafeMutableRawPointer(dst.baseAddress! + o))
            } else {
                (dst.baseAddress! + o).update(from: input.baseAddress! + p, count: literals)
            }
            p += literals; o += literals
            let length = try varint()
            if length == 0 { break }
            let offset = try varint()
            guard length >= minMatch, offset >= 1, offset <= o else {
                throw BlockError(offset: p, expected: "a match of ≥ 4 bytes within the \(o) bytes so far")
            }
            guard length <= limit - o else { throw BlockError(offset: p, expected: "no more than \(limit) bytes") }
            let base = dst.baseAddress!
            if length <= 16 && offset >= 16 && limit - o >= 16 {
                copy16(from: UnsafeRawPointer(base + o - offset), to: UnsafeMutableRawPointer(base + o))
            } else if offset >= length {
                (base + o).update(from: base + o - offset, count: length)
            } else {
                for k in 0..<length { base[o + k] = base[o + k - offset] }
            }
            o += length
        }
        guard p == input.count else { throw BlockError(offset: p, expected: "the end of the compressed block") }
        return o
    }

    /// Copies 16 bytes between ranges that do not overlap.
    @inline(__always)
    private static func copy16(from source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer) {
        let a = source.loadUnaligned(as: UInt64.self), b = source.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        destination.storeBytes(of: a, as: UInt64.self)
        destination.storeBytes(of: b, toByteOffset: 8, as: UInt64.self)
    }

    struct BlockError: Error { var offset: Int; var expected: String }
}
