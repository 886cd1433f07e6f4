import VMCore
import PhysicalMemory
import Kernel
import Machine
import Workloads

/// Multi-size THP for anonymous memory (Linux 6.8; Ryan Roberts' series, v9 cover letter of
/// 2023-12-07, commit 19eaf44954df "mm: thp: support allocation of anonymous multi-size THP"): with
/// `hugepages-64kB/enabled` set, an anonymous write fault maps a 64 KiB folio, so a kernel build's
/// many short-lived compiler processes take about 16× fewer anonymous faults (Linux 6.18:
/// `do_anonymous_page()` → `alloc_anon_folio()`; the model's `anonymousLargeFault`, `MTHP.swift`;
/// docs/history.md).
public enum MultiSizeTHPLandmark {
    /// What a run of short-lived processes cost in anonymous faults.
    public struct Outcome: Sendable, Hashable {
        public var processes: Int
        /// Bytes of heap the processes wrote, all together.
        public var touchedBytes: UInt64
        /// Page faults taken (all anonymous write faults here).
        public var faults: Int
        /// The faults' cycles, as the machine's fault cost model prices them (`TimingParameters.faultCycles`).
        public var faultCycles: Double
        /// 64 KiB folios the faults mapped (`hugepages-64kB/stats/anon_fault_alloc`).
        public var folios64K: Int
    }

    /// `processes` processes run one after another, as `make -j1` would start compiler jobs: each
    /// maps a private anonymous heap of 1 to 8 MiB (a whole number of pages, drawn from `seed`), writes
    /// every page of it once from the bottom up, and exits. Design linux-6.18 with its defaults
    /// (`enabled=madvise`, so the unadvised heaps get no 2 MiB THP) and `hugepages-64kB/enabled`
    /// `always` or `never`; skylake-sp fault costs.
    public static func run(mthp64K: Bool, processes: Int, seed: UInt64 = 1) throws(HistoryError) -> Outcome {
        var system = HistoryRun.system(.linux6_18, memory: 256 << 20, tunables: [("hugepages-64kB/enabled", mthp64K ? "always" : "never")])
        system.machine = .skylakeSP
        let machine: Machine
        do throws(SysfsError) { machine = try system.makeMachine() } catch { throw HistoryError(error.message) }
        let kernel = machine.kernel
        let cpu = machine.cpus[0]
        var rng = SplitMix64(seed: seed)
        var touched: UInt64 = 0
        for _ in 0..<processes {
            let mm = try HistoryRun.process(kernel)
            cpu.switchTo(mm)
            let pages = 256 + rng.next() % (7 * 256 + 1)
            let length = pages * PageGeometry.pageSize
            let heap = try HistoryRun.mmap(mm, length)
            var offset: UInt64 = 0
            while offset < length {
                if case .failure(let fault) = cpu.access(heap + offset, .write) { throw HistoryError("heap write failed: \(fault.outcome)") }
                offset += PageGeometry.pageSize
            }
            touched += length
            cpu.switchTo(nil)
            mm.exit()
        }
        let folios = kernel.mthpStatValue("hugepages-64kB/stats/anon_fault_alloc") ?? 0
        return Outcome(processes: processes, touchedBytes: touched, faults: cpu.counters.faults,
                       faultCycles: cpu.counters.faultCycles, folios64K: folios)
    }

    static let landmark = HistoryLandmark(name: "mthp", title: "Multi-size THP for anonymous memory (6.8)") { () throws(HistoryError) in
        let processes = 250
        let base = try run(mthp64K: false, processes: processes)
        let mthp = try run(mthp64K: true, processes: processes)
        let faultRatio = Double(base.faults) / Double(max(1, mthp.faults))
        let cycleChange = (mthp.faultCycles - base.faultCycles) / base.faultCycles * 100
        func describe(_ o: Outcome) -> String {
            "\(Format.count(o.faults)) faults, \(Format.fixed(o.faultCycles / 1e9, 2)) G fault cycles (\(Format.count(o.folios64K)) 64 KiB folios)"
        }
        let figures = [
            HistoryFigure("anonymous faults, 64 KiB mTHP vs 4 KiB", reported: "≈ 16× fewer", modelled: "\(Format.fixed(faultRatio, 1))× fewer",
                          unit: "× fewer faults", reportedValue: 16, modelledValue: faultRatio),
            HistoryFigure("kernel time (model: fault cycles), 64 KiB vs 4 KiB", reported: "−38.6 % (kernel build, -j8, Ampere Altra)",
                          modelled: "\(Format.fixed(cycleChange, 1)) % fault cycles", unit: "% change", reportedValue: -38.6, modelledValue: cycleChange),
            HistoryFigure("real time, 64 KiB vs 4 KiB", reported: "−4.8 %", modelled: "not modelled (user time, I/O and the rest of the build are not run)"),
            HistoryFigure("hugepages-64kB/enabled=never", reported: "baseline", modelled: describe(base)),
            HistoryFigure("hugepages-64kB/enabled=always", reported: "fewer faults, less kernel time", modelled: describe(mthp)),
        ]
        let agrees = faultRatio > 10 && mthp.faultCycles < base.faultCycles && mthp.folios64K > 0 && base.folios64K == 0
        return HistoryResult(
            name: "mthp", title: "Multi-size THP for anonymous memory (6.8)",
            source: "\"Multi-size THP for anonymous memory\", Ryan Roberts (Arm), v9 cover letter of 2023-12-07 (lore.kernel.org/linux-mm/20231207161211.2374093-1-ryan.roberts@arm.com), merged in Linux 6.8 (commit 19eaf44954df \"mm: thp: support allocation of anonymous multi-size THP\"): kernel compilation with 64 KiB mTHP, kernel time −38.6 % (-j8), real time −4.8 % on Ampere Altra",
            setup: "linux-6.18 defaults (enabled=madvise), hugepages-64kB/enabled never vs always, skylake-sp fault costs; \(Format.count(processes)) processes one after another, each mapping a 1–8 MiB heap, writing every page once and exiting (\(ByteCount.human(base.touchedBytes)) written in all)",
            figures: figures,
            direction: "64 KiB mTHP cuts anonymous faults about 16× and the kernel's share of a build's time",
            agrees: agrees,
            notes: ["The model counts anonymous fault cycles only: a 64 KiB fault costs fault-4k plus zeroing 15 more pages, so the saving is larger than the cover letter's kernel time, which also holds exec, page-cache and file faults, system calls, and tearing the page tables and folios down at exit (none costed here). Real time is user time plus kernel time; the model runs no user code. Ampere Altra is arm64 (contiguous-PTE TLB entries); the model prices faults with skylake-sp's costs and gives 64 KiB folios no TLB benefit."])
    }
}
