/// The conformance table of docs/conformance.md, as `thpsim scenario --compare --markdown` prints it:
/// one summary row per scenario, then one row per expectation with the model's and the kernel's
/// observation and whether they agree.
extension ScenarioComparison {
    /// Whether the model and the kernel agree on a check: both met it, or both did not in the same way.
    /// (Observations of met checks may differ where the check allows it: a `>=` bound, a fault's address.)
    static func agree(_ m: ExpectationResult?, _ n: ExpectationResult?) -> Bool {
        guard let m, let n else { return false }
        return m.status == n.status && (m.status == .passed || m.observed == n.observed)
    }

    /// The file's first comment line that names a source (selftest or document), or its first comment.
    static func source(of scenarioText: String?) -> String {
        guard let text = scenarioText else { return "" }
        let comments = text.split(separator: "\n").filter { $0.hasPrefix("#") }.map { $0.dropFirst().trimmingCharacters(in: .whitespaces) }
        return comments.first { $0.hasPrefix("Source:") }.map { String($0.dropFirst("Source:".count)).trimmingCharacters(in: .whitespaces) } ?? ""
    }

    /// The Markdown tables for `comparisons`; `texts` maps each file to its contents (for the source).
    public static func markdown(_ comparisons: [ScenarioComparison], texts: [String: String]) -> String {
        func cell(_ s: String) -> String { s.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\n", with: " ") }
        func short(_ file: String) -> String {
            let parts = file.split(separator: "/")
            return parts.suffix(2).joined(separator: "/")
        }
        var lines = ["| scenario | source | checks | model | kernel | agree |", "|---|---|---|---|---|---|"]
        for c in comparisons {
            let rows = c.rows
            let agreeing = rows.filter { agree($0.model, $0.native) }.count
            func status(_ r: ScenarioReport) -> String {
                let skipped = r.results.filter { $0.status == .skipped }.count
                return (r.passed ? "pass" : "FAIL") + (skipped > 0 ? " (\(skipped) skipped)" : "")
            }
            lines.append("| `\(short(c.file))` | \(cell(source(of: texts[c.file]))) | \(rows.count) | \(status(c.model)) | "
                + "\(status(c.native)) | \(agreeing)/\(rows.count) |")
        }
        lines.append("")
        lines.append("| scenario:line | expectation | model | kernel | agree |")
        lines.append("|---|---|---|---|---|")
        for c in comparisons {
            for (m, n) in c.rows {
                guard let any = m ?? n else { continue }
                func side(_ r: ExpectationResult?) -> String {
                    guard let r else { return "—" }
                    return r.status == .passed ? cell(r.observed) : "\(r.status.rawValue): \(cell(r.reason ?? r.observed))"
                }
                lines.append("| `\(short(c.file)):\(any.location.line)` | `\(cell(any.check))` | \(side(m)) | \(side(n)) | \(agree(m, n) ? "yes" : "**no**") |")
            }
        }
        return lines.joined(separator: "\n")
    }
}
