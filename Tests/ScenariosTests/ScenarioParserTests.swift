import Testing
@testable import Scenarios

/// The parser and the static pass: every error path reports `file:line:` before anything runs.
@Suite("Scenario parser")
struct ScenarioParserTests {
    static let example = """
        design linux-2.6.38                 # which design the model runs
        memory 1G
        set enabled=madvise defrag=madvise use_zero_page=1
        set khugepaged/max_ptes_none=511 khugepaged/scan_sleep_millisecs=10
        mmap A 4M
        mmap B 4M at=A+8M prot=r
        madvise A 2M hugepage
        write A+4K 8K
        read A 4M
        munmap A+2M-4K 4K
        mprotect A+4K 4K r
        mremap A 2M 2M to=B
        fork child
        on child
        exit
        on parent
        khugepaged full_scans=2
        split A 8M
        expect smaps A AnonHugePages=2048kB Rss=2048kB
        expect vmstat thp_fault_alloc+=1 thp_split_pmd+=0
        expect meminfo AnonHugePages>=2048kB
        expect data A 4M
        mprotect A 4K none
        expect result EINVAL
        read A 4K
        expect segv
        mark
        """

    @Test("the issue's example parses, with design and memory recorded")
    func example() throws {
        let scenario = try ScenarioParser.parse(Self.example, file: "ex.scen")
        #expect(scenario.design == "linux-2.6.38")
        #expect(scenario.memoryBytes == 1 << 30)
        #expect(scenario.statements.count == 27)
        #expect(scenario.forkCount == 1)
        guard case .mmap(let b) = scenario.statements[5].command else { Issue.record("not mmap"); return }
        #expect(b.fixedAddress == AddressExpression(region: "A", offset: 8 << 20))
        #expect(b.protection == .r)
        guard case .munmap(let at, let size) = scenario.statements[9].command else { Issue.record("not munmap"); return }
        #expect(at.offset == (2 << 20) - 4096)
        #expect(size == 4096)
        guard case .expect(.vmstat(let checks)) = scenario.statements[19].command else { Issue.record("not vmstat"); return }
        #expect(checks.map(\.comparison) == [.delta, .delta])
        #expect(scenario.statements[0].location.description == "ex.scen:1")
    }

    @Test("counter values are in Linux's units: sizes become kB, plain numbers stay counts")
    func counterValues() throws {
        let s = try ScenarioParser.parse("mmap A 2M\nexpect smaps A AnonHugePages=2M Rss<=2048kB THPeligible=1\nexpect vmstat nr_anon_transparent_hugepages+=-1", file: "f")
        guard case .expect(.smaps(_, let checks)) = s.statements[1].command,
              case .expect(.vmstat(let v)) = s.statements[2].command else { Issue.record("wrong commands"); return }
        #expect(checks.map(\.value) == [2048, 2048, 1])
        #expect(checks[1].comparison == .atMost)
        #expect(v[0].value == -1)
    }

    @Test("options: shared, align, prot none, result ok")
    func options() throws {
        let s = try ScenarioParser.parse("mmap A 4K shared=yes align=4K prot=none\nmunmap A 4K\nexpect result ok\nexpect result 0", file: "f")
        guard case .mmap(let r) = s.statements[0].command else { Issue.record("not mmap"); return }
        #expect(r.shared && !r.hugeAligned && r.protection == .none)
        guard case .expect(.result(let e)) = s.statements[2].command else { Issue.record("not result"); return }
        #expect(e == nil)
        #expect(!r.stack)
    }

    @Test("stack=yes asks for MAP_STACK; stack=no and no option do not")
    func stackOption() throws {
        let s = try ScenarioParser.parse("mmap A 2M stack=yes\nmmap B 2M stack=no\nmmap C 2M", file: "f")
        let stacks = s.statements.compactMap { statement -> Bool? in
            if case .mmap(let r) = statement.command { return r.stack }
            return nil
        }
        #expect(stacks == [true, false, false])
    }

    static let errors: [(String, Int, String)] = [
        ("mmap A 4M\nfrobnicate A", 2, "unknown command 'frobnicate'"),
        ("mmap A 4Q", 1, "bad size '4Q'"),
        ("mmap A -4K", 1, "bad size '-4K'"),
        ("mmap A", 1, "mmap: missing size"),
        ("write A 4K", 1, "undefined region 'A'"),
        ("mmap A 4M\nwrite A+2X 4K", 2, "bad address 'A+2X'"),
        ("mmap A 4M\nwrite 3A 4K", 2, "bad address '3A'"),
        ("mmap A 4M\nmprotect A 4K wx", 2, "bad protection 'wx'"),
        ("mmap A 4M prot=rw-", 1, "bad protection 'rw-'"),
        ("mmap A 4M\nmadvise A 4K willneed", 2, "bad advice 'willneed'"),
        ("mmap A 4M\nmmap A 4M", 2, "region 'A' is already defined"),
        ("mmap A 4M color=red", 1, "unknown option 'color'"),
        ("mmap A 4M align=8K", 1, "bad alignment '8K'"),
        ("mmap A 4M shared=maybe", 1, "bad value 'maybe' for shared"),
        ("mmap A 2M stack=1", 1, "bad value '1' for stack: expected yes or no (MAP_STACK)"),
        ("mmap A 2M stack", 1, "bad option 'stack'"),
        ("mmap A 4M\nmremap A 4M 8M to=Q", 2, "undefined region 'Q'"),
        ("mmap A 4M\ndesign linux-6.18", 2, "'design' must come before every other command"),
        ("set enabled=never\nmemory 1G", 2, "'memory' must come before every other command"),
        ("design a\ndesign b", 2, "design is given twice"),
        ("memory 4K", 1, "too small"),
        ("set enabled", 1, "bad setting 'enabled'"),
        ("set ../../etc/passwd=1", 1, "bad tunable"),
        ("set", 1, "missing tunable=value"),
        ("mmap A 4M\nexpect smaps A", 2, "missing Field=Value"),
        ("mmap A 4M\nexpect smaps A Rss", 2, "malformed expectation 'Rss'"),
        ("mmap A 4M\nexpect smaps A Rss=lots", 2, "bad value 'lots'"),
        ("mmap A 4M\nexpect smaps A Rss=1000B", 2, "bad value '1000B'"),
        ("mmap A 4M\nexpect smaps A Rss+=4kB", 2, "only for vmstat, mthp and meminfo"),
        ("expect mthp 48kB anon_fault_alloc+=1", 1, "bad mTHP size '48kB'"),
        ("expect mthp 4M anon_fault_alloc+=1", 1, "bad mTHP size"),
        ("expect mthp 64kB anon_faults+=1", 1, "unknown mTHP counter 'anon_faults'"),
        ("expect mthp 64kB", 1, "missing Field=Value"),
        ("expect vmstat", 1, "missing Field=Value"),
        ("expect frobs x=1", 1, "unknown kind 'frobs'"),
        ("expect", 1, "missing what to expect"),
        ("mmap A 4M\nexpect result EWHATEVER", 2, "bad result 'EWHATEVER'"),
        ("expect result 0", 1, "no system call before it"),
        ("mmap A 4M\nexpect segv", 2, "no read or write before it"),
        ("mmap A 4M\nexpect data A", 2, "missing size"),
        ("on ghost", 1, "undefined process 'ghost'"),
        ("fork c\nfork c", 2, "process 'c' already exists"),
        ("fork c\non c\nexit\non c", 4, "process 'c' has exited"),
        ("exit\nmmap A 4M", 2, "no current process"),
        ("fork c\non c\nmmap X 4K\non parent\nwrite X 4K", 5, "undefined region 'X' in process 'parent'"),
        ("mmap A 4M\nfork c\nmmap P 4K\non c\nwrite P 4K", 5, "undefined region 'P' in process 'c'"),
        ("khugepaged full_scans=zero", 1, "bad full_scans 'zero'"),
        ("khugepaged sleep=1", 1, "unknown option 'sleep'"),
        ("mmap A 4M\nexit now", 2, "unexpected 'now' after exit"),
        ("fork 9lives", 1, "bad process name '9lives'"),
        ("mmap A 4M\nexpect data A 2G", 2, "at most 1G"),
    ]

    @Test("malformed input is an error with file:line and a clear message", arguments: errors)
    func error(text: String, line: Int, message: String) {
        do {
            _ = try ScenarioParser.parse(text, file: "bad.scen")
            Issue.record("parsed without error: \(text)")
        } catch {
            #expect(error.location == SourceLocation(file: "bad.scen", line: line))
            #expect(error.message.contains(message), "\(error.message)")
            #expect(error.description.hasPrefix("bad.scen:\(line): "))
            #expect(error.kind == .input)
        }
    }

    @Test("comments and blank lines are ignored; line numbers count them")
    func comments() throws {
        let s = try ScenarioParser.parse("# header\n\n   \nmmap A 4M   # trailing\n\twrite A 4K\n", file: "c")
        #expect(s.statements.map(\.location.line) == [4, 5])
        #expect(s.statements[0].text == "mmap A 4M")
    }

    /// The other way round, a name one process maps after the fork is unknown to the other: `errors`.
    @Test("a child inherits its parent's region names at fork")
    func inheritance() throws {
        let s = try ScenarioParser.parse("mmap A 4M\nfork c\non c\nwrite A 4K\nmmap B 4K\non parent\nwrite A 4K", file: "f")
        #expect(s.statements.map(\.command.keyword) == ["mmap", "fork", "on", "write", "mmap", "on", "write"])
        #expect(s.forkCount == 1)
        guard case .fork(let child) = s.statements[1].command, case .on(let current) = s.statements[2].command,
              case .write(let inChild, let size, nil) = s.statements[3].command,
              case .write(let inParent, _, _) = s.statements[6].command else { Issue.record("wrong commands"); return }
        #expect(child == "c" && current == "c")
        #expect(inChild == AddressExpression(region: "A", offset: 0) && size == 4096)
        #expect(inParent == AddressExpression(region: "A", offset: 0))
    }
}
