import ArgumentParser
import Foundation
import VMCore
import Kernel
import Machine
import Workloads
import Simulation

/// The kernel and machine options `replay` and `workload` share.
struct ReplayMachineOptions: ParsableArguments {
    @Option(help: "Kernel design (\(KernelDesign.all.map(\.name).joined(separator: ", ")); default \(SystemBuilder.defaultDesign.name), or with --policy the policy's).")
    var design: String?

    @Option(help: "Hugepage policy: \(PolicyCatalog.names) (default: the design's own); it runs on its design's mechanism (docs/policies.md).")
    var policy: String?

    @Option(help: "THP enabled setting: always, madvise or never (default: the design's).")
    var enabled: String?

    @Option(help: "Machine preset or config file.")
    var machine: String = "skylake-sp"

    @Option(parsing: .unconditional, help: "Simulated physical memory (e.g. 8G).")
    var memory: String?

    @Option(name: .customLong("cache-model"), help: ArgumentHelp(CacheModelOption.help))
    var cacheModel: String = CacheModelOption.default.rawValue

    @Option(name: .customLong("cache-thread"), help: ArgumentHelp(CacheThreadOption.help))
    var cacheThread: String = CacheThreadOption.default.rawValue

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Option(name: .customLong("cgroup"),
            help: "Run the workload's processes in one memory cgroup with this file set: memory.max=SIZE, memory.high=SIZE, memory.swap.max=SIZE, memory.swap.high=SIZE, memory.min=SIZE, memory.low=SIZE (SIZE: bytes with K/M/G, or max) or memory.oom.group=0|1; repeat for several (docs/cgroups.md).")
    var cgroup: [String] = []

    /// The system these options describe, with `cpus` CPUs and `defaultMemory` bytes unless `--memory`
    /// says otherwise.
    func setup(cpus: Int, defaultMemory: UInt64) throws -> SystemBuilder {
        var s = SystemBuilder()
        if let design, KernelDesign.named(design) == nil {
            throw ValidationError("--design: '\(design)' is not one of \(KernelDesign.all.map(\.name).joined(separator: ", "))")
        }
        if let policy {
            if let problem = PolicyCatalog.problem(policy: policy) { throw ValidationError(problem) }
            let entry = PolicyCatalog.named(policy)!
            if let design, design != entry.design.name {
                throw ValidationError("--policy \(policy) runs on \(entry.design.name)'s mechanism, not --design \(design) (leave --design out)")
            }
            s.design = entry.design
            s.policy = entry.makePolicy([:])
        } else {
            s.design = KernelDesign.named(design ?? SystemBuilder.defaultDesign.name)!
        }
        if let enabled {
            guard let e = TransparentHugepageSettings.Enabled(rawValue: enabled) else {
                throw ValidationError("--enabled: '\(enabled)' is not always, madvise or never")
            }
            s.enabled = e
        }
        s.machine = try loadMachine(machine)
        if let memory {
            let m = try parseSize(memory, option: "--memory")
            guard m >= 16 << 20, m <= 1 << 40 else {
                throw ValidationError("--memory: '\(memory)' is not a size from 16M to 1T")
            }
            s.memoryBytes = m
        } else {
            s.memoryBytes = defaultMemory
        }
        s.cpus = cpus
        s.cacheModel = try CacheModelOption.parse(cacheModel)
        s.cacheThread = try CacheThreadOption.parse(cacheThread)
        s.cgroup = try Self.cgroupSettings(cgroup)
        return s
    }

    /// `--cgroup` values as cgroup file writes; nil when none is given.
    static func cgroupSettings(_ values: [String]) throws -> [SystemBuilder.Tunable]? {
        guard !values.isEmpty else { return nil }
        return try values.flatMap { value in
            try value.split(separator: ",").map { part in
                guard let eq = part.firstIndex(of: "="), eq != part.startIndex else {
                    throw ValidationError("--cgroup: '\(part)' is not FILE=VALUE (e.g. memory.max=20M)")
                }
                let setting = SystemBuilder.Tunable(name: String(part[..<eq]), value: String(part[part.index(after: eq)...]))
                if let problem = SystemBuilder.problem(withCgroup: setting) { throw ValidationError("--cgroup: \(problem)") }
                return setting
            }
        }
    }

    func print(_ report: ReplayReport) {
        Swift.print(json ? report.json : report.text)
    }
}

/// Parses an access count with an optional decimal suffix (`20M` = 20 000 000, `1G`, `500K`).
func parseCount(_ text: String, option: String) throws -> Int {
    if text.hasPrefix("-") { throw ValidationError("\(option): '\(text)' is negative; give a count of zero or more (e.g. 20M, 500K, 1000)") }
    var digits = Substring(text), multiplier = 1
    if let last = digits.last, let m = ["K": 1_000, "k": 1_000, "M": 1_000_000, "G": 1_000_000_000][String(last)] {
        multiplier = m; digits = digits.dropLast()
    }
    guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(digits) else {
        throw ValidationError("\(option): '\(text)' is not a count (e.g. 20M, 500K, 1000)")
    }
    let (p, overflow) = n.multipliedReportingOverflow(by: multiplier)
    guard !overflow, p <= 1 << 40 else { throw ValidationError("\(option): '\(text)' is too large") }
    return p
}

/// `--cache-thread` of `workload`, `replay` and `run`.
enum CacheThreadOption {
    static let `default` = CacheThreadMode.auto
    static let help = "Run the cache model on a second host thread: auto (default: when a core of the host is idle as the run starts), on or off. One-CPU machines only; the same results either way (docs/machines.md)."
    static let recordHelp = "Run the cache model of a lone cell (one value of each axis) on a second host thread: off (default: the recorder takes a core), on, or auto (when a core of the host is idle as the cell is made, before the program starts). One-CPU cells only; the same results either way (docs/machines.md)."
    static let runHelp = "Run each cell's cache model on a second host thread while cells run one at a time (--jobs 1 or a single cell): auto (default: when a core of the host is idle as the cell starts), on or off. One-CPU cells only; the same results either way (docs/machines.md)."

    static func parse(_ value: String) throws -> CacheThreadMode {
        guard let mode = CacheThreadMode(rawValue: value) else {
            throw ValidationError("--cache-thread: '\(value)' is not auto, on or off")
        }
        return mode
    }
}

/// `--cache-model` of `workload`, `replay`, `run` and `calibrate`.
enum CacheModelOption {
    /// The command line's default: set sampling, many times faster on large footprints; `full` is the
    /// exact model (docs/machines.md, "What the default cache model simulates").
    static let `default` = CacheModel.Kind.sampled
    static let help = "Cache model: sampled (default: the outer levels simulate one line in 16, the rest estimated) or full (every line, exact; docs/machines.md)."

    static func parse(_ value: String) throws -> CacheModel.Kind {
        guard let kind = CacheModel.Kind(rawValue: value) else {
            throw ValidationError("--cache-model: '\(value)' is not full or sampled")
        }
        return kind
    }
}
