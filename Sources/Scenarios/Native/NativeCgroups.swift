#if canImport(Glibc)
import Glibc

/// The scenario language's memory cgroups (cgroup v2 names and semantics) on the live kernel: each
/// `cgroup NAME` is a real memory cgroup, made below the host's own, written, joined and read, and
/// removed when the run ends.
///
/// Where the memory controller is on the unified hierarchy (v2) the files are used as they are.
/// Where it is on cgroup v1 (`/sys/fs/cgroup/memory`), the v2 files are translated:
///
/// | scenario (v2)        | v1                                                                  |
/// | -------------------- | ------------------------------------------------------------------- |
/// | `memory.max`         | `memory.limit_in_bytes` (`max` is -1; printed back as `max`)        |
/// | `memory.swap.max`    | `memory.memsw.limit_in_bytes` = limit + swap (memory and swap together), with swap on; with none, nothing to limit |
/// | `memory.high`        | none: unsupported                                                   |
/// | `memory.min`, `memory.low` | none: unsupported (v1's `memory.soft_limit_in_bytes` is another mechanism) |
/// | `memory.reclaim`     | none: unsupported (v1's `memory.force_empty` empties the cgroup)      |
/// | `memory.current`     | `memory.usage_in_bytes`                                             |
/// | `memory.peak`        | `memory.max_usage_in_bytes`                                         |
/// | `memory.swap.current`| `memory.memsw.usage_in_bytes` − `memory.usage_in_bytes`             |
/// | `memory.events.local`| `max` ← `memory.failcnt` + `memory.memsw.failcnt` (a charge that fails on memsw first counts only there), `oom_kill` ← `memory.oom_control`'s `oom_kill` (v1 has no `oom`, `high`, `low` counts) |
/// | `memory.events`      | the same, summed over the cgroup and the run's cgroups below it (v1 counts events only where they happen: `memcg_memory_event()` stops at once off the default hierarchy) |
/// | `memory.stat`        | `anon` ← `total_rss`, `anon_thp` ← `total_rss_huge`, `pgfault` ← `total_pgfault` (the cgroup and those below it, as v2 counts; v1 has no THP event counts) |
///
/// A cgroup below another (`pod/app`) is a directory in its parent's; on v2 the parent's
/// `cgroup.subtree_control` gets `+memory` first.
///
/// Values are parsed as v2 parses them (`page_counter_memparse()`), so `-1` is refused with
/// EINVAL as on v2, before v1 (which would take it as "no limit") sees it.
final class NativeCgroups {
    enum Version: Sendable, Equatable { case v1, v2 }

    let version: Version
    /// The directory the run's cgroups are made in: the host's own memory cgroup.
    let parent: String
    /// Whether v1 accounts swap (`memory.memsw.*`, `CONFIG_MEMCG_SWAP` and `swapaccount=1`).
    let accountsSwap: Bool
    /// The run's cgroups, by scenario name: their directory and the limits written (bytes; nil = max).
    private var made: [(name: String, path: String)] = []
    private var limits: [String: (max: UInt64?, swap: UInt64?)] = [:]

    /// The cgroup2 mount options the scenario asked for (`cgroup-mount`).
    private var requestedMountOptions: Set<String> = []

    /// The super options of this machine's cgroup2 mount at /sys/fs/cgroup (`/proc/self/mountinfo`:
    /// the fields after " - cgroup2 SOURCE "), or nil when none is mounted there.
    static func hostMountOptions(mountinfo: String? = NativeSyscalls.readFile("/proc/self/mountinfo")) -> Set<String>? {
        for line in (mountinfo ?? "").split(separator: "\n") {
            let halves = line.split(separator: " - ", maxSplits: 1, omittingEmptySubsequences: false)
            guard halves.count == 2 else { continue }
            let mount = halves[0].split(separator: " "), fs = halves[1].split(separator: " ")
            guard mount.count >= 5, mount[4] == "/sys/fs/cgroup", fs.count >= 3, fs[0] == "cgroup2" else { continue }
            return Set(fs[2].split(separator: ",").map(String.init))
        }
        return nil
    }

    /// `cgroup-mount`: the host's hierarchy is compared, not remounted (that would change every
    /// cgroup on the machine); a v1 host, or a cgroup2 mounted without an option asked for, skips.
    func mount(options: [String]) throws(ScenarioError) {
        guard version == .v2 else { throw .unsupported("cgroup v1 (this machine) has no \(options.joined(separator: ",")): it is a cgroup2 mount option") }
        let host = Self.hostMountOptions() ?? []
        if let missing = options.first(where: { !host.contains($0) }) {
            throw .unsupported("this machine's cgroup2 is mounted without \(missing) (thpsim does not remount the host's hierarchy)")
        }
        requestedMountOptions.formUnion(options)
    }

    /// Why a write of `file` would not be compared like for like: protection files on a host whose
    /// cgroup2 has `memory_recursiveprot` when the scenario did not ask for it. nil when it would.
    func protectionMismatch(_ file: String) -> String? {
        guard version == .v2, file == "memory.low" || file == "memory.min",
              !requestedMountOptions.contains("memory_recursiveprot"),
              Self.hostMountOptions()?.contains("memory_recursiveprot") == true else { return nil }
        return "this machine's cgroup2 is mounted with memory_recursiveprot; a scenario comparing \(file) here needs `cgroup-mount memory_recursiveprot`"
    }

    private init(version: Version, parent: String, accountsSwap: Bool) {
        self.version = version; self.parent = parent; self.accountsSwap = accountsSwap
    }

    /// Finds the memory controller and checks that a cgroup can be made below the host's own;
    /// the reason when not (the run's cgroup expectations are then skipped).
    static func open() -> Result<NativeCgroups, ScenarioError> {
        let own = NativeSyscalls.readFile("/proc/self/cgroup") ?? ""
        func relative(_ line: Substring) -> String { String(line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).last ?? "/") }
        var found: NativeCgroups?
        if let controllers = NativeSyscalls.readFile("/sys/fs/cgroup/cgroup.controllers"),
           controllers.split(whereSeparator: \.isWhitespace).contains("memory") {
            let path = own.split(separator: "\n").first { $0.hasPrefix("0::") }.map(relative) ?? "/"
            found = NativeCgroups(version: .v2, parent: existing("/sys/fs/cgroup", path), accountsSwap: true)
        } else if access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0 {
            let path = own.split(separator: "\n").first { line in
                line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false).dropFirst().first?
                    .split(separator: ",").contains("memory") == true
            }.map(relative) ?? "/"
            let dir = existing("/sys/fs/cgroup/memory", path)
            found = NativeCgroups(version: .v1, parent: dir, accountsSwap: access("\(dir)/memory.memsw.limit_in_bytes", F_OK) == 0)
        }
        guard let cgroups = found else {
            return .failure(.unsupported("this machine mounts no memory cgroup controller (neither /sys/fs/cgroup/cgroup.controllers with memory nor /sys/fs/cgroup/memory)"))
        }
        let probe = "\(cgroups.parent)/thpsim-probe-\(getpid())"
        guard mkdir(probe, 0o755) == 0 else {
            return .failure(.unsupported("memory cgroups are not writable here (mkdir \(probe): \(NativeSyscalls.lastErrno))"))
        }
        rmdir(probe)
        if cgroups.version == .v2, !(NativeSyscalls.readFile("\(cgroups.parent)/cgroup.subtree_control") ?? "").contains("memory") {
            // A v2 child has memory.* files only if the parent delegates the controller.
            if NativeSyscalls.writeFile("\(cgroups.parent)/cgroup.subtree_control", "+memory") != 0 {
                return .failure(.unsupported("the memory controller is not enabled below \(cgroups.parent) and cannot be (\(NativeSyscalls.lastErrno))"))
            }
        }
        return .success(cgroups)
    }

    /// `mount + relative` when that directory exists (it may not inside a cgroup namespace), else `mount`.
    private static func existing(_ mount: String, _ relative: String) -> String {
        let path = relative == "/" ? mount : mount + relative
        return access(path, F_OK) == 0 ? path : mount
    }

    private func path(_ name: String) -> String? { made.first { $0.name == name }?.path }

    /// Called with a cgroup's directory before it is made (the host lock's journal).
    var willMake: ((String) -> Void)?

    /// Linux: `mkdir` in the cgroup filesystem (`cgroup_mkdir()`); `pod/app` in `pod`'s directory,
    /// whose `cgroup.subtree_control` gets the memory controller first on v2.
    func create(_ name: String) -> Result<Void, ScenarioErrno> {
        let dir: String
        if let slash = name.lastIndex(of: "/") {
            guard let above = path(String(name[..<slash])) else { return .failure(ScenarioErrno(code: ENOENT)) }
            if version == .v2, !(NativeSyscalls.readFile("\(above)/cgroup.subtree_control") ?? "").contains("memory") {
                if case .failure(let e) = status(NativeSyscalls.writeFile("\(above)/cgroup.subtree_control", "+memory")) { return .failure(e) }
            }
            dir = "\(above)/\(name[name.index(after: slash)...])"
        } else {
            dir = "\(parent)/thpsim-\(getpid())-\(name)"
        }
        willMake?(dir)
        guard mkdir(dir, 0o755) == 0 else { return .failure(NativeSyscalls.lastErrno) }
        made.append((name, dir))
        limits[name] = (nil, nil)
        return .success(())
    }

    /// Writes a v2 file, translated to v1 where the controller is there.
    func write(_ name: String, file: String, value: String) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        guard let dir = path(name) else { return .failure(ScenarioErrno(code: ENOENT)) }
        if version == .v2 { return status(NativeSyscalls.writeFile("\(dir)/\(file)", value)) }
        guard let bytes = Self.memparse(value) else { return .failure(ScenarioErrno(code: EINVAL)) }
        var limit = limits[name] ?? (nil, nil)
        switch file {
        case "memory.max": limit.max = bytes
        case "memory.swap.max": limit.swap = bytes
        case "memory.high", "memory.min", "memory.low", "memory.reclaim", "memory.oom.group", "memory.swap.high":
            throw .unsupported("cgroup v1 (this machine) has no \(file)")
        default: return .failure(ScenarioErrno(code: ENOENT))
        }
        if limit.swap != nil, !accountsSwap, Self.swapActive {
            throw .unsupported("cgroup v1 here does not account swap (no memory.memsw.limit_in_bytes), so memory.swap.max cannot be set")
        }
        let result = applyV1(dir, limit)
        if case .success = result { limits[name] = limit }
        return result
    }

    /// Whether any swap device is on (`/proc/swaps` lists more than its header).
    private static var swapActive: Bool { (NativeSyscalls.readFile("/proc/swaps") ?? "").split(separator: "\n").count > 1 }

    /// Writes the v1 limits. With swap on, v1 keeps memory + swap in `memsw`, which must never be
    /// below `limit_in_bytes`: lift memsw, set the limit, then bring memsw down to limit + swap.
    /// With no swap on, `memory.swap.max` holds whatever it is and memsw is left alone (with memsw
    /// equal to the limit, Linux 6.18's v1 counts no failed charge in either `failcnt`).
    private func applyV1(_ dir: String, _ limit: (max: UInt64?, swap: UInt64?)) -> Result<Void, ScenarioErrno> {
        func text(_ bytes: UInt64?) -> String { bytes.map { "\($0)" } ?? "-1" }
        let limitSwap = limit.swap != nil && Self.swapActive
        if limitSwap, case .failure(let e) = status(NativeSyscalls.writeFile("\(dir)/memory.memsw.limit_in_bytes", "-1")) { return .failure(e) }
        if case .failure(let e) = status(NativeSyscalls.writeFile("\(dir)/memory.limit_in_bytes", text(limit.max))) { return .failure(e) }
        if limitSwap, let max = limit.max, let swap = limit.swap {
            let (sum, overflow) = max.addingReportingOverflow(swap)
            return status(NativeSyscalls.writeFile("\(dir)/memory.memsw.limit_in_bytes", overflow ? "-1" : "\(sum)"))
        }
        return .success(())
    }

    /// Moves `pid` into the cgroup `name`, or back to the host's own cgroup when nil.
    func join(_ pid: Int32, _ name: String?) -> Result<Void, ScenarioErrno> {
        let dir: String
        if let name {
            guard let d = path(name) else { return .failure(ScenarioErrno(code: ENOENT)) }
            dir = d
        } else {
            dir = parent
        }
        return status(NativeSyscalls.writeFile("\(dir)/cgroup.procs", "\(pid)"))
    }

    /// A v2 file's text, composed from v1's files where the controller is there.
    func read(_ name: String, file: String) throws(ScenarioError) -> String {
        guard let dir = path(name) else { throw .run("cgroup '\(name)' was not created") }
        func raw(_ f: String) throws(ScenarioError) -> String {
            guard let text = NativeSyscalls.readFile("\(dir)/\(f)") else { throw .run("cannot read \(dir)/\(f): \(NativeSyscalls.lastErrno)") }
            return text
        }
        func number(_ f: String) throws(ScenarioError) -> UInt64 {
            UInt64(try raw(f).cgroupTrimmed) ?? 0
        }
        func keyed(_ f: String) throws(ScenarioError) -> [String: UInt64] {
            var values: [String: UInt64] = [:]
            for line in try raw(f).split(separator: "\n") {
                let parts = line.split(separator: " ")
                if parts.count == 2, let v = UInt64(parts[1]) { values[String(parts[0])] = v }
            }
            return values
        }
        if version == .v2 { return try raw(file) }
        // v1 prints "no limit" as PAGE_COUNTER_MAX pages in bytes (2^63 rounded down to a page).
        func limit(_ bytes: UInt64) -> String { bytes >= 1 << 62 ? "max" : "\(bytes)" }
        switch file {
        case "memory.current": return "\(try number("memory.usage_in_bytes"))\n"
        case "memory.peak": return "\(try number("memory.max_usage_in_bytes"))\n"
        case "memory.max": return limit(try number("memory.limit_in_bytes")) + "\n"
        case "memory.swap.max":
            if !Self.swapActive { return (limits[name]?.swap.map { "\($0)" } ?? "max") + "\n" }
            guard accountsSwap else { throw .unsupported("cgroup v1 here does not account swap") }
            let memsw = try number("memory.memsw.limit_in_bytes"), max = try number("memory.limit_in_bytes")
            return (memsw >= 1 << 62 ? "max" : "\(memsw &- max)") + "\n"
        case "memory.swap.current":
            guard accountsSwap else { throw .unsupported("cgroup v1 here does not account swap") }
            let both = try number("memory.memsw.usage_in_bytes"), memory = try number("memory.usage_in_bytes")
            return "\(both > memory ? both - memory : 0)\n"
        case "memory.events.local":
            let oom = try keyed("memory.oom_control")
            let failed = try number("memory.failcnt") + (accountsSwap ? try number("memory.memsw.failcnt") : 0)
            return "max \(failed)\noom_kill \(oom["oom_kill"] ?? 0)\n"
        case "memory.events":
            // v2's memory.events counts the cgroup's events and those of every cgroup below it.
            var max: UInt64 = 0, kills: UInt64 = 0
            for (below, _) in made where below == name || below.hasPrefix(name + "/") {
                for line in try read(below, file: "memory.events.local").split(separator: "\n") {
                    let parts = line.split(separator: " ")
                    guard parts.count == 2, let v = UInt64(parts[1]) else { continue }
                    if parts[0] == "max" { max += v } else if parts[0] == "oom_kill" { kills += v }
                }
            }
            return "max \(max)\noom_kill \(kills)\n"
        case "memory.stat":
            let stat = try keyed("memory.stat")
            return "anon \(stat["total_rss"] ?? 0)\nanon_thp \(stat["total_rss_huge"] ?? 0)\npgfault \(stat["total_pgfault"] ?? 0)\n"
        case "memory.high", "memory.min", "memory.low", "memory.oom.group", "memory.swap.high":
            throw .unsupported("cgroup v1 (this machine) has no \(file)")
        default: throw .run("cgroup file \(file) has no cgroup v1 counterpart")
        }
    }

    /// Why a key of a keyed v2 file has no value here, or nil when it has one.
    func missingKeyReason(file: String, key: String) -> String? {
        guard version == .v1 else { return nil }
        switch (file, key) {
        case ("memory.events", "max"), ("memory.events", "oom_kill"), ("memory.events.local", "max"),
             ("memory.events.local", "oom_kill"), ("memory.stat", "anon"), ("memory.stat", "anon_thp"),
             ("memory.stat", "pgfault"):
            return nil
        default:
            return "cgroup v1 (this machine) has no counterpart of \(file) \(key)"
        }
    }

    /// How many processes of the cgroup `name` its OOM killer killed so far.
    func oomKills(_ name: String) -> UInt64 {
        guard let dir = path(name) else { return 0 }
        let file = version == .v2 ? "memory.events" : "memory.oom_control"
        for line in (NativeSyscalls.readFile("\(dir)/\(file)") ?? "").split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == "oom_kill" { return UInt64(parts[1]) ?? 0 }
        }
        return 0
    }

    /// Linux: `rmdir` of the cgroup's directory (`cgroup_rmdir()`): EBUSY while it has processes or
    /// cgroups below it. Once removed, the run's cleanup leaves it alone and the name may be made again.
    func remove(_ name: String) -> Result<Void, ScenarioErrno> {
        guard let dir = path(name) else { return .failure(ScenarioErrno(code: ENOENT)) }
        guard rmdir(dir) == 0 else { return .failure(NativeSyscalls.lastErrno) }
        made.removeAll { $0.name == name }
        limits[name] = nil
        return .success(())
    }

    /// Removes every cgroup the run made, waiting briefly for killed processes to leave them.
    /// Returns the directories removed and the ones that could not be (with the error).
    func removeAll() -> (removed: [String], failed: [String]) {
        var removed: [String] = [], failed: [String] = []
        for (_, dir) in made.reversed() {
            var tries = 0
            while rmdir(dir) != 0 && errno != ENOENT {
                tries += 1
                if tries > 500 { failed.append("\(dir) (\(NativeSyscalls.lastErrno))"); break }
                usleep(10_000)
            }
            if tries <= 500 { removed.append(dir) }
        }
        made.removeAll()
        limits.removeAll()
        return (removed, failed)
    }

    private func status(_ code: Int32) -> Result<Void, ScenarioErrno> {
        code == 0 ? .success(()) : .failure(ScenarioErrno(code: code))
    }

    /// A v2 limit as `page_counter_memparse()` takes it: `max`, or a number (decimal, `0x` hex or
    /// leading-`0` octal) with at most one `K`/`M`/`G`/`T`/`P`/`E` suffix, after stripping
    /// whitespace; nil (EINVAL) for anything else. nil inside: no limit.
    static func memparse(_ text: String) -> UInt64?? {
        let s = text.cgroupTrimmed
        if s == "max" { return .some(nil) }
        var digits = Substring(s)
        var radix = 10
        if digits.hasPrefix("0x") || digits.hasPrefix("0X") { radix = 16; digits = digits.dropFirst(2) }
        else if digits.hasPrefix("0") && digits.count > 1 { radix = 8; digits = digits.dropFirst() }
        let numberPart = digits.prefix { $0.isHexDigit && Int(String($0), radix: radix) != nil }
        let rest = digits.dropFirst(numberPart.count)
        var value: UInt64 = numberPart.isEmpty ? 0 : (UInt64(numberPart, radix: radix) ?? .max)
        if numberPart.isEmpty && !s.isEmpty && radix == 10 { return nil }
        if let suffix = rest.first {
            guard rest.count == 1, let shift = ["k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60][suffix.lowercased()] else { return nil }
            value = value << UInt64(shift)
        }
        return .some(value)
    }
}

extension String {
    /// The text without leading and trailing blanks and newlines (Linux: `strstrip()`).
    fileprivate var cgroupTrimmed: String {
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        var s = Substring(self)
        while let c = s.first, blank(c) { s = s.dropFirst() }
        while let c = s.last, blank(c) { s = s.dropLast() }
        return String(s)
    }
}
#endif
