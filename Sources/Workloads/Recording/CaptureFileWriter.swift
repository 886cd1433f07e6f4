/// Writes a capture plugin's stream (`TraceReader(stream:)`'s input) to a trace file without
/// decoding its records: each block's lengths are checked, its checksum computed (the plugin leaves
/// it 0), and it is compressed and written as it is, so a recording is stored at the speed of
/// compression; message chunks go to `onMessage`. The file gets the header first and the end marker
/// once the stream ends.
public struct CaptureFileWriter<Input: TraceInput, Output: TraceOutput> {
    private var input: Input
    public private(set) var output: Output
    /// Records and blocks written so far; bytes of records before compression.
    public private(set) var records = 0, blocks = 0, rawBytes = 0
    public var onMessage: ((String) -> Void)?
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)
    private var start = 0, end = 0, offset = 0

    public init(input: Input, output: Output) throws(TraceError) {
        self.input = input
        self.output = output
        try self.output.write(TraceFormat.header)
    }

    /// Copies the stream until it ends, then writes the end marker; returns the output.
    public mutating func run() throws(TraceError) -> Output {
        while let tag = try byte() {
            if tag == TraceFormat.messageTag {
                let length = try bytes(2, "a message's length")
                let text = try bytes(Int(length[0]) | Int(length[1]) << 8, "a message")
                onMessage?(String(decoding: text, as: UTF8.self))
                continue
            }
            let at = offset - 1
            guard tag == TraceFormat.blockTag else {
                throw TraceError(.corrupted, at: at, expected: "a block or a message in the capture stream, found 0x\(String(tag, radix: 16))")
            }
            let rawLength = try varint(), storedLength = try varint(), count = try varint()
            guard rawLength == storedLength, rawLength <= UInt64(TraceFormat.maxBlockBytes) else {
                throw TraceError(.corrupted, at: at, expected: "a stored block of at most \(TraceFormat.maxBlockBytes) bytes")
            }
            let method = try bytes(1, "a block's method")[0]
            _ = try bytes(4, "a block's checksum")
            let payload = try bytes(Int(rawLength), "a block's records")
            guard method == 0 else { throw TraceError(.corrupted, at: at, expected: "a stored block (method 0)") }
            let checksum = payload.withUnsafeBufferPointer { TraceFormat.checksum($0) }
            let stored = BlockCompression.compress(payload)
            var header: [UInt8] = [TraceFormat.blockTag]
            header.appendVarint(rawLength)
            header.appendVarint(UInt64(stored.count))
            header.appendVarint(count)
            header.append(1)
            header.appendLE(checksum)
            try output.write(header)
            try output.write(stored)
            records += Int(count); blocks += 1; rawBytes += Int(rawLength)
        }
        var marker: [UInt8] = [TraceFormat.endTag]
        marker.appendVarint(UInt64(records))
        try output.write(marker)
        return output
    }

    private mutating func byte() throws(TraceError) -> UInt8? {
        if start == end {
            start = 0
            end = try buffer.withUnsafeMutableBufferPointer { (b) throws(TraceError) in try input.read(into: b) }
            if end == 0 { return nil }
        }
        start += 1; offset += 1
        return buffer[start - 1]
    }

    private mutating func bytes(_ n: Int, _ what: String) throws(TraceError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(n)
        while out.count < n {
            if start == end {
                start = 0
                end = try buffer.withUnsafeMutableBufferPointer { (b) throws(TraceError) in try input.read(into: b) }
                if end == 0 { throw TraceError(.truncated, at: offset, expected: "\(what) (\(n - out.count) more bytes)") }
            }
            let k = min(n - out.count, end - start)
            out.append(contentsOf: buffer[start..<(start + k)])
            start += k; offset += k
        }
        return out
    }

    private mutating func varint() throws(TraceError) -> UInt64 {
        var v: UInt64 = 0, shift: UInt64 = 0
        while true {
            guard let b = try byte() else { throw TraceError(.truncated, at: offset, expected: "a varint") }
            v |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return v }
            shift += 7
            guard shift < 64 else { throw TraceError(.corrupted, at: offset, expected: "a varint of at most 10 bytes") }
        }
    }
}
