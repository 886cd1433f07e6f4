import Foundation
import Testing
import TestSupport
import Machine

/// Machine files with numbers out of any physical range, foreign bytes and line endings, and seeded
/// mutations of complete files.
@Suite("Machine config files: bad input")
struct MachineConfigBadInputTests {
    static let complete = """
        # every setting, spelled out
        name my-core
        frequency 3.2
        l1d 4k 64 4
        l1d 2m 32 4
        l1d 1g 4 4
        l1i 4k 128 8
        l1i 2m 8 full
        l2  4k,2m 1536 12
        l2  1g 16 4
        pwc pml4 2 full
        pwc pdpt 4 full
        pwc pd 32 4
        nested-tlb 4k,2m,1g 16 full
        cache l1 32K 8 5
        cache l2 1M 16 14
        cache l3 16M 16 70
        timing base 1
        timing memory-ns 95
        timing mlp 8
        timing fault-4k 2500
        timing fault-2m 120000
        timing swap-in-4k 8000
        timing ipi-send 3000

        """

    func parse(_ text: String) throws(MachineConfigError) -> MachineDescription {
        try MachineDescription.parse(bytes: Array(text.utf8), file: "m.machine")
    }

    @Test("a number outside its range, NaN or infinite is refused with file:line and the range", arguments: [
        ("timing memory-ns 1e308", "memory-ns must be a number from 0 to 10,000 ns, not '1e308'"),
        ("timing memory-ns 1e12", "memory-ns must be a number from 0 to 10,000 ns"),
        ("timing memory-ns inf", "not 'inf'"),
        ("timing memory-ns nan", "not 'nan'"),
        ("timing memory-ns -1", "not '-1'"),
        ("timing mlp 0", "mlp must be a number from 1 to 1,024"),
        ("timing fault-2m 1e9", "fault-2m must be a number from 0 to 100,000,000 cycles"),
        ("timing base 1001", "base must be a number from 0 to 1,000 cycles"),
        ("frequency 0", "frequency must be a number from 0.1 to 10 GHz"),
        ("frequency 1e6", "frequency must be a number from 0.1 to 10 GHz"),
        ("l1d 4k 1048576 full", "entries must be a whole number from 1 to 65536"),
        ("l1d 4k 0 full", "entries must be a whole number from 1 to 65536"),
        ("l1d 4k 64 128", "ways must be a whole number from 1 to 64"),
        ("l1d 4k 9223372036854775808 4", "entries must be a whole number"),
        ("pwc pd 100000 4", "entries must be a whole number from 0 to 65536"),
        ("cache l2 99999999999999M 8 14", "cache size must be from 1K to 1G"),
        ("cache l2 2048M 8 14", "cache size must be from 1K to 1G"),
        ("cache l2 1M 4096 14", "ways must be a whole number from 1 to 1024"),
        ("cache l2 1M 8 1e308", "latency must be a number from 0 to 10,000 cycles"),
    ])
    func outOfRange(line: String, message: String) {
        let e = #expect(throws: MachineConfigError.self) { try parse("based-on zen4\nname x\n\(line)\n") }
        #expect(e?.line == 3 && e?.file == "m.machine", "\(String(describing: e))")
        #expect(e?.message.contains(message) == true, "\(String(describing: e))")
    }

    @Test("every timing key has a documented range, and the defaults and presets lie inside every range")
    func rangesCoverEveryKey() throws {
        #expect(Set(ConfigLimits.timing.keys) == Set(MachineDescription.timingKeys.keys))
        for name in MachineDescription.presetNames {
            let d = MachineDescription.presets[name]!
            #expect(ConfigLimits.frequencyGHz.contains(d.frequencyGHz), "\(name)")
            for (key, path) in MachineDescription.timingKeys {
                #expect(ConfigLimits.timing[key]!.values.contains(d.timing[keyPath: path]), "\(name) \(key)")
            }
            for spec in d.l1Data + d.l1Instruction + d.l2 + [d.pml4Cache, d.pdptCache, d.pdCache, d.nestedTLB] {
                #expect(spec.entries <= ConfigLimits.tlbEntries, "\(name)")
            }
            for c in d.caches {
                #expect(ConfigLimits.cacheBytes.contains(c.bytes) && c.ways <= ConfigLimits.cacheWays, "\(name)")
                #expect(ConfigLimits.cacheLatencyCycles.contains(c.latency), "\(name)")
            }
        }
    }

    @Test("a machine at the top of every range still runs a fault and an access without overflow")
    func extremesRun() throws {
        var text = "based-on zen4\nname extreme\nfrequency 0.1\ntiming mlp 1\n"
        for (key, range) in ConfigLimits.timing where key != "mlp" { text += "timing \(key) \(range.values.upperBound)\n" }
        text += "cache l1 32K 8 10000\ncache l2 1M 8 10000\ncache l3 32M 16 10000\n"
        let d = try parse(text)
        #expect(d.timing.memoryLatencyNs == 10_000 && d.problems.isEmpty)
    }

    @Test("CRLF and a missing final newline read as LF does")
    func lineEndings() throws {
        let lf = try parse(Self.complete)
        #expect(try parse(Self.complete.replacingOccurrences(of: "\n", with: "\r\n")) == lf)
        #expect(try parse(String(Self.complete.dropLast())) == lf)
    }

    @Test("binary bytes and non-UTF-8 text are refused at their line", arguments: [
        (Array("based-on zen4\nname x\n".utf8) + [0xC3, 0x28, 0x0A], 3, "byte 21 is not UTF-8"),
        (Array("based-on zen4\n".utf8) + [0x00, 0x0A], 2, "control character 0"),
    ] as [([UInt8], Int, String)])
    func binary(bytes: [UInt8], line: Int, message: String) {
        let e = #expect(throws: MachineConfigError.self) { try MachineDescription.parse(bytes: bytes, file: "b") }
        #expect(e?.line == line && e?.message.contains(message) == true, "\(String(describing: e))")
    }

    @Test("a directory is refused as a directory")
    func directory() {
        let dir = FileManager.default.temporaryDirectory.path
        let e = #expect(throws: MachineConfigError.self) { try MachineDescription.load(contentsOf: dir) }
        #expect(e?.message.contains("it is a directory") == true && e?.line == nil)
    }

    /// Whole-file problems, the only ones reported without a line.
    static let wholeFile = ["no '", "cache levels must be", "l1d:", "l1i:", "l2:", "pwc ", "nested-tlb:", "cache l", "frequency must", "no cache level"]

    @Test("seeded mutations of complete files never crash the parser; refusals have a line, or are about the whole file; what is accepted is in range")
    func fuzz() throws {
        let corpus = [Self.complete, "based-on zen4\nname x\ntiming memory-ns 120\npwc pd 0 0\nl2 4k,2m 4096 16\ncache l3 32M 16 50\n"].map { Array($0.utf8) }
        let iterations = InputMutator.iterations(default: 4000)
        var mutator = InputMutator(seed: InputMutator.seed)
        var accepted = 0, rejected = 0
        for i in 0..<iterations {
            let bytes = mutator.mutate(corpus[i % corpus.count])
            let lineCount = bytes.count { $0 == 0x0A || $0 == 0x0D } + 1
            do {
                let d = try MachineDescription.parse(bytes: bytes, file: "f.machine")
                accepted += 1
                #expect(d.problems.isEmpty, "iteration \(i)")
                #expect(ConfigLimits.frequencyGHz.contains(d.frequencyGHz), "iteration \(i)")
                for (key, path) in MachineDescription.timingKeys {
                    #expect(ConfigLimits.timing[key]!.values.contains(d.timing[keyPath: path]), "iteration \(i): \(key)")
                }
                #expect(d.caches.allSatisfy { ConfigLimits.cacheBytes.contains($0.bytes) }, "iteration \(i)")
            } catch {
                rejected += 1
                #expect(error.file == "f.machine")
                if let line = error.line {
                    #expect((1...lineCount).contains(line), "iteration \(i): \(error)")
                } else {
                    #expect(Self.wholeFile.contains { error.message.hasPrefix($0) }, "iteration \(i): no line: \(error)")
                }
            }
        }
        #expect(accepted > iterations / 20 && rejected > iterations / 5, "accepted \(accepted), rejected \(rejected)")
    }
}
