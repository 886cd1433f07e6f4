import ArgumentParser
import Foundation
import Workloads

/// `thpsim import lackey FILE --out TRACE`: converts an existing lackey log.
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
        guard let input = FileHandle(forReadingAtPath: file) else { throw ValidationError("\(file): cannot open the file") }
        try writeTrace(to: out) { (converter: inout LackeyConverter<TraceWriter<TraceFile>>) throws in
            while true {
                let data = input.readData(ofLength: 1 << 20)
                if data.isEmpty { break }
                data.withUnsafeBytes { converter.feed($0) }
            }
        }
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
