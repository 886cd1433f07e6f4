#if canImport(Glibc)
import Foundation
import Glibc
import Testing
@testable import Scenarios

/// A native run that is told to stop (SIGTERM, Ctrl-C's SIGINT, a closed terminal's SIGHUP) puts the
/// host back before it exits: every THP tunable it changed, its processes killed, exit status
/// 128 + the signal. The runs go through the built `thpsim` (see `ScenarioNativeTests`) on a scenario
/// that forks, sets `khugepaged/scan_sleep_millisecs` and then waits for 1000 khugepaged full scans
/// (days at that sleep), so the signal finds it having changed the host and not done. Nested in `ScenarioNativeTests`, whose
/// `.serialized` covers it: native runs write the host's tunables, so no two may overlap.
extension ScenarioNativeTests {
@Suite("Native scenarios: signals", .serialized)
struct Signals {
    static let knob = "/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs"

    static func readKnob() -> String {
        ((try? String(contentsOfFile: knob, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A scenario that forks, changes the tunable to `value` (so the change shows both processes exist), and waits for khugepaged.
    static func waitingScenario(setting value: String) throws -> URL {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("thpsim-signal-\(getpid())-\(value).scen")
        let text = """
            mmap A 4K
            write A 4K
            fork child
            set khugepaged/scan_sleep_millisecs=\(value)
            khugepaged full_scans=1000
            expect smaps A Rss=4kB

            """
        try text.write(to: file, atomically: true, encoding: .utf8)
        return file
    }

    /// How a run that was sent signals ended: `exited` with `status`, or killed by signal `status`.
    struct Outcome {
        var exited: Bool
        var status: Int32
        var output: String
    }

    /// A child that runs `thpsim` with the three stopping signals unblocked and at their default, as a
    /// shell starts it (Foundation's `Process` would hand down the spawning thread's mask, in which
    /// the test runner blocks them), its output to `output`.
    final class Child {
        let pid: pid_t
        private(set) var waitStatus: Int32?

        init(_ arguments: [String], output: String) throws {
            guard let path = ScenarioNativeTests.thpsim?.path else { throw ScenarioError.run("no thpsim binary") }
            var attributes = posix_spawnattr_t()
            posix_spawnattr_init(&attributes)
            defer { posix_spawnattr_destroy(&attributes) }
            var none = sigset_t(), stopping = sigset_t()
            sigemptyset(&none)
            sigemptyset(&stopping)
            for signal in [SIGHUP, SIGINT, SIGTERM] { sigaddset(&stopping, signal) }
            posix_spawnattr_setsigmask(&attributes, &none)
            posix_spawnattr_setsigdefault(&attributes, &stopping)
            posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
            let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
            defer { for p in argv { free(p) } }
            var pid: pid_t = 0
            let error = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
            guard error == 0 else { throw ScenarioError.run("posix_spawn \(path): \(String(cString: strerror(error)))") }
            self.pid = pid
        }

        /// Whether it still runs (reaps it once it ended; its pid stays ours to signal until then).
        var isRunning: Bool {
            guard waitStatus == nil else { return false }
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { waitStatus = status }
            if r < 0 { waitStatus = -1 }   // reaped by someone else: how it ended is lost
            return r == 0
        }

        /// Waits up to `seconds`, then kills it; whether it ended by itself.
        func wait(seconds: Double) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while isRunning && Date() < deadline { usleep(5000) }
            guard isRunning else { return true }
            kill(pid, SIGKILL)
            while isRunning { usleep(5000) }
            return false
        }
    }

    /// Starts `thpsim scenario --native` on the waiting scenario, waits until it has changed the
    /// tunable, then calls `send` with it; returns how it ended. Puts the tunable back itself if the
    /// run did not, so a failing test leaves the machine as it was.
    static func interrupt(_ send: (Child) -> Void) throws -> (before: String, outcome: Outcome) {
        let before = try ScenarioNativeTests.settled([knob])[0].trimmingCharacters(in: .whitespacesAndNewlines)
        let changed = before == "600000" ? "600001" : "600000"
        let file = try waitingScenario(setting: changed)
        defer { try? FileManager.default.removeItem(at: file) }
        defer {
            if readKnob() != before {
                _ = try? before.write(toFile: knob, atomically: false, encoding: .utf8)
                Issue.record("the run left \(knob) changed; the test put \(before) back")
            }
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("thpsim-signal-\(getpid()).out").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let child = try Child(["scenario", "--native", file.path], output: output)
        // Another native run may hold the host for a while: wait for this one's change (bounded).
        let deadline = Date().addingTimeInterval(900)
        while readKnob() != changed && child.isRunning && Date() < deadline { usleep(10_000) }
        let reachedWait = readKnob() == changed
        if reachedWait { send(child) }
        let ended = child.wait(seconds: reachedWait ? 60 : 0)
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        #expect(reachedWait, "the run never changed \(knob): \(text)")
        #expect(ended, "thpsim did not exit within 60 s of the signal: \(text)")
        let status = child.waitStatus ?? 0
        #expect(status != -1, "the test lost the child's exit status")
        let exited = status & 0x7f == 0
        return (before, Outcome(exited: exited, status: exited ? (status >> 8) & 0xff : status & 0x7f, output: text))
    }

    /// The pids the run's line says it killed.
    static func killedPids(_ output: String) -> [pid_t] {
        guard let range = output.range(of: "stopped scenario processes ") else { return [] }
        return output[range.upperBound...].prefix { $0 != ";" && $0 != "\n" }
            .split(separator: ",").compactMap { pid_t($0.trimmingCharacters(in: .whitespaces)) }
    }

    @Test("a signal restores the tunables, kills the scenario's processes and exits with 128 + the signal",
          .enabled(if: ScenarioNativeTests.isRoot, "native scenarios need root"),
          .enabled(if: FileManager.default.isWritableFile(atPath: knob), "this kernel has no writable \(knob)"),
          .enabled(if: ScenarioNativeTests.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"),
          arguments: [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT"), (SIGHUP, "SIGHUP")])
    func restoresOnSignal(signal: Int32, name: String) throws {
        let (before, outcome) = try Self.interrupt { kill($0.pid, signal) }
        #expect(outcome.exited, "thpsim died of signal \(outcome.status) instead of handling it: \(outcome.output)")
        #expect(outcome.status == 128 + signal, "\(outcome.output)")
        #expect(Self.readKnob() == before)
        let line = outcome.output.split(separator: "\n").first { $0.contains(name) }.map(String.init) ?? ""
        #expect(line.contains("restored khugepaged/scan_sleep_millisecs=\(before)"), "\(outcome.output)")
        let pids = Self.killedPids(line)
        #expect(pids.count == 2, "the parent and the forked child: \(line)")
        for pid in pids {
            #expect(kill(pid, 0) != 0 && errno == ESRCH, "scenario process \(pid) still exists")
        }
    }

    @Test("a run killed outright (SIGKILL) leaves its journal in the lock file, and the next run puts the host back first",
          .enabled(if: ScenarioNativeTests.isRoot, "native scenarios need root"),
          .enabled(if: FileManager.default.isWritableFile(atPath: knob), "this kernel has no writable \(knob)"),
          .enabled(if: ScenarioNativeTests.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
    func recoversAfterSIGKILL() throws {
        let before = try ScenarioNativeTests.settled([Self.knob])[0].trimmingCharacters(in: .whitespacesAndNewlines)
        let changed = before == "600000" ? "600001" : "600000"
        let waiting = try Self.waitingScenario(setting: changed)
        let quick = FileManager.default.temporaryDirectory.appendingPathComponent("thpsim-recover-\(getpid()).scen")
        try "mmap A 4K\nwrite A 4K\nexpect smaps A Rss=4kB\n".write(to: quick, atomically: true, encoding: .utf8)
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("thpsim-recover-\(getpid()).out").path
        defer {
            for path in [waiting.path, quick.path, output] { try? FileManager.default.removeItem(atPath: path) }
            if Self.readKnob() != before {
                _ = try? before.write(toFile: Self.knob, atomically: false, encoding: .utf8)
                Issue.record("\(Self.knob) was left changed; the test put \(before) back")
            }
        }
        let killed = try Child(["scenario", "--native", waiting.path], output: output)
        let deadline = Date().addingTimeInterval(900)
        while Self.readKnob() != changed && killed.isRunning && Date() < deadline { usleep(10_000) }
        try #require(Self.readKnob() == changed, "the run never changed \(Self.knob)")
        kill(killed.pid, SIGKILL)
        _ = killed.wait(seconds: 60)
        // Nothing could put it back: the journal says what to.
        #expect(Self.readKnob() == changed)
        let journal = (try? String(contentsOfFile: NativeHostLock.defaultPath, encoding: .utf8)) ?? ""
        #expect(journal.contains("pid \(killed.pid)\n") && journal.contains("tunable khugepaged/scan_sleep_millisecs=\(before)\n"), "\(journal)")

        let next = try Child(["scenario", "--native", quick.path], output: output)
        #expect(next.wait(seconds: 900))
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        #expect(text.contains("native run \(killed.pid) ended without putting the host back; restored khugepaged/scan_sleep_millisecs=\(before)"), "\(text)")
        #expect(text.contains("PASS"), "\(text)")
        #expect(Self.readKnob() == before)
        #expect(((try? String(contentsOfFile: NativeHostLock.defaultPath, encoding: .utf8)) ?? "x").isEmpty, "the journal is emptied when the run ends")
    }

    @Test("signals that arrive while the run puts the host back do not cut the restore short",
          .enabled(if: ScenarioNativeTests.isRoot, "native scenarios need root"),
          .enabled(if: FileManager.default.isWritableFile(atPath: knob), "this kernel has no writable \(knob)"),
          .enabled(if: ScenarioNativeTests.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
    func repeatedSignals() throws {
        let (before, outcome) = try Self.interrupt { child in
            // All three, over and over, until it is gone: most arrive while it restores.
            var sent = 0
            while child.isRunning, sent < 5000 {
                kill(child.pid, [SIGTERM, SIGINT, SIGHUP][sent % 3])
                sent += 1
                usleep(200)
            }
            #expect(sent > 3, "signals kept coming after the first, while it restored")
        }
        #expect(outcome.exited, "thpsim died of signal \(outcome.status): \(outcome.output)")
        #expect([128 + SIGTERM, 128 + SIGINT, 128 + SIGHUP].contains(outcome.status), "\(outcome.output)")
        #expect(Self.readKnob() == before)
        #expect(outcome.output.contains("restored khugepaged/scan_sleep_millisecs=\(before)"), "\(outcome.output)")
        #expect(outcome.output.split(separator: "\n").filter { $0.hasPrefix("thpsim: SIG") }.count == 1, "one line: \(outcome.output)")
    }
}
}
#endif
