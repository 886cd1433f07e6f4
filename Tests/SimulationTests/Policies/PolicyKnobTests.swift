import Testing
import VMCore
import Kernel
import Simulation

/// A policy's knobs reach its kernel the way `--set` writes Linux's: as tunables of the system.
@Suite("Policy knobs through SystemBuilder and the catalog")
struct PolicyKnobTests {
    @Test("the catalog names ingens and hawkeye, each on Linux 6.18's mechanism")
    func catalog() {
        #expect(PolicyCatalog.named("ingens")?.policy is IngensPolicy)
        #expect(PolicyCatalog.named("hawkeye")?.policy is HawkEyePolicy)
        #expect(PolicyCatalog.named("ingens")?.design == .linux6_18 && PolicyCatalog.named("hawkeye")?.design == .linux6_18)
        #expect(PolicyCatalog.names.contains("ingens") && PolicyCatalog.names.contains("hawkeye"))
    }

    @Test("tunables set a policy's knobs at boot; a bad value or name is refused, naming the knob")
    func tunables() throws {
        var s = SystemBuilder()
        s.design = .linux6_18
        s.policy = IngensPolicy()
        s.tunables = [.init(name: "ingens/util_threshold", value: "50"), .init(name: "khugepaged/pages_to_scan", value: "512")]
        let kernel = try s.makeKernel()
        #expect(try kernel.transparentHugepageSysfs.read("ingens/util_threshold") == "50")
        #expect(kernel.khugepaged.settings.pagesToScan == 512)

        let bad = SystemBuilder.Tunable(name: "ingens/util_threshold", value: "200")
        let problem = try #require(SystemBuilder.problem(with: bad, design: .linux6_18, policy: IngensPolicy()))
        #expect(problem.errno == .EINVAL && problem.message.contains("ingens/util_threshold") && problem.message.contains("200"))
        let unknown = SystemBuilder.Tunable(name: "hawkeye/nope", value: "1")
        #expect(SystemBuilder.problem(with: unknown, design: .linux6_18, policy: HawkEyePolicy())?.errno == .ENOENT)
        // Another policy's knob is no file of this one's kernel.
        #expect(SystemBuilder.problem(with: .init(name: "ingens/fairness", value: "1"), design: .linux6_18,
                                      policy: HawkEyePolicy())?.errno == .ENOENT)
        #expect(SystemBuilder.problem(with: .init(name: "hawkeye/prezero", value: "0"), design: .linux6_18,
                                      policy: HawkEyePolicy()) == nil)
    }
}
