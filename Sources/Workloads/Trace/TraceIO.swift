#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a `TraceWriter` puts bytes.
public protocol TraceOutput {
    mutating func write(_ bytes: [UInt8]) throws(TraceError)
}

/// Where a `TraceReader` gets bytes: fills `buffer` from the front, returns how many (0 at the end).
public protocol TraceInput {
    mutating func read(into buffer: UnsafeMutableBufferPointer<UInt8>) throws(TraceError) -> Int
}

/// A trace in memory (tests, benchmarks).
public struct TraceBytes: TraceOutput, TraceInput, Sendable {
    public var bytes: [UInt8]
    var position = 0
    public init(_ bytes: [UInt8] = []) { self.bytes = bytes }
    public mutating func write(_ more: [UInt8]) { bytes.append(contentsOf: more) }
    public mutating func read(into buffer: UnsafeMutableBufferPointer<UInt8>) -> Int {
        let n = min(buffer.count, bytes.count - position)
        guard n > 0 else { return 0 }
        bytes.withUnsafeBufferPointer { src in
            _ = buffer.initialize(from: UnsafeBufferPointer(rebasing: src[position..<(position + n)]))
        }
        position += n
        return n
    }
}

/// A trace file, read or written through stdio.
public final class TraceFile: TraceOutput, TraceInput {
    private let file: UnsafeMutablePointer<FILE>
    private var position = 0
    public let path: String

    public enum Mode { case read, write }

    public init(path: String, mode: Mode) throws(TraceError) {
        self.path = path
        guard let f = fopen(path, mode == .read ? "rb" : "wb") else {
            throw TraceError(.io, at: 0, expected: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        file = f
    }
    deinit { fclose(file) }

    public func write(_ bytes: [UInt8]) throws(TraceError) {
        let n = bytes.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, file) }
        position += n
        guard n == bytes.count else { throw TraceError(.io, at: position, expected: "cannot write \(path): \(String(cString: strerror(errno)))") }
    }

    public func read(into buffer: UnsafeMutableBufferPointer<UInt8>) throws(TraceError) -> Int {
        let n = fread(buffer.baseAddress, 1, buffer.count, file)
        if n == 0 && ferror(file) != 0 { throw TraceError(.io, at: position, expected: "cannot read \(path): \(String(cString: strerror(errno)))") }
        position += n
        return n
    }

    /// Flushes buffered writes.
    public func close() throws(TraceError) {
        guard fflush(file) == 0 else { throw TraceError(.io, at: position, expected: "cannot write \(path)") }
    }
}
