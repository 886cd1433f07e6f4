import ArgumentParser
import Foundation
import Synchronization
import Machine
import Workloads
import Simulation
import Experiments

/// `thpsim record [--out FILE] [--replay …] -- COMMAND ARGS...`: runs a real program under QEMU's
/// user-mode emulator with thpsim's capture plugin (or Valgrind lackey), and writes its trace and/or
/// replays it under THP policies as it runs.
struct RecordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record",
        abstract: "Record a real program's memory behaviour: write its trace, or compare THP policies on it as it runs.",
        discussion: """
        Recorders: qemu (qemu-x86_64 from Debian's qemu-user package with thpsim's capture plugin; \
        the default when it is on PATH) or lackey (Valgrind, hundreds of times slower). \
        --replay compares the program under every cell of --enabled × --design × --machine × --set, \
        as `thpsim run` does, without storing the trace; --out writes it (block-compressed). \
        Sampling (qemu only): --skip N instructions, then a --window of N instructions every \
        --sample-every N; system calls and first touches are always recorded.
        """
    )

    @Option(help: "Trace file to write.")
    var out: String?

    @Option(name: .customLong("max-trace-size"), parsing: .unconditional,
            help: "Stop the program once the trace file reaches this size (default 32G; recording also stops when less than 1G is left free on the disk).")
    var maxTraceSize = "32G"

    @Flag(help: "Replay the program on the model as it runs and print the comparison table (as thpsim run).")
    var replay = false

    @Option(name: .customLong("with"), help: "The recorder: qemu or lackey (default: qemu when qemu-x86_64 is on PATH).")
    var recorder: String?

    @Option(help: "The qemu-x86_64 executable.")
    var qemu = "qemu-x86_64"

    @Option(help: "The capture plugin (default: \(QEMURecorder.pluginFileName) beside this executable).")
    var plugin: String?

    @Option(help: "The valgrind executable.")
    var valgrind = "valgrind"

    @Flag(help: "Also record instruction fetches, as runs per executed block's page (qemu; slower).")
    var fetches = false

    @Option(parsing: .unconditional, help: "Instructions (of all threads) not traced at the start (qemu; e.g. 1G).")
    var skip: String?

    @Option(parsing: .unconditional, help: "Instructions traced in each sampling window (qemu; e.g. 100M).")
    var window: String?

    @Option(name: .customLong("sample-every"), parsing: .unconditional, help: "Instructions from one window's start to the next (qemu; needs --window).")
    var sampleEvery: String?

    @Option(help: "With --replay: THP enabled policies (default: never,madvise,always).")
    var enabled: [String] = []

    @Option(help: "With --replay: kernel design(s) (default: \(SystemBuilder.defaultDesign.name)).")
    var design: [String] = []

    @Option(help: "With --replay: hugepage policies (\(PolicyCatalog.names); default: each design's own).")
    var policy: [String] = []

    @Option(help: "With --replay: machine preset(s) or config file(s) (default: skylake-sp).")
    var machine: [String] = []

    @Option(name: .customLong("cache-model"), help: ArgumentHelp("With --replay: " + CacheModelOption.help))
    var cacheModel: String = CacheModelOption.default.rawValue

    @Option(name: .customLong("cache-thread"), help: ArgumentHelp("With --replay: " + CacheThreadOption.recordHelp))
    var cacheThread: String?

    @Option(name: .customLong("set"), help: "With --replay: a tunable and its value(s), NAME=V1,V2, as in thpsim run.")
    var tunables: [String] = []

    @Option(parsing: .unconditional, help: "With --replay: simulated physical memory per cell (default 8G).")
    var memory: String?

    @OptionGroup var output: ReportOutputOptions

    @Argument(parsing: .postTerminator, help: "The command and its arguments (after --).")
    var command: [String]

    func validate() throws {
        if command.isEmpty { throw ValidationError("give the command to record after --") }
        if out == nil && !replay { throw ValidationError("give --out FILE, --replay, or both") }
        if let recorder, recorder != "qemu" && recorder != "lackey" {
            throw ValidationError("--with: '\(recorder)' is not a recorder (qemu or lackey)")
        }
        if !replay && (!enabled.isEmpty || !design.isEmpty || !policy.isEmpty || !machine.isEmpty || !tunables.isEmpty || memory != nil
                       || cacheThread != nil || output.json || output.csv || output.html != nil) {
            throw ValidationError("--enabled, --design, --policy, --machine, --set, --memory, --cache-thread and the report options apply to --replay")
        }
        if let cacheThread { _ = try CacheThreadOption.parse(cacheThread) }
    }

    func run() throws {
        var sampling = CaptureSampling(skip: try skip.map { UInt64(try parseCount($0, option: "--skip")) } ?? 0,
                                       window: try window.map { UInt64(try parseCount($0, option: "--window")) } ?? 0,
                                       every: try sampleEvery.map { UInt64(try parseCount($0, option: "--sample-every")) } ?? 0)
        sampling.fetches = fetches
        if let problem = sampling.problem { throw ValidationError(problem) }
        let useQEMU: Bool
        switch recorder {
        case "qemu"?:
            guard QEMURecorder.findOnPath(qemu) != nil else {
                fail("\(qemu) is not installed: install Debian's qemu-user package (apt-get install qemu-user), or record with --with lackey")
            }
            useQEMU = true
        case "lackey"?: useQEMU = false
        default: useQEMU = QEMURecorder.findOnPath(qemu) != nil
        }
        if !useQEMU && (sampling.isSampling || fetches) {
            throw ValidationError("--skip, --window, --sample-every and --fetches need the qemu recorder")
        }
        if !useQEMU && QEMURecorder.findOnPath(valgrind) == nil {
            fail("neither qemu-x86_64 nor \(valgrind) is installed: install Debian's qemu-user package (apt-get install qemu-user), or valgrind for --with lackey")
        }
        let program: [String]
        do throws(RecordError) { program = try QEMURecorder.resolve(command) } catch {
            FileHandle.standardError.write(Data("thpsim record: \(error)\n".utf8))
            throw ExitCode(error.exitStatus)
        }
        if let out, let problem = ReportOutputOptions.problem(writing: out) { throw ValidationError("--out \(out): \(problem)") }
        let maxTraceBytes = try parseSize(maxTraceSize, option: "--max-trace-size")
        if maxTraceBytes < 1 << 20 { throw ValidationError("--max-trace-size: at least 1M") }

        // The grid and its cells, built (and every machine loaded) before the program starts.
        var grid = ExperimentGrid(workloads: [.recorded(command.joined(separator: " "))])
        try RunCommand.applyAxes(to: &grid, enabled: enabled, design: design, machine: machine, tunables: tunables, memory: memory,
                                 policy: policy)
        if let problem = grid.problems.first { throw ValidationError(problem) }
        var machines: [String: MachineDescription] = [:]
        if replay { for m in grid.machines { machines[m] = try loadMachine(m) } }
        let cells = replay ? grid.cells : []

        let broadcast = CaptureBroadcast(readers: cells.count + (out == nil ? 0 : 1))
        let format: StreamedRun.Format = useQEMU ? .captureStream : .traceFile
        let messages = CaptureMessages()
        let handle: @Sendable (String) -> Void = { messages.handle($0) }
        let writer = try out.map { path in
            try TraceFileWriterThread(path: path, input: broadcast.input(cells.count), format: format, broadcast: broadcast,
                                      limit: maxTraceBytes, onMessage: cells.isEmpty ? handle : nil)
        }
        var runner = ExperimentRunner(grid: grid, machines: machines)
        runner.cacheModel = try CacheModelOption.parse(cacheModel)
        runner.cacheThread = try CacheThreadOption.parse(cacheThread ?? CacheThreadMode.off.rawValue)
        let streamed: StreamedRun?
        do {
            streamed = replay ? try StreamedRun(runner: runner, cells: cells,
                                                inputs: cells.indices.map { broadcast.input($0) }, format: format,
                                                broadcast: broadcast, onMessage: handle) : nil
        } catch { fail(error.description) }

        let start = Date()
        let exit: ProgramExit
        let showProgress = isatty(STDERR_FILENO) == 1
        do throws(RecordError) {
            if useQEMU {
                exit = try QEMURecorder.record(program, qemu: qemu, plugin: plugin ?? defaultPluginPath(), sampling: sampling,
                                               into: broadcast) { bytes in
                    if showProgress { progressLine("\(bytes >> 20) MiB captured", since: start) }
                }
            } else {
                exit = try recordWithLackey(program, into: broadcast, since: start, showProgress: showProgress)
            }
        } catch {
            // The program never ran: leave no trace file behind.
            broadcast.cancel()
            _ = writer?.finish()
            if let out { try? FileManager.default.removeItem(atPath: out) }
            FileHandle.standardError.write(Data("thpsim record: \(error)\n".utf8))
            throw ExitCode(error.exitStatus)
        }
        if showProgress { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }

        var failure: String?
        let pluginStarted = !useQEMU || messages.pluginAPI != nil
        if let writer {
            switch writer.finish() {
            case .success(let summary): if pluginStarted { print("\(out!): \(summary)") }
            case .failure(let problem): failure = problem.description
            }
        }
        if !pluginStarted {
            // QEMU said why (a file that is not a plugin, an API version it does not support).
            if let out { try? FileManager.default.removeItem(atPath: out) }
            FileHandle.standardError.write(Data("thpsim record: error: the capture plugin did not start (QEMU's message is above); nothing was recorded\n".utf8))
            throw ExitCode(1)
        }
        if let streamed {
            do {
                var report = try streamed.wait()
                if messages.instructions > 0 {
                    for i in report.results.indices { report.results[i].instructions = messages.instructions }
                }
                if failure == nil { try output.emit(report) }
            } catch { failure = failure ?? "\(error)" }
        }
        report(messages, exit: exit, useQEMU: useQEMU)
        if let failure {
            FileHandle.standardError.write(Data("thpsim record: error: \(failure)\n".utf8))
            throw ExitCode(1)
        }
        if exit.status != 0 { throw ExitCode(exit.shellStatus) }
    }

    /// Says how the program ended and what the recording could not follow.
    private func report(_ messages: CaptureMessages, exit: ProgramExit, useQEMU: Bool) {
        var lines: [String] = []
        if useQEMU && messages.instructions > 0 {
            lines.append("the program ran \(messages.instructions) instructions (QEMU's count)")
        }
        if exit.interrupted {
            lines.append("interrupted: the program was stopped; the trace holds what it did until then")
        }
        if exit.status != 0 { lines.append("the program \(exit.description)") }
        for (thread, path) in messages.replacedProcesses {
            let what = thread == 0 ? "the recorded program" : "process of thread \(thread)"
            lines.append("warning: \(what) replaced itself with execve(\(path.isEmpty ? "?" : path)); QEMU user mode does not follow execve, so what it ran next is not in the trace" + (thread == 0 && !path.isEmpty ? ". Record that program directly: thpsim record … -- \(path) ARGS" : ""))
        }
        if !messages.ignoredAdvice.isEmpty {
            let list = messages.ignoredAdvice.sorted { $0.key < $1.key }.map { "\(adviceName($0.key)) ×\($0.value)" }
            lines.append("note: madvise advice the model does not act on was left out: " + list.joined(separator: ", "))
        }
        for e in messages.errors { lines.append("capture error: \(e)") }
        for l in lines { FileHandle.standardError.write(Data("thpsim record: \(l)\n".utf8)) }
    }

    private func recordWithLackey(_ program: [String], into broadcast: CaptureBroadcast, since start: Date,
                                  showProgress: Bool) throws(RecordError) -> ProgramExit {
        let sink: TraceWriter<BroadcastOutput>
        do throws(TraceError) { sink = try TraceWriter(output: BroadcastOutput(broadcast: broadcast)) } catch {
            throw RecordError("\(error)")
        }
        var converter = LackeyConverter(sink: sink)
        let exit: ProgramExit
        do throws(LackeyRecorder.Failure) {
            exit = try LackeyRecorder.record(program, valgrind: valgrind, into: &converter) { c in
                if showProgress { progressLine("\(c.bytes >> 20) MiB of lackey text, \(c.accesses) accesses", since: start) }
            }
        } catch {
            broadcast.end()
            throw RecordError(error.description)
        }
        var writer = converter.finish()
        _ = try? writer.finish()
        broadcast.end()
        return exit
    }
}

/// The plugin beside the running executable (`swift build` puts products in one folder).
func defaultPluginPath() -> String {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent(QEMURecorder.pluginFileName).path
}

/// Linux's name of an madvise advice number.
func adviceName(_ advice: Int) -> String {
    let names = [0: "MADV_NORMAL", 1: "MADV_RANDOM", 2: "MADV_SEQUENTIAL", 3: "MADV_WILLNEED", 8: "MADV_FREE",
                 9: "MADV_REMOVE", 12: "MADV_MERGEABLE", 13: "MADV_UNMERGEABLE", 16: "MADV_DONTDUMP", 17: "MADV_DODUMP",
                 18: "MADV_WIPEONFORK", 19: "MADV_KEEPONFORK", 20: "MADV_COLD", 22: "MADV_POPULATE_READ",
                 23: "MADV_POPULATE_WRITE"]
    return names[advice] ?? "advice \(advice)"
}

private func progressLine(_ text: String, since start: Date) {
    FileHandle.standardError.write(Data(("\rthpsim record: " + text + String(format: " (%.0f s)", Date().timeIntervalSince(start)) + "\u{1B}[K").utf8))
}

/// A trace writer's output that publishes each write to a broadcast (the lackey recorder's path
/// into `--replay` cells and `--out`).
struct BroadcastOutput: TraceOutput {
    let broadcast: CaptureBroadcast
    mutating func write(_ bytes: [UInt8]) throws(TraceError) {
        guard broadcast.publish(bytes) else { throw TraceError(.io, at: 0, expected: "the recording was stopped") }
    }
}

/// Decodes the stream on a thread of its own into a trace file (`--out`); a write that fails (a full
/// disk) cancels the stream, which stops the program.
final class TraceFileWriterThread: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var outcome: Result<String, RecordError> = .failure(RecordError("not finished"))

    init(path: String, input: CaptureBroadcast.Input, format: StreamedRun.Format, broadcast: CaptureBroadcast,
         limit: UInt64, onMessage: (@Sendable (String) -> Void)?) throws {
        let file: TraceFile
        do throws(TraceError) { file = try TraceFile(path: path, mode: .write) } catch { throw ValidationError("--out \(path): \(error)") }
        let box = UncheckedBox((file, input))
        Thread.detachNewThread { [self] in
            let (file, input) = box.value
            outcome = Self.write(file, path: path, input: input, format: format, broadcast: broadcast, limit: limit, onMessage: onMessage)
            done.signal()
        }
    }

    private static func write(_ file: TraceFile, path: String, input: CaptureBroadcast.Input, format: StreamedRun.Format,
                              broadcast: CaptureBroadcast, limit: UInt64, onMessage: (@Sendable (String) -> Void)?) -> Result<String, RecordError> {
        do throws(TraceError) {
            let output = CancellingOutput(file: file, broadcast: broadcast, limit: limit)
            let summary: String
            switch format {
            case .captureStream:
                // The plugin's blocks are copied and compressed, not decoded.
                var copier = try CaptureFileWriter(input: input, output: output)
                copier.onMessage = onMessage
                _ = try copier.run()
                summary = "\(copier.records) records in \(copier.blocks) blocks (\(copier.rawBytes >> 20) MiB before compression)"
            case .traceFile:
                var reader = try TraceReader(input: input)
                var sink = TraceCensus(base: try TraceWriter(output: output))
                _ = try reader.replay(into: &sink)
                _ = try sink.base.finish()
                summary = sink.summary(records: sink.base.records)
            }
            try file.close()
            return .success(summary)
        } catch {
            broadcast.cancel()
            return .failure(RecordError("writing \(path) failed (\(error)); the program was stopped and the trace is cut short (replay reports it as truncated)"))
        }
    }

    /// Waits for the writer; returns its summary line or what went wrong.
    func finish() -> Result<String, RecordError> {
        done.wait()
        return outcome
    }
}

/// A trace file whose first failed write cancels the stream.
/// A trace file whose first failed write cancels the stream, and which stops the recording before
/// it passes `limit` bytes or leaves less than `reserve` bytes free on its file system (a runaway
/// program must not fill the disk).
struct CancellingOutput: TraceOutput {
    let file: TraceFile
    let broadcast: CaptureBroadcast
    let limit: UInt64
    static let reserve: UInt64 = 1 << 30
    private var written: UInt64 = 0
    private var nextSpaceCheck: UInt64 = 0

    init(file: TraceFile, broadcast: CaptureBroadcast, limit: UInt64) {
        self.file = file
        self.broadcast = broadcast
        self.limit = limit
    }

    mutating func write(_ bytes: [UInt8]) throws(TraceError) {
        written += UInt64(bytes.count)
        if written > limit {
            broadcast.cancel()
            throw TraceError(.io, at: Int(written), expected: "the trace reached --max-trace-size (\(limit >> 20) MiB)")
        }
        if written >= nextSpaceCheck {
            nextSpaceCheck = written + (64 << 20)
            var fs = statvfs()
            if statvfs(file.path, &fs) == 0, UInt64(fs.f_bavail) * UInt64(fs.f_frsize) < Self.reserve {
                broadcast.cancel()
                throw TraceError(.io, at: Int(written), expected: "less than \(Self.reserve >> 30) GiB is left free on the trace's file system")
            }
        }
        do throws(TraceError) { try file.write(bytes) } catch {
            broadcast.cancel()
            throw error
        }
    }
}

/// Counts what passes to a sink: accesses, system calls, threads and processes.
struct TraceCensus<Base: WorkloadSink>: WorkloadSink {
    var base: Base
    var accesses = 0, calls = 0, threads = 1, processes = 1
    mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) {
        accesses += count
        base.access(thread: thread, address: address, kind: kind, count: count)
    }
    mutating func event(thread: Int, _ event: WorkloadEvent) {
        switch event {
        case .spawn: threads += 1
        case .fork: threads += 1; processes += 1
        case .mmap, .munmap, .mprotect, .madvise, .mremap, .brk: calls += 1
        default: break
        }
        base.event(thread: thread, event)
    }
    func summary(records: Int) -> String {
        "\(records) records: \(accesses) accesses, \(calls) memory calls, \(threads) threads in \(processes) processes"
    }
}

