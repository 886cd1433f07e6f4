import Foundation
import VMCore

/// Reading a scenario file for a run: bytes → UTF-8 text → statements, refusing a file that would
/// check nothing.
extension ScenarioParser {
    /// The largest scenario file accepted, in bytes.
    public static let maximumFileBytes = 1 << 20

    /// Reads, parses and checks the file at `path`; returns its text (for reports) and the scenario.
    public static func load(contentsOf path: String) throws(ScenarioError) -> (text: String, scenario: Scenario) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ScenarioError("cannot read the file: no such file")
        }
        guard !isDirectory.boolValue else { throw ScenarioError("cannot read the file: it is a directory") }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        guard attributes?[.type] as? FileAttributeType == .typeRegular else {
            throw ScenarioError("cannot read the file: not a regular file")
        }
        if let size = attributes?[.size] as? Int, size > maximumFileBytes {
            throw ScenarioError("the file has \(size) bytes; at most \(maximumFileBytes) are accepted")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ScenarioError("cannot read the file: permission denied or not a regular file")
        }
        return try parseFile(Array(data), file: path)
    }

    /// Parses a scenario file's bytes as a run needs them: UTF-8 (a leading byte-order mark is
    /// skipped), at most `maximumFileBytes`, with at least one `expect` line.
    public static func parseFile(_ bytes: [UInt8], file: String) throws(ScenarioError) -> (text: String, scenario: Scenario) {
        guard bytes.count <= maximumFileBytes else {
            throw ScenarioError("the file has \(bytes.count) bytes; at most \(maximumFileBytes) are accepted")
        }
        let body = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? bytes[3...] : bytes[...]
        guard let text = String(validating: body, as: UTF8.self) else {
            let offset = body.startIndex + (UTF8Text.firstInvalidByte(body) ?? 0)
            let line = 1 + body[..<offset].count { $0 == 0x0A }
            throw ScenarioError("byte \(offset) is not UTF-8 text (is this a scenario file?)", at: SourceLocation(file: file, line: line))
        }
        let scenario = try parse(text, file: file)
        guard scenario.statements.contains(where: { if case .expect = $0.command { true } else { false } }) else {
            let lines = max(1, text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }).count)
            throw ScenarioError("the file ends without an `expect` line: a scenario that checks nothing cannot pass",
                                at: SourceLocation(file: file, line: lines))
        }
        return (text, scenario)
    }
}
