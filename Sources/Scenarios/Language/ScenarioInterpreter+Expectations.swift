/// Evaluation of `expect` lines against what the backend shows and what the shadow holds.
extension ScenarioInterpreter {
    func evaluate(_ expectation: Expectation, statement: Statement) throws(ScenarioError) {
        switch expectation {
        case .smaps(let a, let checks):
            let start = try resolve(a)
            guard let fields = try backend.smaps(of: handle(), vmaStart: start) else {
                for (i, check) in checks.enumerated() {
                    record(statement, i, check.text, passed: false, expected: describe(check, unit: unit(smaps: check.field)),
                           observed: "no VMA starts at \(a) (0x\(String(start, radix: 16)))")
                }
                return
            }
            compare(checks, with: fields, base: [:], source: "smaps", statement: statement)
        case .vmstat(let checks):
            compare(checks, with: try backend.vmstat(), base: vmstatBase, source: "vmstat", statement: statement)
        case .meminfo(let checks):
            compare(checks, with: try backend.meminfo(), base: meminfoBase, source: "meminfo", statement: statement)
        case .data(let a, let length):
            let start = try resolve(a)
            let expected = processes[current!]!.shadow.expectedBytes(start: start, length: length)
            let observed = try backend.readData(in: handle(), address: start, length: length)
            let (passed, want, got) = compareData(expected, observed, start: start, name: a)
            record(statement, 0, statement.text, passed: passed, expected: want, observed: got)
        case .result(let errno):
            let expected = errno.map(\.name) ?? "success"
            let observed: String = switch lastCall {
            case .success?: "success"
            case .failure(let e)?: e.name
            case nil: "no call yet"
            }
            record(statement, 0, statement.text, passed: expected == observed, expected: expected, observed: observed)
        case .segv:
            let observed: String = switch lastTouch {
            case .segv(let at)?: "segv at 0x\(String(at, radix: 16))"
            case .killed(let at)?: "OOM-killed at 0x\(String(at, radix: 16))"
            case .completed?: "the touch completed"
            case nil: "no touch yet"
            }
            record(statement, 0, statement.text, passed: observed.hasPrefix("segv"), expected: "segv", observed: observed)
        case .killed(let name):
            let process = name ?? current!
            let observed = killed[process].map { "'\(process)' was OOM-killed at line \($0)" } ?? "'\(process)' is alive"
            record(statement, 0, statement.text, passed: killed[process] != nil,
                   expected: "'\(process)' killed by its cgroup's OOM killer", observed: observed)
        case .cgroup(let name, let file, let checks):
            try compareCgroup(name, file: file, checks, statement: statement)
        }
    }

    /// Compares `Field<op>Value` checks with a counter snapshot; `+=` subtracts `base`.
    func compare(_ checks: [CounterCheck], with values: [String: Int64], base: [String: Int64], source: String,
                 statement: Statement) {
        for (i, check) in checks.enumerated() {
            let unit = source == "vmstat" ? "" : unit(smaps: check.field)
            let expected = describe(check, unit: unit)
            guard let now = values[check.field] else {
                record(statement, i, check.text, passed: false, expected: expected, observed: "\(source) has no field \(check.field)")
                continue
            }
            var observed = now
            if check.comparison == .delta {
                guard let before = base[check.field] else {
                    record(statement, i, check.text, passed: false, expected: expected,
                           observed: "\(source) had no field \(check.field) at the start or last mark")
                    continue
                }
                observed = now &- before
            }
            let text = check.comparison == .delta ? "\(check.field) changed by \(observed)\(unit)" : "\(check.field) = \(observed)\(unit)"
            record(statement, i, check.text, passed: check.comparison.holds(observed: observed, expected: check.value),
                   expected: expected, observed: text)
        }
    }

    /// Compares checks with a cgroup's files: one keyed file, or one single-value file per check.
    func compareCgroup(_ name: String, file: String?, _ checks: [CounterCheck], statement: Statement) throws(ScenarioError) {
        func number(_ text: Substring) -> Int64? { text == "max" ? .max : Int64(text) }
        var keyed: [String: Int64] = [:]
        if let file {
            for line in try backend.readCgroup(name, file: file).split(separator: "\n") {
                let parts = line.split(separator: " ")
                if parts.count == 2, let v = number(parts[1]) { keyed[String(parts[0])] = v }
            }
        }
        for (i, check) in checks.enumerated() {
            let source = file ?? check.field
            let value: Int64?
            if file != nil {
                value = keyed[check.field]
            } else {
                value = number(Substring(try backend.readCgroup(name, file: check.field).trimmingCharacters(in: .newlines)))
            }
            func show(_ v: Int64) -> String { v == .max ? "max" : "\(v)" }
            let expected = "\(check.field) \(check.comparison.rawValue) \(show(check.value))"
            guard let value else {
                if let file, let reason = backend.missingCgroupKeyReason(file: file, key: check.field) {
                    report.results.append(ExpectationResult(location: statement.location, index: i, check: check.text, status: .skipped,
                                                            expected: "", observed: "", reason: reason))
                    continue
                }
                record(statement, i, check.text, passed: false, expected: expected, observed: "\(source) of cgroup '\(name)' has no \(check.field)")
                continue
            }
            record(statement, i, check.text, passed: check.comparison.holds(observed: value, expected: check.value),
                   expected: expected, observed: "\(check.field) = \(show(value))")
        }
    }

    func describe(_ check: CounterCheck, unit: String) -> String {
        switch check.comparison {
        case .delta: "\(check.field) changed by \(check.value)\(unit)"
        default: "\(check.field) \(check.comparison.rawValue) \(check.value)\(unit)"
        }
    }

    /// ` kB` for the size fields of smaps and meminfo; nothing for counts.
    func unit(smaps field: String) -> String {
        let counts: Set = ["THPeligible", "ProtectionKey", "HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp"]
        return counts.contains(field) ? "" : " kB"
    }

    /// Whether the bytes match, with both sides described at the first difference.
    func compareData(_ expected: DataRead, _ observed: DataRead, start: UInt64, name: AddressExpression) -> (Bool, String, String) {
        func place(_ address: UInt64) -> String {
            AddressExpression(region: name.region, offset: name.offset &+ Int64(bitPattern: address &- start)).description
                + " (0x\(String(address, radix: 16)))"
        }
        switch (expected, observed) {
        case (.bytes(let want), .bytes(let got)):
            guard want != got else { return (true, "\(want.count) bytes as written", "equal") }
            guard want.count == got.count else { return (false, "\(want.count) bytes", "\(got.count) bytes") }
            let first = want.indices.first { want[$0] != got[$0] }!
            let differing = zip(want, got).count { $0 != $1 }
            let address = start &+ UInt64(first)
            return (false, "byte at \(place(address)) = 0x\(hex(want[first]))",
                    "0x\(hex(got[first])); \(differing) of \(want.count) bytes differ")
        case (.unmapped(let a), .unmapped(let b)) where a == b:
            return (true, "unmapped at \(place(a))", "unmapped at \(place(b))")
        case (.unmapped(let a), .unmapped(let b)):
            return (false, "unmapped at \(place(a))", "unmapped at \(place(b))")
        case (.unmapped(let a), .bytes):
            return (false, "unmapped at \(place(a))", "the whole range is mapped")
        case (.bytes, .unmapped(let b)):
            return (false, "the whole range mapped", "unmapped at \(place(b))")
        }
    }

    private func hex(_ byte: UInt8) -> String {
        let digits = String(byte, radix: 16)
        return digits.count == 1 ? "0" + digits : digits
    }

    func record(_ statement: Statement, _ index: Int, _ check: String, passed: Bool, expected: String, observed: String) {
        report.results.append(ExpectationResult(location: statement.location, index: index, check: check,
                                                status: passed ? .passed : .failed, expected: expected, observed: observed))
    }

    /// Records every check of an `expect` statement as skipped.
    func skip(_ statement: Statement, reason: String) {
        for (i, check) in statement.checkTexts.enumerated() {
            report.results.append(ExpectationResult(location: statement.location, index: i, check: check, status: .skipped,
                                                    expected: "", observed: "", reason: reason))
        }
    }

    /// Skips the expectations of statements `from` through `through` (the rest of the file by default).
    func skipRemaining(from start: Int, through end: Int? = nil, reason: String) {
        let statements = scenario.statements
        guard start < statements.count else { return }
        for statement in statements[start ... (end ?? statements.count - 1)] { skip(statement, reason: reason) }
    }
}
