import Testing
@testable import Scenarios

/// The interpreter on a fake in-memory kernel: shadow semantics, outcomes, skips, alignment.
@Suite("Scenario interpreter")
struct ScenarioInterpreterTests {
    func run(_ text: String, configure: (FakeBackend) -> Void = { _ in }) throws -> (ScenarioReport, FakeBackend) {
        let scenario = try ScenarioParser.parse(text, file: "t.scen")
        let backend = FakeBackend()
        configure(backend)
        return (ScenarioRunner.run(scenario, on: "fake", makeBackend: { () throws(ScenarioError) in backend }), backend)
    }

    func failures(_ report: ScenarioReport) -> [String] {
        report.results.filter { $0.status == .failed }.map { "\($0.location): \($0.check): expected \($0.expected), observed \($0.observed)" }
    }

    @Test("writes are read back; a later write changes the bytes")
    func writes() throws {
        let (report, backend) = try run("""
            mmap A 64K
            write A+4K 8K
            expect data A 64K
            write A+4K 4K
            expect data A 64K
            expect smaps A Rss=8kB Size=64kB
            """)
        #expect(failures(report) == [])
        #expect(report.count(.passed) == 4)
        #expect(report.passed && backend.finished)
    }

    @Test("two writes to the same place store different bytes")
    func patternChanges() {
        let first = DataPattern(sequence: 1, firstOffset: 4096).bytes(count: 64)
        let second = DataPattern(sequence: 2, firstOffset: 4096).bytes(count: 64)
        #expect(first != second)
        #expect(DataPattern(sequence: 1, firstOffset: 4096).bytes(from: 3, count: 5) == Array(first[3 ..< 8]))
        #expect(DataPattern(sequence: 1, firstOffset: 4096).byte(at: 9) == first[9])
    }

    @Test("mmap starts 2 MiB-aligned unless align=4K, by mapping more and trimming")
    func alignment() throws {
        let scenario = try ScenarioParser.parse("mmap A 64K\nmmap B 64K align=4K", file: "t")
        let backend = FakeBackend()
        let interpreter = ScenarioInterpreter(scenario: scenario, backend: backend)
        _ = interpreter.run()
        guard case .address(let a)? = interpreter.processes["parent"]?.regions["A"],
              case .address(let b)? = interpreter.processes["parent"]?.regions["B"] else { Issue.record("no addresses"); return }
        #expect(a % (2 << 20) == 0)
        #expect(b % (2 << 20) != 0)
        #expect(backend.calls == ["mmap 65536", "mmap 2162688", "mmap 65536"])
    }

    @Test("fork copies private memory: the child's writes stay in the child")
    func forkCopies() throws {
        let (report, _) = try run("""
            mmap P 16K
            write P 16K
            fork child
            on child
            write P 4K
            expect data P 16K
            on parent
            expect data P 16K
            """)
        #expect(failures(report) == [])
        #expect(report.count(.passed) == 2)
    }

    @Test("MAP_SHARED anonymous memory is shared between parent and child")
    func sharedMemory() throws {
        let (report, _) = try run("""
            mmap S 16K shared=yes
            fork child
            on child
            write S 8K
            on parent
            expect data S 16K
            madvise S 16K dontneed
            expect data S 16K
            """)
        #expect(failures(report) == [])
        #expect(report.count(.passed) == 2)
    }

    @Test("munmap drops the bytes; expect data on the hole reports it unmapped on both sides")
    func munmapDrops() throws {
        let (report, _) = try run("""
            mmap A 16K
            write A 16K
            munmap A+4K 4K
            expect data A 4K
            expect data A+8K 8K
            mmap B 4K at=A+4K
            expect data A 16K
            """)
        #expect(failures(report) == [])
    }

    @Test("mremap moves the data, and the region name follows the mapping")
    func mremapMoves() throws {
        let scenario = try ScenarioParser.parse("""
            mmap A 16K
            mmap B 64K
            write A 16K
            mremap A 16K 32K to=B+16K
            expect data A 32K
            expect data B+16K 32K
            """, file: "t")
        let backend = FakeBackend()
        let interpreter = ScenarioInterpreter(scenario: scenario, backend: backend)
        let report = interpreter.run()
        #expect(failures(report) == [])
        guard case .address(let a)? = interpreter.processes["parent"]?.regions["A"],
              case .address(let b)? = interpreter.processes["parent"]?.regions["B"] else { Issue.record("no addresses"); return }
        #expect(a == b + 16 * 1024)
    }

    @Test("MADV_DONTNEED zeroes private memory; a backend that keeps it fails expect data at its line")
    func dontneed() throws {
        let text = """
            mmap A 16K
            write A 16K
            madvise A+4K 4K dontneed
            expect data A 16K
            """
        let (good, _) = try run(text)
        #expect(failures(good) == [])
        let (bad, _) = try run(text) { $0.forgetDontneed = true }
        let failed = bad.results.filter { $0.status == .failed }
        #expect(failed.count == 1)
        #expect(failed.first?.location == SourceLocation(file: "t.scen", line: 4))
        #expect(failed.first?.expected.contains("A+4K") == true)
        #expect(failed.first?.observed.contains("of 16384 bytes differ") == true)
        #expect(!bad.passed)
        #expect(bad.text.contains("t.scen:4: FAIL expect data A 16K"))
    }

    @Test("dontfork ranges are not inherited by the child")
    func dontfork() throws {
        let (report, _) = try run("""
            mmap A 16K
            write A 16K
            madvise A 8K dontfork
            fork child
            on child
            expect data A+8K 8K
            read A 4K
            expect segv
            expect data A 4K
            """)
        #expect(failures(report) == [])
        #expect(report.count(.passed) == 3)
    }

    @Test("errno and segv outcomes: expected ones pass, unexpected ones fail at the call's line")
    func outcomes() throws {
        let (report, _) = try run("""
            mmap A 16K
            munmap A+1 4K
            expect result EINVAL
            mprotect A 4K r
            write A 4K
            expect segv
            munmap A+1 4K
            write A 4K
            mmap Z 0
            expect result 0
            """)
        let failed = report.results.filter { $0.status == .failed }
        #expect(report.count(.passed) == 2)
        #expect(failed.map(\.location.line) == [7, 8, 10])
        #expect(failed[0].observed.contains("EINVAL"))
        #expect(failed[1].observed.contains("segv"))
        #expect(failed[2].expected == "success" && failed[2].observed == "EINVAL")
    }

    @Test("a region whose mmap failed stops the run when used, and later expectations are skipped")
    func failedRegion() throws {
        let (report, backend) = try run("""
            mmap Z 0
            expect result EINVAL
            write Z 4K
            expect result 0
            """)
        #expect(report.error?.location?.line == 3)
        #expect(report.error?.message.contains("its mmap at line 1 failed") == true)
        #expect(report.results.last?.status == .skipped)
        #expect(!report.passed && backend.finished)
    }

    @Test("a command the backend cannot run skips every later expectation, with the reason")
    func unsupported() throws {
        let (report, _) = try run("""
            mmap A 16K
            write A 4K
            expect data A 16K
            khugepaged full_scans=1
            expect data A 16K
            expect smaps A Rss=4kB
            """) { $0.unsupportedKhugepaged = true }
        #expect(report.passed)
        #expect(report.count(.passed) == 1 && report.count(.skipped) == 2)
        #expect(report.results.last?.reason?.contains("line 4 (khugepaged full_scans=1) could not run on fake") == true)
    }

    @Test("vmstat and meminfo deltas count from the start, then from mark")
    func deltas() throws {
        let (report, _) = try run("""
            mmap A 16K
            write A 4K
            write A 4K
            expect vmstat fake_writes+=2 fake_writes>=2 fake_writes<=2 fake_writes=2
            expect meminfo FakeWrites+=8kB
            mark
            write A 4K
            expect vmstat fake_writes+=1 missing_counter=0
            """)
        let failed = report.results.filter { $0.status == .failed }
        #expect(report.count(.passed) == 6)
        #expect(failed.map(\.check) == ["missing_counter=0"])
        #expect(failed.first?.observed == "vmstat has no field missing_counter")
    }

    @Test("smaps of an address where no VMA starts is a failure, not a crash")
    func smapsMissing() throws {
        let (report, _) = try run("mmap A 16K\nexpect smaps A+4K Rss=0kB")
        #expect(report.results.first?.observed.hasPrefix("no VMA starts at A+4K") == true)
    }

    @Test("set passes tunables to the backend")
    func tunables() throws {
        let (_, backend) = try run("set enabled=always khugepaged/max_ptes_none=0")
        #expect(backend.tunables == ["enabled": "always", "khugepaged/max_ptes_none": "0"])
    }

    @Test("a command the model cannot do yet skips later expectations with the reason, and skips do not fail")
    func modelUnsupported() throws {
        // shmem_enabled: the model has no huge shmem pages.
        let scenario = try ScenarioParser.parse("mmap A 4K\nexpect data A 4K\nset shmem_enabled=always\nexpect data A 4K", file: "m.scen")
        let report = ScenarioRunner.run(scenario, on: "model", makeBackend: { () throws(ScenarioError) in
            try makeModelScenarioBackend(design: scenario.design, memoryBytes: scenario.memoryBytes)
        })
        #expect(report.passed)
        #expect(report.results.map(\.status) == [.passed, .skipped])
        #expect(report.results.last?.reason?.contains("'shmem_enabled'") == true)
    }

    @Test("the 2010 design reports per-size THP knobs as unsupported (mTHP is Linux 6.8+)")
    func mthpUnsupportedIn2010() throws {
        let scenario = try ScenarioParser.parse("design linux-2.6.38\nmmap A 4K\nexpect data A 4K\nset hugepages-64kB/enabled=always\nexpect data A 4K", file: "m.scen")
        let report = ScenarioRunner.run(scenario, on: "model", makeBackend: { () throws(ScenarioError) in
            try makeModelScenarioBackend(design: scenario.design, memoryBytes: scenario.memoryBytes)
        })
        #expect(report.results.map(\.status) == [.passed, .skipped])
        #expect(report.results.last?.reason?.contains("no multi-size THP") == true)
    }

    @Test("pin outside a mapping fails with EFAULT for expect result; unpin of a range never pinned stops the run at its line")
    func pinErrors() throws {
        func runOnModel(_ text: String) throws -> ScenarioReport {
            let scenario = try ScenarioParser.parse(text, file: "p.scen")
            return ScenarioRunner.run(scenario, on: "model", makeBackend: { () throws(ScenarioError) in
                try makeModelScenarioBackend(design: scenario.design, memoryBytes: scenario.memoryBytes)
            })
        }
        let efault = try runOnModel("mmap A 8K\nmunmap A 8K\npin A 4K\nexpect result EFAULT")
        #expect(efault.passed)
        let wrong = try runOnModel("mmap A 8K\npin A 8K\nunpin A 4K\nexpect data A 8K")
        #expect(!wrong.passed)
        let text = wrong.error.map { "\($0.location.map { "\($0)" } ?? ""): \($0.message)" } ?? "no error"
        #expect(text.contains("p.scen:3") && text.contains("no pin of exactly this range"), "\(text)")
        let pinned = try runOnModel("mmap A 8K\nwrite A 8K\npin A 8K\nunpin A 8K\nexpect data A 8K")
        #expect(pinned.passed)
    }
}
