import VMCore
import Kernel
import Workloads
import Simulation

/// What a program in an experiment is: a synthetic workload with its parameters, or a trace file.
public struct WorkloadSpec: Sendable, Hashable, Codable {
    /// A synthetic workload's name (`SyntheticWorkload`), or nil for a trace.
    public var synthetic: String?
    /// A trace file's path, or nil for a synthetic workload.
    public var trace: String?
    /// Synthetic only: footprint in bytes, measured accesses, threads, seed, stride in bytes.
    public var size: UInt64?
    public var accesses: Int?
    public var threads: Int
    public var seed: UInt64?
    public var stride: UInt64?
    /// Synthetic only: the program advises its memory with MADV_HUGEPAGE (`--advise`); nil means no.
    public var advise: Bool?
    /// Synthetic only: simulated milliseconds the program sleeps after set-up (`--settle`); nil means 0.
    public var settle: UInt64?
    /// A program recorded and replayed as it ran (`thpsim record --replay`): its command line.
    public var recorded: String?

    public static func synthetic(_ name: String, size: UInt64, accesses: Int, threads: Int = 1, seed: UInt64 = 1,
                                 stride: UInt64 = 4096, advise: Bool = false, settleMilliseconds: UInt64 = 0) -> WorkloadSpec {
        WorkloadSpec(synthetic: name, trace: nil, size: size, accesses: accesses, threads: threads, seed: seed, stride: stride,
                     advise: advise ? true : nil, settle: settleMilliseconds > 0 ? settleMilliseconds : nil)
    }

    public static func trace(_ path: String) -> WorkloadSpec {
        WorkloadSpec(synthetic: nil, trace: path, size: nil, accesses: nil, threads: 1, seed: nil, stride: nil)
    }

    /// A program recorded as it runs, streamed into the cells (`thpsim record --replay`).
    public static func recorded(_ command: String) -> WorkloadSpec {
        var spec = WorkloadSpec(synthetic: nil, trace: nil, size: nil, accesses: nil, threads: 1, seed: nil, stride: nil)
        spec.recorded = command
        return spec
    }

    /// A short name for tables: `gups 4G 20M`, `heap 1G 4M seed 2`, the trace's path, or the
    /// recorded command.
    public var label: String {
        if let recorded { return recorded }
        guard let synthetic, let size, let accesses else { return trace ?? "?" }
        var s = "\(synthetic) \(Format.bytes(size)) \(Format.count(accesses))"
        if threads != 1 { s += " ×\(threads)" }
        if let seed, seed != 1 { s += " seed \(seed)" }
        if synthetic == "stride", let stride, stride != 4096 { s += " stride \(Format.bytes(stride))" }
        if advise == true { s += " +MADV_HUGEPAGE" }
        if let settle, settle > 0 { s += " settle \(Format.milliseconds(settle))" }
        return s
    }

    /// The synthetic workload and its parameters, when this is one and they are valid.
    var syntheticRun: (SyntheticWorkload, SyntheticParameters)? {
        guard let synthetic, let w = SyntheticWorkload(rawValue: synthetic), let size = footprint, let accesses else { return nil }
        var p = SyntheticParameters(size: size, accesses: accesses, threads: threads, seed: seed ?? 1)
        p.stride = stride ?? 4096
        p.adviseHugepage = advise ?? false
        p.settleMilliseconds = settle ?? 0
        return p.problem == nil ? (w, p) : nil
    }

    /// What is wrong with the spec, naming the option; nil when it can run.
    public var problem: String? {
        if let synthetic {
            guard SyntheticWorkload(rawValue: synthetic) != nil else {
                return "--workload: '\(synthetic)' is not one of \(SyntheticWorkload.allCases.map(\.rawValue).joined(separator: ", "))"
            }
            guard let size = footprint, let accesses else { return "--workload \(synthetic): size and accesses are required" }
            var p = SyntheticParameters(size: size, accesses: accesses, threads: threads, seed: seed ?? 1)
            p.stride = stride ?? 4096
            p.settleMilliseconds = settle ?? 0
            return p.problem
        }
        if trace == nil && recorded == nil { return "a workload needs a synthetic name or a trace file" }
        return nil
    }

    /// Simulated memory a run needs by default (`SystemBuilder.defaultMemoryBytes(footprint:)`, as
    /// `thpsim workload` and `thpsim replay`).
    var defaultMemoryBytes: UInt64 { SystemBuilder.defaultMemoryBytes(footprint: footprint) }

    /// Bytes the workload maps, its `SyntheticParameters.size`: `size`, or for memscale, whose
    /// `--size` is per thread, `size × threads`.
    var footprint: UInt64? {
        guard let size else { return nil }
        return synthetic == SyntheticWorkload.memscale.rawValue ? size * UInt64(threads) : size
    }

    /// Accesses the run will make, for progress: first touch of every page plus the measured ones.
    var expectedAccesses: Int {
        guard let footprint, let accesses else { return 0 }
        return accesses + Int(footprint / PageGeometry.pageSize)
    }
}

/// One axis of tunables: a sysfs name below `/sys/kernel/mm/transparent_hugepage/` and its values
/// (`--set khugepaged/max_ptes_none=0,511`).
public struct TunableAxis: Sendable, Hashable, Codable {
    public var name: String
    public var values: [String]
    public init(name: String, values: [String]) { self.name = name; self.values = values }
}

/// One run of the grid: a workload under one policy (on its design), machine, tunable combination
/// and `enabled`.
public struct ExperimentCell: Sendable, Hashable, Codable {
    /// Position in the grid's expansion (0-based): the key shards and merges use.
    public var index: Int
    public var workload: WorkloadSpec
    public var design: String
    /// The hugepage policy (`PolicyCatalog`): one of `--policy`, or without it the design's own, which
    /// has the design's name; nil only in reports written before policies were an axis.
    public var policy: String?
    public var machine: String
    public var enabled: String
    /// The tunables of the cell's combination, in the grid's axis order (without `enabled`).
    /// Policy knobs (`freebsd/…`) come after the sysfs files, in the grid's axis order too.
    public var tunables: [SystemBuilder.Tunable]

    /// The cells that differ from this one only in `enabled` share this key (speedup vs never).
    public var groupKey: String {
        ([workload.label, workload.trace ?? "", policyName, design, machine] + tunables.map { "\($0.name)=\($0.value)" }).joined(separator: "\u{1F}")
    }

    /// The cell's policy: `policy`, or the design's own.
    public var policyName: String { policy ?? design }

    /// The policy and design for titles: `freebsd (linux-6.18)`, or the design alone for its own policy.
    public var policyLabel: String { policyName == design ? design : "\(policyName) (\(design))" }

    /// The sysfs files of `tunables`, without the policy knobs.
    public var sysfsTunables: [SystemBuilder.Tunable] {
        tunables.filter { PolicyCatalog.policyKnob($0.name) == nil && $0.name != Self.pmdLockTunable }
    }

    /// The model-only tunable that picks the lock guarding huge PMDs (`--set pmd_lock=page_table_lock,split`):
    /// not a sysfs file, a choice Linux made at build time (split PMD locks came with 3.13).
    public static let pmdLockTunable = "pmd_lock"

    /// The lock a `pmd_lock` value names.
    public static func pmdLock(_ value: String) -> KernelDesign.PMDLockGranularity? {
        switch value {
        case "page_table_lock": .pageTableLock
        case "split": .splitPMDLock
        default: nil
        }
    }

    /// The cell's design with its model-only tunables applied.
    public func effectiveDesign(_ design: KernelDesign) -> KernelDesign {
        var d = design
        if let v = tunables.first(where: { $0.name == Self.pmdLockTunable })?.value, let lock = Self.pmdLock(v) { d.pmdLock = lock }
        return d
    }

    /// The policy knobs of `tunables`, by knob name without the policy's prefix.
    public var policyKnobs: [String: String] {
        var knobs: [String: String] = [:]
        for t in tunables { if let (_, knob) = PolicyCatalog.policyKnob(t.name) { knobs[knob] = t.value } }
        return knobs
    }
}

/// Workloads × policies (or designs) × machines × tunable values × `enabled`: the experiment a
/// `thpsim run` names. Repeated options and comma lists add values to an axis; the grid is their cross
/// product, except that a policy runs only on its own design and its knobs (`--set freebsd/…`) only
/// multiply its own cells.
public struct ExperimentGrid: Sendable, Hashable, Codable {
    public var workloads: [WorkloadSpec]
    public var designs: [String]
    /// Hugepage policies (`--policy`, names from `PolicyCatalog`); nil or empty: each design's own.
    /// Each runs on the designs of `designs` that are its `PolicyCatalog.Entry.design`.
    public var policies: [String]?
    public var machines: [String]
    public var enabled: [String]
    public var tunables: [TunableAxis]
    /// Simulated physical memory per run; nil: what each workload needs (`thpsim workload`'s rule).
    public var memoryBytes: UInt64?
    /// Files of the memory cgroup every cell's processes run in (`--cgroup`); nil: the root cgroup.
    public var cgroup: [SystemBuilder.Tunable]?

    public init(workloads: [WorkloadSpec], designs: [String] = [SystemBuilder.defaultDesign.name],
                machines: [String] = ["skylake-sp"], enabled: [String] = ["never", "madvise", "always"],
                tunables: [TunableAxis] = [], memoryBytes: UInt64? = nil) {
        self.workloads = workloads; self.designs = designs; self.machines = machines
        self.enabled = enabled; self.tunables = tunables; self.memoryBytes = memoryBytes
    }

    /// The policies the grid runs, each with a design it runs on, in order: `policies` (each on the
    /// designs of `designs` that are its own), or each design with its own policy.
    public var policyDesigns: [(policy: String, design: String)] {
        guard let policies, !policies.isEmpty else { return designs.map { ($0, $0) } }
        return policies.flatMap { p -> [(policy: String, design: String)] in
            guard let entry = PolicyCatalog.named(p) else { return [] }
            return designs.filter { $0 == entry.design.name }.map { (p, $0) }
        }
    }

    /// The tunable combinations of a cell of `policy`: the sysfs axes and that policy's knob axes, first
    /// axis slowest.
    func tunableCombinations(policy: String) -> [[SystemBuilder.Tunable]] {
        var combos: [[SystemBuilder.Tunable]] = [[]]
        for axis in tunables {
            if let (entry, _) = PolicyCatalog.policyKnob(axis.name), entry.name != policy { continue }
            combos = combos.flatMap { c in axis.values.map { c + [SystemBuilder.Tunable(name: axis.name, value: $0)] } }
        }
        // The sysfs files first, then the policy's knobs, each group in axis order.
        return combos.map { c in c.filter { PolicyCatalog.policyKnob($0.name) == nil } + c.filter { PolicyCatalog.policyKnob($0.name) != nil } }
    }

    /// The cells in a fixed order: workload, policy (with its design), machine, tunables (first axis
    /// slowest), then `enabled` fastest, so one workload's policies sit side by side.
    public var cells: [ExperimentCell] {
        var cells: [ExperimentCell] = []
        let pairs = policyDesigns
        for w in workloads {
            for (p, d) in pairs {
                let combos = tunableCombinations(policy: p)
                for m in machines {
                    for t in combos {
                        for e in enabled {
                            cells.append(ExperimentCell(index: cells.count, workload: w, design: d, policy: p, machine: m,
                                                        enabled: e, tunables: t))
                        }
                    }
                }
            }
        }
        return cells
    }

    /// The cells of shard `index` of `count`: every `count`-th cell from `index`, so each shard gets
    /// a share of every workload and policy.
    /// - Precondition: 0 ≤ index < count.
    public func cells(shard index: Int, of count: Int) -> [ExperimentCell] {
        precondition(index >= 0 && index < count)
        return cells.filter { $0.index % count == index }
    }

    /// Everything wrong with the grid, each naming its option; empty when it can run.
    public var problems: [String] {
        var p: [String] = []
        if workloads.isEmpty { p.append("no workload: give --workload or --trace") }
        p += workloads.compactMap(\.problem)
        for d in designs where KernelDesign.named(d) == nil {
            p.append("--design: '\(d)' is not one of \(KernelDesign.all.map(\.name).joined(separator: ", "))")
        }
        for e in enabled where TransparentHugepageSettings.Enabled(rawValue: e) == nil {
            p.append("--enabled: '\(e)' is not always, madvise or never")
        }
        let named = (policies ?? []).filter { PolicyCatalog.named($0) != nil }
        for name in policies ?? [] {
            guard let entry = PolicyCatalog.named(name) else {
                p.append(PolicyCatalog.problem(policy: name)!)
                continue
            }
            if KernelDesign.named(entry.design.name) != nil, !designs.contains(entry.design.name) {
                p.append("--policy \(name) runs on \(entry.design.name)'s mechanism; --design \(designs.joined(separator: ",")) cannot run it "
                         + "(a policy names its design: leave --design out, or add \(entry.design.name))")
            }
        }
        if !named.isEmpty {
            for d in designs where KernelDesign.named(d) != nil && !named.contains(where: { PolicyCatalog.named($0)!.design.name == d }) {
                p.append("--design \(d): no --policy runs on it (\(named.map { "\($0) runs on \(PolicyCatalog.named($0)!.design.name)" }.joined(separator: ", ")))")
            }
        }
        for axis in tunables {
            if axis.name == "enabled" { p.append("--set enabled=…: use --enabled"); continue }
            if axis.name == ExperimentCell.pmdLockTunable {
                for v in axis.values where ExperimentCell.pmdLock(v) == nil {
                    p.append("--set pmd_lock: '\(v)' is not page_table_lock or split")
                }
                continue
            }
            if let (entry, knob) = PolicyCatalog.policyKnob(axis.name) {
                if !policyDesigns.contains(where: { $0.policy == entry.name }) {
                    p.append("--set \(axis.name): no cell runs policy \(entry.name) (give --policy \(entry.name))")
                }
                for v in axis.values { if let problem = entry.problem(knob: knob, value: v) { p.append("--set: \(problem)") } }
                continue
            }
            for v in axis.values {
                // Each design the grid runs must accept the value (a design may lack the file); with no
                // design known, the default one.
                var said: Set<String> = []
                let known = designs.filter { d in policyDesigns.contains { $0.design == d } }.compactMap(KernelDesign.named)
                for design in known.isEmpty ? [SystemBuilder.defaultDesign] : known {
                    if let problem = SystemBuilder.problem(with: .init(name: axis.name, value: v), design: design),
                       said.insert(problem.message).inserted {
                        p.append("--set: \(problem)")
                    }
                }
            }
        }
        if let policies, policies.contains(where: \.isEmpty) { p.append("--policy: an empty name") }
        for (name, axis) in [("--design", designs), ("--machine", machines), ("--enabled", enabled)] where axis.isEmpty {
            p.append("\(name): no value")
        }
        if let m = memoryBytes, m < 16 << 20 || m > 1 << 40 { p.append("--memory: \(m) bytes is not a size from 16M to 1T") }
        return p
    }

    /// The host memory problem of running `jobs` cells at once, each kernel filling host memory as its
    /// workload touches its footprint (`KernelConfiguration.hostShortfall`); empty when the host can.
    public func hostProblems(jobs: Int) -> [String] {
        let atOnce = UInt64(max(1, min(jobs, cells.count)))
        return workloads.compactMap { w -> String? in
            guard let synthetic = w.synthetic, let size = w.footprint else { return nil }
            var system = SystemBuilder()
            system.memoryBytes = memoryBytes ?? w.defaultMemoryBytes
            let configuration = system.configuration
            let request = "--workload \(synthetic) --size \(ByteCount.human(size))" + (atOnce > 1 ? " (\(atOnce) cells at once, --jobs)" : "")
            return HostLimits.shortfall(request, reserved: atOnce * configuration.hostReservation,
                                        resident: atOnce * configuration.hostResident(touching: size)).map(\.description)
        }
    }
}
