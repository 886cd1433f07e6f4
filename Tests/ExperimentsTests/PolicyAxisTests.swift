import Foundation
import Testing
import Kernel
import Simulation
@testable import Experiments

/// `--policy` as a grid axis: each policy on its own design, its knobs multiplying only its cells.
@Suite("The policy axis")
struct PolicyAxisTests {
    static func grid(policies: [String]?, designs: [String]? = nil, tunables: [TunableAxis] = []) -> ExperimentGrid {
        var g = Small.grid(["gups", "heap"], enabled: ["never", "always"], tunables: tunables)
        g.policies = policies
        if let designs {
            g.designs = designs
        } else if let policies {
            // What `thpsim run --policy` does without --design: the policies' designs.
            var ds: [String] = []
            for p in policies { if let d = PolicyCatalog.named(p)?.design.name, !ds.contains(d) { ds.append(d) } }
            g.designs = ds
        }
        return g
    }

    @Test("without --policy each design runs its own policy, named like the design")
    func designsOwnPolicy() {
        var g = Self.grid(policies: nil)
        g.designs = ["linux-2.6.38", "linux-6.18"]
        #expect(g.problems.isEmpty)
        #expect(g.cells.map(\.policyName) == g.cells.map(\.design))
        #expect(g.cells.allSatisfy { $0.policyLabel == $0.design })
    }

    @Test("cells run workload, policy, machine, tunables, then enabled fastest; a policy runs on its design")
    func order() {
        let g = Self.grid(policies: ["linux-6.18", "linux-2.6.38"],
                          tunables: [TunableAxis(name: "khugepaged/max_ptes_none", values: ["0", "511"])])
        #expect(g.problems.isEmpty)
        let cells = g.cells
        #expect(cells.count == 2 * 2 * 2 * 2)
        #expect(cells.prefix(8).allSatisfy { $0.workload.synthetic == "gups" })
        #expect(cells.prefix(4).allSatisfy { $0.policy == "linux-6.18" && $0.design == "linux-6.18" })
        #expect(cells[4..<8].allSatisfy { $0.policy == "linux-2.6.38" && $0.design == "linux-2.6.38" })
        #expect(cells.prefix(4).map(\.enabled) == ["never", "always", "never", "always"])
        #expect(cells.prefix(4).map { $0.tunables[0].value } == ["0", "0", "511", "511"])
        #expect(cells[0].groupKey == cells[1].groupKey && cells[0].groupKey != cells[4].groupKey)
    }

    @Test("an unknown policy is refused with the known ones")
    func unknownPolicy() {
        let p = Self.grid(policies: ["linux-6.18", "solaris"]).problems.joined(separator: "\n")
        #expect(p.contains("--policy: 'solaris' is not one of \(PolicyCatalog.names)"))
        #expect(Self.grid(policies: [""]).problems.contains { $0.contains("--policy") })
    }

    @Test("a policy and a --design it does not run on are refused, naming the policy's design")
    func policyAgainstDesign() {
        let p = Self.grid(policies: ["linux-6.18"], designs: ["linux-2.6.38"]).problems.joined(separator: "\n")
        #expect(p.contains("--policy linux-6.18 runs on linux-6.18's mechanism"))
        #expect(p.contains("--design linux-2.6.38: no --policy runs on it"))
        #expect(Self.grid(policies: ["linux-6.18"], designs: ["linux-6.18"]).problems.isEmpty)
    }

    @Test("a knob of a policy without knobs, or of a policy not in the grid, is refused")
    func badKnobs() {
        let noKnobs = Self.grid(policies: ["linux-6.18"], tunables: [TunableAxis(name: "linux-6.18/x", values: ["1"])])
        #expect(noKnobs.problems.contains { $0.contains("policy linux-6.18 has no knobs") })
        let absent = Self.grid(policies: ["linux-2.6.38"], tunables: [TunableAxis(name: "linux-6.18/x", values: ["1"])])
        #expect(absent.problems.contains { $0.contains("no cell runs policy linux-6.18") })
    }

    @Test("docs/policies.md names every policy and each knob; a knob's table row gives its default")
    func documented() throws {
        let doc = try String(contentsOf: Small.packageRoot.appendingPathComponent("docs/policies.md"), encoding: .utf8)
        let lines = doc.split(separator: "\n")
        for entry in PolicyCatalog.all {
            #expect(doc.contains("| `\(entry.name)` |") || lines.contains("## \(entry.name)"), "\(entry.name) in docs/policies.md")
            for knob in entry.knobs {
                let name = "\(entry.name)/\(knob.name)"
                #expect(doc.contains(name), "\(name) in docs/policies.md")
                // In a knob table (| `policy/knob` | meaning | default |) the last column is the default:
                // the number, alone or before a remark in parentheses.
                guard let row = lines.first(where: { $0.hasPrefix("| `\(name)` |") }) else { continue }
                let last = row.split(separator: "|").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                #expect(last == "\(knob.defaultValue)" || last.hasPrefix("\(knob.defaultValue) ("),
                        "\(name) with its default \(knob.defaultValue), not '\(last)'")
            }
        }
        #expect(lines.contains { $0.hasPrefix("| `quicksilver/sync_n` |") }, "the knob tables are found")
    }

    @Test("each cell's policy shows in the text, JSON, CSV and HTML reports")
    func reports() throws {
        let g = Self.grid(policies: ["linux-6.18", "linux-2.6.38"])
        let report = try Small.run(ExperimentGrid(workloads: [g.workloads[0]], designs: g.designs, enabled: ["never"], memoryBytes: 64 << 20)
            .with { $0.policies = g.policies })
        #expect(report.results.map(\.cell.policy) == ["linux-6.18", "linux-2.6.38"])
        #expect(report.text.contains("— linux-6.18, skylake-sp") && report.text.contains("— linux-2.6.38, skylake-sp"))
        let json = try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as! [String: Any]
        let results = json["results"] as! [[String: Any]]
        #expect(results.map { ($0["cell"] as! [String: Any])["policy"] as? String } == ["linux-6.18", "linux-2.6.38"])
        let csv = report.csv.split(separator: "\n")
        let column = try #require(ExperimentReport.csvColumns.firstIndex(of: "policy"))
        #expect(csv.dropFirst().map { String($0.split(separator: ",", omittingEmptySubsequences: false)[column]) } == ["linux-6.18", "linux-2.6.38"])
        #expect(report.html.contains("policies:"))
    }
}

extension ExperimentGrid {
    func with(_ change: (inout ExperimentGrid) -> Void) -> ExperimentGrid {
        var g = self
        change(&g)
        return g
    }
}
