import ArgumentParser
import Experiments

/// The `thpsim` command: subcommands only; each lives in its own file and holds no model logic.
@main
struct THPSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "thpsim",
        abstract: "An executable model of Linux's transparent hugepages: what would Linux do, and what would it cost?",
        version: THPSimVersion.string,
        subcommands: [RunCommand.self, MergeCommand.self, DemoCommand.self, ScenarioCommand.self, StressCommand.self, MachinesCommand.self, CalibrateCommand.self,
                      WorkloadCommand.self, ReplayCommand.self, RecordCommand.self, ImportCommand.self, HistoryCommand.self]
    )
}
