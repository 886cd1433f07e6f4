import Foundation
import Testing
import Machine
import Workloads
@testable import Experiments

@Suite("Experiment runs")
struct RunTests {
    @Test("two runs of one grid give equal reports, whatever the number of host threads")
    func determinism() throws {
        let grid = Small.grid(["gups", "forkserver", "idle"], accesses: 10_000)
        let a = try Small.run(grid, jobs: 1), b = try Small.run(grid, jobs: 2)
        #expect(a == b)
        #expect(a.json == b.json)
    }

    @Test("cells run one at a time get the cache thread asked for; cells run at once get none; the reports are the same")
    func cacheThread() throws {
        var runner = ExperimentRunner(grid: Small.grid(["gups", "chase"], accesses: 20_000), machines: Small.machines)
        runner.cacheThread = .on
        #expect(runner.cellCacheThread(hostThreads: 1) == .on)
        #expect(runner.cellCacheThread(hostThreads: 2) == .off)
        runner.cacheThread = .auto
        #expect(runner.cellCacheThread(hostThreads: 1) == .auto && runner.cellCacheThread(hostThreads: 3) == .off)
        runner.cacheThread = .on
        let threaded = try runner.run()
        runner.cacheThread = .off
        let inline = try runner.run()
        #expect(threaded.json == inline.json)
    }

    @Test("a streamed run (record --replay) gives a lone cell the cache thread asked for, and several cells none")
    func streamedCacheThread() throws {
        for (enabled, expected) in [(["never"], CacheThreadMode.on), (["never", "always"], .off)] {
            var runner = ExperimentRunner(grid: Small.grid(["gups"], accesses: 1_000, enabled: enabled), machines: Small.machines)
            runner.cacheThread = .on
            let cells = runner.grid.cells
            let broadcast = CaptureBroadcast(readers: cells.count)
            let run = try StreamedRun(runner: runner, cells: cells, inputs: cells.indices.map { broadcast.input($0) },
                                      format: .traceFile, broadcast: broadcast)
            #expect(run.runner.cellCacheThread == expected)
            // An empty stream is no trace: each cell fails, and the run ends.
            broadcast.end()
            #expect(throws: ExperimentError.self) { try run.wait() }
        }
    }

    @Test("merging the shards of a grid gives the unsharded report", arguments: [2, 4])
    func shardMerge(count: Int) throws {
        let grid = Small.grid(["gups", "heap"], accesses: 10_000, tunables: [TunableAxis(name: "khugepaged/max_ptes_none", values: ["0", "511"])])
        let whole = try Small.run(grid)
        var shards: [(name: String, report: ExperimentReport)] = []
        for i in (0..<count).reversed() {
            let r = try Small.run(grid, shard: .init(index: i, count: count))
            #expect(r.shard == .init(index: i, count: count))
            shards.append(("shard\(i).json", try ExperimentReport.decode(Data(r.json.utf8))))
        }
        let merged = try ExperimentReport.merge(shards)
        #expect(merged == whole)
        #expect(merged.json == whole.json)
        #expect(merged.csv == whole.csv && merged.html == whole.html)

        // A missing or repeated shard is refused, naming it.
        do { _ = try ExperimentReport.merge(Array(shards.dropFirst())); Issue.record("merged without a shard") } catch {
            #expect(error.description.contains("missing"))
        }
        do { _ = try ExperimentReport.merge(shards + [shards[0]]); Issue.record("merged a shard twice") } catch {
            #expect(error.description.contains("again"))
        }
        var other = shards[0]
        other.report.grid.enabled = ["always"]
        do { _ = try ExperimentReport.merge([shards[1], other]); Issue.record("merged shards of two grids") } catch {
            #expect(error.description.contains("different grid"))
        }
        // Shards that ran different cache models are refused too; the report says which it ran.
        #expect(whole.cacheModel == "full" && whole.text.contains("cache model full"))
        var sampled = shards[0]
        sampled.report.cacheModel = "sampled"
        do { _ = try ExperimentReport.merge([shards[1], sampled]); Issue.record("merged shards of two cache models") } catch {
            #expect(error.description.contains("cache model sampled"))
        }
    }

    @Test("the trade-off shows: huge pages cut GUPS's walks and fault count, and cost longer faults")
    func tradeOff() throws {
        let report = try Small.run(Small.grid(["gups"], size: 32 << 20, accesses: 50_000, enabled: ["never", "always"]))
        let never = report.results[0], always = report.results[1]
        #expect(never.cell.enabled == "never" && always.cell.enabled == "always")
        #expect(always.tlb.l2MissesPerKilo < never.tlb.l2MissesPerKilo / 10)
        #expect(always.faults.count == 16 && always.faults.huge == 16 && never.faults.count == 8192)
        #expect(always.faults.p50Cycles > 20 * never.faults.p50Cycles)
        #expect(always.memory.thpCoverage == 1 && never.memory.thpCoverage == 0)
        #expect(always.speedupVsNever! > 1)
        #expect(never.memory.touchedBytes == 32 << 20 && never.memory.bloatBytes == 0)
        // Each fault's latency went into the histogram, and into the fault cycles.
        #expect(never.faults.latency.count == UInt64(never.faults.count))
        #expect(abs(Double(never.faults.count) * MachineDescription.skylakeSP.timing.baseFaultCycles - never.faultCycles) < 1)
    }

    /// A trace: map 8 MiB, write one page in eight (small pages: the VMA is not yet MADV_HUGEPAGE),
    /// then MADV_HUGEPAGE (registering the mm with khugepaged), sleep 30 s, read.
    static func sparseThenAdviseTrace() throws -> String {
        let path = temporaryFile("sparse-advise.trace")
        let file = try TraceFile(path: path, mode: .write)
        var w = try TraceWriter(output: file)
        let base = SyntheticLayout.base, size: UInt64 = 8 << 20
        w.event(thread: 0, .mmap(address: base, length: size, protection: .readWrite, shared: false))
        for page in stride(from: 0, to: size, by: 8 * 4096) { w.access(thread: 0, address: base + page, kind: .store, count: 1) }
        w.event(thread: 0, .madvise(address: base, length: size, advice: .hugepage))
        w.event(thread: 0, .idle(milliseconds: 30_000))
        for page in stride(from: 0, to: size, by: 4096) { w.access(thread: 0, address: base + page, kind: .load, count: 1) }
        _ = try w.finish()
        try file.close()
        return path
    }

    @Test("khugepaged runs on the run's simulated time and max_ptes_none decides: collapse and bloat, or neither")
    func khugepagedOnSimulatedTime() throws {
        let grid = ExperimentGrid(workloads: [.trace(try Self.sparseThenAdviseTrace())], enabled: ["madvise"],
                                  tunables: [TunableAxis(name: "khugepaged/max_ptes_none", values: ["0", "511"])],
                                  memoryBytes: 64 << 20)
        let report = try Small.run(grid)
        let strict = report.results[0], loose = report.results[1]
        #expect(strict.cell.tunables[0].value == "0" && loose.cell.tunables[0].value == "511")
        #expect(loose.simulatedNanoseconds >= 30_000_000_000)
        #expect(loose.collapses == 4, "max_ptes_none=511 collapses the four sparse ranges")
        #expect(strict.collapses == 0, "max_ptes_none=0 refuses them")
        #expect(loose.memory.anonHugeBytes == 8 << 20 && strict.memory.anonHugeBytes == 0)
        #expect(loose.memory.bloatBytes == Int64(7 << 20) && strict.memory.bloatBytes == 0)
        #expect(loose.settings["khugepaged/max_ptes_none"] == "511" && strict.settings["enabled"] == "always [madvise] never")
    }

    @Test("a program killed by the kernel shows in every form: status, signal, accesses not made, no speedup, bloat not negative")
    func killedProgram() throws {
        // 64 MiB of seq in 16 MiB of memory: mmap fails with ENOMEM, the first store takes SIGSEGV.
        let grid = ExperimentGrid(workloads: [.synthetic("seq", size: 64 << 20, accesses: 10_000)], enabled: ["never", "always"],
                                  memoryBytes: 16 << 20)
        let report = try Small.run(grid)
        for r in report.results {
            #expect(!r.completed && r.status == "killed")
            let kill = try #require(r.kills?.first)
            #expect(r.kills?.count == 1 && kill.signal == "SIGSEGV" && kill.reason == "SEGV_MAPERR" && kill.process == 0)
            #expect(r.failedCalls.keys.contains { $0.hasPrefix("ENOMEM") })
            #expect((r.droppedAccesses ?? 0) > 10_000)
            #expect(r.speedupVsNever == nil && r.steadySpeedupVsNever == nil)
            #expect(r.memory.touchedBytes == 0 && r.memory.bloatBytes == 0, "the faulting store wrote nothing")
        }
        let text = report.text
        #expect(text.contains("WARNING: 2 of 2 cells did not complete"))
        #expect(text.contains("killed [1]") && text.contains("[1] seq 64M 10K never, seq 64M 10K always: process 0 killed by SIGSEGV (SEGV_MAPERR)"), "\(text)")
        #expect(text.contains("ENOMEM"), "\(text)")
        let (_, rows) = ReportFormatTests.tableLines(text)
        #expect(rows.dropFirst().allSatisfy { $0.contains("killed [1]") && $0.components(separatedBy: "killed").count - 1 == 3 },
                "status and both speedups say killed: \(rows)")
        let csv = report.csv.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        let status = try #require(ExperimentReport.csvColumns.firstIndex(of: "status"))
        let killedBy = try #require(ExperimentReport.csvColumns.firstIndex(of: "killed_by"))
        let speedup = try #require(ExperimentReport.csvColumns.firstIndex(of: "speedup_vs_never"))
        #expect(csv[1][status] == "killed" && csv[1][killedBy] == "SIGSEGV (SEGV_MAPERR)" && csv[1][speedup] == "")
        let html = report.html
        #expect(html.contains("class=\"warning\"") && html.contains("<tr class=\"killed\">") && html.contains("killed [1]"))
        let decoded = try ExperimentReport.decode(Data(report.json.utf8))
        #expect(decoded == report)
    }

    @Test("a dense writer under always has no bloat, even when a memory sample falls inside a huge page it is filling")
    func noBloatWhenDense() throws {
        // 65,536 pages: the first tick (and memory sample) comes after the huge fault of the page it lands in.
        let grid = ExperimentGrid(workloads: [.synthetic("seq", size: 256 << 20, accesses: 20_000)], enabled: ["always"], memoryBytes: 1 << 30)
        let r = try Small.run(grid).results[0]
        #expect(r.memory.rssBytes == 256 << 20 && r.memory.touchedBytes == 256 << 20 && r.memory.bloatBytes == 0)
    }

    @Test("a cell killed while its never cell completed gets no speedup, and the never cell keeps 1")
    func killedAgainstCompleted() throws {
        var report = try Small.run(Small.grid(["gups"], accesses: 1_000, enabled: ["never", "always"]))
        report.results[1].signals = 1
        report.results[1].kills = [.init(signal: "SIGKILL", reason: "OOM", address: 0x1000, process: 0, thread: 0)]
        report.computeSpeedups()
        #expect(report.results[0].speedupVsNever == 1 && report.results[1].speedupVsNever == nil)
        #expect(report.text.contains("calls failed") == false && report.text.contains("killed by SIGKILL (OOM)"))
        // The never cell killed: no speedup for the cells measured against it either.
        report.results.swapAt(0, 1)
        report.results[0].cell.enabled = "never"; report.results[1].cell.enabled = "always"
        report.computeSpeedups()
        #expect(report.results[1].completed && report.results[1].speedupVsNever == nil)
        #expect(ExperimentReport.textValues(report.results[1])[5] == "—")
    }

    @Test("failed calls without a kill are marked and explained, and the speedups stay")
    func failedCallsOnly() throws {
        var report = try Small.run(Small.grid(["gups"], accesses: 1_000, enabled: ["never", "always"]))
        report.results[1].failedCalls = ["EINVAL (22)": 2]
        report.computeSpeedups()
        let r = report.results[1]
        #expect(r.completed && r.status == "calls failed" && r.speedupVsNever != nil)
        let text = report.text
        #expect(text.contains("calls failed [1]") && text.contains("[1] gups 8M 1K always: failed system calls EINVAL (22) ×2"), "\(text)")
        #expect(!text.contains("WARNING"))
        let fields = report.csv.split(separator: "\n")[2].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        #expect(fields[ExperimentReport.csvColumns.firstIndex(of: "status")!] == "calls failed")
        #expect(fields[ExperimentReport.csvColumns.firstIndex(of: "failed_calls")!] == "EINVAL (22)=2")
        #expect(report.html.contains("calls failed [1]") && !report.html.contains("class=\"warning\""))
    }

    @Test("a trace that cannot be read fails the cell with its path")
    func badTrace() {
        let grid = ExperimentGrid(workloads: [.trace("/nonexistent/x.trace")], enabled: ["never"])
        do { _ = try Small.run(grid); Issue.record("ran a missing trace") } catch {
            #expect(error.description.contains("/nonexistent/x.trace"))
        }
    }
}
