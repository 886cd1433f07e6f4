import ArgumentParser

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the built-in demonstration.")
    func run() throws { print("not yet") }
}
