import ArgumentParser
import Foundation
import Experiments

/// `thpsim merge FILES...`: combines the JSON reports of `thpsim run --shard I/N` into the report of
/// the whole grid, printed in any format `run` prints.
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Combine the shard reports of one grid (thpsim run --shard I/N) into one report."
    )

    @Argument(help: "Shard reports (JSON files).")
    var files: [String]

    @OptionGroup var output: ReportOutputOptions

    func validate() throws {
        if files.isEmpty { throw ValidationError("give the shard reports to merge") }
    }

    func run() throws {
        var reports: [(name: String, report: ExperimentReport)] = []
        for file in files {
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
                fail("\(file): cannot read the file (\((error as NSError).localizedDescription))")
            }
            do { reports.append((file, try ExperimentReport.decode(data))) } catch { fail("\(file): \(error.description)") }
        }
        let merged: ExperimentReport
        do { merged = try ExperimentReport.merge(reports) } catch { fail(error.description) }
        try output.emit(merged)
    }
}
