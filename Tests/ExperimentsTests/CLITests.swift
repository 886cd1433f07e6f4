import Foundation
import Testing
@testable import Experiments

/// `thpsim run`, `merge` and `demo` through the built binary: bad input ends with a message naming the
/// option or file and a non-zero status, never a crash.
@Suite("thpsim run and merge on the command line", .enabled(if: Binary.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
struct CLITests {
    static let small = ["--workload", "gups", "--size", "8M", "--accesses", "1K"]

    @Test("bad options are refused, naming the option", arguments: [
        (["run", "--workload", "gups", "--size", "12Q"], "--size"),
        (["run", "--workload", "nosuch"], "--workload"),
        (["run", "--enabled", "sometimes"] + small, "--enabled"),
        (["run", "--design", "linux-9.9"] + small, "--design"),
        (["run", "--policy", "solaris"] + small, "--policy: 'solaris' is not one of linux-2.6.38, linux-6.18"),
        (["run", "--policy", "linux-6.18", "--design", "linux-2.6.38"] + small, "--policy linux-6.18 runs on linux-6.18's mechanism"),
        (["run", "--policy", "linux-6.18", "--set", "linux-6.18/x=1"] + small, "policy linux-6.18 has no knobs"),
        (["run", "--policy", "quicksilver", "--set", "quicksilver/sync_n=513"] + small, "quicksilver/sync_n must be an integer from 0 to 512, not '513'"),
        (["run", "--policy", "freebsd", "--set", "quicksilver/sync_n=1"] + small, "no cell runs policy quicksilver"),
        (["run", "--policy", "freebsd", "--design", "linux-2.6.38"] + small, "--policy freebsd runs on linux-6.18's mechanism"),
        (["workload", "gups", "--size", "8M", "--policy", "solaris"], "--policy: 'solaris' is not one of"),
        (["workload", "gups", "--size", "8M", "--policy", "linux-6.18", "--design", "linux-2.6.38"], "--policy linux-6.18 runs on linux-6.18's mechanism"),
        (["replay", "/nonexistent.trace", "--policy", "solaris"], "--policy: 'solaris' is not one of"),
        (["run", "--machine", "nosuch"] + small, "unknown machine 'nosuch'"),
        (["run", "--set", "khugepaged/max_ptes_none=999"] + small, "max_ptes_none"),
        (["run", "--set", "nonsense"] + small, "--set"),
        (["run", "--shard", "2/2"] + small, "--shard"),
        (["run", "--shard", "one/two"] + small, "--shard"),
        (["run", "--shard", "0/2", "--csv"] + small, "--shard"),
        (["run", "--size", "1G"], "--size applies to synthetic workloads"),
        (["run", "--trace", "/nonexistent/x.trace"], "--trace"),
        (["run", "--accesses", "lots", "--workload", "gups"], "--accesses"),
        (["run", "--jobs", "0"] + small, "--jobs"),
        (["run", "--json", "--csv"] + small, "--json and --csv"),
        (["run", "--html", "/tmp"] + small, "--html /tmp: is a directory"),
        (["run", "--output", "/nonexistent/dir/report.txt"] + small, "--output /nonexistent/dir/report.txt: no directory '/nonexistent/dir'"),
        (["run", "--html", "/tmp/x.html", "--output", "/tmp/./x.html"] + small, "--html and --output name the same file"),
        (["merge", "--csv", "--output", "/", "/nonexistent/shard.json"], "--output /: is a directory"),
        (["merge"], "merge"),
        (["merge", "/nonexistent/shard.json"], "/nonexistent/shard.json: cannot read"),
    ] as [([String], String)])
    func badInput(arguments: [String], expected: String) throws {
        let r = try Binary.run(arguments)
        #expect(!r.crashed)
        #expect(r.status != 0)
        #expect(r.err.contains(expected), "stderr: \(r.err)")
    }

    @Test("merge refuses a file that is not a report, naming it")
    func invalidShardFile() throws {
        let bad = temporaryFile("bad.json")
        try Data("{oops".utf8).write(to: URL(fileURLWithPath: bad))
        let r = try Binary.run(["merge", bad])
        #expect(!r.crashed && r.status == 2)
        #expect(r.err.contains(bad) && r.err.contains("not a thpsim report"), "stderr: \(r.err)")
    }

    @Test("shards written to files merge into the unsharded report, in any format")
    func shardFiles() throws {
        let a = temporaryFile("shard0.json"), b = temporaryFile("shard1.json")
        let grid = Self.small + ["--workload", "heap", "--enabled", "never,always", "--jobs", "1", "--no-progress"]
        #expect(try Binary.run(["run", "--shard", "0/2", "--output", a] + grid).status == 0)
        #expect(try Binary.run(["run", "--shard", "1/2", "--output", b] + grid).status == 0)
        let merged = try Binary.run(["merge", b, a, "--json"])
        let whole = try Binary.run(["run", "--json"] + grid)
        #expect(merged.status == 0 && whole.status == 0)
        #expect(merged.out == whole.out)
        let csv = try Binary.run(["merge", a, b, "--csv"])
        #expect(csv.out.hasPrefix(ExperimentReport.csvColumns.joined(separator: ",") + "\n"))
        #expect(csv.out.split(separator: "\n").count == 1 + 4)
        let missing = try Binary.run(["merge", a])
        #expect(missing.status == 2 && missing.err.contains("missing"), "stderr: \(missing.err)")
        // Progress goes to a terminal only: with stderr a pipe, a run prints nothing there.
        #expect(whole.err.isEmpty)
    }

    @Test("an output file that cannot be written is refused before the grid runs")
    func outputCheckedFirst() throws {
        // A grid that would run for minutes: the refusal must come at once.
        let start = Date()
        let r = try Binary.run(["run", "--workload", "gups", "--size", "4G", "--accesses", "100M", "--html", FileManager.default.temporaryDirectory.path])
        #expect(r.status == 64 && r.err.contains("is a directory"), "stderr: \(r.err)")
        #expect(Date().timeIntervalSince(start) < 10)
    }

    @Test("a run whose program is killed exits 0 but says so on standard error and in the table")
    func killedRun() throws {
        let r = try Binary.run(["run", "--workload", "seq", "--size", "64M", "--accesses", "1K", "--memory", "16M", "--enabled", "never,always"])
        #expect(r.status == 0)
        #expect(r.err.contains("thpsim: warning: 2 of 2 cells' programs were killed"), "stderr: \(r.err)")
        #expect(r.out.contains("killed [1]") && r.out.contains("SIGSEGV"), "\(r.out)")
    }

    @Test("thpsim --version prints the version reports record")
    func version() throws {
        let r = try Binary.run(["--version"])
        #expect(r.status == 0 && r.out.trimmingCharacters(in: .whitespacesAndNewlines) == THPSimVersion.string)
    }

    @Test("thpsim calibrate runs from any directory with its built-in machine")
    func calibrateAnywhere() throws {
        let r = try Binary.run(["calibrate", "--sizes", "4M", "--patterns", "seq", "--accesses", "1000"], in: FileManager.default.temporaryDirectory.path)
        #expect(r.status == 0, "stderr: \(r.err)")
        #expect(r.out.contains("machine this-machine (zen5 under KVM)") && r.out.contains("seq"), "\(r.out)")
    }

    @Test("thpsim demo still runs the demonstration")
    func demo() throws {
        let r = try Binary.run(["demo", "--memory", "256M", "--region", "16M"])
        #expect(r.status == 0)
        #expect(r.out.contains("thpsim demonstration") && r.out.contains("thp_fault_alloc"))
    }
}
