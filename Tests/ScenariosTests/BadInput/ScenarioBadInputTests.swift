import Foundation
import Testing
import TestSupport
import VMCore
@testable import Scenarios

/// Scenario files as editors, downloads and wrong arguments deliver them: line endings, encodings,
/// files that check nothing, and seeded mutations of every file in `scenarios/`.
@Suite("Scenario files: bad input")
struct ScenarioBadInputTests {
    static let example = "# a comment first\nmmap A 4M\nwrite A 4K\nexpect smaps A Rss=4K\nexpect vmstat thp_fault_alloc>=0\n"

    func parseFile(_ text: String, file: String = "t.scen") throws(ScenarioError) -> Scenario {
        try ScenarioParser.parseFile(Array(text.utf8), file: file).scenario
    }

    func expectations(_ s: Scenario) -> [String] { s.statements.flatMap(\.checkTexts) }

    @Test("CRLF, CR-only and a missing final newline parse to the same statements and line numbers as LF",
          arguments: ["\r\n", "\r"])
    func lineEndings(ending: String) throws {
        let lf = try parseFile(Self.example)
        let other = try parseFile(Self.example.replacingOccurrences(of: "\n", with: ending))
        let noFinal = try parseFile(String(Self.example.dropLast()))
        for s in [other, noFinal] {
            #expect(s.statements.map(\.text) == lf.statements.map(\.text))
            #expect(s.statements.map(\.location.line) == [2, 3, 4, 5])
            #expect(expectations(s) == ["Rss=4K", "thp_fault_alloc>=0"])
        }
    }

    @Test("a CRLF file that does not start with a comment parses (sizes keep no CR)")
    func crlfWithoutComment() throws {
        let s = try parseFile("mmap A 4M\r\nwrite A 4M\r\nexpect data A 4M\r\n")
        guard case .write(_, let bytes, _) = s.statements[1].command else { Issue.record("not a write"); return }
        #expect(bytes == 4 << 20)
    }

    @Test("a UTF-8 byte-order mark at the start is skipped")
    func byteOrderMark() throws {
        let s = try ScenarioParser.parseFile([0xEF, 0xBB, 0xBF] + Array(Self.example.utf8), file: "bom.scen").scenario
        #expect(s.statements.count == 4)
    }

    @Test("a file without an expect line is refused at its last line, however many commands it has",
          arguments: ["", "# only a comment\n", "mmap A 4M\nwrite A 4K\n", "mmap A 4M\r\nwrite A 4K"])
    func noExpectations(text: String) {
        let e = #expect(throws: ScenarioError.self) { try parseFile(text, file: "empty.scen") }
        #expect(e?.message.contains("without an `expect` line") == true, "\(String(describing: e))")
        #expect(e?.location?.file == "empty.scen")
        #expect(e?.location?.line == max(1, text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).count))
    }

    @Test("binary and non-UTF-8 input is refused at the line where it shows", arguments: [
        (Array("mmap A 4M\nwrite A 4K\n".utf8) + [0xFF, 0xFE, 0x0A], 3, "byte 21 is not UTF-8"),
        (Array("mmap A 4M\n".utf8) + [0x00, 0x01, 0x0A], 2, "control character U+0000"),
        (Array("mmap A 4M\nwrite A 4K\u{1B}[0m\n".utf8), 2, "control character U+001B"),
    ] as [([UInt8], Int, String)])
    func binary(bytes: [UInt8], line: Int, message: String) {
        let e = #expect(throws: ScenarioError.self) { try ScenarioParser.parseFile(bytes, file: "b.scen") }
        #expect(e?.location == SourceLocation(file: "b.scen", line: line))
        #expect(e?.message.contains(message) == true, "\(String(describing: e))")
    }

    @Test("a line longer than the limit is refused, naming its length")
    func longLine() {
        let text = "mmap A 4M\nwrite A 4K " + String(repeating: " ", count: ScenarioParser.maximumLineBytes) + "\nexpect data A 4K\n"
        let e = #expect(throws: ScenarioError.self) { try parseFile(text) }
        #expect(e?.location?.line == 2 && e?.message.contains("at most \(ScenarioParser.maximumLineBytes)") == true)
    }

    @Test("swap 0 means no swap device; other sizes that are not whole pages, or too large, say why", arguments: [
        ("swap 0", nil),
        ("swap 4K", nil),
        ("swap 6K", "not a multiple of 4K"),
        ("swap 4097", "not a multiple of 4K"),
        ("swap 2T", "more than the model's largest device, 1T"),
    ] as [(String, String?)])
    func swapSizes(line: String, problem: String?) throws {
        let text = "\(line)\nmmap A 4M\nexpect data A 4K\n"
        if let problem {
            let e = #expect(throws: ScenarioError.self) { try parseFile(text) }
            #expect(e?.location?.line == 1 && e?.message.contains(problem) == true, "\(String(describing: e))")
        } else {
            let s = try parseFile(text)
            #expect(s.swap?.bytes == ByteCount.parse(String(line.split(separator: " ")[1])))
        }
    }

    @Test("with swap 0, MADV_PAGEOUT leaves the pages in memory and meminfo shows no swap")
    func noSwapOnTheModel() throws {
        let (_, s) = try ScenarioParser.parseFile(Array("""
            swap 0
            memory 64M
            mmap A 4M
            write A 4M
            madvise A 4M pageout
            expect meminfo SwapTotal=0 SwapFree=0
            expect smaps A Swap=0 Rss=4M
            expect data A 4M
            """.utf8), file: "noswap.scen")
        let report = ScenarioRunner.run(s, on: "model") { () throws(ScenarioError) in
            try makeModelScenarioBackend(design: s.design, memoryBytes: s.memoryBytes, swap: s.swap)
        }
        #expect(report.passed && report.results.count == 5, "\(report.text)")
    }

    @Test("a directory or a missing file is refused, naming what it is")
    func unreadable() {
        let dir = FileManager.default.temporaryDirectory.path
        let e = #expect(throws: ScenarioError.self) { try ScenarioParser.load(contentsOf: dir) }
        #expect(e?.message.contains("is a directory") == true)
        let m = #expect(throws: ScenarioError.self) { try ScenarioParser.load(contentsOf: "/nonexistent/x.scen") }
        #expect(m?.message.contains("no such file") == true)
    }

    /// Every scenario in `scenarios/`, the fuzzer's starting points.
    static let corpus: [(String, [UInt8])] = ScenarioModelTests.scenarioFiles().compactMap { path in
        FileManager.default.contents(atPath: path).map { (URL(fileURLWithPath: path).lastPathComponent, Array($0)) }
    }

    @Test("seeded mutations of every scenario never crash the parser; each refusal is an input error with file:line")
    func fuzz() throws {
        try #require(Self.corpus.count > 10)
        let iterations = InputMutator.iterations(default: 4000)
        var mutator = InputMutator(seed: InputMutator.seed)
        var accepted = 0, rejected = 0
        for i in 0..<iterations {
            let (name, original) = Self.corpus[i % Self.corpus.count]
            let bytes = mutator.mutate(original)
            let lineCount = bytes.count { $0 == 0x0A || $0 == 0x0D } + 1
            do {
                let (_, scenario) = try ScenarioParser.parseFile(bytes, file: name)
                #expect(scenario.statements.allSatisfy { (1...lineCount).contains($0.location.line) })
                accepted += 1
            } catch {
                rejected += 1
                #expect(error.kind == .input, "iteration \(i): \(error)")
                guard let location = error.location else {
                    // Only the whole file's size is refused without a line.
                    #expect(error.message.contains("bytes; at most"), "iteration \(i): no location: \(error)")
                    continue
                }
                #expect(location.file == name)
                #expect((1...lineCount).contains(location.line), "iteration \(i): line \(location.line) of \(lineCount): \(error)")
            }
        }
        // Both outcomes happen: the mutations are neither all harmless nor all fatal.
        #expect(accepted > iterations / 20 && rejected > iterations / 5, "accepted \(accepted), rejected \(rejected)")
    }
}
