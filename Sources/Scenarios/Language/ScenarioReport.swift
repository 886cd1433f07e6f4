/// The outcome of one check of an `expect` line (or of a call that failed with no `expect result` after it).
public struct ExpectationResult: Sendable, Hashable {
    public enum Status: String, Sendable, Hashable {
        case passed, failed, skipped
    }

    public var location: SourceLocation
    /// Which check of the line (0 for the first `Field=Value`, and for lines with one check).
    public var index: Int
    /// The check as written: `AnonHugePages=2048kB`, `expect data A 4M`.
    public var check: String
    public var status: Status
    public var expected: String
    public var observed: String
    /// Why it was skipped.
    public var reason: String?

    public init(location: SourceLocation, index: Int, check: String, status: Status,
                expected: String, observed: String, reason: String? = nil) {
        self.location = location
        self.index = index
        self.check = check
        self.status = status
        self.expected = expected
        self.observed = observed
        self.reason = reason
    }
}

/// The outcome of running one scenario file on one backend.
public struct ScenarioReport: Sendable {
    public var file: String
    /// `model` or `native`.
    public var backend: String
    public var results: [ExpectationResult] = []
    /// Things worth knowing that are not expectations (retries, knobs restored, commands ignored).
    public var notes: [String] = []
    /// Why the run stopped early, if it did; the run then fails.
    public var error: ScenarioError?
    /// Why the whole run was skipped (not root, model not available); a skipped run does not fail.
    public var skipReason: String?
    /// How many times the scenario ran (natively, a disturbed vmstat delta is retried).
    public var attempts = 1

    public init(file: String, backend: String) {
        self.file = file
        self.backend = backend
    }

    /// Every expectation held or was skipped, and the run did not stop early.
    public var passed: Bool { error == nil && !results.contains { $0.status == .failed } }

    public func count(_ status: ExpectationResult.Status) -> Int { results.count { $0.status == status } }

    /// The text report: failures with `file:line:`, expected and observed; skips with reasons; a summary line.
    public var text: String {
        var lines: [String] = []
        for r in results where r.status == .failed {
            lines.append("\(r.location): FAIL \(r.check)\n    expected: \(r.expected)\n    observed: \(r.observed)")
        }
        for r in results where r.status == .skipped && skipReason == nil {
            lines.append("\(r.location): skipped \(r.check): \(r.reason ?? "")")
        }
        if let error { lines.append("\(error.location.map { "\($0): " } ?? "\(file): ")error: \(error.message)") }
        for note in notes { lines.append("\(file): note: \(note)") }
        let verdict = skipReason.map { "SKIPPED (\($0))" } ?? (passed ? "PASS" : "FAIL")
        let retries = attempts > 1 ? ", \(attempts) attempts" : ""
        lines.append("\(file) [\(backend)]: \(verdict) — \(count(.passed)) passed, \(count(.failed)) failed, \(count(.skipped)) skipped\(retries)")
        return lines.joined(separator: "\n")
    }
}
