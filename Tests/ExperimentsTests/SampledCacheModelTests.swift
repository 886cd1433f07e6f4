import Testing
import VMCore
import Kernel
import Machine
import Workloads
import Simulation
import Experiments

/// The sampled cache model (`CacheModel.Kind.sampled`, the command line's default) against the exact
/// one: what it predicts must stay within 0.02 of `full` in the speedups THP gives — the quantity the
/// calibration table and `thpsim run` report — on small versions of the calibration cases and of
/// `thpsim run`'s default experiment (docs/machines.md, "What the default cache model simulates and
/// how far it can differ", has the full-size figures).
@Suite("Sampled cache model against the full one")
struct SampledCacheModelTests {
    static let bound = 0.02

    struct CalibrationCase: Sendable, CustomStringConvertible {
        var pattern: TranslationCost.Pattern
        var bytes: UInt64
        var placement: TranslationCost.Placement
        var description: String { "\(pattern) \(bytes >> 20) MiB \(placement)" }
    }

    static let calibrationCases: [CalibrationCase] = [
        CalibrationCase(pattern: .gups, bytes: 256 << 20, placement: .native),
        CalibrationCase(pattern: .chase, bytes: 256 << 20, placement: .native),
        CalibrationCase(pattern: .seq, bytes: 64 << 20, placement: .native),
        CalibrationCase(pattern: .gups, bytes: 64 << 20, placement: .virtualMachine(hostTHP: true)),
    ]

    @Test("calibration speedups (4 KiB over THP time per access) differ by at most 0.02", arguments: calibrationCases)
    func calibrationSpeedups(_ c: CalibrationCase) throws {
        func speedup(_ kind: CacheModel.Kind) throws -> (Double, Double) {
            let t = TranslationCost(machine: .skylakeSP, placement: c.placement, accesses: 1 << 17, cacheModel: kind)
            let small = try t.run(c.pattern, bytes: c.bytes, hugepages: false)
            let huge = try t.run(c.pattern, bytes: c.bytes, hugepages: true)
            return (small.nanosecondsPerAccess / huge.nanosecondsPerAccess, small.nanosecondsPerAccess)
        }
        let (full, fullNs) = try speedup(.full)
        let (sampled, sampledNs) = try speedup(.sampled)
        #expect(abs(full - sampled) <= Self.bound, "\(c): full \(full), sampled \(sampled)")
        // Not a tautology: the two models differ in what they simulate, and here in their answers.
        #expect(fullNs != sampledNs || c.pattern == .seq, "\(c): the sampled model answered exactly as the full one")
    }

    /// A cell of the default experiment, smaller: its total estimated cycles.
    static func cycles(_ workload: SyntheticWorkload, size: UInt64, accesses: Int, advise: Bool, design: KernelDesign,
                       enabled: TransparentHugepageSettings.Enabled, kind: CacheModel.Kind) throws -> Double {
        var setup = SystemBuilder()
        setup.memoryBytes = 1 << 30
        setup.design = design
        setup.enabled = enabled
        setup.cacheModel = kind
        var executor = try setup.makeExecutor()
        var parameters = SyntheticParameters(size: size, accesses: accesses)
        parameters.adviseHugepage = advise
        workload.generate(parameters, into: &executor)
        return executor.finish().total.cycles
    }

    struct RunCase: Sendable, CustomStringConvertible {
        var workload: SyntheticWorkload
        var size: UInt64
        var accesses: Int
        var advise = false
        var design: KernelDesign
        var description: String { "\(design) \(workload) \(size >> 20) MiB" }
    }

    static let runCases: [RunCase] = [
        RunCase(workload: .gups, size: 256 << 20, accesses: 400_000, advise: true, design: .linux2_6_38),
        RunCase(workload: .heap, size: 64 << 20, accesses: 200_000, design: .linux2_6_38),
        RunCase(workload: .forkserver, size: 64 << 20, accesses: 200_000, design: .linux6_18),
    ]

    @Test("speedups against enabled=never of the default experiment's workloads differ by at most 0.02", arguments: runCases)
    func runSpeedups(_ c: RunCase) throws {
        for enabled in [TransparentHugepageSettings.Enabled.madvise, .always] {
            var speedups: [Double] = []
            for kind in CacheModel.Kind.allCases {
                let never = try Self.cycles(c.workload, size: c.size, accesses: c.accesses, advise: c.advise, design: c.design,
                                            enabled: .never, kind: kind)
                let other = try Self.cycles(c.workload, size: c.size, accesses: c.accesses, advise: c.advise, design: c.design,
                                            enabled: enabled, kind: kind)
                speedups.append(never / other)
            }
            #expect(abs(speedups[0] - speedups[1]) <= Self.bound, "\(c) \(enabled): full \(speedups[0]), sampled \(speedups[1])")
        }
    }

    @Test("the sampled model is deterministic")
    func deterministic() throws {
        let a = try Self.cycles(.gups, size: 64 << 20, accesses: 100_000, advise: false, design: .linux2_6_38, enabled: .never, kind: .sampled)
        let b = try Self.cycles(.gups, size: 64 << 20, accesses: 100_000, advise: false, design: .linux2_6_38, enabled: .never, kind: .sampled)
        #expect(a == b)
    }
}
