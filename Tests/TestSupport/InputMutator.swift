#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Seeded mutations of a valid input file, for fuzzing parsers: what a bad editor, a cut download or
/// a wrong file does to text and binary formats.
///
/// Every mutation is a function of the seed, so a failure replays exactly from the seed printed with it.
public struct InputMutator {
    /// One kind of change.
    public enum Mutation: CaseIterable, Sendable {
        case flipBit, setByte, insertBytes, deleteRange, truncate, duplicateLine, deleteLine, swapLines,
             extremeNumber, crlf, insertBinary
    }

    /// The numbers `extremeNumber` puts in place of a number: bounds of every integer width, IEEE
    /// specials, and spellings parsers disagree on.
    public static let extremes = [
        "0", "-1", "-0", "1", "4095", "4097", "65536", "2147483647", "2147483648", "4294967295", "4294967296",
        "9223372036854775807", "9223372036854775808", "18446744073709551615", "18446744073709551616",
        "99999999999999999999999", "1e308", "-1e308", "1e12", "inf", "-inf", "nan", "0x7fffffffffffffff",
        "0xffffffffffffffff", "1.5", "1e-320", "0K", "16E", "1T", "17179869184T", "18446744073709551615K",
    ]

    public var rng: SplitMix64
    public init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    public mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(rng.next() % UInt64(n)) }

    /// `input` with one to `maximum` random mutations applied.
    public mutating func mutate(_ input: [UInt8], maximum: Int = 3) -> [UInt8] {
        var bytes = input
        for _ in 0...below(maximum) {
            let kinds = Mutation.allCases
            apply(kinds[below(kinds.count)], to: &bytes)
        }
        return bytes
    }

    public mutating func apply(_ mutation: Mutation, to bytes: inout [UInt8]) {
        let at = below(bytes.count + 1)
        switch mutation {
        case .flipBit:
            if at < bytes.count { bytes[at] ^= 1 << UInt8(below(8)) }
        case .setByte:
            if at < bytes.count { bytes[at] = UInt8(truncatingIfNeeded: rng.next()) }
        case .insertBytes:
            let alphabet = Array(" \t\n#=,+-.0123456789abcdefxKMGTLSIM()[]".utf8)
            bytes.insert(contentsOf: (0..<(1 + below(8))).map { _ in alphabet[below(alphabet.count)] }, at: at)
        case .deleteRange:
            bytes.removeSubrange(at..<min(bytes.count, at + 1 + below(64)))
        case .truncate:
            bytes.removeSubrange(at...)
        case .duplicateLine, .deleteLine, .swapLines:
            var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
            guard !lines.isEmpty else { return }
            let i = below(lines.count), j = below(lines.count)
            switch mutation {
            case .duplicateLine: lines.insert(lines[i], at: j)
            case .deleteLine: lines.remove(at: i)
            default: lines.swapAt(i, j)
            }
            bytes = Array(lines.joined(separator: [0x0A]))
        case .extremeNumber:
            // Replace the run of digits (with any letters or dots stuck to it) around a random digit.
            let digits = bytes.indices.filter { bytes[$0] >= 0x30 && bytes[$0] <= 0x39 }
            guard !digits.isEmpty else { return }
            let d = digits[below(digits.count)]
            func isPart(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E }
            var start = d, end = d + 1
            while start > 0, isPart(bytes[start - 1]) { start -= 1 }
            while end < bytes.count, isPart(bytes[end]) { end += 1 }
            bytes.replaceSubrange(start..<end, with: Array(Self.extremes[below(Self.extremes.count)].utf8))
        case .crlf:
            bytes = Array(bytes.split(separator: 0x0A, omittingEmptySubsequences: false).joined(separator: [0x0D, 0x0A]))
        case .insertBinary:
            bytes.insert(contentsOf: (0..<(1 + below(16))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: at)
        }
    }

    /// Mutations per fuzz test: `THPSIM_FUZZ_ITERATIONS` if set (CI runs more), else `default`.
    public static func iterations(default count: Int) -> Int {
        guard let text = getenv("THPSIM_FUZZ_ITERATIONS").map({ String(cString: $0) }), let n = Int(text), n > 0 else { return count }
        return n
    }

    /// The base seed of fuzz tests: `THPSIM_FUZZ_SEED` if set, else a fixed one (runs are repeatable).
    public static var seed: UInt64 {
        guard let text = getenv("THPSIM_FUZZ_SEED").map({ String(cString: $0) }), let n = UInt64(text) else { return 0x7457_5E5D }
        return n
    }
}
