import Foundation
import Testing
import Workloads
@testable import Experiments

@Suite("Experiment grids")
struct GridTests {
    @Test("the grid is the cross product, enabled fastest, tunable axes in order")
    func expansion() {
        let grid = ExperimentGrid(workloads: [.synthetic("gups", size: 1 << 20, accesses: 10), .synthetic("heap", size: 1 << 20, accesses: 10)],
                                  machines: ["skylake-sp", "zen4"], enabled: ["never", "always"],
                                  tunables: [TunableAxis(name: "khugepaged/max_ptes_none", values: ["0", "511"]),
                                             TunableAxis(name: "defrag", values: ["always", "never", "madvise"])])
        let cells = grid.cells
        #expect(cells.count == 2 * 2 * 2 * 3 * 2)
        #expect(cells.map(\.index) == Array(0..<cells.count))
        #expect(Set(cells.map { [$0.workload.label, $0.machine, $0.enabled] + $0.tunables.map(\.value) }).count == cells.count)
        #expect(cells[0].enabled == "never" && cells[1].enabled == "always")
        #expect(cells[0].groupKey == cells[1].groupKey)
        #expect(cells[0].tunables.map(\.value) == ["0", "always"] && cells[2].tunables.map(\.value) == ["0", "never"])
        #expect(cells[0].workload.synthetic == "gups" && cells.last!.workload.synthetic == "heap")
        #expect(cells.last!.machine == "zen4" && cells.last!.tunables.map(\.value) == ["511", "madvise"])
    }

    @Test("shards partition the grid", arguments: [1, 2, 3, 5, 7])
    func shards(count: Int) {
        let grid = Small.grid()
        var seen: [Int] = []
        for i in 0..<count { seen += grid.cells(shard: i, of: count).map(\.index) }
        #expect(seen.sorted() == grid.cells.map(\.index))
    }

    @Test("problems name the option and the value")
    func problems() {
        var g = Small.grid(["gups", "nosuch"])
        g.enabled = ["never", "sometimes"]
        g.designs = ["linux-9.9"]
        g.tunables = [TunableAxis(name: "khugepaged/max_ptes_none", values: ["512"]), TunableAxis(name: "bogus", values: ["1"])]
        let p = g.problems.joined(separator: "\n")
        #expect(p.contains("--workload: 'nosuch'"))
        #expect(p.contains("--enabled: 'sometimes'"))
        #expect(p.contains("--design: 'linux-9.9'"))
        #expect(p.contains("max_ptes_none must be an integer from 0 to 511, not '512'"))
        #expect(p.contains("unknown transparent_hugepage knob 'bogus'"))
        #expect(Small.grid().problems.isEmpty)
        #expect(ExperimentGrid(workloads: [.synthetic("gups", size: 4095, accesses: 1)]).problems.first?.contains("--size") == true)
    }

    @Test("the built-in calibration machine is Benchmarks/Calibration/this-machine.machine, and parses")
    func calibratedMachine() throws {
        let file = try String(contentsOf: Small.packageRoot.appendingPathComponent(CalibratedMachine.path), encoding: .utf8)
        #expect(CalibratedMachine.text + "\n" == file || CalibratedMachine.text == file)
        let d = try CalibratedMachine.description
        #expect(d.name == "this-machine (zen5 under KVM)")
    }

    @Test("the default experiment is GUPS, heap and forkserver under never, madvise and always, in both designs")
    func defaultExperiment() {
        let g = DefaultExperiment.grid
        #expect(g.problems.isEmpty)
        #expect(g.workloads.compactMap(\.synthetic) == ["gups", "heap", "forkserver"])
        #expect(g.enabled == ["never", "madvise", "always"])
        #expect(g.designs == ["linux-2.6.38", "linux-6.18"])
        #expect(g.workloads.map { $0.advise == true } == [true, false, false], "GUPS asks for huge pages (MADV_HUGEPAGE)")
        #expect(g.cells.count == 18)
    }
}
