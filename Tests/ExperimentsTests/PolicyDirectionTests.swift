import Testing
import Simulation
@testable import Experiments

/// The directions the policy comparisons must show (issue 24), on small sizes.
@Suite("Policy directions")
struct PolicyDirectionTests {
    @Test("one byte per 64 KiB: freebsd's RSS is within 5 % of the bytes touched, linux-6.18 always's far above")
    func sparseStride() throws {
        var grid = ExperimentGrid(workloads: [.synthetic("stride", size: 32 << 20, accesses: 10_000, stride: 64 << 10)],
                                  designs: ["linux-6.18"], enabled: ["always"], memoryBytes: 128 << 20)
        grid.policies = ["linux-6.18", "freebsd"]
        #expect(grid.problems.isEmpty)
        let report = try Small.run(grid)
        let linux = try #require(report.results.first { $0.cell.policy == "linux-6.18" }).memory
        let freebsd = try #require(report.results.first { $0.cell.policy == "freebsd" }).memory
        #expect(freebsd.touchedBytes == 512 * 4096, "one page in 16 of 32 MiB")
        #expect(Double(freebsd.rssBytes) <= 1.05 * Double(freebsd.touchedBytes) && freebsd.rssBytes >= freebsd.touchedBytes)
        #expect(linux.rssBytes >= 10 * linux.touchedBytes, "a whole 2 MiB per touched range")
    }

    @Test("a fully touched range: freebsd promotes it in place, as many huge pages as linux-6.18 always maps at fault")
    func fullRanges() throws {
        var grid = ExperimentGrid(workloads: [.synthetic("gups", size: 16 << 20, accesses: 10_000)],
                                  designs: ["linux-6.18"], enabled: ["never", "always"], memoryBytes: 128 << 20)
        grid.policies = ["linux-6.18", "freebsd"]
        let report = try Small.run(grid)
        let coverage = report.results.map { ($0.cell.policyName, $0.cell.enabled, $0.memory.thpCoverage) }
        for (policy, enabled, thp) in coverage {
            #expect(enabled == "never" ? thp == 0 : thp == 1, "\(policy) \(enabled): THP \(thp)")
        }
    }

    @Test("gups over fully touched memory: freebsd and quicksilver get at least 90 % of linux-6.18 always's steady TLB benefit")
    func tlbBenefit() throws {
        var grid = ExperimentGrid(workloads: [.synthetic("gups", size: 32 << 20, accesses: 50_000)],
                                  designs: ["linux-6.18"], enabled: ["never", "always"], memoryBytes: 128 << 20)
        grid.policies = ["linux-6.18", "freebsd", "quicksilver"]
        let report = try Small.run(grid)
        func steadySpeedup(_ policy: String, _ enabled: String) throws -> Double {
            let r = try #require(report.results.first { $0.cell.policyName == policy && $0.cell.enabled == enabled })
            return try #require(r.steadySpeedupVsNever)
        }
        let linux = try steadySpeedup("linux-6.18", "always")
        #expect(linux > 1.02, "huge pages pay on gups")
        for policy in ["freebsd", "quicksilver"] {
            let speedup = try steadySpeedup(policy, "always")
            #expect(speedup - 1 >= 0.9 * (linux - 1), "\(policy): steady speedup \(speedup) against linux-6.18's \(linux)")
        }
    }

    @Test("freebsd's knob promote=0 keeps fully populated reservations PTE-mapped; the grid runs it beside promote=1")
    func promoteKnob() throws {
        var grid = ExperimentGrid(workloads: [.synthetic("gups", size: 8 << 20, accesses: 1_000)],
                                  designs: ["linux-6.18"], enabled: ["always"],
                                  tunables: [TunableAxis(name: "freebsd/promote", values: ["1", "0"])], memoryBytes: 64 << 20)
        grid.policies = ["linux-6.18", "freebsd"]
        #expect(grid.problems.isEmpty)
        let cells = grid.cells
        #expect(cells.map(\.policyName) == ["linux-6.18", "freebsd", "freebsd"], "the knob multiplies freebsd's cells only")
        #expect(cells[0].tunables.isEmpty && cells.dropFirst().map { $0.tunables.map(\.value) } == [["1"], ["0"]])
        let report = try Small.run(grid)
        #expect(report.results.map(\.memory.thpCoverage) == [1, 1, 0])
        #expect(report.results[2].settings["freebsd/promote"] == "0")
    }

    @Test("freebsd's knobs are checked: unknown names and values out of range are refused, naming the knob")
    func badKnobs() {
        var grid = ExperimentGrid(workloads: [.synthetic("gups", size: 8 << 20, accesses: 1_000)], designs: ["linux-6.18"],
                                  tunables: [TunableAxis(name: "freebsd/promote", values: ["2"]),
                                             TunableAxis(name: "freebsd/nosuch", values: ["1"])])
        grid.policies = ["freebsd"]
        let p = grid.problems.joined(separator: "\n")
        #expect(p.contains("freebsd/promote must be an integer from 0 to 1, not '2'"))
        #expect(p.contains("policy freebsd has no knob 'nosuch' (its knobs: promote)"))
    }
}
