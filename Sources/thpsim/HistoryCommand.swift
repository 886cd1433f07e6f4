import ArgumentParser
import Foundation
import Experiments

/// `thpsim history NAME | --all`: reproduces landmark results of Linux's THP history, the reported
/// numbers beside the model's (docs/history.md).
///
/// Exit status: 0 when the model's numbers go the reported way for every landmark run, 1 when one
/// does not, 2 when a run could not finish.
struct HistoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Reproduce landmark THP results from Linux's history: reported and modelled numbers side by side.",
        discussion: "Landmarks: " + HistoryLandmark.all.map { "\($0.name) (\($0.title))" }.joined(separator: "; ") + "."
    )

    @Argument(help: "The landmark to run: \(HistoryLandmark.all.map(\.name).joined(separator: ", ")).")
    var names: [String] = []

    @Flag(help: "Run every landmark.")
    var all = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Option(help: "Also write a self-contained HTML report with charts to this file.")
    var html: String?

    func validate() throws {
        if all && !names.isEmpty { throw ValidationError("give landmark names or --all, not both") }
        if !all && names.isEmpty {
            throw ValidationError("name a landmark or give --all (known: \(HistoryLandmark.all.map(\.name).joined(separator: ", ")))")
        }
        for name in names where HistoryLandmark.named(name) == nil {
            throw ValidationError("no history landmark '\(name)' (known: \(HistoryLandmark.all.map(\.name).joined(separator: ", ")))")
        }
        if html == "" { throw ValidationError("--html: give a file name") }
        if let html, let problem = ReportOutputOptions.problem(writing: html) { throw ValidationError("--html \(html): \(problem)") }
    }

    func run() throws {
        let landmarks = all ? HistoryLandmark.all : names.compactMap(HistoryLandmark.named)
        var results: [HistoryResult] = []
        for landmark in landmarks {
            do throws(HistoryError) { results.append(try landmark.run()) } catch { fail("history \(landmark.name): \(error.message)") }
        }
        let report = HistoryReport(thpsimVersion: THPSimVersion.string, results: results)
        if let html {
            do { try Data(report.html.utf8).write(to: URL(fileURLWithPath: html)) } catch {
                fail("--html \(html): cannot write the file (\((error as NSError).localizedDescription))")
            }
        }
        print(json ? report.json : report.text)
        if !report.agrees { throw ExitCode(1) }
    }
}
