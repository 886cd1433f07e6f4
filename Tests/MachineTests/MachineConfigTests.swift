import Testing
import Foundation
import Machine

@Suite("Machine config files")
struct MachineConfigTests {
    @Test("a file that spells out Skylake-SP describes the same machine as the preset")
    func fullFileMatchesPreset() throws {
        let text = """
        # Skylake-SP, spelled out
        name skylake-sp
        frequency 2.5
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
        """
        var d = try MachineDescription.parse(text, file: "sky.machine")
        d.source = MachineDescription.skylakeSP.source
        #expect(d == MachineDescription.skylakeSP)
    }

    @Test("based-on starts from a preset; the first array line of a level replaces the preset's")
    func basedOnOverrides() throws {
        let d = try MachineDescription.parse("""
            based-on zen4
            name zen4-bigger
            l2 4k,2m 4096 16   # replaces
            timing memory-ns 120
            pwc pd 0 0         # no PDE cache
            """, file: "x")
        #expect(d.name == "zen4-bigger")
        #expect(d.l2 == [TLBArraySpec([.size4K, .size2M], entries: 4096, ways: 16)])
        #expect(d.l1Data == MachineDescription.zen4.l1Data)
        #expect(d.timing.memoryLatencyNs == 120)
        #expect(d.pdCache.entries == 0)
    }

    @Test("bad input names the file and line and says what is wrong", arguments: [
        ("based-on zen4\nl2 4k,2m 1200 12", 2, "100 sets, not a power of two"),
        ("based-on zen4\nl2 4k,2m 1000 12", 2, "not a multiple of 12 ways"),
        ("based-on zen4\n\nl1d 8k 64 4", 3, "unknown page size '8k'"),
        ("based-on zen4\nfrequncy 3", 2, "unknown setting 'frequncy'"),
        ("based-on zen9", 1, "unknown preset 'zen9'"),
        ("name a\nbased-on zen4", 2, "must come before"),
        ("based-on zen4\ntiming memory-ns fast", 2, "memory-ns must be a number from 0 to 10,000 ns, not 'fast'"),
        ("based-on zen4\ntiming walk-cost 3", 2, "unknown timing key 'walk-cost'"),
        ("based-on zen4\nl1d 4k 64", 2, "takes 3 values"),
        ("based-on zen4\ncache l2 1.5M 8 14", 2, "cache size"),
        ("based-on zen4\nl1d 4k 64 4\nl1d 4k,2m 32 4", 3, "already holds 4k"),
        ("based-on zen4\npwc pte 4 full", 2, "unknown paging-structure cache 'pte'"),
    ])
    func errorsNameFileAndLine(text: String, line: Int, message: String) {
        do {
            _ = try MachineDescription.parse(text, file: "cores/my.machine")
            Issue.record("accepted bad input")
        } catch {
            #expect(error.file == "cores/my.machine")
            #expect(error.line == line)
            #expect(error.message.contains(message), "\(error)")
            #expect(error.description.hasPrefix("cores/my.machine:\(line): "))
        }
    }

    @Test("a file missing required settings, or unreadable, is an error naming the file")
    func missingSettingsAndFiles() {
        #expect(throws: MachineConfigError(file: "f", line: nil, message: "no 'frequency' line (or start with 'based-on PRESET')")) {
            try MachineDescription.parse("name x\n", file: "f")
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("no-such-\(UInt64.random(in: 0...UInt64.max)).machine").path
        do {
            _ = try MachineDescription.load(contentsOf: path)
            Issue.record("read a missing file")
        } catch {
            #expect(error.file == path && error.line == nil && error.message.contains("cannot read"))
        }
    }

    @Test("every preset is buildable", arguments: MachineDescription.presetNames)
    func presetsHaveNoProblems(name: String) {
        #expect(MachineDescription.presets[name]!.problems.isEmpty)
    }
}
