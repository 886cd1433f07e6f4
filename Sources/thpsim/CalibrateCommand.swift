import ArgumentParser
import VMCore
import Machine
import Experiments

/// `thpsim calibrate`: the model's side of the calibration table in docs/machines.md — predicted time
/// per access for GUPS, pointer chasing and sequential reads, with and without THP.
struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Predict ns/access for the calibration patterns (gups, chase, seq) with and without THP."
    )

    @Option(help: "Machine preset or config file (default: \(CalibratedMachine.path), built in).")
    var machine: String?

    @Option(help: "Where the patterns run: native, vm-host-thp, vm-host-4k.")
    var placement: String = "vm-host-thp"

    @Option(help: "Region sizes (comma-separated, e.g. 256M,1G,4G).")
    var sizes: String = "256M,1G,4G"

    @Option(help: "Patterns (comma-separated: gups, chase, seq).")
    var patterns: String = "gups,chase,seq"

    @Option(help: "Accesses measured per case (after as many to warm up).")
    var accesses: Int = 1 << 20

    @Option(name: .customLong("cache-model"), help: ArgumentHelp(CacheModelOption.help))
    var cacheModel: String = CacheModelOption.default.rawValue

    func run() throws {
        let d: MachineDescription
        if let machine { d = try loadMachine(machine) } else {
            do { d = try CalibratedMachine.description } catch { throw ValidationError(error.description) }
        }
        let where_: TranslationCost.Placement
        switch placement {
        case "native": where_ = .native
        case "vm-host-thp": where_ = .virtualMachine(hostTHP: true)
        case "vm-host-4k": where_ = .virtualMachine(hostTHP: false)
        default: throw ValidationError("--placement: '\(placement)' is not native, vm-host-thp or vm-host-4k")
        }
        var sizeList: [UInt64] = []
        for s in sizes.split(separator: ",") {
            guard let b = ByteCount.parse(String(s)), b >= (4 << 20), b & (b - 1) == 0 else {
                throw ValidationError("--sizes: '\(s)' is not a power-of-two size of at least 4M")
            }
            sizeList.append(b)
        }
        var patternList: [TranslationCost.Pattern] = []
        for p in patterns.split(separator: ",") {
            guard let pattern = TranslationCost.Pattern(rawValue: String(p)) else {
                throw ValidationError("--patterns: '\(p)' is not gups, chase or seq")
            }
            patternList.append(pattern)
        }
        guard accesses > 0 else { throw ValidationError("--accesses must be positive") }
        let experiment = TranslationCost(machine: d, placement: where_, accesses: accesses,
                                         cacheModel: try CacheModelOption.parse(cacheModel))
        for size in sizeList {
            if let shortfall = experiment.hostShortfall(bytes: size) { throw ValidationError("\(shortfall)") }
        }
        print("machine \(d.name), \(where_); ns/access predicted (THP share of the region in brackets)")
        print("pattern  size    4K ns    THP ns   speedup  L1 miss/acc 4K  walk refs/acc 4K  walk refs/acc THP  DRAM refs/acc 4K  THP")
        for size in sizeList {
            for pattern in patternList {
                do {
                    let small = try experiment.run(pattern, bytes: size, hugepages: false)
                    let huge = try experiment.run(pattern, bytes: size, hugepages: true)
                    func f(_ x: Double, _ w: Int) -> String { let s = String(format: "%.2f", x); return String(repeating: " ", count: max(0, w - s.count)) + s }
                    print("\(pattern.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)) \(String(size >> 20).padding(toLength: 5, withPad: " ", startingAt: 0))M"
                          + f(small.nanosecondsPerAccess, 8) + f(huge.nanosecondsPerAccess, 10) + " [\(Int(huge.hugeShare * 100))%]"
                          + f(small.nanosecondsPerAccess / huge.nanosecondsPerAccess, 8)
                          + f(small.counters.l1MissRate, 12)
                          + f(Double(small.counters.walkReferences) / Double(small.counters.accesses), 16)
                          + f(Double(huge.counters.walkReferences) / Double(huge.counters.accesses), 18)
                          + f(Double(small.counters.walkReferencesFromMemory) / Double(small.counters.accesses), 18)
                          + f(Double(huge.counters.walkReferencesFromMemory) / Double(huge.counters.accesses), 6))
                } catch {
                    throw ValidationError("\(pattern) \(size >> 20)M: the kernel model refused the setup (\(error))")
                }
            }
        }
    }
}
