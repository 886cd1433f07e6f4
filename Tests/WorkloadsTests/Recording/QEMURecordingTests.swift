import Testing
import Foundation
import VMCore
import Kernel
@testable import Workloads
import TestSupport

/// Records `command` under QEMU with the capture plugin and decodes the stream as it arrives.
func recordWithQEMU(_ command: [String], sampling: CaptureSampling = .init()) throws -> (Recorder, ProgramExit, CaptureMessages) {
    let broadcast = CaptureBroadcast(readers: 1)
    let messages = CaptureMessages()
    nonisolated(unsafe) var decoded: Result<Recorder, TraceError> = .success(Recorder())
    let done = DispatchSemaphore(value: 0)
    let input = broadcast.input(0)
    Thread.detachNewThread {
        var reader = TraceReader(stream: input)
        reader.onMessage = { messages.handle($0) }
        var r = Recorder()
        decoded = Result { () throws(TraceError) in _ = try reader.replay(into: &r); return r }
        done.signal()
    }
    let exit = try QEMURecorder.record(command, qemu: RecordingFixtures.qemu!, plugin: RecordingFixtures.plugin!,
                                       sampling: sampling, into: broadcast)
    done.wait()
    return (try decoded.get(), exit, messages)
}

extension Recorder {
    /// The distinct pages of `[start, start + length)` that `thread` (any thread when nil) used with `kind`.
    func pages(_ kind: AccessKind, thread: Int? = nil, in start: UInt64, _ length: UInt64) -> Set<UInt64> {
        var s = Set<UInt64>()
        for case .run(let r) in items where r.kind == kind && (thread == nil || r.thread == thread)
            && r.page >= start >> 12 && r.page < (start + length) >> 12 { s.insert(r.page) }
        return s
    }
    var events: [(Int, WorkloadEvent)] { items.compactMap { if case .event(let t, let e) = $0 { (t, e) } else { nil } } }
    var accessCount: Int { items.reduce(0) { if case .run(let r) = $1 { $0 + r.count } else { $0 } } }
}

@Suite("Recording real programs with QEMU's user-mode emulator",
       .enabled(if: RecordingFixtures.qemu != nil, "qemu-x86_64 is not installed (Debian: qemu-user)"),
       .enabled(if: RecordingFixtures.plugin != nil && RecordingFixtures.recordee != nil, "no C compiler to build the plugin and the test program"))
struct QEMURecordingTests {
    @Test("the trace holds the program's mappings, advice, protection, unmapping, thread and fork, in order")
    func systemCalls() throws {
        let file = RecordingFixtures.file("addresses.txt")
        let (r, exit, messages) = try recordWithQEMU([RecordingFixtures.recordee!, file])
        #expect(exit.status == 0)
        #expect(messages.pluginAPI == 1)
        let (a, b, c) = try #require(RecordingFixtures.addresses(file))
        let events = r.events
        func index(_ match: ((Int, WorkloadEvent)) -> Bool) -> Int? { events.firstIndex(where: match) }
        let mapA = index { $0.0 == 0 && $0.1 == .mmap(address: a, length: 8 << 20, protection: .readWrite, shared: false) }
        let mapB = index { $0.0 == 0 && $0.1 == .mmap(address: b, length: 1 << 20, protection: .readWrite, shared: false) }
        let mapC = index { $0.0 == 0 && $0.1 == .mmap(address: c, length: 256 << 10, protection: .readWrite, shared: false) }
        let advise = index { $0.0 == 0 && $0.1 == .madvise(address: a, length: 8 << 20, advice: .hugepage) }
        let protect = index { $0.0 == 0 && $0.1 == .mprotect(address: b, length: 1 << 20, protection: .read) }
        let unmap = index { $0.0 == 0 && $0.1 == .munmap(address: a, length: 2 << 20) }
        let spawns = events.compactMap { if case .spawn(let t) = $0.1, $0.0 == 0 { t } else { nil } }
        let forks = events.compactMap { if case .fork(let t) = $0.1, $0.0 == 0 { t } else { nil } }
        try #require(mapA != nil && mapB != nil && mapC != nil && advise != nil && protect != nil && unmap != nil)
        #expect(mapA! < advise! && advise! < protect! && protect! < unmap!)
        try #require(spawns.count == 1 && forks.count == 1, "spawns \(spawns), forks \(forks), events \(events.filter { if case .mmap = $0.1 { false } else { true } })")
        let (thread, child) = (spawns[0], forks[0])
        #expect(thread != 0 && child != 0 && thread != child)
        // Every page of A and B written by the main thread, C by the new thread, 16 pages of A by the child.
        #expect(r.pages(.store, thread: 0, in: a, 8 << 20).count == 2048)
        #expect(r.pages(.store, thread: 0, in: b, 1 << 20).count == 256)
        #expect(r.pages(.store, thread: thread, in: c, 256 << 10).count == 64)
        #expect(r.pages(.store, thread: child, in: a, 8 << 20).count == 16)
        #expect(events.contains { $0.0 == child && $0.1 == .exit })
        #expect(events.last.map { $0.0 == 0 && $0.1 == .exit } == true)
        // The program and its loader were mapped by exec, before tracing: mapped at first use.
        #expect(messages.implicitPages > 10)
    }

    @Test("sampling keeps every system call and each page's first touch, and fewer accesses")
    func sampling() throws {
        let full = RecordingFixtures.file("full.txt")
        let sampled = RecordingFixtures.file("sampled.txt")
        let (r, exit, _) = try recordWithQEMU([RecordingFixtures.recordee!, full])
        let (s, sampledExit, _) = try recordWithQEMU([RecordingFixtures.recordee!, sampled],
                                                     sampling: CaptureSampling(skip: 1 << 40))
        #expect(exit.status == 0 && sampledExit.status == 0)
        let (a, _, _) = try #require(RecordingFixtures.addresses(sampled))
        #expect(s.pages(.store, thread: 0, in: a, 8 << 20).count == 2048)
        #expect(s.accessCount < r.accessCount / 2, "sampled \(s.accessCount), full \(r.accessCount)")
        let kinds = { (x: Recorder) in x.events.map { e -> String in
            switch e.1 { case .mmap: "mmap"; case .munmap: "munmap"; case .mprotect: "mprotect"; case .madvise: "madvise"
            case .spawn: "spawn"; case .fork: "fork"; case .exit: "exit"; default: "other" } }.filter { $0 != "mmap" } }
        #expect(kinds(s) == kinds(r))
    }

    @Test("with fetches, instruction fetches are runs on the program's code pages")
    func fetches() throws {
        var options = CaptureSampling()
        options.fetches = true
        let (withFetches, exit, messages) = try recordWithQEMU(["/bin/true"], sampling: options)
        let (without, _, _) = try recordWithQEMU(["/bin/true"])
        #expect(exit.status == 0)
        let fetched = withFetches.items.reduce(0) { if case .run(let r) = $1, r.kind == .fetch { $0 + r.count } else { $0 } }
        #expect(!without.items.contains { if case .run(let r) = $0 { r.kind == .fetch } else { false } })
        // Every executed instruction is one fetch.
        #expect(fetched > 10_000 && abs(fetched - messages.instructions) <= messages.instructions / 100,
                "fetches \(fetched), instructions \(messages.instructions)")
    }

    @Test("a program that does not exist, or is not x86-64, is refused before QEMU starts")
    func badPrograms() throws {
        #expect(throws: RecordError.self) { try QEMURecorder.resolve(["/nonexistent/program"]) }
        do { _ = try QEMURecorder.resolve(["/nonexistent/program"]) } catch { #expect(error.exitStatus == 127 && error.description.contains("no such file")) }
        do { _ = try QEMURecorder.resolve(["no-such-command-thpsim"]) } catch { #expect(error.exitStatus == 127 && error.description.contains("not found on PATH")) }
        let text = RecordingFixtures.directory.appendingPathComponent("data.txt").path
        try Data("hello".utf8).write(to: URL(fileURLWithPath: text))
        chmod(text, 0o755)
        do { _ = try QEMURecorder.resolve([text]) } catch { #expect(error.exitStatus == 126 && error.description.contains("not an executable")) }
        #expect(try QEMURecorder.resolve(["sh", "-c", "true"]).first?.hasSuffix("/sh") == true)
    }

    @Test("a #! script is recorded through its interpreter; an execve out of the recorder is reported")
    func scriptsAndExec() throws {
        let script = RecordingFixtures.directory.appendingPathComponent("wrapper.sh").path
        try Data("#!/bin/sh\nexec /bin/true\n".utf8).write(to: URL(fileURLWithPath: script))
        chmod(script, 0o755)
        let command = try QEMURecorder.resolve([script])
        #expect(command.count == 2 && command[0].hasSuffix("sh") && command[1] == script)
        let (_, exit, messages) = try recordWithQEMU(command)
        #expect(exit.status == 0)
        #expect(messages.replacedProcesses.map(\.path) == ["/bin/true"])
    }
}

@Suite("Recording real programs with Valgrind lackey",
       .enabled(if: RecordingFixtures.valgrind != nil, "valgrind is not installed"),
       .enabled(if: RecordingFixtures.recordee != nil, "no C compiler to build the test program"))
struct LackeyRecordingTests {
    @Test("lackey's trace holds the program's mappings, advice, protection and unmapping")
    func systemCalls() throws {
        let file = RecordingFixtures.file("lackey-addresses.txt")
        var converter = LackeyConverter(sink: Recorder())
        let exit = try LackeyRecorder.record([RecordingFixtures.recordee!, file], valgrind: RecordingFixtures.valgrind!, into: &converter)
        #expect(exit.status == 0)
        let r = converter.finish()
        let (a, b, _) = try #require(RecordingFixtures.addresses(file))
        let events = r.events.map(\.1)
        #expect(events.contains(.mmap(address: a, length: 8 << 20, protection: .readWrite, shared: false)))
        #expect(events.contains(.madvise(address: a, length: 8 << 20, advice: .hugepage)))
        #expect(events.contains(.mprotect(address: b, length: 1 << 20, protection: .read)))
        #expect(events.contains(.munmap(address: a, length: 2 << 20)))
        // Lackey has no thread ids: the parent's, the thread's and the child's stores are all thread 0's.
        #expect(r.pages(.store, in: a, 8 << 20).count == 2048)
    }

    @Test("lackey follows execve: a #! wrapper's program is recorded too")
    func followsExec() throws {
        let script = RecordingFixtures.file("wrapper.sh")
        let file = RecordingFixtures.file("wrapped-addresses.txt")
        try Data("#!/bin/sh\nexec \(RecordingFixtures.recordee!) \(file)\n".utf8).write(to: URL(fileURLWithPath: script))
        chmod(script, 0o755)
        var converter = LackeyConverter(sink: Recorder())
        let exit = try LackeyRecorder.record(try QEMURecorder.resolve([script]), valgrind: RecordingFixtures.valgrind!, into: &converter)
        #expect(exit.status == 0)
        let (a, _, _) = try #require(RecordingFixtures.addresses(file))
        #expect(converter.finish().events.map(\.1).contains(.madvise(address: a, length: 8 << 20, advice: .hugepage)))
    }
}
