import Foundation
import Testing
import VMCore
import Kernel
import Machine
@testable import Workloads
@testable import Experiments

/// thp_memscale on a few simulated CPUs (docs/concurrency.md, "memscale"): the directions the split
/// PMD lock's cover letter reports that the model reproduces, and the figures it must get exactly.
@Suite("memscale in simulated time")
struct MemscaleTests {
    static func grid(threads: [Int], perThread: UInt64 = 4 << 20, enabled: [String] = ["never", "always"],
                     locks: [String] = ["page_table_lock", "split"]) -> ExperimentGrid {
        var g = ExperimentGrid(workloads: threads.map { .synthetic("memscale", size: perThread, accesses: 0, threads: $0) },
                               designs: ["linux-2.6.38"], enabled: enabled,
                               tunables: [TunableAxis(name: "pmd_lock", values: locks)], memoryBytes: 256 << 20)
        g.machines = ["skylake-sp"]
        return g
    }

    static func elapsed(_ r: ExperimentReport, threads: Int, enabled: String, lock: String) throws -> UInt64 {
        let cell = try #require(r.results.first {
            $0.cell.workload.threads == threads && $0.cell.enabled == enabled && $0.cell.tunables.first?.value == lock
        })
        return try #require(cell.elapsedSimulatedNanoseconds)
    }

    @Test("8 CPUs: THP on finishes sooner than THP off with either PMD lock")
    func hugePagesWin() throws {
        let r = try Small.run(Self.grid(threads: [8]))
        for lock in ["page_table_lock", "split"] {
            #expect(try Self.elapsed(r, threads: 8, enabled: "always", lock: lock) < Self.elapsed(r, threads: 8, enabled: "never", lock: lock))
        }
        // Every cell ran on 8 CPUs, each with a clock of its own.
        #expect(r.results.allSatisfy { $0.time?.cpuNanoseconds.count == 8 && $0.time!.cpuNanoseconds.allSatisfy { $0 > 0 } })
    }

    @Test("faults: each buffer's pages and three set-up pages a thread with THP off; with THP on one per 2 MiB range inside a buffer plus the rest")
    func faultCounts() throws {
        let threads = 4, perThread: UInt64 = 3 << 20 | 5 << 12   // 3 MiB + 5 pages: no buffer is 2 MiB-aligned
        let r = try Small.run(Self.grid(threads: [threads], perThread: perThread, locks: ["split"]))
        let off = try #require(r.results.first { $0.cell.enabled == "never" })
        let on = try #require(r.results.first { $0.cell.enabled == "always" })
        let pages = threads * Int(perThread >> 12)
        // Each thread's stack (its top two pages) and arena (its header) fault too (MemscaleLayout).
        #expect(off.faults.count == pages + 3 * threads)
        // With THP the buffers, one below the other, fault a huge page per 2 MiB range inside each
        // and 4 KiB pages elsewhere; each stack's top 2 MiB (8 MiB stacks under a 2 MiB-aligned base)
        // is one huge fault, each arena header a 4 KiB one.
        let layout = MemscaleWorkload(p: SyntheticParameters(size: perThread * UInt64(threads), accesses: 0, threads: threads)).layout
        var huge = 0, coveredPages = 0   // touched pages inside those ranges (a mapping's last page is not touched)
        for (start, length) in layout.buffers {
            let first = (start + (2 << 20) - 1) & ~((2 << 20) - 1), last = (start + length) & ~((2 << 20) - 1)
            guard last > first else { continue }
            huge += Int((last - first) >> 21)
            coveredPages += Int((min(last, start + perThread) - first) >> 12)
        }
        #expect(huge > 0 && pages - coveredPages > 0)
        #expect(on.faults.huge == huge + threads)
        #expect(on.faults.count == huge + (pages - coveredPages) + 2 * threads)
    }

    @Test("4 KiB faults on many CPUs contend on the mmap lock's count line: the same work per thread takes longer")
    func countLineContention() throws {
        let r = try Small.run(Self.grid(threads: [1, 8], enabled: ["never"], locks: ["split"]))
        let one = try Self.elapsed(r, threads: 1, enabled: "never", lock: "split")
        let eight = try Self.elapsed(r, threads: 8, enabled: "never", lock: "split")
        #expect(eight > one)
        let time = try #require(r.results.first { $0.cell.workload.threads == 8 }?.time)
        #expect((time.lockWaitNanoseconds["mmap_lock"] ?? 0) > 0 && time.transferNanoseconds > 0)
    }

    @Test("huge faults on many CPUs share the socket's memory bandwidth")
    func bandwidth() throws {
        let r = try Small.run(Self.grid(threads: [1, 8], enabled: ["always"], locks: ["split"]))
        let one = try #require(r.results.first { $0.cell.workload.threads == 1 }?.time)
        let eight = try #require(r.results.first { $0.cell.workload.threads == 8 }?.time)
        #expect(one.bandwidthStallNanoseconds == 0)
        #expect(eight.bandwidthStallNanoseconds > 0)
    }

    @Test("the pmd_lock tunable picks the lock: page_table_lock or the split PMD lock, named so in the waits")
    func lockChoice() throws {
        let r = try Small.run(Self.grid(threads: [4], enabled: ["never"]))
        for cell in r.results {
            let names = Set(cell.time!.lockAcquisitions.keys)
            if cell.cell.tunables == [.init(name: "pmd_lock", value: "split")] {
                #expect(names.contains("pmd_ptl") && !names.contains("page_table_lock"))
            } else {
                #expect(names.contains("page_table_lock") && !names.contains("pmd_ptl"))
            }
        }
        var bad = Self.grid(threads: [4])
        bad.tunables = [TunableAxis(name: "pmd_lock", values: ["mm"])]
        #expect(bad.problems == ["--set pmd_lock: 'mm' is not page_table_lock or split"])
    }

    @Test("simulated time does not depend on host threads")
    func hostThreads() throws {
        let g = Self.grid(threads: [2, 4], enabled: ["always"])
        let a = try Small.run(g, jobs: 1), b = try Small.run(g, jobs: 3)
        #expect(a.json == b.json)
    }

    @Test("--threads up to 256 is a valid workload; 257 is refused with the option's name")
    func threadLimit() {
        #expect(WorkloadSpec.synthetic("memscale", size: 1 << 20, accesses: 0, threads: 256).problem == nil)
        #expect(WorkloadSpec.synthetic("memscale", size: 1 << 20, accesses: 0, threads: 257).problem == "--threads must be 1 to 256, not 257")
    }
}
