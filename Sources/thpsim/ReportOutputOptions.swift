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

    /// Checks the options, and that each file named can be written, before anything runs (a grid
    /// can take hours; a report that cannot be written would be lost at the end).
    func validate() throws {
        if json && csv { throw ValidationError("--json and --csv exclude each other") }
        if html == "" { throw ValidationError("--html: give a file name") }
        if output == "" { throw ValidationError("--output: give a file name") }
        if let html, let output, URL(fileURLWithPath: html).standardizedFileURL == URL(fileURLWithPath: output).standardizedFileURL {
            throw ValidationError("--html and --output name the same file '\(html)'")
        }
        for (option, path) in [("--html", html), ("--output", output)] {
            if let path, let problem = Self.problem(writing: path) { throw ValidationError("\(option) \(path): \(problem)") }
        }
    }

    /// Why `path` cannot be written as a file, or nil when it can: an existing directory or read-only
    /// file, or a parent directory that is missing or not writable.
    static func problem(writing path: String) -> String? {
        let files = FileManager.default
        var isDirectory: ObjCBool = false
        if files.fileExists(atPath: path, isDirectory: &isDirectory) {
            if isDirectory.boolValue { return "is a directory; give a file name" }
            return files.isWritableFile(atPath: path) ? nil : "the file exists and is not writable"
        }
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard files.fileExists(atPath: parent, isDirectory: &isDirectory) else { return "no directory '\(parent)'" }
        guard isDirectory.boolValue else { return "'\(parent)' is not a directory" }
        return files.isWritableFile(atPath: parent) ? nil : "the directory '\(parent)' is not writable"
    }

    /// Prints (or writes) the report in the chosen format, and the HTML page if asked for.
    /// A cell whose program was killed does not fail the command (the run did what was asked, and
    /// which policy gets a program killed can be the finding); standard error says so, besides the
    /// report's status column and notes.
    func emit(_ report: ExperimentReport, forceJSON: Bool = false) throws {
        if let html { try write(report.html, to: html, option: "--html") }
        let text = json || forceJSON ? report.json + "\n" : csv ? report.csv : report.text + "\n"
        if let output { try write(text, to: output, option: "--output") } else { FileHandle.standardOutput.write(Data(text.utf8)) }
        let killed = report.results.filter { !$0.completed }
        if !killed.isEmpty {
            let cells = killed.prefix(5).map { "\($0.cell.index) (\($0.cell.workload.label), \($0.cell.enabled))" }.joined(separator: ", ")
            warn("\(killed.count) of \(report.results.count) cells' programs were killed: cell\(killed.count == 1 ? "" : "s") \(cells)"
                 + (killed.count > 5 ? ", …" : "") + "; the report's status column and notes say why")
        }
    }

    private func write(_ text: String, to path: String, option: String) throws {
        do { try Data(text.utf8).write(to: URL(fileURLWithPath: path)) } catch {
            fail("\(option) \(path): cannot write the file (\((error as NSError).localizedDescription))")
        }
    }
}

/// Prints `message` as a warning of thpsim on standard error.
func warn(_ message: String) {
    FileHandle.standardError.write(Data("thpsim: warning: \(message)\n".utf8))
}

/// Prints `message` as an error of thpsim on standard error and exits with status 2 (bad input
/// that is not a command-line mistake: an unreadable or invalid file).
func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("thpsim: error: \(message)\n".utf8))
    Foundation.exit(2)
}
