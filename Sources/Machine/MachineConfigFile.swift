import Foundation

/// A problem in a machine config file, with where it is.
public struct MachineConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    public var file: String
    /// 1-based; nil for a problem with the file as a whole (unreadable, something missing).
    public var line: Int?
    public var message: String
    public init(file: String, line: Int?, message: String) { self.file = file; self.line = line; self.message = message }
    public var description: String { line.map { "\(file):\($0): \(message)" } ?? "\(file): \(message)" }
}

/// The machine config format: one setting per line, `#` starts a comment.
///
/// ```
/// based-on   zen4                 # optional, first: start from a preset, then override
/// name       my-core
/// frequency  3.2                  # GHz
/// l1d        4k,2m,1g 72 full     # page sizes, entries, ways (or "full"); repeat for more arrays
/// l1i        4k,2m 64 full
/// l2         4k,2m 3072 24
/// pwc        pd 64 4              # pml4 | pdpt | pd; 0 entries: no such cache
/// nested-tlb 4k,2m,1g 32 full
/// cache      l2 1M 8 14           # level, size (K/M suffix), ways, latency in cycles
/// timing     memory-ns 95         # see `TimingParameters`; keys listed in docs/machines.md
/// ```
/// The first `l1d`, `l1i` or `l2` line replaces the preset's arrays of that level; later ones add arrays.
extension MachineDescription {
    /// The timing keys a config file may set.
    nonisolated(unsafe) public static let timingKeys: [String: WritableKeyPath<TimingParameters, Double>] = [
        "base": \.baseCycles, "l2-tlb-hit": \.l2TLBHitCycles, "walk-start": \.walkStartCycles,
        "memory-ns": \.memoryLatencyNs, "mlp": \.memoryLevelParallelism, "fault-4k": \.baseFaultCycles,
        "fault-2m": \.hugeFaultCycles, "invlpg": \.invlpgCycles, "full-flush": \.fullFlushCycles,
        "ipi-send": \.ipiSendCycles, "ipi-receive": \.ipiReceiveCycles,
        "fault-minor": \.minorFaultCycles, "copy-4k": \.copyPageCycles, "compact-stall": \.compactStallCycles,
        "compact-scan": \.compactScanCycles, "migrate-4k": \.migratePageCycles, "reclaim-4k": \.reclaimPageCycles,
        "swap-out-4k": \.swapOutPageCycles, "swap-in-4k": \.swapInPageCycles,
    ]

    /// Reads a machine config file.
    public static func load(contentsOf path: String) throws(MachineConfigError) -> MachineDescription {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw MachineConfigError(file: path, line: nil, message: "cannot read the file (\(error.localizedDescription))")
        }
        return try parse(text, file: path)
    }

    /// Parses machine config text; `file` names it in errors.
    public static func parse(_ text: String, file: String) throws(MachineConfigError) -> MachineDescription {
        var d = MachineDescription(name: "", source: "config file \(file)", frequencyGHz: 0, l1Data: [], l1Instruction: [],
                                   l2: [], pml4Cache: .full(.size4K, entries: 0), pdptCache: .full(.size4K, entries: 0),
                                   pdCache: .full(.size4K, entries: 0), nestedTLB: .full(.all, entries: 0),
                                   caches: [], timing: TimingParameters())
        var replaced: Set<String> = []
        var sawSetting = false
        var definedAt: [String: Int] = [:]
        var cacheLevels: [Int: CacheLevelSpec] = [:]

        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = n + 1
            func fail(_ message: String) -> MachineConfigError { MachineConfigError(file: file, line: lineNumber, message: message) }
            let content = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = content.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard let key = words.first else { continue }
            let args = Array(words.dropFirst())
            func expectCount(_ count: Int, _ usage: String) throws(MachineConfigError) {
                if args.count != count { throw fail("'\(key)' takes \(count) value\(count == 1 ? "" : "s"): \(key) \(usage)") }
            }
            func number(_ s: Substring, _ what: String) throws(MachineConfigError) -> Double {
                guard let v = Double(s), v.isFinite, v >= 0 else { throw fail("\(what) must be a non-negative number, not '\(s)'") }
                return v
            }
            func integer(_ s: Substring, _ what: String) throws(MachineConfigError) -> Int {
                guard let v = Int(s), v >= 0 else { throw fail("\(what) must be a non-negative integer, not '\(s)'") }
                return v
            }
            func array(_ usage: String) throws(MachineConfigError) -> TLBArraySpec {
                try expectCount(3, usage)
                var sizes: PageSizeSet = []
                for part in args[0].split(separator: ",") {
                    guard let s = PageSize(spelling: part) else { throw fail("unknown page size '\(part)' (use 4k, 2m, 1g)") }
                    sizes.insert(PageSizeSet(s))
                }
                if sizes.isEmpty { throw fail("no page size given") }
                let entries = try integer(args[1], "entries")
                let ways = args[2] == "full" ? entries : try integer(args[2], "ways")
                let spec = TLBArraySpec(sizes, entries: entries, ways: ways)
                return spec
            }
            func checked(_ spec: TLBArraySpec, allowEmpty: Bool = false) throws(MachineConfigError) -> TLBArraySpec {
                if allowEmpty && spec.entries == 0 { return spec }
                if let p = spec.problem { throw fail(p) }
                return spec
            }

            switch key {
            case "based-on":
                try expectCount(1, "PRESET")
                if sawSetting { throw fail("'based-on' must come before every other setting") }
                guard let preset = presets[String(args[0])] else {
                    throw fail("unknown preset '\(args[0])' (presets: \(presetNames.joined(separator: ", ")))")
                }
                d = preset
                d.source = "config file \(file), based on \(preset.name)"
                for (i, c) in preset.caches.enumerated() { cacheLevels[i + 1] = c }
                for k in ["name", "frequency", "l1d", "l1i", "l2", "pwc pml4", "pwc pdpt", "pwc pd", "nested-tlb"] { definedAt[k] = lineNumber }
            case "name":
                guard !args.isEmpty else { throw fail("'name' needs a value") }
                d.name = args.joined(separator: " ")
                definedAt["name"] = lineNumber
            case "frequency":
                try expectCount(1, "GHZ")
                let f = try number(args[0], "frequency")
                if f == 0 { throw fail("frequency must be positive") }
                d.frequencyGHz = f
                definedAt["frequency"] = lineNumber
            case "l1d", "l1i", "l2":
                let spec = try checked(try array("SIZES ENTRIES WAYS|full"))
                let k = String(key)
                var list = replaced.contains(k) ? (k == "l1d" ? d.l1Data : k == "l1i" ? d.l1Instruction : d.l2) : []
                replaced.insert(k)
                if k != "l2", let clash = list.first(where: { !$0.pageSizes.isDisjoint(with: spec.pageSizes) }) {
                    throw fail("another \(k) array already holds \(clash.pageSizes.intersection(spec.pageSizes))")
                }
                list.append(spec)
                switch k {
                case "l1d": d.l1Data = list
                case "l1i": d.l1Instruction = list
                default: d.l2 = list
                }
                definedAt[k] = lineNumber
            case "pwc":
                guard let which = args.first else { throw fail("'pwc' takes: pwc pml4|pdpt|pd ENTRIES WAYS|full") }
                guard args.count == 3 else { throw fail("'pwc' takes 3 values: pwc pml4|pdpt|pd ENTRIES WAYS|full") }
                let entries = try integer(args[1], "entries")
                let ways = args[2] == "full" ? entries : try integer(args[2], "ways")
                let spec = try checked(TLBArraySpec(.size4K, entries: entries, ways: ways), allowEmpty: true)
                switch which {
                case "pml4": d.pml4Cache = spec
                case "pdpt": d.pdptCache = spec
                case "pd": d.pdCache = spec
                default: throw fail("unknown paging-structure cache '\(which)' (use pml4, pdpt, pd)")
                }
                definedAt["pwc \(which)"] = lineNumber
            case "nested-tlb":
                d.nestedTLB = try checked(try array("SIZES ENTRIES WAYS|full"), allowEmpty: true)
                definedAt["nested-tlb"] = lineNumber
            case "cache":
                try expectCount(4, "l1|l2|l3 SIZE WAYS LATENCY")
                guard args[0].hasPrefix("l"), let level = Int(args[0].dropFirst()), (1...4).contains(level) else {
                    throw fail("unknown cache level '\(args[0])' (use l1, l2, l3, l4)")
                }
                guard let bytes = Self.byteSize(args[1]) else {
                    throw fail("cache size must be a number with an optional K or M suffix, not '\(args[1])'")
                }
                let spec = CacheLevelSpec(bytes: bytes, ways: try integer(args[2], "ways"), latency: try number(args[3], "latency"))
                if let p = spec.problem { throw fail(p) }
                cacheLevels[level] = spec
            case "timing":
                try expectCount(2, "KEY VALUE")
                guard let path = timingKeys[String(args[0])] else {
                    throw fail("unknown timing key '\(args[0])' (keys: \(timingKeys.keys.sorted().joined(separator: ", ")))")
                }
                d.timing[keyPath: path] = try number(args[1], String(args[0]))
            default:
                throw fail("unknown setting '\(key)' (settings: based-on, name, frequency, l1d, l1i, l2, pwc, nested-tlb, cache, timing)")
            }
            sawSetting = true
        }

        for required in ["name", "frequency", "l1d", "l1i", "l2"] where definedAt[required] == nil {
            throw MachineConfigError(file: file, line: nil, message: "no '\(required)' line (or start with 'based-on PRESET')")
        }
        let levels = cacheLevels.keys.sorted()
        if levels.isEmpty || levels != Array(1...levels.count) {
            throw MachineConfigError(file: file, line: nil, message: "cache levels must be l1, then l2, … without gaps (have \(levels.map { "l\($0)" }))")
        }
        d.caches = levels.map { cacheLevels[$0]! }
        if let p = d.problems.first { throw MachineConfigError(file: file, line: nil, message: p) }
        return d
    }

    /// `64K`, `1M`, `1310720` → bytes.
    static func byteSize(_ s: Substring) -> Int? {
        let upper = s.uppercased()
        var digits = Substring(upper), scale = 1
        if upper.hasSuffix("K") { digits = digits.dropLast(); scale = 1 << 10 }
        else if upper.hasSuffix("M") { digits = digits.dropLast(); scale = 1 << 20 }
        guard let v = Int(digits), v > 0 else { return nil }
        return v * scale
    }
}
