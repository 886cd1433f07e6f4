import ArgumentParser
import Foundation
import Experiments

/// How `run` and `merge` print a report: the text table, `--json`, `--csv`, and `--html FILE`.
struct ReportOutputOptions: ParsableArguments {
    @Flag(help: "Print the report as JSON (keys in docs/report-format.md).")
    var json = false

    @Flag(help: "Print one CSV row per cell.")
    var csv = false

    @Option(help: "Also write a self-contained HTML report with charts to this file.")
    var html: String?

    @Option(help: "Write what would go to standard output to this file instead.")
    var output: String?

    func validate() throws {
        if json && csv { throw ValidationError("--json and --csv exclude each other") }
        if html == "" { throw ValidationError("--html: give a file name") }
        if output == "" { throw ValidationError("--output: give a file name") }
    }

    /// Prints (or writes) the report in the chosen format, and the HTML page if asked for.
    func emit(_ report: ExperimentReport, forceJSON: Bool = false) throws {
        if let html { try write(report.html, to: html, option: "--html") }
        let text = json || forceJSON ? report.json + "\n" : csv ? report.csv : report.text + "\n"
        if let output { try write(text, to: output, option: "--output") } else { FileHandle.standardOutput.write(Data(text.utf8)) }
    }

    private func write(_ text: String, to path: String, option: String) throws {
        do { try Data(text.utf8).write(to: URL(fileURLWithPath: path)) } catch {
            fail("\(option) \(path): cannot write the file (\((error as NSError).localizedDescription))")
        }
    }
}

/// Prints `message` as an error of thpsim on standard error and exits with status 2 (bad input
/// that is not a command-line mistake: an unreadable or invalid file).
func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("thpsim: error: \(message)\n".utf8))
    Foundation.exit(2)
}
