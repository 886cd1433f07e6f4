import Testing
import VMCore
import Kernel
import Machine
import Workloads
import Simulation

/// `--cgroup`: the workload's processes run in one memory cgroup and the report says what it did.
@Suite("Workloads in a memory cgroup")
struct CgroupRunTests {
    func executor(_ cgroup: [SystemBuilder.Tunable]) throws -> MachineExecutor {
        var s = SystemBuilder()
        s.design = .linux6_18
        s.enabled = .never
        s.memoryBytes = 256 << 20
        s.cgroup = cgroup
        return try s.makeExecutor()
    }

    @Test("a process that outgrows memory.max without swap is OOM-killed: a kill with its RSS, not a signal")
    func oomKilled() throws {
        let e = try executor([.init(name: "memory.max", value: "1M"), .init(name: "memory.swap.max", value: "0")])
        let base: UInt64 = 0x1000_0000
        e.event(thread: 0, .mmap(address: base, length: 4 << 20, protection: .readWrite, shared: false))
        for page in 0..<1024 { e.access(thread: 0, address: base + UInt64(page) * 4096, kind: .store, count: 1) }
        let r = e.finish()
        #expect(r.signals.isEmpty)
        let cgroup = try #require(r.cgroup)
        #expect(cgroup.oomKills.count == 1)
        // The PUD, PMD and PTE tables take 3 of the cgroup's 256 pages.
        #expect(cgroup.oomKills.first?.process == 0 && cgroup.oomKills.first?.rssBytes == (1 << 20) - 3 * 4096)
        #expect(cgroup.events["oom_kill"] == 1 && cgroup.events["oom"] == 1)
        #expect(cgroup.files["memory.max"] == "1048576" && cgroup.files["memory.current"] == "0")
        #expect(r.text.contains("process 0 OOM-killed by its cgroup: anon-rss 1012 kB"))
        #expect(r.json.contains("\"oom_kills\""))
        #expect(r.droppedAccesses > 0)
    }

    @Test("a process killed while another faulted stops: its later accesses and events are dropped")
    func otherProcessKilled() throws {
        let e = try executor([.init(name: "memory.max", value: "2M"), .init(name: "memory.swap.max", value: "0")])
        let base: UInt64 = 0x1000_0000
        e.event(thread: 0, .mmap(address: base, length: 4 << 20, protection: .readWrite, shared: false))
        e.event(thread: 0, .fork(child: 1))
        for page in 0..<300 { e.access(thread: 1, address: base + UInt64(page) * 4096, kind: .store, count: 1) }
        for page in 300..<600 { e.access(thread: 0, address: base + UInt64(page) * 4096, kind: .store, count: 1) }
        e.access(thread: 1, address: base, kind: .load, count: 1)
        e.event(thread: 1, .munmap(address: base, length: 4096))
        let r = e.finish()
        #expect(r.signals.isEmpty)
        #expect(r.cgroup?.oomKills.map(\.process) == [1])
        #expect(r.droppedAccesses == 1 && r.droppedEvents == 1)
        #expect(e.machine.kernel.checkInvariants().isEmpty)
    }

    @Test("fork's child is charged to the same cgroup")
    func childInherits() throws {
        let e = try executor([.init(name: "memory.max", value: "max")])
        let base: UInt64 = 0x1000_0000
        e.event(thread: 0, .mmap(address: base, length: 1 << 20, protection: .readWrite, shared: false))
        e.event(thread: 0, .fork(child: 1))
        e.access(thread: 1, address: base, kind: .store, count: 1)
        let r = e.finish()
        // The page, and the child's PGD, PUD, PMD and PTE tables (charged to its cgroup, as Linux does).
        #expect(r.cgroup?.files["memory.current"] == "\(5 * 4096)")
        #expect(r.cgroup?.oomKills.isEmpty == true)
    }

    @Test("memory.min and memory.low are taken and reported when set, and left out of the report when not")
    func protectionReported() throws {
        let e = try executor([.init(name: "memory.low", value: "8M"), .init(name: "memory.min", value: "1M")])
        e.event(thread: 0, .mmap(address: 0x1000_0000, length: 1 << 20, protection: .readWrite, shared: false))
        e.access(thread: 0, address: 0x1000_0000, kind: .store, count: 1)
        let r = e.finish()
        #expect(r.cgroup?.files["memory.low"] == "\(8 << 20)" && r.cgroup?.files["memory.min"] == "\(1 << 20)")
        #expect(r.text.contains("memory.min \(1 << 20), memory.low \(8 << 20), memory.current"))
        let plain = try executor([.init(name: "memory.max", value: "max")])
        let p = plain.finish()
        #expect(p.cgroup?.files["memory.low"] == nil && p.cgroup?.files["memory.min"] == nil)
        #expect(!p.text.contains("memory.low"))
    }

    @Test("--cgroup memory.oom.group=1: an OOM kill takes every process of the program, and the report shows the file")
    func oomGroup() throws {
        #expect(SystemBuilder.problem(withCgroup: .init(name: "memory.oom.group", value: "1")) == nil)
        let e = try executor([.init(name: "memory.max", value: "1M"), .init(name: "memory.swap.max", value: "0"),
                              .init(name: "memory.oom.group", value: "1")])
        e.event(thread: 0, .mmap(address: 0x1000_0000, length: 4 << 20, protection: .readWrite, shared: false))
        for page in 0..<1024 { e.access(thread: 0, address: 0x1000_0000 + UInt64(page) * 4096, kind: .store, count: 1) }
        let r = e.finish()
        #expect(r.cgroup?.files["memory.oom.group"] == "1")
        #expect(r.cgroup?.events["oom_group_kill"] == 1)
        #expect(r.text.contains("memory.oom.group 1"))
    }

    @Test("bad --cgroup settings name the file or the value", arguments: [
        ("memory.limit_in_bytes", "1M", "unknown cgroup file"), ("memory.max", "20MB", "EINVAL"), ("memory.current", "0", "unknown"),
        ("memory.oom.group", "2", "expected 0 or 1"), ("memory.oom.group", "max", "EINVAL"),
    ])
    func problems(file: String, value: String, message: String) {
        #expect(SystemBuilder.problem(withCgroup: .init(name: file, value: value))?.contains(message) == true)
    }

    @Test("without --cgroup the report has no cgroup section")
    func noCgroup() throws {
        var s = SystemBuilder()
        s.memoryBytes = 64 << 20
        let r = try s.makeExecutor().finish()
        #expect(r.cgroup == nil && !r.json.contains("\"cgroup\""))
    }
}
