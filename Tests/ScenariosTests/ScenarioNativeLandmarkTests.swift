#if canImport(Glibc)
import Foundation
import Glibc
import Testing
@testable import Scenarios

/// Landmarks 2a, 2c and 2f of docs/history.md on the live kernel: the model and this machine's kernel
/// run the same scenario files (`--compare`) and must agree. Nested in `ScenarioNativeTests`, whose
/// `.serialized` covers it: native runs write the host's THP tunables and check they were restored.
extension ScenarioNativeTests {
@Suite("Native scenarios: landmarks", .serialized)
struct Landmarks {
    static let root = "/sys/kernel/mm/transparent_hugepage"
    static let knobs = ["enabled", "defrag", "shrink_underused", "khugepaged/max_ptes_none",
                        "khugepaged/scan_sleep_millisecs", "khugepaged/pages_to_scan"].map { "\(root)/\($0)" }

    /// Runs `files` with `--compare --json`; expects both backends to pass every file and every
    /// tunable to be back as it was.
    static func compare(_ files: [String]) throws {
        let before = try ScenarioNativeTests.settled(knobs)
        let (status, output) = try ScenarioNativeTests.runThpsim(["scenario", "--compare", "--json"] + files)
        #expect(status == 0, "\(output)")
        let object = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]
        #expect(object?["passed"] as? Bool == true, "\(output)")
        #expect((object?["scenarios"] as? [Any])?.count == files.count)
        let after = try knobs.map { try String(contentsOfFile: $0, encoding: .utf8) }
        #expect(before == after, "the THP tunables were restored")
    }

    static func file(_ path: String) -> String { ScenarioNativeTests.packageRoot.appendingPathComponent(path).path }

    @Test("2a: without the shrinker the 48 MiB process is OOM-killed in its 20 MiB cgroup, with it it survives, on the model and the live kernel",
          .enabled(if: ScenarioNativeTests.Cgroups.parent != nil, "memory cgroups cannot be made here (not root, no memory controller, or not writable)"),
          .enabled(if: FileManager.default.fileExists(atPath: "\(root)/shrink_underused"), "this kernel has no shrink_underused (before 6.12)"),
          .enabled(if: ScenarioNativeTests.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
    func underusedShrinker() throws {
        try Self.compare([Self.file("scenarios/model/cgroup-underused-shrinker-off.scen"),
                          Self.file("scenarios/model/cgroup-underused-shrinker-on.scen")])
        #expect(ScenarioNativeTests.Cgroups.leftovers().isEmpty)
    }

    @Test("2c: MAP_STACK stacks hold 16 KiB each under enabled=always, the same mapping without it a THP, on the model and the live kernel",
          .enabled(if: ScenarioNativeTests.isRoot, "native scenarios need root"),
          .enabled(if: ScenarioNativeTests.hasTHP, "this kernel has no /sys/kernel/mm/transparent_hugepage"),
          .enabled(if: ScenarioNativeTests.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
    func threadStacks() throws {
        try Self.compare([Self.file("scenarios/thp-6.18/map-stack-nohugepage.scen")])
    }

    @Test("2f: khugepaged refills a half-returned heap with max_ptes_none 511, not with 0, on the model and the live kernel (bounded wait)",
          .enabled(if: ScenarioNativeTests.isRoot, "native scenarios need root"),
          .enabled(if: ScenarioNativeTests.hasTHP, "this kernel has no /sys/kernel/mm/transparent_hugepage"),
          .enabled(if: ScenarioNativeTests.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
    func returnedMemory() throws {
        let file = Self.file("scenarios/thp-6.18/khugepaged-refills-returned.scen")
        try Self.compare([file])
        // The native run alone waits for khugepaged's full scans; with the scenario's scan settings it
        // takes under a second here (the bound leaves room for a busy machine).
        let start = Date()
        let (status, output) = try ScenarioNativeTests.runThpsim(["scenario", "--native", file])
        #expect(status == 0, "\(output)")
        #expect(Date().timeIntervalSince(start) < 30, "the native run took \(Date().timeIntervalSince(start)) s")
    }
}
}
#endif
