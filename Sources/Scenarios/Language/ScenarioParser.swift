import VMCore

/// Turns scenario text into statements, line by line; the static pass (`ScenarioValidator`) follows.
///
/// Every problem is a `ScenarioError` with `file:line:`; nothing here traps on bad input.
public enum ScenarioParser {
    /// The longest line accepted, in bytes (a scenario line is a command and a few words).
    public static let maximumLineBytes = 4096

    /// Parses and statically checks a whole file, so that no error waits until a run.
    ///
    /// Lines end with LF, CRLF or CR (Swift reads CRLF as one `Character`, so each is a separator);
    /// the last line needs no newline.
    public static func parse(_ text: String, file: String) throws(ScenarioError) -> Scenario {
        var scenario = Scenario(file: file, statements: [])
        var lineNumber = 0
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            lineNumber += 1
            guard rawLine.utf8.count <= maximumLineBytes else {
                throw ScenarioError("line of \(rawLine.utf8.count) bytes; at most \(maximumLineBytes) are accepted",
                                    at: SourceLocation(file: file, line: lineNumber))
            }
            if let bad = rawLine.unicodeScalars.first(where: { $0.value < 0x20 && $0 != "\t" && $0 != "\r" || $0.value == 0x7F }) {
                throw ScenarioError("control character U+\(String(bad.value, radix: 16, uppercase: true).leftPadded(to: 4)) in the line (is this a text file?)",
                                    at: SourceLocation(file: file, line: lineNumber))
            }
            let code = rawLine.prefix { $0 != "#" }.trimmingWhitespace()
            if code.isEmpty { continue }
            let location = SourceLocation(file: file, line: lineNumber)
            let words = code.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
            var line = LineParser(words: words, location: location)
            let command = try line.parseCommand()
            scenario.statements.append(Statement(location: location, text: code, command: command))
        }
        try ScenarioValidator.check(&scenario)
        return scenario
    }
}

/// The parser of one line: the words after the keyword, consumed left to right.
struct LineParser {
    var words: [String]
    let location: SourceLocation
    private var index = 1

    init(words: [String], location: SourceLocation) {
        self.words = words
        self.location = location
    }

    func error(_ message: String) -> ScenarioError { ScenarioError(message, at: location) }

    mutating func parseCommand() throws(ScenarioError) -> Command {
        let keyword = words[0]
        let command: Command
        switch keyword {
        case "design": command = .design(try name("design name"))
        case "memory": command = .memory(try size())
        case "swap": command = .swap(try swapRequest())
        case "cgroup-mount": command = .cgroupMount(try cgroupMountOptions())
        case "set": command = .set(try knobs())
        case "mmap": command = .mmap(try mmapRequest())
        case "madvise": command = .madvise(try address(), try size(), try advice())
        case "write": command = try writeCommand()
        case "read": command = .read(try address(), try size())
        case "munmap": command = .munmap(try address(), try size())
        case "mprotect": command = .mprotect(try address(), try size(), try protection(next("protection")))
        case "mremap": command = try mremap()
        case "fork": command = .fork(try regionOrProcessName("process name"))
        case "on": command = .on(try regionOrProcessName("process name"))
        case "exit": command = .exit
        case "mark": command = .mark
        case "khugepaged": command = try khugepaged()
        case "split": command = .split(try address(), try size())
        case "pin": command = .pin(try address(), try size())
        case "unpin": command = .unpin(try address(), try size())
        case "cgroup": command = try cgroupCommand()
        case "in": command = .inCgroup(try cgroupName())
        case "rmdir": command = .rmdirCgroup(try cgroupName())
        case "oom_score_adj":
            let word = try next("oom_score_adj value")
            guard let value = Int(word), (-1000...1000).contains(value) else {
                throw error("bad oom_score_adj '\(word)': a whole number from -1000 to 1000 (Linux: EINVAL)")
            }
            command = .oomScoreAdj(value)
        case "expect": command = .expect(try expectation())
        default:
            throw error("unknown command '\(keyword)'; expected one of: design, memory, swap, set, mmap, madvise, write, read, munmap, mprotect, mremap, fork, on, exit, khugepaged, split, pin, unpin, cgroup, in, expect, mark")
        }
        if index < words.count {
            throw error("unexpected '\(words[index])' after \(keyword) command")
        }
        return command
    }

    // MARK: Words

    mutating func next(_ what: String) throws(ScenarioError) -> String {
        guard index < words.count else { throw error("\(words[0]): missing \(what)") }
        defer { index += 1 }
        return words[index]
    }

    var remaining: ArraySlice<String> { words[index...] }

    mutating func takeRemaining() -> [String] {
        defer { index = words.count }
        return Array(words[index...])
    }

    mutating func name(_ what: String) throws(ScenarioError) -> String { try next(what) }

    mutating func regionOrProcessName(_ what: String) throws(ScenarioError) -> String {
        let word = try next(what)
        guard Self.isName(word) else {
            throw error("bad \(what) '\(word)': use letters, digits and '_', starting with a letter or '_'")
        }
        return word
    }

    /// A cgroup's path: names joined by "/" (`pod/app` is the cgroup `app` below `pod`).
    mutating func cgroupName() throws(ScenarioError) -> String {
        let word = try next("cgroup name")
        guard word.split(separator: "/", omittingEmptySubsequences: false).allSatisfy({ Self.isName(String($0)) }) else {
            throw error("bad cgroup name '\(word)': use letters, digits and '_', starting with a letter or '_', and '/' between a cgroup and one below it (pod/app)")
        }
        return word
    }

    static func isName(_ word: String) -> Bool {
        guard let first = word.first, first.isASCII, first.isLetter || first == "_" else { return false }
        return word.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }

    // MARK: Values

    mutating func size() throws(ScenarioError) -> UInt64 { try parseSize(next("size")) }

    func parseSize(_ word: String) throws(ScenarioError) -> UInt64 {
        guard let bytes = ByteCount.parse(word) else {
            throw error("bad size '\(word)': expected a number with an optional K, M or G suffix (4K, 2M)")
        }
        return bytes
    }

    mutating func address() throws(ScenarioError) -> AddressExpression { try parseAddress(next("address")) }

    /// `NAME`, then any number of `+SIZE` / `-SIZE` terms.
    func parseAddress(_ word: String) throws(ScenarioError) -> AddressExpression {
        let bad = error("bad address '\(word)': expected a region name with optional offsets, like A or A+2M-4K")
        let name = String(word.prefix { $0 != "+" && $0 != "-" })
        guard Self.isName(name) else { throw bad }
        var offset: Int64 = 0
        var rest = word.dropFirst(name.count)
        while let sign = rest.first {
            rest = rest.dropFirst()
            let term = rest.prefix { $0 != "+" && $0 != "-" }
            rest = rest.dropFirst(term.count)
            guard let bytes = ByteCount.parse(String(term)), bytes <= UInt64(Int64.max) else { throw bad }
            let (sum, overflow) = sign == "+" ? offset.addingReportingOverflow(Int64(bytes))
                                              : offset.subtractingReportingOverflow(Int64(bytes))
            guard !overflow else { throw bad }
            offset = sum
        }
        return AddressExpression(region: name, offset: offset)
    }

    func protection(_ word: String) throws(ScenarioError) -> Protection {
        guard let p = Protection(rawValue: word) else {
            throw error("bad protection '\(word)': expected r, rw, rx, rwx or none")
        }
        return p
    }

    mutating func advice() throws(ScenarioError) -> Advice {
        let word = try next("advice")
        guard let a = Advice(rawValue: word) else {
            throw error("bad advice '\(word)': expected \(Advice.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return a
    }

    /// Splits `key=value`; the key must be one of `allowed` when given.
    func option(_ word: String, allowed: [String]) throws(ScenarioError) -> (String, String) {
        guard let eq = word.firstIndex(of: "="), eq != word.startIndex else {
            throw error("bad option '\(word)': expected key=value (\(allowed.joined(separator: ", ")))")
        }
        let key = String(word[..<eq]), value = String(word[word.index(after: eq)...])
        guard allowed.contains(key) else {
            throw error("unknown option '\(key)' for \(words[0]); expected \(allowed.joined(separator: ", "))")
        }
        guard !value.isEmpty else { throw error("option '\(key)' needs a value") }
        return (key, value)
    }

    // MARK: Commands with options

    /// The cgroup2 mount options the model has, by name (Documentation/admin-guide/cgroup-v2.rst,
    /// "Mounting").
    static let cgroupMountOptions = ["memory_recursiveprot"]

    /// `cgroup-mount`'s options: words or comma-separated lists, as `mount -o` takes them.
    mutating func cgroupMountOptions() throws(ScenarioError) -> [String] {
        let options = takeRemaining().flatMap { $0.split(separator: ",").map(String.init) }
        guard !options.isEmpty else { throw error("cgroup-mount: missing option (\(Self.cgroupMountOptions.joined(separator: ", ")))") }
        for option in options where !Self.cgroupMountOptions.contains(option) {
            throw error("cgroup-mount: the model has no mount option '\(option)' (it has \(Self.cgroupMountOptions.joined(separator: ", ")))")
        }
        return options
    }

    mutating func knobs() throws(ScenarioError) -> [Knob] {
        let pairs = takeRemaining()
        guard !pairs.isEmpty else { throw error("set: missing tunable=value") }
        var knobs: [Knob] = []
        for pair in pairs {
            guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex, pair.index(after: eq) != pair.endIndex else {
                throw error("bad setting '\(pair)': expected tunable=value, like enabled=madvise")
            }
            let name = String(pair[..<eq]), value = String(pair[pair.index(after: eq)...])
            let segments = name.split(separator: "/", omittingEmptySubsequences: false)
            let valid = segments.allSatisfy { s in
                !s.isEmpty && s != "." && s != ".." && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_-".contains($0)) }
            }
            guard valid else {
                throw error("bad tunable '\(name)': expected a path below /sys/kernel/mm/transparent_hugepage, like khugepaged/max_ptes_none")
            }
            knobs.append(Knob(name: name, value: value))
        }
        return knobs
    }

    mutating func swapRequest() throws(ScenarioError) -> SwapRequest {
        var request = SwapRequest(bytes: try size(), clusters: false)
        for word in takeRemaining() {
            let (_, value) = try option(word, allowed: ["clusters"])
            guard value == "yes" || value == "no" else { throw error("bad value '\(value)' for clusters: expected yes or no") }
            request.clusters = value == "yes"
        }
        return request
    }

    mutating func mmapRequest() throws(ScenarioError) -> MmapRequest {
        var request = MmapRequest(name: try regionOrProcessName("region name"), length: try size(), fixedAddress: nil,
                                  protection: .rw, shared: false, hugeAligned: true)
        for word in takeRemaining() {
            let (key, value) = try option(word, allowed: ["at", "prot", "shared", "stack", "align"])
            switch key {
            case "at": request.fixedAddress = try parseAddress(value)
            case "prot": request.protection = try protection(value)
            case "shared":
                guard value == "yes" || value == "no" else { throw error("bad value '\(value)' for shared: expected yes or no") }
                request.shared = value == "yes"
            case "stack":
                guard value == "yes" || value == "no" else { throw error("bad value '\(value)' for stack: expected yes or no (MAP_STACK)") }
                request.stack = value == "yes"
            default:
                switch try parseSize(value) {
                case 4096: request.hugeAligned = false
                case 2 << 20: request.hugeAligned = true
                default: throw error("bad alignment '\(value)': expected 4K or 2M")
                }
            }
        }
        return request
    }

    mutating func mremap() throws(ScenarioError) -> Command {
        let old = try address(), oldSize = try size(), newSize = try size()
        var destination: AddressExpression?
        for word in takeRemaining() {
            destination = try parseAddress(option(word, allowed: ["to"]).1)
        }
        return .mremap(old, oldSize, newSize, to: destination)
    }

    /// `write ADDR SIZE [stride=S]`.
    mutating func writeCommand() throws(ScenarioError) -> Command {
        let at = try address(), length = try size()
        var stride: UInt64?
        for word in takeRemaining() {
            let value = try option(word, allowed: ["stride"]).1
            let s = try parseSize(value)
            guard s > 0 else { throw error("bad stride '\(value)': a stride is at least 1 byte") }
            stride = s
        }
        return .write(at, length, stride: stride)
    }

    /// `cgroup NAME [FILE=VALUE ...]`: the value goes to the kernel as written (Linux parses it).
    mutating func cgroupCommand() throws(ScenarioError) -> Command {
        let name = try cgroupName()
        guard name != CgroupFiles.rootName && !name.hasPrefix(CgroupFiles.rootName + "/") else {
            throw error("cgroup: 'root' names the root cgroup, which has no memory.max; pick another name")
        }
        var writes: [Knob] = []
        for word in takeRemaining() {
            guard let eq = word.firstIndex(of: "="), eq != word.startIndex else {
                throw error("bad cgroup setting '\(word)': expected FILE=VALUE, like memory.max=20M")
            }
            let file = String(word[..<eq]), value = String(word[word.index(after: eq)...])
            guard CgroupFiles.writable.contains(file) else {
                if CgroupFiles.all.contains(file) {
                    throw error("cgroup file '\(file)' is read-only (Linux: EACCES); writable are \(CgroupFiles.writable.joined(separator: ", "))")
                }
                throw error("unknown cgroup file '\(file)' (Linux: ENOENT); writable are \(CgroupFiles.writable.joined(separator: ", ")) — cgroup v2 names, not v1's memory.limit_in_bytes")
            }
            writes.append(Knob(name: file, value: value))
        }
        return .cgroup(name, writes)
    }

    mutating func khugepaged() throws(ScenarioError) -> Command {
        var scans = 1
        for word in takeRemaining() {
            let value = try option(word, allowed: ["full_scans"]).1
            guard let n = Int(value), n >= 1, n <= 1000 else {
                throw error("bad full_scans '\(value)': expected a whole number from 1 to 1000")
            }
            scans = n
        }
        return .khugepaged(fullScans: scans)
    }
}

extension Substring {
    func trimmingWhitespace() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
