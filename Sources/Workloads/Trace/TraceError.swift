/// What is wrong with a trace file, and where: the byte offset in the file and what the reader
/// expected there.
public struct TraceError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// The file ends early.
        case truncated
        /// The bytes are not what the format allows (bad magic, tag, checksum, value out of range).
        case corrupted
        /// A format version this reader does not know.
        case unsupportedVersion
        /// Reading or writing the file failed.
        case io
    }
    public var kind: Kind
    /// Byte offset in the file where the problem was found.
    public var offset: Int
    /// What the reader expected there (or what failed).
    public var expected: String

    public init(_ kind: Kind, at offset: Int, expected: String) {
        self.kind = kind; self.offset = offset; self.expected = expected
    }

    public var description: String {
        switch kind {
        case .truncated: "trace truncated at byte \(offset): expected \(expected)"
        case .corrupted: "trace corrupted at byte \(offset): expected \(expected)"
        case .unsupportedVersion: "unsupported trace version at byte \(offset): expected \(expected)"
        case .io: "trace I/O error at byte \(offset): \(expected)"
        }
    }
}
