import ArgumentParser
import Foundation
import Workloads

/// `thpsim import lackey FILE --out TRACE`: converts an existing lackey log.
///
/// The trace is written beside `TRACE` under a temporary name and renamed into place only when the
/// log converted cleanly, so a refused log leaves nothing behind. Exit status 2 for a log that
/// cannot be read or is not lackey output (`LackeyConverter.problem()`), naming the file and line.
struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Convert another tool's log into a trace (formats: lackey)."
    )

    @Argument(help: "Format of the log: lackey.")
    var format: String

    @Argument(help: "The log file.")
    var file: String

    @Option(help: "Trace file to write.")
    var out: String

    func run() throws {
        guard format == "lackey" else { throw ValidationError("unknown format '\(format)' (known: lackey)") }
        func fail(_ message: String) -> ExitCode {
            FileHandle.standardError.write(Data("\(message)\n".utf8))
            return ExitCode(2)
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) else {
            throw fail("\(file): error: cannot read the log: no such file")
        }
        guard !isDirectory.boolValue else { throw fail("\(file): error: cannot read the log: it is a directory") }
        guard let input = FileHandle(forReadingAtPath: file) else {
            throw fail("\(file): error: cannot read the log: permission denied")
        }
        let outURL = URL(fileURLWithPath: out).resolvingSymlinksInPath()
        guard outURL.path != URL(fileURLWithPath: file).resolvingSymlinksInPath().path else {
            throw fail("\(out): error: the trace would overwrite the log it is converted from")
        }
        if FileManager.default.fileExists(atPath: out, isDirectory: &isDirectory), isDirectory.boolValue {
            throw fail("\(out): error: cannot write the trace: it is a directory")
        }
        let folder = outURL.deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue,
              FileManager.default.isWritableFile(atPath: folder) else {
            throw fail("\(out): error: cannot write the trace: the folder \(folder) does not exist or is not writable")
        }
        let temporary = outURL.deletingLastPathComponent().appendingPathComponent(".\(outURL.lastPathComponent).partial-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: temporary) }

        let traceFile: TraceFile
        var converter: LackeyConverter<TraceWriter<TraceFile>>
        do throws(TraceError) {
            traceFile = try TraceFile(path: temporary, mode: .write)
            converter = LackeyConverter(sink: try TraceWriter(output: traceFile))
        } catch {
            throw fail("\(out): error: cannot write the trace: \(error)")
        }
        do {
            while let data = try input.read(upToCount: 1 << 20), !data.isEmpty {
                data.withUnsafeBytes { converter.feed($0) }
                // 16 MiB without one record is not a lackey log (and /dev/zero would never end).
                if converter.recordLines == 0 && converter.bytes >= 16 << 20 { break }
            }
        } catch {
            throw fail("\(file): error: cannot read the log: \(error.localizedDescription)")
        }
        var writer = converter.finish()
        if let problem = converter.problem() {
            throw fail("\(file):\(problem.line): error: \(problem.message) (byte \(problem.offset))")
        }
        do throws(TraceError) {
            _ = try writer.finish()
            try traceFile.close()
        } catch {
            throw fail("\(out): error: cannot write the trace: \(error)")
        }
        guard rename(temporary, out) == 0 else {
            throw fail("\(out): error: cannot write the trace: \(String(cString: strerror(errno)))")
        }
        print("\(out): \(writer.records) records from \(converter.lines) lines (\(converter.accesses) accesses, \(converter.systemCalls) memory calls, \(converter.implicitPages) pages mapped before tracing began)")
    }
}

/// Opens `path`, lets `body` fill a lackey converter writing a trace there, finishes and reports.
func writeTrace(to path: String, _ body: (inout LackeyConverter<TraceWriter<TraceFile>>) throws -> Void) throws {
    let file: TraceFile
    var converter: LackeyConverter<TraceWriter<TraceFile>>
    switch Result(catching: { () throws(TraceError) in try TraceFile(path: path, mode: .write) }) {
    case .success(let f): file = f
    case .failure(let e): throw ValidationError("\(path): \(e)")
    }
    switch Result(catching: { () throws(TraceError) in try TraceWriter(output: file) }) {
    case .success(let w): converter = LackeyConverter(sink: w)
    case .failure(let e): throw ValidationError("\(path): \(e)")
    }
    do { try body(&converter) } catch let e as LackeyRecorder.Failure {
        FileHandle.standardError.write(Data("record: error: \(e)\n".utf8))
        throw ExitCode(1)
    }
    var writer = converter.finish()
    switch Result(catching: { () throws(TraceError) in _ = try writer.finish(); try file.close() }) {
    case .success: break
    case .failure(let e): throw ValidationError("\(path): \(e)")
    }
    print("\(path): \(writer.records) records from \(converter.lines) lines (\(converter.accesses) accesses, \(converter.systemCalls) memory calls, \(converter.implicitPages) pages mapped before tracing began)")
}
