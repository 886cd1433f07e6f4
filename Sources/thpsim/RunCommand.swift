import ArgumentParser
import Foundation
import Synchronization
import VMCore
import Machine
import Workloads
import Simulation
import Experiments

/// `thpsim run`: the main job. Runs an experiment — workloads × designs × machines × tunables ×
/// `enabled` — and prints the comparison table (or JSON, CSV, an HTML page). Without arguments it
/// runs `DefaultExperiment`; `--shard I/N` runs one slice of the grid for `thpsim merge`.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run workloads under THP policies side by side and compare (no arguments: the built-in experiment).",
        discussion: """
        Repeated options and comma lists form a grid: --workload gups,heap --enabled never,always
        --set khugepaged/max_ptes_none=0,511 runs 2 × 2 × 2 cells. --policy linux-6.18,freebsd adds the
        policy axis (each policy on its own design's mechanism); a policy's knobs (--set POLICY/KNOB=…)
        multiply only that policy's cells. Without --workload or --trace, the built-in experiment's
        workloads run (gups 4G, heap 1G, forkserver 1G).
        """
    )

    @Option(name: .customLong("workload"), help: "Synthetic workload(s): \(SyntheticWorkload.allCases.map(\.rawValue).joined(separator: ", ")).")
    var workloads: [String] = []

    @Option(parsing: .unconditionalSingleValue, help: "Footprint(s) of the synthetic workloads (e.g. 4G; default 256M).")
    var size: [String] = []

    @Option(parsing: .unconditionalSingleValue, help: "Measured accesses of the synthetic workloads (e.g. 20M; default 1M).")
    var accesses: [String] = []

    @Option(parsing: .unconditionalSingleValue, help: "Threads of the synthetic workloads (1 to \(SyntheticParameters.maxThreads); a comma list is a grid axis), each on its own simulated CPU.")
    var threads: [String] = []

    @Option(parsing: .unconditionalSingleValue, help: "Random seed(s) of the synthetic workloads.")
    var seed: [String] = []

    @Option(parsing: .unconditional, help: "Bytes between accesses of the stride workload.")
    var stride: String = "4K"

    @Flag(help: "The synthetic workloads advise their memory with MADV_HUGEPAGE (what enabled=madvise acts on).")
    var advise = false

    @Option(parsing: .unconditional, help: "Simulated time the synthetic workloads sleep after set-up, before the measured accesses (e.g. 30s, 500ms; default 0): khugepaged and the policies' threads act meanwhile.")
    var settle: String = "0"

    @Option(name: .customLong("trace"), help: "Trace file(s) to replay (thpsim workload --out, record, import).")
    var traces: [String] = []

    @Option(help: "THP enabled policies (default: never,madvise,always).")
    var enabled: [String] = []

    @Option(help: "Kernel design(s) (default: \(SystemBuilder.defaultDesign.name); with --policy, the policies' own).")
    var design: [String] = []

    @Option(help: "Hugepage policies: \(PolicyCatalog.names) (default: each design's own). A policy runs on its design's mechanism; its knobs are --set POLICY/KNOB=V1,V2 (docs/policies.md).")
    var policy: [String] = []

    @Option(help: "Machine preset(s) or config file(s) (default: skylake-sp).")
    var machine: [String] = []

    @Option(name: .customLong("set"), help: "A tunable below /sys/kernel/mm/transparent_hugepage/ and its value(s): NAME=V1,V2 (e.g. khugepaged/max_ptes_none=0,511, defrag=always).")
    var tunables: [String] = []

    @Option(name: .customLong("cgroup"), help: "Run each cell's processes in one memory cgroup with this file set: memory.max=SIZE, memory.high=SIZE, memory.swap.max=SIZE, memory.swap.high=SIZE, memory.min=SIZE, memory.low=SIZE or memory.oom.group=0|1; repeat for several (docs/cgroups.md).")
    var cgroup: [String] = []

    @Option(parsing: .unconditional, help: "Simulated physical memory per run (default: twice the footprint plus 512M, rounded up to 1G; 8G for traces).")
    var memory: String?

    @Option(help: "Run only slice I of N of the grid (I from 0) and print its results as JSON, for thpsim merge.")
    var shard: String?

    @Option(help: "Cells run at once on host threads (default: the host's processors). Results do not depend on it.")
    var jobs: Int?

    @Flag(inversion: .prefixedNo, help: "Show progress on standard error when it is a terminal and the run takes over 2 s.")
    var progress = true

    @Option(name: .customLong("cache-model"), help: ArgumentHelp(CacheModelOption.help))
    var cacheModel: String = CacheModelOption.default.rawValue

    @Option(name: .customLong("cache-thread"), help: ArgumentHelp(CacheThreadOption.runHelp))
    var cacheThread: String = CacheThreadOption.default.rawValue

    @OptionGroup var output: ReportOutputOptions

    /// Splits repeated options and comma lists into one list of values.
    static func values(_ options: [String]) -> [String] {
        options.flatMap { $0.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingCharacters(in: .whitespaces) } }
    }

    /// The grid these options name.
    func grid() throws -> ExperimentGrid {
        var grid: ExperimentGrid
        let names = Self.values(workloads)
        if names.isEmpty && traces.isEmpty {
            if settle != "0" { throw ValidationError("--settle applies to synthetic workloads: give --workload too") }
            for (option, given) in [("--size", size), ("--accesses", accesses), ("--seed", seed), ("--threads", threads)] where !given.isEmpty {
                throw ValidationError("\(option) applies to synthetic workloads: give --workload too")
            }
            grid = DefaultExperiment.grid
        } else {
            var sizes: [UInt64] = []
            for s in Self.values(size.isEmpty ? ["256M"] : size) {
                sizes.append(try parseSize(s, option: "--size"))
            }
            let counts = try Self.values(accesses.isEmpty ? ["1M"] : accesses).map { try parseCount($0, option: "--accesses") }
            var seeds: [UInt64] = []
            for s in Self.values(seed.isEmpty ? ["1"] : seed) {
                guard let v = UInt64(s) else { throw ValidationError("--seed: '\(s)' is not a non-negative integer") }
                seeds.append(v)
            }
            let strideBytes = try parseSize(stride, option: "--stride")
            let settleMilliseconds = try parseMilliseconds(settle, option: "--settle")
            var threadCounts: [Int] = []
            for t in Self.values(threads.isEmpty ? ["1"] : threads) {
                guard let n = Int(t), (1...SyntheticParameters.maxThreads).contains(n) else {
                    throw ValidationError("--threads: '\(t)' is not a number from 1 to \(SyntheticParameters.maxThreads)")
                }
                threadCounts.append(n)
            }
            var specs: [WorkloadSpec] = []
            for n in names {
                if n.isEmpty { throw ValidationError("--workload: an empty name in '\(workloads.joined(separator: ","))'") }
                for s in sizes { for a in counts { for sd in seeds { for th in threadCounts {
                    specs.append(.synthetic(n, size: s, accesses: a, threads: th, seed: sd, stride: strideBytes, advise: advise,
                                                settleMilliseconds: settleMilliseconds))
                } } } }
            }
            for t in Self.values(traces) {
                guard FileManager.default.isReadableFile(atPath: t) else { throw ValidationError("--trace: '\(t)' cannot be read") }
                specs.append(.trace(t))
            }
            grid = ExperimentGrid(workloads: specs)
        }
        try Self.applyAxes(to: &grid, enabled: enabled, design: design, machine: machine, tunables: tunables, memory: memory,
                           policy: policy)
        if let settings = try ReplayMachineOptions.cgroupSettings(cgroup) { grid.cgroup = settings }
        if let problem = grid.problems.first { throw ValidationError(problem) }
        return grid
    }

    /// Sets the grid's policy axes from `--enabled`, `--design`, `--policy`, `--machine`, `--set` and
    /// `--memory` (shared with `thpsim record --replay`). With `--policy` and no `--design`, the designs
    /// are the policies' own.
    static func applyAxes(to grid: inout ExperimentGrid, enabled: [String], design: [String], machine: [String],
                          tunables: [String], memory: String?, policy: [String] = []) throws {
        if !enabled.isEmpty { grid.enabled = values(enabled) }
        if !design.isEmpty { grid.designs = values(design) }
        if !policy.isEmpty {
            let names = values(policy)
            grid.policies = names
            if design.isEmpty {
                var designs: [String] = []
                for n in names { if let d = PolicyCatalog.named(n)?.design.name, !designs.contains(d) { designs.append(d) } }
                if !designs.isEmpty { grid.designs = designs }
            }
        }
        if !machine.isEmpty { grid.machines = values(machine) }
        for t in tunables {
            guard let eq = t.firstIndex(of: "="), eq != t.startIndex else {
                throw ValidationError("--set: '\(t)' is not NAME=VALUE (e.g. khugepaged/max_ptes_none=0)")
            }
            let name = String(t[..<eq]), list = values([String(t[t.index(after: eq)...])])
            if let i = grid.tunables.firstIndex(where: { $0.name == name }) {
                grid.tunables[i].values += list.filter { !grid.tunables[i].values.contains($0) }
            } else {
                grid.tunables.append(TunableAxis(name: name, values: list))
            }
        }
        if let memory {
            grid.memoryBytes = try parseSize(memory, option: "--memory")
        }
    }

    /// `I/N` with 0 ≤ I < N.
    static func parseShard(_ text: String) throws -> ExperimentReport.Shard {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]) else {
            throw ValidationError("--shard: '\(text)' is not I/N (e.g. 0/4: the first of 4 slices)")
        }
        guard n >= 1, i >= 0, i < n else { throw ValidationError("--shard: '\(text)' needs 0 ≤ I < N (I counts from 0)") }
        return .init(index: i, count: n)
    }

    func run() throws {
        let grid = try grid()
        let shardSpec = try shard.map(Self.parseShard)
        if shardSpec != nil && (output.csv || output.html != nil) {
            throw ValidationError("--shard writes JSON for thpsim merge; give --csv or --html to merge instead")
        }
        if let jobs, !(1...256).contains(jobs) { throw ValidationError("--jobs: \(jobs) is not between 1 and 256") }
        if let problem = grid.hostProblems(jobs: jobs ?? ProcessInfo.processInfo.activeProcessorCount).first { throw ValidationError(problem) }
        var machines: [String: MachineDescription] = [:]
        for m in grid.machines { machines[m] = try loadMachine(m) }
        var runner = ExperimentRunner(grid: grid, machines: machines)
        runner.jobs = jobs ?? ProcessInfo.processInfo.activeProcessorCount
        runner.cacheModel = try CacheModelOption.parse(cacheModel)
        runner.cacheThread = try CacheThreadOption.parse(cacheThread)
        let cells = shardSpec.map { grid.cells(shard: $0.index, of: $0.count) } ?? grid.cells
        let meter = ProgressMeter(cells: cells, enabled: progress && isatty(STDERR_FILENO) == 1)
        let report: ExperimentReport
        do {
            report = try runner.run(cells: cells, shard: shardSpec, progress: meter.update, cellDone: { _ in meter.cellDone() })
        } catch {
            meter.finish()
            fail(error.description)
        }
        meter.finish()
        try output.emit(report, forceJSON: shardSpec != nil)
    }
}

/// A one-line progress display on standard error, shown only once a run has taken 2 s (so short
/// runs, pipes and CI stay quiet).
final class ProgressMeter: Sendable {
    struct State {
        var done = 0
        var accesses: [Int: (Int, Int)] = [:]
        var lastDraw = 0.0
        var shown = false
    }
    private let state = Mutex(State())
    private let total: Int
    private let enabled: Bool
    private let start = Date()

    init(cells: [ExperimentCell], enabled: Bool) {
        total = cells.count
        self.enabled = enabled
    }

    var update: ExperimentRunner.Progress {
        { [self] cell, accesses, expected in
            guard enabled else { return }
            state.withLock { $0.accesses[cell] = (accesses, expected) }
            draw()
        }
    }

    func cellDone() {
        guard enabled else { return }
        state.withLock { $0.done += 1 }
        draw()
    }

    private func draw() {
        let elapsed = Date().timeIntervalSince(start)
        guard elapsed >= 2 else { return }
        let line: String? = state.withLock { s in
            guard elapsed - s.lastDraw >= 0.2 else { return nil }
            s.lastDraw = elapsed
            s.shown = true
            let running = s.accesses.values.filter { $0.0 < $0.1 }.map { e in "\(min(99, e.0 * 100 / max(1, e.1)))%" }
            return "\rthpsim run: \(s.done)/\(total) cells done" + (running.isEmpty ? "" : ", running at " + running.joined(separator: " "))
                + String(format: " (%.0f s)", elapsed) + "\u{1B}[K"
        }
        if let line { FileHandle.standardError.write(Data(line.utf8)) }
    }

    func finish() {
        guard enabled, state.withLock({ $0.shown }) else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
