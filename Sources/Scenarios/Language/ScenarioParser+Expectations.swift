import VMCore

/// Parsing of `expect …` lines and their `Field<op>Value` checks.
extension LineParser {
    mutating func expectation() throws(ScenarioError) -> Expectation {
        let kind = try next("what to expect (smaps, vmstat, mthp, meminfo, data, result, segv, cgroup or killed)")
        switch kind {
        case "smaps":
            let at = try address()
            return .smaps(at, try checks(allowDelta: false))
        case "vmstat": return .vmstat(try checks(allowDelta: true))
        case "mthp": return .vmstat(try mthpChecks())
        case "meminfo": return .meminfo(try checks(allowDelta: true))
        case "data": return .data(try address(), try size())
        case "result":
            let word = try next("errno name, 0 or ok")
            if word == "0" || word == "ok" { return .result(nil) }
            guard let errno = ScenarioErrno(name: word) else {
                throw error("bad result '\(word)': expected 0, ok or an errno name such as EINVAL or ENOMEM")
            }
            return .result(errno)
        case "segv": return .segv
        case "killed":
            return .killed(!remaining.isEmpty ? try regionOrProcessName("process name") : nil)
        case "cgroup": return try cgroupExpectation()
        default:
            throw error("malformed expectation: unknown kind '\(kind)'; expected smaps, vmstat, mthp, meminfo, data, result, segv, cgroup or killed")
        }
    }

    /// `expect cgroup NAME memory.events oom_kill=1 …` or `expect cgroup NAME memory.current<=20M …`.
    mutating func cgroupExpectation() throws(ScenarioError) -> Expectation {
        let name = try cgroupName()
        var file: String?
        if let word = remaining.first, CgroupFiles.keyed.contains(word) { file = try next("file") }
        let words = takeRemaining()
        guard !words.isEmpty else {
            throw error("malformed expectation: missing checks, like memory.current<=20M or memory.events oom_kill=1")
        }
        var checks: [CounterCheck] = []
        for word in words {
            let check = try cgroupCheck(word)
            if file == nil && !CgroupFiles.singleValued.contains(check.field) {
                let hint = CgroupFiles.keyed.contains(check.field) ? "; name the keyed file first: expect cgroup \(name) \(check.field) KEY=VALUE" : ""
                throw error("malformed expectation '\(word)': '\(check.field)' is not a single-value cgroup file (\(CgroupFiles.singleValued.joined(separator: ", ")))\(hint)")
            }
            checks.append(check)
        }
        return .cgroup(name, file: file, checks)
    }

    /// `FIELD=VALUE`, `>=`, `<=`: VALUE is a count or bytes (`20M` is 20971520), or `max`.
    func cgroupCheck(_ word: String) throws(ScenarioError) -> CounterCheck {
        let operators: [(String, Comparison)] = [(">=", .atLeast), ("<=", .atMost), ("=", .equal)]
        if word.contains("+=") {
            throw error("malformed expectation '\(word)': cgroup checks compare values (=, >=, <=), not changes")
        }
        for (symbol, comparison) in operators {
            guard let range = word.firstRange(of: symbol) else { continue }
            let field = String(word[..<range.lowerBound]), valueText = String(word[range.upperBound...])
            guard !field.isEmpty, field.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.".contains($0)) }) else {
                throw error("malformed expectation '\(word)': bad field name '\(field)'")
            }
            let value: Int64
            if valueText == "max" {
                value = .max
            } else if let n = Int64(valueText), n >= 0 {
                value = n
            } else if let bytes = ByteCount.parse(valueText), bytes <= UInt64(Int64.max) {
                value = Int64(bytes)
            } else {
                throw error("malformed expectation '\(word)': bad value '\(valueText)'; expected a count, bytes (20M) or max")
            }
            return CounterCheck(field: field, comparison: comparison, value: value, text: word)
        }
        if CgroupFiles.keyed.contains(word) {
            throw error("malformed expectation: '\(word)' is a keyed file; check it on a line of its own, right after the cgroup's name")
        }
        throw error("malformed expectation '\(word)': expected FIELD=VALUE, FIELD>=VALUE or FIELD<=VALUE")
    }

    /// `expect mthp SIZE counter+=N …`: the counters of `/sys/kernel/mm/transparent_hugepage/
    /// hugepages-SIZE/stats/`, system-wide like vmstat's, as vmstat checks on the fields
    /// `hugepages-<size>kB/stats/<counter>` (Linux: `mthp_stats`, `sysfs_add_stats()`). SIZE is a
    /// multi-size THP size from 16kB to 2048kB (`64kB`, `64K`, `2M`).
    mutating func mthpChecks() throws(ScenarioError) -> [CounterCheck] {
        let word = try next("mTHP size (16kB … 2048kB)")
        guard let bytes = ByteCount.parse(word), bytes >= 16 << 10, bytes <= 2 << 20, bytes & (bytes - 1) == 0 else {
            throw error("bad mTHP size '\(word)': expected a power of two from 16kB to 2048kB, like 64kB")
        }
        let folder = "hugepages-\(bytes >> 10)kB/stats/"
        return try checks(allowDelta: true).map { check throws(ScenarioError) in
            guard MTHPCounters.names.contains(check.field) else {
                throw error("unknown mTHP counter '\(check.field)'; \(folder) has \(MTHPCounters.names.joined(separator: ", "))")
            }
            var c = check
            c.field = folder + check.field
            return c
        }
    }

    /// The `Field<op>Value` words that end a counter expectation; at least one.
    mutating func checks(allowDelta: Bool) throws(ScenarioError) -> [CounterCheck] {
        let words = takeRemaining()
        guard !words.isEmpty else { throw error("malformed expectation: missing Field=Value checks") }
        var result: [CounterCheck] = []
        for word in words {
            let check = try counterCheck(word)
            if check.comparison == .delta && !allowDelta {
                throw error("malformed expectation '\(word)': '+=' (a change since the start or `mark`) is only for vmstat, mthp and meminfo")
            }
            result.append(check)
        }
        return result
    }

    /// `Field=2048kB`, `thp_fault_alloc+=1`, `AnonHugePages>=2M`, `nr_anon_transparent_hugepages+=-1`.
    func counterCheck(_ word: String) throws(ScenarioError) -> CounterCheck {
        let operators: [(String, Comparison)] = [("+=", .delta), (">=", .atLeast), ("<=", .atMost), ("=", .equal)]
        for (symbol, comparison) in operators {
            guard let range = word.firstRange(of: symbol) else { continue }
            let field = String(word[..<range.lowerBound]), valueText = String(word[range.upperBound...])
            guard !field.isEmpty, field.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_()".contains($0)) }) else {
                throw error("malformed expectation '\(word)': bad field name '\(field)'")
            }
            guard let value = Self.counterValue(valueText) else {
                throw error("malformed expectation '\(word)': bad value '\(valueText)'; expected a count, or a size in kB, K, M or G")
            }
            return CounterCheck(field: field, comparison: comparison, value: value, text: word)
        }
        throw error("malformed expectation '\(word)': expected Field=Value, Field+=Value, Field>=Value or Field<=Value")
    }

    /// A plain count as is; a size (`2048kB`, `2M`) as the number of kB, which is how Linux prints sizes.
    static func counterValue(_ text: String) -> Int64? {
        let negative = text.hasPrefix("-")
        let magnitude = String(negative ? text.dropFirst() : Substring(text))
        guard let first = magnitude.first, first.isNumber else { return nil }
        let plain = magnitude.allSatisfy { $0.isASCII && $0.isNumber }
        let number: UInt64
        if plain {
            guard let n = UInt64(magnitude) else { return nil }
            number = n
        } else {
            guard let bytes = ByteCount.parse(magnitude), bytes % 1024 == 0 else { return nil }
            number = bytes / 1024
        }
        guard number <= UInt64(Int64.max) else { return nil }
        return negative ? -Int64(number) : Int64(number)
    }
}
