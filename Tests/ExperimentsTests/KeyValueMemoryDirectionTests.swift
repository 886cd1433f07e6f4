import Testing
import Simulation
@testable import Experiments

/// kvstore with tight memory (issue 24's direction, small sizes; docs/policies.md, "kvstore with tight
/// memory"). 16 MiB of 4 KiB values fill 90 % of the size; 80 % are deleted; the store pauses a minute
/// of simulated time (khugepaged runs); 2 MiB values then fill it back up to 16 MiB. Linux's
/// khugepaged re-collapses the holed ranges during the pause (`max_ptes_none` 511 lets a range with
/// one page in five present collapse), so the third phase needs the holes' memory a second time.
@Suite("kvstore with tight memory: which policies run out")
struct KeyValueMemoryDirectionTests {
    static let policies = ["linux-2.6.38", "linux-6.18", "freebsd", "ingens", "hawkeye", "quicksilver"]
    static let outOfMemory: Set<String> = ["linux-2.6.38", "linux-6.18"]
    static let size: UInt64 = 16 << 20
    /// Accesses before the pause: the small values (90 % of the size in 4 KiB pages).
    static let smallValues = Int(size / 4096 * 9 / 10)

    func grid(memory: UInt64, cgroup: [SystemBuilder.Tunable]?) -> ExperimentGrid {
        var grid = ExperimentGrid(workloads: [.synthetic("kvstore", size: Self.size, accesses: 2_000)],
                                  designs: ["linux-2.6.38", "linux-6.18"], enabled: ["always"],
                                  tunables: [TunableAxis(name: "hawkeye/bloat_recovery", values: ["1", "0"])],
                                  memoryBytes: memory)
        grid.policies = Self.policies
        grid.cgroup = cgroup
        return grid
    }

    /// RSS when the pause ends, before the large inserts.
    func rssAfterPause(_ r: CellResult) throws -> UInt64 {
        try #require(r.memoryOverTime.first { $0.accesses == Self.smallValues }).anonBytes
    }

    @Test("memory.max 18M, no swap: Linux's two policies are OOM-killed in the third phase; freebsd, ingens, hawkeye (with or without bloat recovery) and quicksilver finish")
    func cgroupOutOfMemory() throws {
        let grid = grid(memory: 32 << 20, cgroup: [.init(name: "memory.max", value: "18M"), .init(name: "memory.swap.max", value: "0")])
        #expect(grid.problems.isEmpty)
        let report = try Small.run(grid)
        #expect(report.results.count == Self.policies.count + 1)
        for r in report.results {
            let name = r.cell.policyName, kills = r.kills ?? []
            let after = try rssAfterPause(r)
            if Self.outOfMemory.contains(name) {
                #expect(kills.map(\.reason) == ["OOM_MEMCG"], "\(name): \(kills)")
                #expect(after >= 15 << 20, "\(name): khugepaged refilled the holes: \(after)")
            } else {
                #expect(kills.isEmpty, "\(name): \(kills)")
                #expect(after <= 5 << 20, "\(name): the holes stay empty: \(after)")
                #expect(r.memory.rssBytes <= 17 << 20 && r.memory.rssBytes >= 14 << 20, "\(name): \(r.memory.rssBytes)")
            }
        }
    }

    @Test("20 MiB of memory with swap: Linux's two policies swap out megabytes in the third phase; the others swap nothing")
    func swapping() throws {
        let report = try Small.run(grid(memory: 20 << 20, cgroup: nil))
        for r in report.results {
            let name = r.cell.policyName, swapped = r.vmstat["pswpout"] ?? 0
            #expect((r.kills ?? []).isEmpty)
            if Self.outOfMemory.contains(name) {
                #expect(swapped >= 1_000, "\(name): pswpout \(swapped)")
            } else {
                #expect(swapped == 0, "\(name): pswpout \(swapped)")
            }
        }
    }
}
