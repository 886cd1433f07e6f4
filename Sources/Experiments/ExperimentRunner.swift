import Foundation
import Synchronization
import VMCore
import Kernel
import Machine
import Workloads
import Simulation

/// Why a cell could not run: outside input (a trace that cannot be read or is malformed, a machine
/// without memory for the first process), named by cell and file.
public struct ExperimentError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Runs the cells of an `ExperimentGrid`, each on its own kernel model and simulated machine built
/// the way `thpsim workload` and `thpsim replay` build theirs (`SystemBuilder`, `MachineExecutor`).
/// Cells are independent and deterministic, so `jobs` host threads may run them at once without
/// changing a number.
public struct ExperimentRunner: Sendable {
    public var grid: ExperimentGrid
    /// The machine descriptions of the grid's machine names (presets or config files).
    public var machines: [String: MachineDescription]
    /// Host threads running cells at once.
    /// The CPUs' cache model in every cell (`SystemBuilder.cacheModel`).
    public var cacheModel: CacheModel.Kind = .full
    public var jobs = 1
    /// Whether a cell of one CPU runs its cache model on a second host thread (`SystemBuilder.cacheThread`,
    /// docs/machines.md). Used only while the cells run one at a time (`cellCacheThread(hostThreads:)`):
    /// cells running at once already take the host's cores. The same results either way.
    public var cacheThread = CacheThreadMode.off
    /// What `prepare` gives each cell: set by `run(cells:)` for the host threads it uses.
    var cellCacheThread = CacheThreadMode.off

    /// The cache-thread mode of the cells when `hostThreads` run them: `cacheThread` for one, else off.
    func cellCacheThread(hostThreads: Int) -> CacheThreadMode { hostThreads == 1 ? cacheThread : .off }

    /// Progress of a running cell: its index, accesses made, accesses expected (0: unknown).
    public typealias Progress = @Sendable (_ cell: Int, _ accesses: Int, _ expected: Int) -> Void

    public init(grid: ExperimentGrid, machines: [String: MachineDescription]) {
        self.grid = grid
        self.machines = machines
    }

    /// Runs `cells` (all of the grid's by default) and returns the report, results in cell order.
    public func run(cells: [ExperimentCell]? = nil, shard: ExperimentReport.Shard? = nil,
                    progress: Progress? = nil, cellDone: (@Sendable (CellResult) -> Void)? = nil) throws(ExperimentError) -> ExperimentReport {
        let todo = cells ?? grid.cells
        let results = Mutex<[Int: Result<CellResult, ExperimentError>]>([:])
        let next = Atomic<Int>(0)
        let threads = max(1, min(jobs, todo.count))
        var runner = self
        runner.cellCacheThread = cellCacheThread(hostThreads: threads)
        let worker: @Sendable () -> Void = { [runner] in
            while true {
                let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                guard i < todo.count else { return }
                let r = Result { () throws(ExperimentError) in try runner.run(todo[i], progress: progress) }
                if case .success(let c) = r { cellDone?(c) }
                results.withLock { $0[i] = r }
            }
        }
        if threads == 1 {
            worker()
        } else {
            let group = DispatchGroup()
            for _ in 0..<threads { DispatchQueue.global().async(group: group) { worker() } }
            group.wait()
        }
        return try report(results.withLock { $0 }, count: todo.count, shard: shard)
    }

    /// The report of cells `0..<count` from their outcomes (each present), in cell order; the first
    /// failed cell's error.
    func report(_ outcomes: [Int: Result<CellResult, ExperimentError>], count: Int,
                shard: ExperimentReport.Shard?) throws(ExperimentError) -> ExperimentReport {
        var out: [CellResult] = []
        for i in 0..<count {
            switch outcomes[i]! {
            case .success(let c): out.append(c)
            case .failure(let e): throw e
            }
        }
        var report = ExperimentReport(grid: grid, shard: shard, results: out)
        report.cacheModel = cacheModel.rawValue
        report.computeSpeedups()
        return report
    }

    /// Runs one cell.
    public func run(_ cell: ExperimentCell, progress: Progress? = nil) throws(ExperimentError) -> CellResult {
        // The boot CPU builds the cell's system, whichever simulated CPU this host thread ran last
        // (a worker thread keeps the CPU of its previous cell): per-CPU state starts the same.
        SimulatedCPU.switchTo(0)
        let prepared = try prepare(cell)
        let executor = prepared.executor
        let expected = cell.workload.expectedAccesses
        // About 100 memory samples a run, for the charts.
        if expected > 0 { executor.sampleInterval = max(MachineExecutor.tickInterval, expected / 100) }
        if let progress { executor.progress = { progress(cell.index, $0, expected) } }
        var records = 0
        if let (workload, parameters) = cell.workload.syntheticRun {
            var sink = executor
            workload.generate(parameters, into: &sink)
        } else if let path = cell.workload.trace {
            switch Result(catching: { () throws(TraceError) -> Int in
                var reader = try TraceReader(input: try TraceFile(path: path, mode: .read))
                return try reader.replay(on: executor)
            }) {
            case .success(let n): records = n
            case .failure(let e): throw ExperimentError("--trace \(path): \(e)")
            }
        } else {
            throw ExperimentError("cell \(cell.index): \(cell.workload.problem ?? "no workload")")
        }
        return prepared.result(records: records)
    }

    /// A cell's kernel, machine and executor, built and ready for the workload's events.
    struct PreparedCell {
        var cell: ExperimentCell
        var executor: MachineExecutor
        var settings: [String: String]
        var machine: MachineDescription
        var memoryBytes: UInt64

        /// The cell's result once its workload has run.
        func result(records: Int) -> CellResult {
            var report = executor.finish()
            report.records = records
            return CellResult(cell: cell, report: report, settings: settings, machine: machine, memoryBytes: memoryBytes)
        }
    }

    /// Builds a cell's system the way `thpsim workload` and `thpsim replay` build theirs.
    func prepare(_ cell: ExperimentCell) throws(ExperimentError) -> PreparedCell {
        guard let machine = machines[cell.machine] else { throw ExperimentError("machine '\(cell.machine)' was not loaded") }
        guard let design = KernelDesign.named(cell.design), let enabled = TransparentHugepageSettings.Enabled(rawValue: cell.enabled) else {
            throw ExperimentError("cell \(cell.index): design '\(cell.design)' or enabled '\(cell.enabled)' unknown")
        }
        guard let entry = PolicyCatalog.named(cell.policyName), entry.design == design else {
            throw ExperimentError("cell \(cell.index): policy '\(cell.policyName)' does not run on design '\(cell.design)'")
        }
        var setup = SystemBuilder()
        setup.design = cell.effectiveDesign(design)
        setup.policy = entry.makePolicy(cell.policyKnobs)
        setup.enabled = enabled
        setup.machine = machine
        setup.cpus = cell.workload.threads
        // Many CPUs run in simulated-time order and pay for what they share (docs/concurrency.md).
        setup.simulatedTime = cell.workload.threads > 1
        setup.memoryBytes = grid.memoryBytes ?? cell.workload.defaultMemoryBytes
        setup.tunables = cell.sysfsTunables
        setup.cgroup = grid.cgroup
        setup.cacheModel = cacheModel
        setup.cacheThread = cellCacheThread
        let executor: MachineExecutor
        do throws(Errno) { executor = try setup.makeExecutor() } catch {
            throw ExperimentError("\(cell.workload.label): the kernel model could not start the process (\(error))")
        }
        let kernel = executor.machine.kernel
        var settings: [String: String] = [:]
        for name in TransparentHugepageSettings.knobNames { settings[name] = kernel.hugepageSettings.sysfsText(name) }
        for name in KhugepagedSettings.knobNames { settings[name] = kernel.khugepaged.sysfsText(name) }
        for knob in entry.knobs { settings["\(entry.name)/\(knob.name)"] = cell.policyKnobs[knob.name] ?? "\(knob.defaultValue)" }
        return PreparedCell(cell: cell, executor: executor, settings: settings, machine: machine, memoryBytes: setup.memoryBytes)
    }
}
