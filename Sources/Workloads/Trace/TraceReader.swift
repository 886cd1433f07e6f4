import VMCore
import Kernel

/// A block read, decompressed and checked, not yet decoded (`TraceReader.nextBlock`).
struct TraceBlock {
    var raw: [UInt8]
    var payloadOffset: Int
    var compressed: Bool
    /// The record count its header states.
    var records: UInt64
}

/// Reads a trace (docs/trace-format.md) block by block and hands its records to a sink. Memory is
/// bounded by the largest block; every problem in the file is a `TraceError` naming the byte offset
/// and what was expected there, never a crash.
public struct TraceReader<Input: TraceInput> {
    private var input: Input
    /// File offset of the next unread byte.
    public private(set) var offset = 0
    private var buffer = [UInt8](repeating: 0, count: 64 << 10)
    private var bufferStart = 0, bufferEnd = 0
    private var stored: [UInt8] = []
    private var raw: [UInt8] = []
    public private(set) var version: UInt16 = 0
    /// A capture stream (`init(stream:)`): no header, no end marker, message chunks between blocks.
    private(set) var isStream = false
    /// Called with the text of each message chunk of a capture stream.
    public var onMessage: ((String) -> Void)?

    /// Reads a capture plugin's stream (docs/trace-format.md, "Recording with QEMU"): blocks as in a
    /// file but with checksum 0, and `'M' length:u16le text` messages, without header or end marker;
    /// the end of the input at a chunk boundary ends it.
    public init(stream: Input) {
        self.input = stream
        version = TraceFormat.version
        isStream = true
    }

    /// Reads and checks the header.
    public init(input: Input) throws(TraceError) {
        self.input = input
        let header = try readBytes(TraceFormat.headerBytes, what: "the 16-byte trace header")
        guard Array(header[0..<8]) == TraceFormat.magic else {
            throw TraceError(.corrupted, at: 0, expected: "the magic \"THPTRACE\" (not a thpsim trace)")
        }
        version = UInt16(header[8]) | UInt16(header[9]) << 8
        guard version == TraceFormat.version else {
            throw TraceError(.unsupportedVersion, at: 8, expected: "version \(TraceFormat.version), found \(version)")
        }
        guard header[10..<16].allSatisfy({ $0 == 0 }) else {
            throw TraceError(.corrupted, at: 10, expected: "zero flags and reserved bytes")
        }
    }

    /// Feeds every record to `sink`; returns the number of records.
    public mutating func replay(into sink: inout some WorkloadSink) throws(TraceError) -> Int {
        var total = 0
        while let block = try nextBlock(recordsSoFar: total) {
            let decoded = try block.raw.withUnsafeBufferPointer { (b) throws(TraceError) in
                try Self.decodeBlock(b, into: &sink, payloadOffset: block.payloadOffset, compressed: block.compressed)
            }
            guard UInt64(decoded) == block.records else {
                throw TraceError(.corrupted, at: block.payloadOffset, expected: "\(block.records) records in the block, found \(decoded)")
            }
            total += decoded
        }
        return total
    }

    /// Reads the next block (decompressed, its checksum checked), passing a capture stream's messages
    /// to `onMessage`; nil at the end: a file's end marker, which must state `recordsSoFar`, or the
    /// end of a stream's input.
    mutating func nextBlock(recordsSoFar total: Int) throws(TraceError) -> TraceBlock? {
        while true {
            let tagOffset = offset
            guard let tag = try readByte() else {
                if isStream { return nil }
                throw TraceError(.truncated, at: tagOffset, expected: "a block ('B') or the end marker ('E')")
            }
            if isStream && tag == TraceFormat.messageTag {
                let length = try readBytes(2, what: "a message's length")
                let text = try readBytes(Int(length[0]) | Int(length[1]) << 8, what: "a message")
                onMessage?(String(decoding: text, as: UTF8.self))
                continue
            }
            if tag == TraceFormat.endTag && !isStream {
                let countOffset = offset
                let count = try readVarint(what: "the record count of the end marker")
                guard count == UInt64(total) else {
                    throw TraceError(.corrupted, at: countOffset, expected: "a total of \(total) records, found \(count)")
                }
                guard try readByte() == nil else {
                    throw TraceError(.corrupted, at: offset - 1, expected: "the end of the file after the end marker")
                }
                return nil
            }
            guard tag == TraceFormat.blockTag else {
                throw TraceError(.corrupted, at: tagOffset, expected: "a block ('B') or the end marker ('E'), found 0x\(String(tag, radix: 16))")
            }
            let rawLength = try readVarint(what: "a block's raw length")
            let storedLength = try readVarint(what: "a block's stored length")
            let records = try readVarint(what: "a block's record count")
            guard rawLength <= UInt64(TraceFormat.maxBlockBytes), storedLength <= UInt64(TraceFormat.maxBlockBytes) + 64 else {
                throw TraceError(.corrupted, at: tagOffset + 1, expected: "block lengths of at most \(TraceFormat.maxBlockBytes) bytes")
            }
            let methodOffset = offset
            guard let method = try readByte() else { throw TraceError(.truncated, at: methodOffset, expected: "a block's method byte") }
            let sum = try readBytes(4, what: "a block's checksum")
            let checksum = UInt32(sum[0]) | UInt32(sum[1]) << 8 | UInt32(sum[2]) << 16 | UInt32(sum[3]) << 24
            let payloadOffset = offset
            stored = try readBytes(Int(storedLength), what: "a block payload of \(storedLength) bytes")
            switch method {
            case 0:
                guard storedLength == rawLength else {
                    throw TraceError(.corrupted, at: tagOffset + 1, expected: "equal lengths for a stored block")
                }
                swap(&raw, &stored)
            case 1:
                do throws(BlockCompression.BlockError) {
                    try stored.withUnsafeBufferPointer { (p) throws(BlockCompression.BlockError) in
                        try BlockCompression.decompress(p, rawLength: Int(rawLength), into: &raw)
                    }
                } catch {
                    throw TraceError(.corrupted, at: payloadOffset + error.offset, expected: error.expected)
                }
            default:
                throw TraceError(.corrupted, at: methodOffset, expected: "block method 0 (stored) or 1 (compressed), found \(method)")
            }
            // A capture stream's blocks carry no checksum (the pipe does not corrupt them).
            guard isStream || raw.withUnsafeBufferPointer({ TraceFormat.checksum($0) }) == checksum else {
                throw TraceError(.corrupted, at: payloadOffset, expected: "a block whose checksum matches its header")
            }
            return TraceBlock(raw: raw, payloadOffset: payloadOffset, compressed: method == 1, records: records)
        }
    }

    /// Decodes one block's records. Offsets in errors point into the payload: exactly for stored
    /// blocks; for compressed ones, at the payload's start, with the position in the decompressed
    /// bytes in the message (so an offset is always inside the file).
    static func decodeBlock(_ b: UnsafeBufferPointer<UInt8>, into sink: inout some WorkloadSink, payloadOffset: Int,
                            compressed: Bool) throws(TraceError) -> Int {
        do {
            var p = 0
            var thread = 0
            var lastPage: UInt64 = 0
            var count = 0
            let n = b.count
            func fail(_ what: String) -> TraceError {
                compressed ? TraceError(.corrupted, at: payloadOffset, expected: "\(what) (at byte \(p) of the decompressed block)")
                           : TraceError(.corrupted, at: payloadOffset + p, expected: what)
            }
            @inline(__always) func varint() throws(TraceError) -> UInt64 {
                var v: UInt64 = 0, shift: UInt64 = 0
                while true {
                    guard p < n else { throw fail("a varint before the end of the block") }
                    let byte = b[p]; p &+= 1
                    if shift == 63 && byte > 1 { throw fail("a varint below 2^64") }
                    v |= UInt64(byte & 0x7F) << shift
                    if byte < 0x80 { return v }
                    shift += 7
                    guard shift < 64 else { throw fail("a varint of at most 10 bytes") }
                }
            }
            func byte(_ what: String) throws(TraceError) -> UInt8 {
                guard p < n else { throw fail(what) }
                p += 1
                return b[p - 1]
            }
            func protection() throws(TraceError) -> VMCore.Protection {
                let v = try byte("a protection byte")
                guard v <= 7 else { throw fail("a protection of at most 7 (rwx), found \(v)") }
                return VMCore.Protection(rawValue: v)
            }
            func threadID() throws(TraceError) -> Int {
                let t = try varint()
                guard t < UInt64(TraceFormat.maxThreads) else { throw fail("a thread id below \(TraceFormat.maxThreads)") }
                return Int(t)
            }
            while p < n {
                let tag = b[p]; p &+= 1
                count &+= 1
                if tag &- 1 < 3 {
                    let page = lastPage &+ UInt64(bitPattern: unzigzag(try varint()))
                    let more = try varint()
                    guard page < TraceFormat.pageLimit else { throw fail("a page in the 47-bit user address space") }
                    guard more < 1 << 40 else { throw fail("a run shorter than 2^40 accesses") }
                    lastPage = page
                    sink.access(thread: thread, address: page << 12, kind: AccessKind(rawValue: tag &- 1)!, count: Int(more) &+ 1)
                    continue
                }
                guard let t = TraceFormat.Tag(rawValue: tag) else { throw fail("a record tag, found 0x\(String(tag, radix: 16))") }
                switch t {
                case .load, .store, .fetch: break
                case .thread: thread = try threadID()
                case .mmap:
                    let a = try varint(), l = try varint(), prot = try protection()
                    let shared = try byte("a shared flag")
                    guard shared <= 1 else { throw fail("a shared flag of 0 or 1") }
                    sink.event(thread: thread, .mmap(address: a, length: l, protection: prot, shared: shared == 1))
                case .munmap:
                    let a = try varint(), l = try varint()
                    sink.event(thread: thread, .munmap(address: a, length: l))
                case .mprotect:
                    let a = try varint(), l = try varint(), prot = try protection()
                    sink.event(thread: thread, .mprotect(address: a, length: l, protection: prot))
                case .madvise:
                    let a = try varint(), l = try varint()
                    guard let advice = MadviseAdvice(traceCode: try byte("an advice byte")) else { throw fail("a known madvise advice") }
                    sink.event(thread: thread, .madvise(address: a, length: l, advice: advice))
                case .mremap:
                    let a = try varint(), o = try varint(), l = try varint(), to = try varint()
                    sink.event(thread: thread, .mremap(address: a, oldLength: o, newLength: l, newAddress: to))
                case .brk: sink.event(thread: thread, .brk(address: try varint()))
                case .getMempolicy: sink.event(thread: thread, .getMempolicy(address: try varint()))
                case .spawn: sink.event(thread: thread, .spawn(thread: try threadID()))
                case .fork: sink.event(thread: thread, .fork(child: try threadID()))
                case .exit: sink.event(thread: thread, .exit)
                case .idle: sink.event(thread: thread, .idle(milliseconds: try varint()))
                case .beginMeasurement: sink.event(thread: thread, .beginMeasurement)
                }
            }
            return count
        }
    }

    // MARK: Buffered input

    private mutating func refill() throws(TraceError) -> Bool {
        bufferStart = 0
        bufferEnd = try buffer.withUnsafeMutableBufferPointer { (p) throws(TraceError) in try input.read(into: p) }
        return bufferEnd > 0
    }

    private mutating func readByte() throws(TraceError) -> UInt8? {
        if bufferStart == bufferEnd, !(try refill()) { return nil }
        let b = buffer[bufferStart]
        bufferStart += 1; offset += 1
        return b
    }

    private mutating func readVarint(what: String) throws(TraceError) -> UInt64 {
        var v: UInt64 = 0, shift: UInt64 = 0
        while true {
            let at = offset
            guard let b = try readByte() else { throw TraceError(.truncated, at: at, expected: what) }
            v |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return v }
            shift += 7
            guard shift < 64 else { throw TraceError(.corrupted, at: at, expected: "\(what) as a varint of at most 10 bytes") }
        }
    }

    private mutating func readBytes(_ count: Int, what: String) throws(TraceError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        let start = offset
        while out.count < count {
            if bufferStart == bufferEnd, !(try refill()) {
                throw TraceError(.truncated, at: start + out.count, expected: "\(what) (\(count - out.count) more bytes)")
            }
            let n = min(count - out.count, bufferEnd - bufferStart)
            out.append(contentsOf: buffer[bufferStart..<(bufferStart + n)])
            bufferStart += n; offset += n
        }
        return out
    }
}
