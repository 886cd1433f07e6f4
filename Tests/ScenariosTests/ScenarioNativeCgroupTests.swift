#if canImport(Glibc)
import Foundation
import Glibc
import Testing
@testable import Scenarios

/// Memory cgroup scenarios on the live kernel (`NativeCgroups`): v2 files translated to v1 where the
/// memory controller is there, cgroups made below the host's own and removed afterwards. The native
/// runs go through the built `thpsim` (see `ScenarioNativeTests`) and are skipped, with the reason,
/// where memory cgroups cannot be made. Nested in `ScenarioNativeTests`, whose `.serialized` covers it:
/// native runs write the host's THP tunables and check they were restored, so no two may overlap.
extension ScenarioNativeTests {
@Suite("Native scenarios: memory cgroups", .serialized)
struct Cgroups {
    /// The directory the runs make their cgroups in, when cgroups are writable here.
    static let parent: String? = {
        guard getuid() == 0, case .success(let cgroups) = NativeCgroups.open() else { return nil }
        return cgroups.parent
    }()

    static func leftovers() -> [String] {
        guard let parent else { return [] }
        return ((try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []).filter { $0.hasPrefix("thpsim-") }
    }

    @Test("limits parse as cgroup v2 parses them before they reach v1", arguments: [
        ("20M", UInt64?.some(20 << 20)), ("max", nil), (" 4096\n", 4096), ("0x10K", 16 << 10), ("010", 8), ("1g", 1 << 30), ("", 0),
    ])
    func memparse(text: String, bytes: UInt64?) {
        #expect(NativeCgroups.memparse(text) == .some(bytes))
    }

    @Test("values v2 refuses are EINVAL here too, though v1 would take -1", arguments: ["-1", "20MB", "1.5M", "08", "M"])
    func memparseRefuses(text: String) {
        #expect(NativeCgroups.memparse(text) == nil)
    }

    @Test("the cgroup scenarios agree with the live kernel, and their cgroups are removed (scenarios/cgroup)",
          .enabled(if: parent != nil, "memory cgroups cannot be made here (not root, no memory controller, or not writable)"),
          .enabled(if: ScenarioNativeTests.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
    func agree() throws {
        let files = ScenarioNativeTests.files(in: "scenarios/cgroup")
        #expect(files.count >= 3)
        let enabled = "/sys/kernel/mm/transparent_hugepage/enabled"
        let before = try ScenarioNativeTests.settled([enabled])[0]
        let (status, output) = try ScenarioNativeTests.runThpsim(["scenario", "--compare", "--json"] + files)
        #expect(status == 0, "\(output)")
        let object = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]
        #expect(object?["passed"] as? Bool == true)
        #expect(try String(contentsOfFile: enabled, encoding: .utf8) == before, "the enabled tunable was restored")
        #expect(Self.leftovers().isEmpty, "\(Self.leftovers())")
    }

    @Test("a native run that stops with an error still removes its cgroups",
          .enabled(if: parent != nil, "memory cgroups cannot be made here (not root, no memory controller, or not writable)"),
          .enabled(if: ScenarioNativeTests.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
    func cleanupOnError() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("thpsim-cgroup-error-\(getpid()).scen")
        // The mmap of length 0 fails (EINVAL), so the write to its region stops the run.
        try "set enabled=never\ncgroup box memory.max=8M\nin box\nmmap A 0\nwrite A 4K\nexpect cgroup box memory.current>=0\n"
            .write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let (status, output) = try ScenarioNativeTests.runThpsim(["scenario", "--native", file.path])
        #expect(status != 0)
        #expect(output.contains("\(file.path):5"), "\(output)")
        #expect(Self.leftovers().isEmpty, "\(Self.leftovers())")
    }
}
}
#endif
