import Foundation
import Testing

/// What a new user hits with bad input, through the built binary: each case ends with a message
/// naming the file (and line) or option, a non-zero status, no crash, and no output file left behind.
@Suite("Bad input on the command line", .enabled(if: Binary.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
struct BadInputCLITests {
    static let root = Small.packageRoot

    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = temporaryFile(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test("a CRLF scenario runs every check it has, as the LF file does")
    func crlfScenario() throws {
        let original = try String(contentsOf: Self.root.appendingPathComponent("scenarios/native-smoke/fork-cow.scen"), encoding: .utf8)
        for (name, text) in [("lf.scen", original), ("crlf.scen", original.replacingOccurrences(of: "\n", with: "\r\n")),
                             ("crlf-nocomment.scen", original.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined(separator: "\r\n"))] {
            let r = try Binary.run(["scenario", try write(name, Array(text.utf8))])
            #expect(r.status == 0 && !r.crashed, "\(name): \(r.err)")
            #expect(r.out.contains("PASS — 7 passed, 0 failed"), "\(name): \(r.out)")
        }
    }

    @Test("--cache-model accepts full and sampled and names the option otherwise, on every command that has it")
    func cacheModel() throws {
        for command in [["workload", "gups", "--size", "16M", "--accesses", "1000"], ["run", "--workload", "gups", "--size", "16M", "--accesses", "1000"],
                        ["calibrate", "--sizes", "4M", "--patterns", "seq", "--accesses", "1000"]] {
            let bad = try Binary.run(command + ["--cache-model", "exact"])
            #expect(bad.status == 64 && !bad.crashed, "\(command): \(bad.err)")
            #expect(bad.err.contains("--cache-model: 'exact' is not full or sampled"), "\(command): \(bad.err)")
            for kind in ["full", "sampled"] {
                let good = try Binary.run(command + ["--cache-model", kind])
                #expect(good.status == 0 && !good.crashed, "\(command) \(kind): \(good.err)")
            }
        }
    }

    @Test("--cache-thread accepts auto, on and off, names the option otherwise, and changes no answer")
    func cacheThread() throws {
        let command = ["workload", "gups", "--size", "16M", "--accesses", "20000", "--enabled", "never", "--json"]
        let bad = try Binary.run(command + ["--cache-thread", "yes"])
        #expect(bad.status == 64 && !bad.crashed, "\(bad.err)")
        #expect(bad.err.contains("--cache-thread: 'yes' is not auto, on or off"), "\(bad.err)")
        let runs = try ["auto", "on", "off"].map { try Binary.run(command + ["--cache-thread", $0]) }
        for r in runs { #expect(r.status == 0 && !r.crashed, "\(r.err)") }
        #expect(runs[0].out == runs[2].out && runs[1].out == runs[2].out)
    }

    @Test("thpsim run's --cache-thread accepts auto, on and off, names the option otherwise, and changes no answer")
    func runCacheThread() throws {
        let command = ["run", "--workload", "gups", "--size", "16M", "--accesses", "20000", "--enabled", "never", "--jobs", "1", "--json", "--no-progress"]
        let bad = try Binary.run(command + ["--cache-thread", "sometimes"])
        #expect(bad.status == 64 && !bad.crashed, "\(bad.err)")
        #expect(bad.err.contains("--cache-thread: 'sometimes' is not auto, on or off"), "\(bad.err)")
        let runs = try ["on", "off"].map { try Binary.run(command + ["--cache-thread", $0]) }
        for r in runs { #expect(r.status == 0 && !r.crashed, "\(r.err)") }
        #expect(runs[0].out == runs[1].out && !runs[0].out.isEmpty)
    }

    @Test("a scenario with no expect line fails, naming the file")
    func scenarioWithoutChecks() throws {
        let path = try write("nochecks.scen", Array("# nothing checked\nmmap A 4M\nwrite A 4K".utf8))
        let r = try Binary.run(["scenario", path])
        #expect(r.status == 2 && !r.crashed)
        #expect(r.err.contains("\(path):3: error: the file ends without an `expect` line"), "\(r.err)")
        #expect(!r.out.contains("PASS"))
    }

    @Test("scenario swap sizes: 0 runs with no swap, 6K says why it is refused")
    func swapSizes() throws {
        let none = try write("swap0.scen", Array("swap 0\nmmap A 4M\nwrite A 4M\nmadvise A 4M pageout\nexpect meminfo SwapTotal=0\nexpect smaps A Swap=0\n".utf8))
        let r = try Binary.run(["scenario", none])
        #expect(r.status == 0 && r.out.contains("PASS — 2 passed"), "\(r.out)\(r.err)")
        let odd = try write("swap6k.scen", Array("swap 6K\nmmap A 4M\nexpect smaps A Swap=0\n".utf8))
        let e = try Binary.run(["scenario", odd])
        #expect(e.status == 2 && e.err.contains("\(odd):1: error: swap 6K is not a multiple of 4K"), "\(e.err)")
    }

    @Test("import lackey refuses a directory, a missing file, garbage, binary, empty and endless logs, naming the file; no trace is left",
          arguments: ["directory", "missing", "garbage", "binary", "empty", "endless"])
    func importRefuses(kind: String) throws {
        let out = temporaryFile("import-\(kind).trace")
        try? FileManager.default.removeItem(atPath: out)
        let input: String, expected: String
        switch kind {
        case "directory":
            input = temporaryFile("a-directory"); expected = "\(input): error: cannot read the log: it is a directory"
            try FileManager.default.createDirectory(atPath: input, withIntermediateDirectories: true)
        case "missing":
            input = temporaryFile("no-such.log"); expected = "\(input): error: cannot read the log: no such file"
        case "garbage":
            input = try write("garbage.log", Array((1...3889).map { "hello \($0)" }.joined(separator: "\n").utf8))
            expected = "\(input):1: error: no line of 3889 is a lackey record"
        case "binary":
            input = Binary.thpsim!.path; expected = "\(input):1: error: no line of"
        case "endless":
            input = "/dev/zero"; expected = "/dev/zero:1: error: no line of 1 is a lackey record"
        default:
            input = try write("empty.log", []); expected = "\(input):1: error: no lackey records in 0 lines"
        }
        let r = try Binary.run(["import", "lackey", input, "--out", out])
        #expect(r.status == 2 && !r.crashed, "\(r.err)")
        #expect(r.err.contains(expected), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: out))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: URL(fileURLWithPath: out).deletingLastPathComponent().path)
        #expect(!leftovers.contains { $0.contains("import-\(kind).trace.partial") }, "\(leftovers)")
    }

    @Test("import lackey keeps an existing trace when the new log is refused; an output that is the log, a folder, or in no folder is refused")
    func importKeepsOldTrace() throws {
        let out = temporaryFile("keep.trace")
        let good = try write("good.log", Array("==1== Lackey\nI  0401ab70,3\n L 1fff000670,8\n".utf8))
        let first = try Binary.run(["import", "lackey", good, "--out", out])
        #expect(first.status == 0 && first.out.contains("4 records from 3 lines"), "\(first.out)\(first.err)")
        let before = try Data(contentsOf: URL(fileURLWithPath: out))
        let bad = try write("bad.log", Array("not lackey\n".utf8))
        #expect(try Binary.run(["import", "lackey", bad, "--out", out]).status == 2)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == before)
        let same = try Binary.run(["import", "lackey", good, "--out", good])
        #expect(same.status == 2 && same.err.contains("would overwrite the log"), "\(same.err)")
        let nowhere = try Binary.run(["import", "lackey", good, "--out", "/nonexistent/folder/x.trace"])
        #expect(nowhere.status == 2 && nowhere.err.contains("the folder /nonexistent/folder does not exist or is not writable"), "\(nowhere.err)")
        let folder = try Binary.run(["import", "lackey", good, "--out", FileManager.default.temporaryDirectory.path])
        #expect(folder.status == 2 && folder.err.contains("cannot write the trace: it is a directory"), "\(folder.err)")
    }

    @Test("a machine file's out-of-range number is refused by machines and run alike, with file:line and the range",
          arguments: [["machines"], ["run", "--workload", "gups", "--size", "8M", "--accesses", "1K", "--machine"]])
    func machineOutOfRange(command: [String]) throws {
        // A file per case: the cases run at once, and one rewriting the file while the other reads it
        // made the reader see it empty.
        let path = try write("huge-\(command[0]).machine", Array("based-on zen4\nname huge\ntiming memory-ns 1e308\n".utf8))
        let r = try Binary.run(command + [path])
        #expect(r.status != 0 && !r.crashed, "\(r.err)")
        #expect(r.err.contains("\(path):3: memory-ns must be a number from 0 to 10,000 ns, not '1e308'"), "\(r.err)")
    }

    @Test("negative sizes and counts say they are negative, naming the option", arguments: [
        (["run", "--workload", "gups", "--size", "-1"], "--size: '-1' is negative"),
        (["run", "--workload", "gups", "--size=-1"], "--size: '-1' is negative"),
        (["workload", "gups", "--size", "-4K"], "--size: '-4K' is negative"),
        (["run", "--workload", "gups", "--accesses", "-5"], "--accesses: '-5' is negative"),
        (["workload", "gups", "--stride", "-8"], "--stride: '-8' is negative"),
        (["run", "--workload", "gups", "--size", "0"], "--size must be a positive multiple of 4K"),
        (["run", "--workload", "gups", "--memory", "-1"], "--memory: '-1' is negative"),
        (["workload", "gups", "--memory", "-1G"], "--memory: '-1G' is negative"),
        (["record", "--replay", "--skip", "-5", "--", "/bin/true"], "--skip: '-5' is negative"),
    ] as [([String], String)])
    func negativeSizes(arguments: [String], expected: String) throws {
        let r = try Binary.run(arguments)
        #expect(r.status != 0 && !r.crashed)
        #expect(r.err.contains(expected), "\(r.err)")
    }
}
