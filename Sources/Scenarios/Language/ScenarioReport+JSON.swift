import Foundation

/// The machine-readable report (`thpsim scenario --json`); keys are documented in docs/scenarios.md.
public enum ScenarioJSON {
    /// `{"mode": "model"|"native", "passed": …, "scenarios": [run…]}`.
    public static func render(_ reports: [ScenarioReport], mode: String) -> String {
        encode(RunsDocument(mode: mode, passed: reports.allSatisfy(\.passed), scenarios: reports.map(Run.init)))
    }

    /// `{"mode": "compare", "passed": …, "scenarios": [{file, passed, model, native, expectations}…]}`.
    public static func render(_ comparisons: [ScenarioComparison]) -> String {
        encode(CompareDocument(passed: comparisons.allSatisfy(\.passed), scenarios: comparisons.map(Comparison.init)))
    }

    private static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    struct RunsDocument: Encodable {
        var mode: String
        var passed: Bool
        var scenarios: [Run]
    }

    struct Counts: Encodable {
        var passed: Int
        var failed: Int
        var skipped: Int
    }

    struct Run: Encodable {
        var file: String
        var backend: String
        var passed: Bool
        var skipped: String?
        var attempts: Int
        var error: String?
        var notes: [String]
        var counts: Counts
        var expectations: [Check]

        init(_ r: ScenarioReport) {
            file = r.file
            backend = r.backend
            passed = r.passed
            skipped = r.skipReason
            attempts = r.attempts
            error = r.error?.description
            notes = r.notes
            counts = Counts(passed: r.count(.passed), failed: r.count(.failed), skipped: r.count(.skipped))
            expectations = r.results.map(Check.init)
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(file, forKey: .file)
            try c.encode(backend, forKey: .backend)
            try c.encode(passed, forKey: .passed)
            try c.encode(skipped, forKey: .skipped)
            try c.encode(attempts, forKey: .attempts)
            try c.encode(error, forKey: .error)
            try c.encode(notes, forKey: .notes)
            try c.encode(counts, forKey: .counts)
            try c.encode(expectations, forKey: .expectations)
        }

        enum CodingKeys: String, CodingKey {
            case file, backend, passed, skipped, attempts, error, notes, counts, expectations
        }
    }

    struct Check: Encodable {
        var line: Int
        var index: Int
        var check: String
        var status: String
        var expected: String
        var observed: String
        var reason: String?

        init(_ r: ExpectationResult) {
            line = r.location.line
            index = r.index
            check = r.check
            status = r.status.rawValue
            expected = r.expected
            observed = r.observed
            reason = r.reason
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(line, forKey: .line)
            try c.encode(index, forKey: .index)
            try c.encode(check, forKey: .check)
            try c.encode(status, forKey: .status)
            try c.encode(expected, forKey: .expected)
            try c.encode(observed, forKey: .observed)
            try c.encode(reason, forKey: .reason)
        }

        enum CodingKeys: String, CodingKey { case line, index, check, status, expected, observed, reason }
    }

    struct CompareDocument: Encodable {
        var mode = "compare"
        var passed: Bool
        var scenarios: [Comparison]
    }

    struct Comparison: Encodable {
        var file: String
        var passed: Bool
        var model: Run
        var native: Run
        var expectations: [Row]

        init(_ c: ScenarioComparison) {
            file = c.file
            passed = c.passed
            model = Run(c.model)
            native = Run(c.native)
            expectations = c.rows.compactMap { m, n in
                guard let any = m ?? n else { return nil }
                return Row(line: any.location.line, index: any.index, check: any.check,
                           model: m.map(Check.init), native: n.map(Check.init),
                           agree: m?.status == n?.status && m?.observed == n?.observed)
            }
        }
    }

    struct Row: Encodable {
        var line: Int
        var index: Int
        var check: String
        var model: Check?
        var native: Check?
        /// Both sides have the same status and the same observation.
        var agree: Bool

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(line, forKey: .line)
            try c.encode(index, forKey: .index)
            try c.encode(check, forKey: .check)
            try c.encode(model, forKey: .model)
            try c.encode(native, forKey: .native)
            try c.encode(agree, forKey: .agree)
        }

        enum CodingKeys: String, CodingKey { case line, index, check, model, native, agree }
    }
}
