import Foundation
import VMCore

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

    /// Reads a machine config file: a regular file of at most `ConfigLimits.fileBytes`, UTF-8.
    public static func load(contentsOf path: String) throws(MachineConfigError) -> MachineDescription {
        func fail(_ why: String) -> MachineConfigError { MachineConfigError(file: path, line: nil, message: "cannot read the file: \(why)") }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw fail("no such file") }
        guard !isDirectory.boolValue else { throw fail("it is a directory") }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        guard attributes?[.type] as? FileAttributeType == .typeRegular else { throw fail("not a regular file") }
        if let size = attributes?[.size] as? Int, size > ConfigLimits.fileBytes {
            throw fail("\(size) bytes; a machine file has at most \(ConfigLimits.fileBytes)")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw fail("permission denied") }
        return try parse(bytes: Array(data), file: path)
    }

    /// Parses a machine file's bytes: UTF-8 text (the line of the first byte that is not is reported).
    public static func parse(bytes: [UInt8], file: String) throws(MachineConfigError) -> MachineDescription {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            let offset = UTF8Text.firstInvalidByte(bytes) ?? 0
            throw MachineConfigError(file: file, line: 1 + bytes[..<offset].count { $0 == 0x0A },
                                     message: "byte \(offset) is not UTF-8 text (is this a machine file?)")
        }
        return try parse(text, file: file)
    }

    /// Parses machine config text; `file` names it in errors.
    public static func parse(_ text: String, file: String) throws(MachineConfigError) -> MachineDescription {
        var basedOnPreset = false
        var d = MachineDescription(name: "", source: "config file \(file)", frequencyGHz: 0, l1Data: [], l1Instruction: [],
                                   l2: [], pml4Cache: .full(.size4K, entries: 0), pdptCache: .full(.size4K, entries: 0),
                                   pdCache: .full(.size4K, entries: 0), nestedTLB: .full(.all, entries: 0),
                                   caches: [], timing: TimingParameters())
        var replaced: Set<String> = []
        var sawSetting = false
        var definedAt: [String: Int] = [:]
        var cacheLevels: [Int: CacheLevelSpec] = [:]

        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
        for (n, raw) in lines.enumerated() {
            let lineNumber = n + 1
            func fail(_ message: String) -> MachineConfigError { MachineConfigError(file: file, line: lineNumber, message: message) }
            guard raw.utf8.count <= ConfigLimits.lineBytes else {
                throw fail("line of \(raw.utf8.count) bytes; at most \(ConfigLimits.lineBytes) are accepted")
            }
            if let bad = raw.unicodeScalars.first(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F }) {
                throw fail("control character \(bad.value) in the line (is this a text file?)")
            }
            let content = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = content.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard let key = words.first else { continue }
            let args = Array(words.dropFirst())
            func expectCount(_ count: Int, _ usage: String) throws(MachineConfigError) {
                if args.count != count { throw fail("'\(key)' takes \(count) value\(count == 1 ? "" : "s"): \(key) \(usage)") }
            }
            func number(_ s: Substring, _ what: String, _ range: ClosedRange<Double>, _ unit: String) throws(MachineConfigError) -> Double {
                guard let v = Double(s), v.isFinite, range.contains(v) else {
                    throw fail("\(what) must be a number from \(ConfigLimits.text(range.lowerBound)) to \(ConfigLimits.text(range.upperBound)) \(unit), not '\(s)'")
                }
                return v
            }
            func integer(_ s: Substring, _ what: String, _ range: ClosedRange<Int>) throws(MachineConfigError) -> Int {
                guard let v = Int(s), range.contains(v) else {
                    throw fail("\(what) must be a whole number from \(range.lowerBound) to \(range.upperBound), not '\(s)'")
                }
                return v
            }
            func entriesAndWays(_ e: Substring, _ w: Substring, minimum: Int) throws(MachineConfigError) -> (Int, Int) {
                let entries = try integer(e, "entries", minimum...ConfigLimits.tlbEntries)
                if entries == 0 { return (0, w == "full" ? 0 : try integer(w, "ways", 0...ConfigLimits.tlbEntries)) }
                return (entries, w == "full" ? entries : try integer(w, "ways", 1...entries))
            }
            func array(_ usage: String) throws(MachineConfigError) -> TLBArraySpec {
                try expectCount(3, usage)
                var sizes: PageSizeSet = []
                for part in args[0].split(separator: ",") {
                    guard let s = PageSize(spelling: part) else { throw fail("unknown page size '\(part)' (use 4k, 2m, 1g)") }
                    sizes.insert(PageSizeSet(s))
                }
                if sizes.isEmpty { throw fail("no page size given") }
                let (entries, ways) = try entriesAndWays(args[1], args[2], minimum: key == "nested-tlb" ? 0 : 1)
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
                basedOnPreset = true
                d.source = "config file \(file), based on \(preset.name)"
                for (i, c) in preset.caches.enumerated() { cacheLevels[i + 1] = c }
                for k in ["name", "frequency", "l1d", "l1i", "l2", "pwc pml4", "pwc pdpt", "pwc pd", "nested-tlb"] { definedAt[k] = lineNumber }
            case "name":
                guard !args.isEmpty else { throw fail("'name' needs a value") }
                d.name = args.joined(separator: " ")
                // A core described in full gets its name's contention defaults (a preset's, or generic).
                if !basedOnPreset { d.contention = .preset(named: d.name) }
                definedAt["name"] = lineNumber
            case "frequency":
                try expectCount(1, "GHZ")
                let f = try number(args[0], "frequency", ConfigLimits.frequencyGHz, "GHz")
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
                let (entries, ways) = try entriesAndWays(args[1], args[2], minimum: 0)
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
                guard let bytes = Self.byteSize(args[1]), ConfigLimits.cacheBytes.contains(bytes) else {
                    throw fail("cache size must be from 1K to 1G (a number with an optional K or M suffix), not '\(args[1])'")
                }
                let spec = CacheLevelSpec(bytes: bytes, ways: try integer(args[2], "ways", 1...ConfigLimits.cacheWays),
                                          latency: try number(args[3], "latency", ConfigLimits.cacheLatencyCycles, "cycles"))
                if let p = spec.problem { throw fail(p) }
                cacheLevels[level] = spec
            case "timing":
                try expectCount(2, "KEY VALUE")
                guard let path = timingKeys[String(args[0])] else {
                    throw fail("unknown timing key '\(args[0])' (keys: \(timingKeys.keys.sorted().joined(separator: ", ")))")
                }
                let range = ConfigLimits.timing[String(args[0])]!
                d.timing[keyPath: path] = try number(args[1], String(args[0]), range.values, range.unit)
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
        let (bytes, overflow) = v.multipliedReportingOverflow(by: scale)
        return overflow ? nil : bytes
    }
}

/// The range of every number a machine file may give: physically plausible values, so that a typo
/// cannot overflow the timing model, allocate gigabytes of TLB or make a run last hours.
///
/// docs/machines.md lists them; `Machine.init` relies on them no more than on its own checks.
public enum ConfigLimits {
    /// A file's size and a line's length, in bytes.
    public static let fileBytes = 1 << 20
    public static let lineBytes = 4096
    /// Core clock.
    public static let frequencyGHz: ClosedRange<Double> = 0.1...10
    /// Entries of one TLB array, paging-structure cache or nested TLB (0 allowed for the last two).
    public static let tlbEntries = 65_536
    /// One cache level's size, ways and latency.
    public static let cacheBytes: ClosedRange<Int> = 1 << 10 ... 1 << 30
    public static let cacheWays = 1024
    public static let cacheLatencyCycles: ClosedRange<Double> = 0...10_000
    /// Each `timing` key's range and unit.
    public static let timing: [String: (values: ClosedRange<Double>, unit: String)] = [
        "base": (0...1_000, "cycles"), "l2-tlb-hit": (0...1_000, "cycles"), "walk-start": (0...1_000, "cycles"),
        "memory-ns": (0...10_000, "ns"), "mlp": (1...1_024, "(misses in flight)"),
        "fault-4k": (0...10_000_000, "cycles"), "fault-2m": (0...100_000_000, "cycles"),
        "fault-minor": (0...10_000_000, "cycles"), "copy-4k": (0...10_000_000, "cycles"),
        "compact-stall": (0...10_000_000, "cycles"), "compact-scan": (0...10_000, "cycles"),
        "migrate-4k": (0...10_000_000, "cycles"), "reclaim-4k": (0...10_000_000, "cycles"),
        "swap-out-4k": (0...100_000_000, "cycles"), "swap-in-4k": (0...100_000_000, "cycles"),
        "invlpg": (0...1_000_000, "cycles"), "full-flush": (0...1_000_000, "cycles"),
        "ipi-send": (0...1_000_000, "cycles"), "ipi-receive": (0...1_000_000, "cycles"),
    ]

    /// `10000`, `0.1`, `1e+08` → `10,000`, `0.1`, `100,000,000`.
    static func text(_ v: Double) -> String {
        guard v == v.rounded() else { return "\(v)" }
        var digits = String(Int(v)), out = ""
        while digits.count > 3 { out = "," + digits.suffix(3) + out; digits = String(digits.dropLast(3)) }
        return digits + out
    }
}
