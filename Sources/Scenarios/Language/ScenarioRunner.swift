/// Runs scenarios on a backend made per run, retrying native runs that other activity disturbed.
public enum ScenarioRunner {
    /// Runs `scenario` on a fresh backend from `makeBackend`, up to `maxAttempts` times while a
    /// vmstat expectation fails on a backend whose counters are system-wide (the live kernel).
    public static func run(_ scenario: Scenario, on backendName: String, maxAttempts: Int = 3,
                           makeBackend: () throws(ScenarioError) -> any ScenarioBackend) -> ScenarioReport {
        var notes: [String] = []
        var attempt = 0
        while true {
            attempt += 1
            let backend: any ScenarioBackend
            do {
                backend = try makeBackend()
            } catch {
                return unstarted(scenario, on: backendName, error: error)
            }
            var report = interpret(scenario, on: backend)
            let disturbed = report.results.first { result in
                guard result.status == .failed else { return false }
                return scenario.statements.contains { statement in
                    guard statement.location == result.location, case .expect(.vmstat) = statement.command else { return false }
                    return true
                }
            }
            if let disturbed, backend.countersAreSystemWide, attempt < maxAttempts {
                notes.append("attempt \(attempt): vmstat expectation at line \(disturbed.location.line) failed (\(disturbed.observed)); vmstat is system-wide, so the scenario ran again")
                continue
            }
            report.attempts = attempt
            report.notes = notes + report.notes
            return report
        }
    }

    /// Runs on both backends; the comparison passes when both runs do.
    public static func compare(_ scenario: Scenario,
                               model makeModel: () throws(ScenarioError) -> any ScenarioBackend,
                               native makeNative: () throws(ScenarioError) -> any ScenarioBackend) -> ScenarioComparison {
        ScenarioComparison(model: run(scenario, on: "model", makeBackend: makeModel),
                           native: run(scenario, on: "native", makeBackend: makeNative))
    }

    /// Opens the existential so the interpreter is specialised for the backend.
    private static func interpret<B: ScenarioBackend>(_ scenario: Scenario, on backend: B) -> ScenarioReport {
        ScenarioInterpreter(scenario: scenario, backend: backend).run()
    }

    /// The report of a run whose backend could not be made: skipped if unsupported, else an error.
    private static func unstarted(_ scenario: Scenario, on backendName: String, error: ScenarioError) -> ScenarioReport {
        var report = ScenarioReport(file: scenario.file, backend: backendName)
        if error.kind == .unsupported { report.skipReason = error.message } else { report.error = error }
        for statement in scenario.statements {
            for (i, check) in statement.checkTexts.enumerated() {
                report.results.append(ExpectationResult(location: statement.location, index: i, check: check,
                                                        status: .skipped, expected: "", observed: "", reason: error.message))
            }
        }
        return report
    }
}

/// The same scenario on the model and on the live kernel, expectation by expectation.
public struct ScenarioComparison: Sendable {
    public var model: ScenarioReport
    public var native: ScenarioReport

    public var file: String { model.file }
    public var passed: Bool { model.passed && native.passed }

    /// One row per check, keyed by line and index, with each side's result (nil where a side has none).
    public var rows: [(model: ExpectationResult?, native: ExpectationResult?)] {
        struct Key: Hashable { var line: Int; var index: Int }
        var order: [Key] = []
        var byKey: [Key: (ExpectationResult?, ExpectationResult?)] = [:]
        for r in model.results {
            let key = Key(line: r.location.line, index: r.index)
            if byKey[key] == nil { order.append(key) }
            byKey[key, default: (nil, nil)].0 = r
        }
        for r in native.results {
            let key = Key(line: r.location.line, index: r.index)
            if byKey[key] == nil { order.append(key) }
            byKey[key, default: (nil, nil)].1 = r
        }
        return order.sorted { ($0.line, $0.index) < ($1.line, $1.index) }.map { (byKey[$0]!.0, byKey[$0]!.1) }
    }

    /// A side-by-side text report: each check with the model's and the kernel's observation.
    public var text: String {
        var lines: [String] = []
        for (m, n) in rows {
            guard let any = m ?? n else { continue }
            lines.append("\(any.location): \(any.check)")
            lines.append("    model:  \(Self.describe(m))")
            lines.append("    kernel: \(Self.describe(n))")
        }
        for report in [model, native] {
            if let error = report.error { lines.append("\(report.backend): error: \(error)") }
            for note in report.notes { lines.append("\(report.backend): note: \(note)") }
        }
        func verdict(_ r: ScenarioReport) -> String { r.skipReason.map { "SKIPPED (\($0))" } ?? (r.passed ? "PASS" : "FAIL") }
        lines.append("\(file) [compare]: model \(verdict(model)), kernel \(verdict(native))")
        return lines.joined(separator: "\n")
    }

    static func describe(_ r: ExpectationResult?) -> String {
        guard let r else { return "—" }
        switch r.status {
        case .passed: return "pass (\(r.observed))"
        case .failed: return "FAIL (expected \(r.expected); observed \(r.observed))"
        case .skipped: return "skipped (\(r.reason ?? ""))"
        }
    }
}

