import Testing
import TestSupport
import VMCore
@testable import Scenarios

/// The scenario language's memory cgroups: `cgroup`, `in`, `expect cgroup`, `expect killed`, and
/// what the static pass refuses.
@Suite("Scenarios: memory cgroups")
struct CgroupScenarioTests {
    func parse(_ text: String) throws(ScenarioError) -> Scenario { try ScenarioParser.parse(text, file: "c.scen") }

    func runOnModel(_ text: String) throws -> ScenarioReport {
        let scenario = try parse(text)
        return ScenarioRunner.run(scenario, on: "model", makeBackend: { () throws(ScenarioError) in
            try makeModelScenarioBackend(design: scenario.design, memoryBytes: scenario.memoryBytes, swap: scenario.swap)
        })
    }

    func error(_ text: String) -> ScenarioError? {
        do { _ = try parse(text); return nil } catch { return error }
    }

    @Test("cgroup, in and the expectations parse into their commands")
    func parses() throws {
        let s = try parse("cgroup box memory.max=20M memory.swap.max=0\nin box\nmmap A 2M\nwrite A 2M stride=50K\nexpect killed\nexpect cgroup box memory.events oom_kill=1\nexpect cgroup box memory.current<=20M memory.peak=max")
        guard case .cgroup("box", let writes) = s.statements[0].command, case .inCgroup("box") = s.statements[1].command,
              case .write(_, _, stride: 51200?) = s.statements[3].command,
              case .expect(.killed(nil)) = s.statements[4].command,
              case .expect(.cgroup("box", file: "memory.events", let events)) = s.statements[5].command,
              case .expect(.cgroup("box", file: nil, let single)) = s.statements[6].command else {
            Issue.record("wrong commands"); return
        }
        #expect(writes == [Knob(name: "memory.max", value: "20M"), Knob(name: "memory.swap.max", value: "0")])
        #expect(events.map(\.field) == ["oom_kill"] && events[0].value == 1)
        #expect(single.map(\.field) == ["memory.current", "memory.peak"])
        #expect(single[0].value == 20 << 20 && single[1].value == .max)
        #expect(s.usesCgroups)
    }

    @Test("the static pass names the line and the problem", arguments: [
        ("cgroup box memory.limit_in_bytes=1M\nin box\nexpect vmstat pgfault>=0", 1, "unknown cgroup file 'memory.limit_in_bytes'"),
        ("cgroup box memory.current=0\nin box\nexpect vmstat pgfault>=0", 1, "read-only"),
        ("cgroup box memory.max=1M\nexpect vmstat pgfault>=0", 1, "cgroup 'box' has no processes"),
        ("in box\nexpect vmstat pgfault>=0", 1, "undefined cgroup 'box'"),
        ("cgroup root memory.max=1M\nexpect vmstat pgfault>=0", 1, "root cgroup"),
        ("cgroup box\nin box\nexpect cgroup other memory.current=0", 3, "undefined cgroup 'other'"),
        ("cgroup box\nin box\nexpect cgroup box memory.events", 3, "missing checks"),
        ("cgroup box\nin box\nexpect cgroup box oom_kill=1", 3, "not a single-value cgroup file"),
        ("cgroup box\nin box\nexpect cgroup box memory.current+=4K", 3, "not changes"),
        ("cgroup box\nin box\nmmap A 2M\nwrite A 2M\nexpect killed\nwrite A 4K", 6, "no current process"),
        ("cgroup box\nin box\nexpect killed nobody", 3, "undefined process 'nobody'"),
        ("mmap A 2M\nwrite A 2M stride=0\nexpect data A 2M", 2, "stride"),
        ("cgroup pod/app\nin pod/app\nexpect vmstat pgfault>=0", 1, "its parent 'pod' is not made yet"),
        ("cgroup pod\ncgroup pod/app\nin pod\nexpect vmstat pgfault>=0", 3, "has a cgroup below it ('pod/app')"),
        ("cgroup pod\nin pod\ncgroup pod/app\nexpect vmstat pgfault>=0", 3, "'pod' has processes"),
        ("cgroup pod\ncgroup pod/app\ncgroup pod/side\nin pod/app\nexpect vmstat pgfault>=0", 3, "cgroup 'pod/side' has no processes"),
        ("cgroup pod//app\nexpect vmstat pgfault>=0", 1, "bad cgroup name 'pod//app'"),
        ("cgroup root/app\nexpect vmstat pgfault>=0", 1, "root cgroup"),
        ("cgroup-mount nsdelegate\nexpect vmstat pgfault>=0", 1, "no mount option 'nsdelegate' (it has memory_recursiveprot)"),
        ("oom_score_adj 1001\nexpect vmstat pgfault>=0", 1, "bad oom_score_adj '1001'"),
        ("oom_score_adj\nexpect vmstat pgfault>=0", 1, "missing oom_score_adj value"),
        ("exit\noom_score_adj 5\nexpect vmstat pgfault>=0", 2, "no current process"),
        ("cgroup-mount\nexpect vmstat pgfault>=0", 1, "cgroup-mount: missing option"),
        ("cgroup-mount memory_recursiveprot\ncgroup-mount memory_recursiveprot\nexpect vmstat pgfault>=0", 2, "cgroup-mount is given twice"),
        ("mmap A 2M\ncgroup-mount memory_recursiveprot\nexpect vmstat pgfault>=0", 2, "'cgroup-mount' must come before every other command"),
    ])
    func staticErrors(text: String, line: Int, message: String) {
        let e = error(text)
        #expect(e?.location?.line == line, "\(String(describing: e))")
        #expect(e?.message.contains(message) == true, "\(String(describing: e))")
    }

    @Test("cgroup-mount takes mount -o's comma-separated form, sets the model's option and counts as cgroup use")
    func mountOptions() throws {
        let s = try parse("cgroup-mount memory_recursiveprot\nexpect vmstat pgfault>=0")
        guard case .cgroupMount(let options) = s.statements[0].command else { Issue.record("not cgroup-mount"); return }
        #expect(options == ["memory_recursiveprot"])
        #expect(s.usesCgroups)
        #expect(try parse("cgroup-mount memory_recursiveprot,memory_recursiveprot\nexpect vmstat pgfault>=0").statements.count == 2)
        // The model's kernel gets the option (MemoryCgroups.recursiveProtection).
        let backend = try makeModelScenarioBackend(design: "linux-6.18", memoryBytes: 64 << 20)
        let model = try #require(backend as? ModelScenarioBackend)
        #expect(!model.kernel.memoryCgroups.recursiveProtection)
        try backend.mountCgroups(options: ["memory_recursiveprot"])
        #expect(model.kernel.memoryCgroups.recursiveProtection)
    }

    @Test("natively, the host's cgroup2 mount options come from /proc/self/mountinfo's super options")
    func hostMountOptions() {
        let info = """
        24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
        35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
        """
        #expect(NativeCgroups.hostMountOptions(mountinfo: info) == ["rw", "nsdelegate", "memory_recursiveprot"])
        #expect(NativeCgroups.hostMountOptions(mountinfo: "35 24 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory") == nil)
        #expect(NativeCgroups.hostMountOptions(mountinfo: nil) == nil)
    }

    @Test("a write Linux refuses is an errno for expect result; an unchecked one fails at its line")
    func refusedWrites() throws {
        let report = try runOnModel("memory 64M\ncgroup box memory.max=-1\nexpect result EINVAL\ncgroup box memory.max=20MB\nexpect result EINVAL\ncgroup box memory.high=1.5M\nin box\nexpect cgroup box memory.max=max")
        #expect(report.results.map(\.status) == [.passed, .passed, .failed, .passed])
        #expect(report.results[2].location.line == 6 && report.results[2].observed.contains("EINVAL"))
    }

    @Test("an OOM kill of the current process is expect killed; one left unchecked fails the touch's line")
    func killed() throws {
        let ok = try runOnModel("memory 64M\nswap 0\nset enabled=never\ncgroup box memory.max=1M\nin box\nmmap A 2M\nwrite A 2M\nexpect killed\nexpect cgroup box memory.events oom_kill=1 oom=1\nexpect cgroup box memory.current=0 memory.peak=1M")
        #expect(ok.passed, "\(ok.results)")
        let unchecked = try runOnModel("memory 64M\nswap 0\nset enabled=never\ncgroup box memory.max=1M\nin box\nmmap A 2M\nwrite A 2M\nexpect vmstat pgfault>=0")
        #expect(!unchecked.passed)
        #expect(unchecked.results.first?.location.line == 7)
        #expect(unchecked.results.first?.observed.contains("expect killed") == true)
    }

    @Test("the OOM killer kills the largest process, not the faulting one; the survivor's lines go on")
    func otherVictim() throws {
        let report = try runOnModel("""
            memory 64M
            swap 0
            set enabled=never
            cgroup box memory.max=2M
            in box
            fork big
            on big
            mmap B 2M
            write B 1500K
            on parent
            mmap A 2M
            write A 1M
            expect killed big
            expect data A 1M
            expect cgroup box memory.events oom_kill=1
            """)
        #expect(report.passed, "\(report.results)")
    }

    @Test("a process moved to another cgroup leaves its charges behind (cgroup v2)")
    func moveKeepsCharges() throws {
        let report = try runOnModel("""
            memory 64M
            set enabled=never
            cgroup a
            cgroup b
            in a
            mmap A 2M
            write A 8K
            in b
            write A+8K 4K
            # a: the two pages and the PUD, PMD and PTE tables that map them (page tables are charged)
            expect cgroup a memory.current=20K
            expect cgroup a memory.stat anon=8K pagetables=12K
            expect cgroup b memory.current=4K
            in root
            write A+12K 4K
            expect cgroup b memory.current=4K
            """)
        #expect(report.passed, "\(report.results)")
    }
}
