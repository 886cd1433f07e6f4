import Foundation
import Testing
import TestSupport
import VMCore
@testable import Workloads

/// Lackey logs that are not lackey logs: other files, binaries, cut or garbled text, and seeded
/// mutations of a real-looking log.
@Suite("Lackey logs: bad input")
struct LackeyBadInputTests {
    /// A log in lackey's shape: Valgrind's banner, accesses, brk, mmap and munmap calls.
    static let log: String = {
        var rng = TestSupport.SplitMix64(seed: 5)
        var lines = ["==4242== Lackey, an example Valgrind tool", "==4242== Command: /bin/true", "==4242== ",
                     "SYSCALL[4242,1](12) sys_brk ( 0x0 ) --> [pre-success] Success(0x4035000)",
                     "SYSCALL[4242,1](9) sys_mmap ( 0x0, 65536, 3, 34, 4294967295, 0 ) --> [pre-success] Success(0x4835000)"]
        for i in 0..<300 {
            let address = 0x4835000 + rng.next() % 65536
            let kind = ["I  ", " L ", " S ", " M "][Int(rng.next() % 4)]
            lines.append("\(kind)\(String(address, radix: 16).leftPadded(8)),\([1, 2, 4, 8][Int(rng.next() % 4)])")
            if i == 150 { lines.append("SYSCALL[4242,1](12) sys_brk ( 0x4056000 ) --> [pre-success] Success(0x4056000)") }
        }
        lines.append("SYSCALL[4242,1](11) sys_munmap ( 0x4835000, 65536 )[sync] --> Success(0x0)")
        lines.append("==4242== ")
        return lines.joined(separator: "\n") + "\n"
    }()

    func converter(_ bytes: [UInt8], chunk: Int = 4096) -> LackeyConverter<Recorder> {
        var c = LackeyConverter(sink: Recorder())
        var i = 0
        while i < bytes.count {
            let j = min(bytes.count, i + chunk)
            bytes[i..<j].withUnsafeBytes { c.feed($0) }
            i = j
        }
        _ = c.finish()
        return c
    }

    @Test("a real-looking log converts with no problem, in chunks of any size", arguments: [1, 7, 4096])
    func valid(chunk: Int) {
        let c = converter(Array(Self.log.utf8), chunk: chunk)
        #expect(c.problem() == nil)
        #expect(c.accesses >= 300 && c.recordLines == 304 && c.unrecognizedLines == 0)
    }

    @Test("CRLF line endings convert as LF does")
    func crlf() {
        let lf = converter(Array(Self.log.utf8)), crlf = converter(Array(Self.log.replacingOccurrences(of: "\n", with: "\r\n").utf8))
        #expect(crlf.sink.items == lf.sink.items && crlf.problem() == nil)
    }

    @Test("text with no lackey record is refused at its first line, quoted")
    func notLackey() throws {
        let text = (1...3889).map { "hello world \($0)" }.joined(separator: "\n")
        let c = converter(Array(text.utf8))
        let p = try #require(c.problem())
        #expect(p.line == 1 && p.offset == 0)
        #expect(p.message.contains("no line of 3889 is a lackey record") && p.message.contains("'hello world 1'"), "\(p)")
        #expect(c.sink.items.isEmpty)
    }

    @Test("a binary file is refused, its bytes escaped in the message")
    func binary() throws {
        var rng = TestSupport.SplitMix64(seed: 1)
        let bytes: [UInt8] = [0x7F, 0x45, 0x4C, 0x46] + (0..<100_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let p = try #require(converter(bytes).problem())
        #expect(p.line == 1 && p.message.contains("\\x7FELF"), "\(p)")
    }

    @Test("an empty log, or one with Valgrind messages only, is refused", arguments: ["", "==1== Lackey\n==1== \n"])
    func empty(text: String) throws {
        let p = try #require(converter(Array(text.utf8)).problem())
        #expect(p.message.contains("no lackey records"), "\(p)")
    }

    @Test("a log that is mostly garbage is refused at the first bad line with its byte offset")
    func mostlyGarbage() throws {
        let text = "I  0401ab70,3\n L 0401ab80,8\n" + (0..<5).map { "garbage \($0)" }.joined(separator: "\n")
        let p = try #require(converter(Array(text.utf8)).problem())
        #expect(p.line == 3 && p.offset == 28, "\(p)")
        #expect(p.message.contains("5 of 7 lines are not lackey output"), "\(p)")
    }

    @Test("a few lines of program output among records are skipped, not refused")
    func someOutput() {
        let c = converter(Array(("hello from the program\n" + Self.log + "bye\n").utf8))
        #expect(c.problem() == nil && c.unrecognizedLines == 2 && c.firstBadLine?.line == 1)
    }

    @Test("malformed records are unrecognized, not half-read", arguments: [
        " L zz,4", " L 0400,", " L 0400,4x", " L ,4", " L 04000000000000000000,4", " L 0400,99999999999999999999",
    ])
    func malformedRecords(line: String) {
        let c = converter(Array((line + "\n").utf8))
        #expect(c.accesses == 0 && c.unrecognizedLines == 1 && c.problem() != nil)
    }

    @Test("a line longer than the limit is not held whole and counts as unrecognized", arguments: [1, 4096, 1 << 20])
    func longLine(chunk: Int) {
        let long = " L 0400," + String(repeating: "1", count: 1 << 20)
        let c = converter(Array((Self.log + long + "\nI  0400,4\n").utf8), chunk: chunk)
        #expect(c.unrecognizedLines == 1 && c.firstBadLine?.excerpt.hasSuffix("…") == true)
        #expect(c.problem() == nil)
    }

    @Test("system-call results at the top of the address space do not overflow", arguments: [
        "SYSCALL[1,1](12) sys_brk ( 0x0 ) --> [pre-success] Success(0xffffffffffffffff)",
        "SYSCALL[1,1](12) sys_brk ( 0x0 ) --> [pre-success] Success(0xfffffffffffff000)",
        "SYSCALL[1,1](9) sys_mmap ( 0xffffffffffffffff, 18446744073709551615, 7, 34, 0, 0 ) --> Success(0xfffffffffffff000)",
        "SYSCALL[1,1](25) sys_mremap ( 0xfffffffffffff000, 4096, 18446744073709551615, 1 ) --> Success(0xfffffffffffff000)",
    ])
    func extremeCalls(call: String) {
        let c = converter(Array("SYSCALL[1,1](12) sys_brk ( 0x0 ) --> [pre-success] Success(0x4035000)\n\(call)\n\(call)\n I  0400,4\n".utf8))
        #expect(c.problem() == nil)
    }

    @Test("seeded mutations of a log never crash the converter; what it writes reads back as a trace; refusals name a line and byte")
    func fuzz() throws {
        let original = Array(Self.log.utf8)
        let iterations = InputMutator.iterations(default: 2000)
        var mutator = InputMutator(seed: InputMutator.seed)
        var refused = 0
        for i in 0..<iterations {
            let bytes = mutator.mutate(original, maximum: 6)
            var c = LackeyConverter(sink: try TraceWriter(output: TraceBytes()))
            let chunk = 1 + mutator.below(i % 3 == 0 ? 16 : 8192)
            var at = 0
            while at < bytes.count {
                let end = min(bytes.count, at + chunk)
                bytes[at..<end].withUnsafeBytes { c.feed($0) }
                at = end
            }
            var writer = c.finish()
            let trace = try writer.finish()
            var reader = try TraceReader(input: trace)
            var census = Recorder()
            #expect(try reader.replay(into: &census) == writer.records, "iteration \(i)")
            if let p = c.problem() {
                refused += 1
                #expect((1...max(1, c.lines)).contains(p.line), "iteration \(i): \(p)")
                #expect((0...bytes.count).contains(p.offset), "iteration \(i): \(p)")
                if let bad = c.firstBadLine, p.line == bad.line {
                    // The offset is where that line starts: after a newline, or at 0.
                    #expect(bad.offset == 0 || bytes[bad.offset - 1] == 0x0A, "iteration \(i): \(p)")
                }
            }
        }
        #expect(refused < iterations / 2, "a few bad lines among hundreds of records are skipped (\(refused) refused)")
    }

    @Test("seeded mutations of garbage stay refused")
    func fuzzGarbage() {
        let text = Array((1...200).map { "line \($0) of some other file" }.joined(separator: "\n").utf8)
        var mutator = InputMutator(seed: InputMutator.seed &+ 1)
        for i in 0..<InputMutator.iterations(default: 500) {
            let c = converter(mutator.mutate(text), chunk: 1 + mutator.below(300))
            #expect(c.problem() != nil, "iteration \(i)")
        }
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
