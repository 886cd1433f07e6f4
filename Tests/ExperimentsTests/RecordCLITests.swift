import Foundation
import Testing
import TestSupport

/// `thpsim record` through the built binary and the plugin built beside it.
@Suite("thpsim record on the command line",
       .enabled(if: Binary.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"),
       .enabled(if: RecordingFixtures.qemu != nil, "qemu-x86_64 is not installed (Debian: qemu-user)"),
       .enabled(if: RecordingFixtures.recordee != nil, "no C compiler to build the test program"))
struct RecordCLITests {
    /// The cells of a `--json` report: (enabled, result object).
    static func cells(_ json: String) throws -> [String: [String: Any]] {
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let results = try #require(object?["results"] as? [[String: Any]])
        var out: [String: [String: Any]] = [:]
        for r in results {
            let cell = try #require(r["cell"] as? [String: Any])
            out[try #require(cell["enabled"] as? String)] = r
        }
        return out
    }

    @Test("record --replay compares never and always on a real program, with run's JSON keys")
    func replayAsItRuns() throws {
        let r = try Binary.run(["record", "--replay", "--enabled", "never,always", "--json", "--",
                                RecordingFixtures.recordee!, RecordingFixtures.file("cli-addresses.txt")])
        #expect(r.status == 0 && !r.crashed, "stderr: \(r.err)")
        let cells = try Self.cells(r.out)
        let never = try #require(cells["never"]), always = try #require(cells["always"])
        #expect(always["speedupVsNever"] as? Double != nil)
        #expect((never["instructions"] as? Int ?? 0) > 100_000)
        let vmNever = try #require(never["vmstat"] as? [String: Any]), vmAlways = try #require(always["vmstat"] as? [String: Any])
        // 8 MiB advised and written: at least three aligned 2 MiB ranges fault huge under always.
        #expect((vmAlways["thp_fault_alloc"] as? Int ?? 0) >= 3)
        #expect((vmNever["thp_fault_alloc"] as? Int ?? 0) == 0)
    }

    @Test("record --out writes a trace that replays; the summary names its records")
    func writeAndReplay() throws {
        let trace = RecordingFixtures.file("cli.trace")
        let r = try Binary.run(["record", "--out", trace, "--", RecordingFixtures.recordee!, RecordingFixtures.file("a.txt")])
        #expect(r.status == 0, "stderr: \(r.err)")
        #expect(r.out.contains("records in"))
        let replay = try Binary.run(["replay", trace, "--enabled", "always"])
        #expect(replay.status == 0 && replay.out.contains("thp_fault_alloc"), "stderr: \(replay.err)")
    }

    @Test("bad programs and options get one clear line and a non-zero status, and leave no trace", arguments: [
        (["--out", "T", "--", "/nonexistent/program"], "no such file", Int32(127)),
        (["--out", "T", "--", "no-such-command-thpsim"], "not found on PATH", 127),
        (["--out", "T", "--with", "qemu", "--qemu", "/nonexistent/qemu-x86_64", "--", "/bin/true"], "qemu-user", 2),
        (["--out", "T", "--with", "vmware", "--", "/bin/true"], "--with", 64),
        (["--", "/bin/true"], "give --out FILE, --replay, or both", 64),
        (["--out", "/nonexistent/dir/x.trace", "--", "/bin/true"], "no directory", 64),
        (["--out", "T", "--window", "5M", "--sample-every", "1M", "--", "/bin/true"], "--sample-every", 64),
        (["--out", "T", "--plugin", "/etc/hostname", "--", "/bin/true"], "the capture plugin did not start", 1),
    ] as [([String], String, Int32)])
    func badInput(arguments: [String], expected: String, status: Int32) throws {
        let trace = RecordingFixtures.file("bad.trace")
        let r = try Binary.run(["record"] + arguments.map { $0 == "T" ? trace : $0 })
        #expect(!r.crashed)
        #expect(r.status == status, "stderr: \(r.err)")
        #expect(r.err.contains(expected), "stderr: \(r.err)")
        #expect(!FileManager.default.fileExists(atPath: trace))
    }

    @Test("SIGTERM stops the recorded program; the trace holds what it did and replays")
    func interrupted() throws {
        let trace = RecordingFixtures.file("interrupted.trace")
        let p = Process()
        p.executableURL = Binary.thpsim
        p.arguments = ["record", "--out", trace, "--", "/bin/sh", "-c", "while :; do :; done"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = Pipe()
        try p.run()
        Thread.sleep(forTimeInterval: 1.5)
        p.terminate()
        let deadline = Date().addingTimeInterval(15)
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        #expect(!p.isRunning, "record did not stop within 15 s of SIGTERM")
        if p.isRunning { kill(p.processIdentifier, SIGKILL); return }
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationReason == .exit && p.terminationStatus != 0)
        #expect(message.contains("interrupted"), "stderr: \(message)")
        let replay = try Binary.run(["replay", trace])
        #expect(replay.status == 0, "stderr: \(replay.err)")
    }

    @Test("a full disk stops the recording with an error naming the file")
    func diskFull() throws {
        let r = try Binary.run(["record", "--out", "/dev/full", "--", RecordingFixtures.recordee!, RecordingFixtures.file("full.txt")])
        #expect(!r.crashed && r.status == 1)
        #expect(r.err.contains("writing /dev/full failed"), "stderr: \(r.err)")
    }

    @Test("--max-trace-size stops the program once the trace reaches it; replay reports the trace cut short")
    func sizeLimit() throws {
        let trace = RecordingFixtures.file("limited.trace")
        let r = try Binary.run(["record", "--out", trace, "--max-trace-size", "1M", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=1000000"])
        #expect(!r.crashed && r.status == 1)
        #expect(r.err.contains("--max-trace-size"), "stderr: \(r.err)")
        let size = (try FileManager.default.attributesOfItem(atPath: trace)[.size] as? Int) ?? 0
        #expect(size > 0 && size <= 1 << 20)
        let replay = try Binary.run(["replay", trace])
        #expect(replay.status == 2 && replay.err.contains("truncated"), "stderr: \(replay.err)")
    }

    @Test("a sampled recording's TLB miss rate and steady speedup stay near the full recording's")
    func samplingAccuracy() throws {
        // sort of 20,000 seeded lines: about 30 M accesses, 1 M instructions sampled in every 5 M.
        let input = RecordingFixtures.file("lines.txt")
        var rng = SplitMix64(seed: 3)
        var text = ""
        for _ in 0..<20_000 { text += "\(rng.next() % 1_000_000_000) \(rng.next() % 100_000)\n" }
        try Data(text.utf8).write(to: URL(fileURLWithPath: input))
        func measure(_ sampling: [String]) throws -> (l1PerK: Double, steady: Double) {
            let r = try Binary.run(["record", "--replay", "--enabled", "never,always", "--json"] + sampling
                                   + ["--", "sort", "--parallel=1", input, "-o", "/dev/null"])
            #expect(r.status == 0, "stderr: \(r.err)")
            let cells = try Self.cells(r.out)
            let never = try #require(cells["never"]), always = try #require(cells["always"])
            let tlb = try #require(never["tlb"] as? [String: Any])
            let accesses = try #require((never["accesses"] as? [String: Any])?["total"] as? Double)
            let l1 = try #require(tlb["l1Misses"] as? Double)
            let cyclesNever = try #require(never["accessCycles"] as? Double), cyclesAlways = try #require(always["accessCycles"] as? Double)
            return (1000 * l1 / accesses, cyclesNever / cyclesAlways)
        }
        let full = try measure([])
        let sampled = try measure(["--window", "1M", "--sample-every", "5M"])
        #expect(abs(sampled.steady - full.steady) <= 0.02, "steady speedup full \(full.steady), sampled \(sampled.steady)")
        #expect(sampled.l1PerK <= full.l1PerK * 1.5 && sampled.l1PerK >= full.l1PerK / 1.5,
                "dTLB L1 misses per 1K: full \(full.l1PerK), sampled \(sampled.l1PerK)")
    }
}
