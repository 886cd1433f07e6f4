import VMCore

/// A write to a file below `/sys/kernel/mm/transparent_hugepage/` that the kernel refused: the errno a
/// program's `open()` or `write()` gets on Linux, and what is wrong, naming the file.
public struct SysfsError: Error, Sendable, Hashable, CustomStringConvertible {
    /// `ENOENT`: no such file (for this design); `EACCES`: read-only; `EINVAL`: a value the file's
    /// store function refuses; `ERANGE`: a number too large for it.
    public var errno: Errno
    /// The message, naming the file and the value (the text `--set` and scenarios report).
    public var message: String
    public var description: String { message }
}

/// The files below `/sys/kernel/mm/transparent_hugepage/` as a program sees them: `enabled`,
/// `defrag`, `use_zero_page`, `shrink_underused`, `hpage_pmd_size`, `hugepages-<size>kB/enabled`
/// and `khugepaged/*` (Linux: the `hugepage_attr_group`, `khugepaged_attr_group` and the per-size
/// `thpsize` kobjects in mm/huge_memory.c and mm/khugepaged.c).
///
/// Writes are refused as Linux refuses them: a file that does not exist (or not in this design)
/// with `ENOENT` at `open()`, a read-only file with `EACCES` (kernfs_fop_open() for a file without
/// a store method), a value the store function rejects with `EINVAL` (`enabled_store()`,
/// `defrag_store()`, `anon_enabled_store()`, `max_ptes_none_store()`, …) and a number `kstrtoul()`
/// cannot hold with `ERANGE` (`single_hugepage_flag_store()`). As the store functions do, a value may
/// end in one newline (`sysfs_streq()`, `kstrtoul()`), numbers may start with `+`, and
/// `shrink_underused` takes `kstrtobool()`'s spellings (`y`, `n`, `on`, `off`, …). Unlike the
/// model's settings types, Linux does not accept the `[always]` brackets `cat` shows.
public struct TransparentHugepageSysfs: Sendable {
    let kernel: Kernel

    /// The directory, for messages.
    public static let directory = "/sys/kernel/mm/transparent_hugepage/"

    /// Writes `value` to `directory + path` (e.g. `enabled`, `khugepaged/max_ptes_none`,
    /// `hugepages-64kB/enabled`); the new value applies from the next fault or scan.
    public func write(_ path: String, _ value: String) throws(SysfsError) {
        if let state = kernel.policyState, try Self.isPolicyKnob(path, of: state) {
            if let problem = state.setKnob(path, to: Self.trimmed(value)) { throw SysfsError(errno: .EINVAL, message: problem) }
            return
        }
        let file = try Self.file(path, design: kernel.design)
        let text = try Self.storeText(file, path: path, value)
        switch file {
        case .khugepaged:
            if let problem = kernel.setKhugepagedKnob(path, to: text) { throw SysfsError(errno: .EINVAL, message: problem) }
        case .hugepage:
            var settings = kernel.hugepageSettings
            if let problem = settings.set(path, to: text) { throw SysfsError(errno: .EINVAL, message: problem) }
            kernel.hugepageSettings = settings
        case .readOnly:
            throw SysfsError(errno: .EACCES, message: "\(path) is read-only")
        }
    }

    /// The text `cat directory + path` prints.
    public func read(_ path: String) throws(SysfsError) -> String {
        if let state = kernel.policyState, try Self.isPolicyKnob(path, of: state) { return state.knobText(path) ?? "" }
        switch try Self.file(path, design: kernel.design) {
        case .khugepaged, .readOnly where path.hasPrefix("khugepaged/"):
            return kernel.khugepaged.sysfsText(path) ?? ""
        case .hugepage, .readOnly:
            return kernel.hugepageSettings.sysfsText(path) ?? ""
        }
    }

    /// What writing `value` to `path` on a kernel of `design` would refuse, without a kernel: the same
    /// checks as `write(_:_:)` (for validating `--set` before a run starts); nil when it would succeed.
    public static func problem(writing value: String, to path: String, design: KernelDesign) -> SysfsError? {
        do throws(SysfsError) {
            let file = try file(path, design: design)
            let text = try storeText(file, path: path, value)
            switch file {
            case .khugepaged:
                var k = KhugepagedSettings()
                if let problem = k.set(path, to: text) { return SysfsError(errno: .EINVAL, message: problem) }
            case .hugepage:
                var t = design.defaultSettings
                if let problem = t.set(path, to: text) { return SysfsError(errno: .EINVAL, message: problem) }
            case .readOnly:
                return SysfsError(errno: .EACCES, message: "\(path) is read-only")
            }
            return nil
        } catch { return error }
    }

    /// What writing `value` to `path` would refuse on a kernel running `policy` (nil for the design's
    /// own): the policy's knobs (`ingens/util_threshold`) first, then the design's files.
    public static func problem(writing value: String, to path: String, design: KernelDesign,
                               policy: (any HugepagePolicy)?) -> SysfsError? {
        if let state = policy?.makeState() {
            do throws(SysfsError) {
                if try isPolicyKnob(path, of: state) {
                    return state.setKnob(path, to: trimmed(value)).map { SysfsError(errno: .EINVAL, message: $0) }
                }
            } catch { return error }
        }
        return problem(writing: value, to: path, design: design)
    }

    /// Whether `path` is one of the policy's knobs; `ENOENT` for an unknown name in a policy's folder.
    static func isPolicyKnob(_ path: String, of state: any HugepagePolicyState) throws(SysfsError) -> Bool {
        let names = state.knobNames
        if names.contains(path) { return true }
        guard let slash = path.firstIndex(of: "/"),
              names.contains(where: { $0.hasPrefix(path[...slash]) }) else { return false }
        throw SysfsError(errno: .ENOENT, message: "unknown knob '\(path)': the policy's knobs are \(names.joined(separator: ", "))")
    }

    /// `value` without the one newline a store function ignores.
    static func trimmed(_ value: String) -> String { value.hasSuffix("\n") ? String(value.dropLast()) : value }

    // MARK: Which file, and the value its store function parses

    enum File { case hugepage, khugepaged, readOnly }

    /// The file `path` names in `design`, or `ENOENT` (Linux: the lookup of `open()`).
    static func file(_ path: String, design: KernelDesign) throws(SysfsError) -> File {
        if path.hasPrefix("khugepaged/") {
            if KhugepagedSettings.knobNames.contains(path) { return .khugepaged }
            if KhugepagedSettings.counterNames.contains(path) { return .readOnly }
            var k = KhugepagedSettings()
            throw SysfsError(errno: .ENOENT, message: k.set(path, to: "") ?? path)
        }
        if path == "hpage_pmd_size" { return .readOnly }
        if path.hasPrefix("hugepages-"), path.hasSuffix("/enabled"),
           TransparentHugepageSettings.order(ofSizeFolder: path.dropLast("/enabled".count)) != nil,
           !design.hasHugepageKnob(path) {
            throw SysfsError(errno: .ENOENT, message: "the \(design) design has no multi-size THP ('\(path)' is Linux 6.8+)")
        }
        if TransparentHugepageSettings.knobNames.contains(path) { return .hugepage }
        var t = design.defaultSettings
        throw SysfsError(errno: .ENOENT, message: t.set(path, to: "") ?? path)
    }

    /// `value` as the settings types spell it, or the errno the file's store function returns for it.
    static func storeText(_ file: File, path: String, _ value: String) throws(SysfsError) -> String {
        guard file != .readOnly else { return value }
        var text = Substring(value)
        if text.hasSuffix("\n") { text = text.dropLast() }
        func invalid() -> SysfsError { SysfsError(errno: .EINVAL, message: "\(path): '\(value)' is not a value it accepts") }
        switch path {
        case "enabled", "defrag", _ where path.hasPrefix("hugepages-"):
            // sysfs_streq(): the whole word; the `[…]` of `cat` is refused.
            if text.hasPrefix("[") { throw invalid() }
            return String(text)
        case "shrink_underused":
            // kstrtobool(): the first character decides; `o` needs `n` or `f` after it.
            let start = text.prefix(2).lowercased()
            if let first = start.first, "yt1".contains(first) || start == "on" { return "1" }
            if let first = start.first, "nf0".contains(first) || start == "of" { return "0" }
            throw invalid()
        default:
            // kstrtoul()/kstrtouint(): decimal digits after an optional `+`.
            if text.hasPrefix("+") { text = text.dropFirst() }
            guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return String(text) }
            if UInt64(text) == nil, path == "use_zero_page" || path == "khugepaged/defrag" {
                // single_hugepage_flag_store() returns kstrtoul()'s -ERANGE; the other stores say EINVAL.
                throw SysfsError(errno: .ERANGE, message: "\(path): '\(value)' is out of range")
            }
            return String(text)
        }
    }
}

extension Kernel {
    /// `/sys/kernel/mm/transparent_hugepage/`, read and written as a program does.
    public var transparentHugepageSysfs: TransparentHugepageSysfs { TransparentHugepageSysfs(kernel: self) }
}
