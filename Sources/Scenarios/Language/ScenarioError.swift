/// A place in a scenario file: the file name as given and a 1-based line number.
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int

    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }

    public var description: String { "\(file):\(line)" }
}

/// A problem with a scenario or with running it, with the line it belongs to; printed as `file:line: message`.
///
/// Bad input never traps: the parser, the static pass, the interpreter and the backends all report
/// through this type. `kind` tells the runner what to do with it.
public struct ScenarioError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, which decides how a run reports it.
    public enum Kind: String, Sendable, Hashable {
        /// The file is malformed (syntax, undefined names); found before anything runs.
        case input
        /// The backend cannot do this here (no root, no debugfs, the model is missing a feature):
        /// the expectations that depend on it are skipped, with `message` as the reason.
        case unsupported
        /// Running failed (a native helper process died, a region has no address): the run stops.
        case run
    }

    public var location: SourceLocation?
    public var message: String
    public var kind: Kind

    public init(_ message: String, at location: SourceLocation? = nil, kind: Kind = .input) {
        self.message = message
        self.location = location
        self.kind = kind
    }

    /// A backend cannot perform a command; its expectations are skipped with this reason.
    public static func unsupported(_ reason: String) -> ScenarioError {
        ScenarioError(reason, kind: .unsupported)
    }

    /// Running failed for a reason outside the scenario's control.
    public static func run(_ message: String) -> ScenarioError {
        ScenarioError(message, kind: .run)
    }

    /// The same error, placed at `location` unless it already has a place.
    public func located(at location: SourceLocation) -> ScenarioError {
        var copy = self
        if copy.location == nil { copy.location = location }
        return copy
    }

    public var description: String {
        guard let location else { return message }
        return "\(location): \(message)"
    }
}
