import Foundation
import Testing
@testable import Scenarios
import TestSupport

/// Native scenario runs on this machine's kernel, through the built `thpsim` binary.
///
/// The native backend forks real processes, and `fork()` in a multithreaded process (Swift Testing
/// runs tests on a thread pool) is unsafe: a lock held by another thread at the fork stays locked
/// in the child. The backend therefore refuses to start in a multithreaded host, and these tests
/// run `thpsim scenario --native` as a child process (found next to the test bundle, where
/// `swift build` puts it), which is single-threaded. They run only as root on a kernel with THP
/// and when the binary has been built; otherwise the trait records the skip and its reason.
@Suite("Native scenarios", .serialized)
struct ScenarioNativeTests {
    static let isRoot = getuid() == 0
    static let hasTHP = FileManager.default.fileExists(atPath: "/sys/kernel/mm/transparent_hugepage/enabled")
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The `thpsim` executable beside the test bundle, if it was built.
    static var thpsim: URL? {
        let candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent(),
                          URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        return candidates.map { $0.appendingPathComponent("thpsim") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    static func smokeFiles() -> [String] { files(in: "scenarios/native-smoke") }

    /// The transparent hugepage behaviours where the 2010 design and today's kernel agree.
    static func thpFiles() -> [String] { files(in: "scenarios/thp") }

    static func files(in relativeFolder: String) -> [String] {
        let folder = packageRoot.appendingPathComponent(relativeFolder)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { $0.hasSuffix(".scen") }.sorted().map { folder.appendingPathComponent($0).path }
    }

    /// The files' contents with no native run in the middle of changing them: read under the runs'
    /// lock (`NativeHostLock`), so that a native run of another test process (another checkout, or
    /// another test) is not caught with its tunables set and taken for the machine's settings.
    static func settled(_ paths: [String]) throws -> [String] {
        #if canImport(Glibc)
        let (lock, leftover) = try NativeHostLock.acquire(timeout: 900).get()
        defer { lock.release() }
        // A run killed outright left the host changed: put it back, or these are not the settings.
        if let leftover {
            _ = NativeRecovery.undo(leftover.changes)
            lock.clearJournal()
        }
        #endif
        return try paths.map { try String(contentsOfFile: $0, encoding: .utf8) }
    }

    static func runThpsim(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = thpsim
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test("the smoke scenarios pass on the live kernel and on the model (--compare)",
          .enabled(if: isRoot, "native scenarios need root"),
          .enabled(if: hasTHP, "this kernel has no /sys/kernel/mm/transparent_hugepage"),
          .enabled(if: thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
    func smoke() throws {
        let files = Self.smokeFiles()
        #expect(files.count >= 5)
        let before = try Self.settled(["/sys/kernel/mm/transparent_hugepage/enabled"])[0]
        let (status, output) = try Self.runThpsim(["scenario", "--compare", "--json"] + files)
        #expect(status == 0, "\(output)")
        let object = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]
        #expect(object?["passed"] as? Bool == true)
        #expect(object?["mode"] as? String == "compare")
        let after = try String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8)
        #expect(before == after, "the enabled tunable was restored")
    }

    /// The conformance files: at full length (`THPSIM_TEST_LENGTH=full`) all of `scenarios/thp` and
    /// `scenarios/thp-6.18` (about a minute here), else `scenarios/thp-6.18` alone.
    static func conformanceFiles() -> [String] {
        (TestLength.isFull ? thpFiles() : []) + files(in: "scenarios/thp-6.18")
    }

    @Test("the linux-6.18 conformance suite agrees with the live kernel (scenarios/thp-6.18, and scenarios/thp at full length, --design linux-6.18)",
          .enabled(if: isRoot, "native scenarios need root"),
          .enabled(if: hasTHP, "this kernel has no /sys/kernel/mm/transparent_hugepage"),
          .enabled(if: thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
    func conformance() throws {
        let files = Self.conformanceFiles()
        #expect(files.count >= (TestLength.isFull ? Self.thpFiles().count : 0) + 5)
        let knobs = ["enabled", "defrag", "use_zero_page"].map { "/sys/kernel/mm/transparent_hugepage/\($0)" }
        let before = try Self.settled(knobs)
        let (status, output) = try Self.runThpsim(["scenario", "--compare", "--design", "linux-6.18", "--json"] + files)
        #expect(status == 0, "\(output)")
        let object = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]
        #expect(object?["passed"] as? Bool == true)
        #expect(object?["mode"] as? String == "compare")
        #expect((object?["scenarios"] as? [Any])?.count == files.count)
        let after = try knobs.map { try String(contentsOfFile: $0, encoding: .utf8) }
        #expect(before == after, "the THP tunables were restored")
    }

    @Test("a wrong expectation fails natively with file:line, expected and observed",
          .enabled(if: isRoot, "native scenarios need root"),
          .enabled(if: hasTHP, "this kernel has no /sys/kernel/mm/transparent_hugepage"),
          .enabled(if: thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
    func failure() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("thpsim-wrong-\(getpid()).scen")
        try "set enabled=never\nmmap A 4M\nwrite A 8K\nexpect smaps A Rss=12kB\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let (status, output) = try Self.runThpsim(["scenario", "--native", file.path])
        #expect(status == 1)
        #expect(output.contains("\(file.path):4: FAIL Rss=12kB"))
        #expect(output.contains("observed: Rss = 8 kB"))
    }

    @Test("in a multithreaded host the native backend declines to fork, with the reason")
    func refusesThreads() throws {
        let scenario = try ScenarioParser.parse("mmap A 4K", file: "t.scen")
        // Make sure this process has a second thread, whatever the test runner does.
        let thread = Thread { Thread.sleep(forTimeInterval: 2) }
        thread.start()
        let report = ScenarioRunner.run(scenario, on: "native", makeBackend: { () throws(ScenarioError) in try makeNativeScenarioBackend() })
        #expect(report.skipReason != nil)
        #expect(report.passed)
    }
}
