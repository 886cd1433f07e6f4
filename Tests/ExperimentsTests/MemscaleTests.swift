import Foundation
import Testing
import VMCore
import Kernel
import Machine
@testable import Workloads
import Simulation
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

    /// memscale's pattern — each of `threads` threads writes a page of a 2 MiB buffer of its own, then
    /// asks its node with `get_mempolicy()`, in turn — on as many CPUs in simulated time, with the
    /// buffers 1 GiB apart so that each lies in a PMD table of its own, as the cover letter's 512 MB
    /// buffers mostly did (two to a table). The elapsed simulated time, and the run's time report.
    static func spreadBuffers(threads: Int, enabled: TransparentHugepageSettings.Enabled,
                              pmdLock: KernelDesign.PMDLockGranularity) throws -> SimulatedTimeReport {
        var setup = SystemBuilder()
        setup.design.pmdLock = pmdLock
        setup.enabled = enabled
        setup.cpus = threads
        setup.simulatedTime = true
        setup.memoryBytes = 256 << 20
        let executor = try setup.makeExecutor()
        for t in 1..<threads { executor.event(thread: 0, .spawn(thread: t)) }
        let base: UInt64 = 1 << 40, length: UInt64 = 2 << 20
        for t in 0..<threads {
            executor.event(thread: t, .mmap(address: base + UInt64(t) << 30, length: length, protection: .readWrite, shared: false))
        }
        for page in 0..<length >> 12 {
            for t in 0..<threads {
                let address = base + UInt64(t) << 30 + page << 12 + 16
                executor.access(thread: t, address: address, kind: .store, count: 1)
                executor.event(thread: t, .getMempolicy(address: address))
            }
        }
        let report = executor.finish()
        #expect(report.failedCalls.isEmpty)
        return report.time
    }

    @Test("16 CPUs, linux-2.6.38: THP on is slower than THP off with page_table_lock, faster with split PMD locks")
    func lockDecidesTHP() throws {
        let off = try Self.spreadBuffers(threads: 16, enabled: .never, pmdLock: .pageTableLock)
        let onShared = try Self.spreadBuffers(threads: 16, enabled: .always, pmdLock: .pageTableLock)
        let onSplit = try Self.spreadBuffers(threads: 16, enabled: .always, pmdLock: .splitPMDLock)
        #expect(onShared.elapsedNanoseconds > off.elapsedNanoseconds)
        #expect(onSplit.elapsedNanoseconds < off.elapsedNanoseconds)
        // What makes the difference: the lookups of pages behind huge PMDs queue on the mm's one
        // page_table_lock; with split PMD locks each buffer's lookups take a lock of their own.
        #expect((onShared.lockWaitNanoseconds["page_table_lock"] ?? 0) > onShared.elapsedNanoseconds)
        #expect((onSplit.lockWaitNanoseconds["pmd_ptl"] ?? 0) == 0)
        // THP off: each lookup takes its PTE table's split lock, which no other CPU takes.
        #expect((off.lockWaitNanoseconds["ptl"] ?? 0) == 0)
        // Every CPU ran, with a clock of its own.
        #expect(onShared.cpuNanoseconds.count == 16 && onShared.cpuNanoseconds.allSatisfy { $0 > 0 })
    }

    @Test("8 CPUs, buffers in one PMD table: THP on's lookups wait on the PMD lock, whichever it is")
    func smallBuffersShareThePMDLock() throws {
        let r = try Small.run(Self.grid(threads: [8]))
        for lock in ["page_table_lock", "split"] {
            let cell = try #require(r.results.first { $0.cell.enabled == "always" && $0.cell.tunables.first?.value == lock })
            let name = lock == "split" ? "pmd_ptl" : "page_table_lock"
            #expect((cell.time?.lockWaitNanoseconds[name] ?? 0) > 0)
        }
        // Small buffers lie in one PMD table, so its split lock is as shared as page_table_lock.
        #expect(try Self.elapsed(r, threads: 8, enabled: "always", lock: "split") == Self.elapsed(r, threads: 8, enabled: "always", lock: "page_table_lock"))
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
        // is one huge fault, each arena header a 4 KiB one. The 2 MiB range a buffer shares with the
        // one below it was written (the chunk header) before that one was mapped: 4 KiB faults.
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
        // Every fault is a huge page or a 4 KiB one, and all of them stay mapped.
        #expect(on.faults.huge == Int(on.memory.anonHugeBytes >> 21))
        #expect(on.faults.count - on.faults.huge == Int((on.memory.anonBytes - on.memory.anonHugeBytes) >> 12))
    }

    @Test("in simulated time no thread's set-up is mapped over by another's: every page written stays resident")
    func setUpKeepsEveryPage() throws {
        // Thread 0 maps every stack before its own arena, so the other threads' arenas would come
        // first in simulated time; the layout's ordering points keep them in its order.
        // (Fails without the points after the arenas: thread 0's transient arena mapping covers
        // thread 1's heap.)
        let threads = 16
        let r = try Small.run(Self.grid(threads: [threads], perThread: 1 << 20, enabled: ["never"], locks: ["split"]))
        let cell = try #require(r.results.first)
        #expect(cell.failedCalls.isEmpty && cell.signals == 0)
        #expect(cell.faults.count == threads * (256 + 3))
        #expect(cell.memory.anonBytes == UInt64(cell.faults.count) * 4_096)
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
