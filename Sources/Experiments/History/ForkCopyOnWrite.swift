import VMCore
import PhysicalMemory
import Kernel
import Machine
import Workloads
import Simulation

/// Fork and copy-on-write under THP (Redis BGSAVE): in the 2010 design a write to a huge PMD shared
/// with a forked child copies the whole 2 MiB (Linux 2.6.38: `do_huge_pmd_wp_page()`, falling back to
/// 512 small copies in `do_huge_pmd_wp_page_fallback()`); since Linux 5.8 (commit 3917c80280c9, "thp:
/// change CoW semantics for anon-THP") the PMD is split and only the 4 KiB written is copied
/// (`do_huge_pmd_wp_page()` → `__split_huge_pmd()`, `VM_FAULT_FALLBACK`) (docs/history.md).
public enum ForkCopyOnWriteLandmark {
    /// The kernels compared.
    public enum Variant: String, Sendable, CaseIterable {
        case linux2010 = "linux-2.6.38, enabled=always"
        case linux6_18 = "linux-6.18, enabled=always"
        case never = "linux-6.18, enabled=never"

        var design: KernelDesign { self == .linux2010 ? .linux2_6_38 : .linux6_18 }
        var enabled: String { self == .never ? "never" : "always" }
    }

    /// What the parent's writes cost while the snapshot child lived.
    public struct Outcome: Sendable, Hashable {
        /// Bytes copied on write: the growth of `AnonPages` between the fork and the child's exit.
        public var copiedBytes: UInt64
        /// The parent's page faults while the child lived (all write faults on shared pages).
        public var writeFaults: Int
        /// Their latency in cycles (the fault cost model), p50 and p99.
        public var p50Cycles: UInt64
        public var p99Cycles: UInt64
        public var faultCycles: Double
        /// `AnonHugePages` just before the fork: how much of the data set THPs backed.
        public var hugeBytesAtFork: UInt64
        public var frequencyGHz: Double

        public func microseconds(_ cycles: UInt64) -> Double { Double(cycles) / frequencyGHz / 1e3 }
    }

    /// The `kvfork` workload (4 KiB values fill `size`; fork; the child reads every value once and
    /// exits while the parent SETs Zipf-chosen values) on `variant`, one thread each, skylake-sp costs.
    /// The figures are the parent's, between the fork and the child's exit.
    public static func run(_ variant: Variant, size: UInt64, seed: UInt64 = 1) throws(HistoryError) -> Outcome {
        var system = HistoryRun.system(variant.design, memory: (2 * size + (64 << 20)).roundedUp(to: 64 << 20),
                                       tunables: [("enabled", variant.enabled)])
        system.machine = .skylakeSP
        system.cpus = 2
        let executor: MachineExecutor
        do throws(Errno) { executor = try system.makeExecutor() } catch { throw HistoryError("cannot start the server process: \(error)") }
        let values = Int(size / PageGeometry.pageSize)
        // Twice the values: the child's walk over them and the parent's writes alternate in quanta.
        let parameters = SyntheticParameters(size: size, accesses: 2 * values, threads: 1, seed: seed)
        var probe = SnapshotProbe(executor: executor, child: parameters.threads)
        SyntheticWorkload.kvfork.generate(parameters, into: &probe)
        let report = executor.finish()
        if !report.signals.isEmpty { throw HistoryError("a process was killed: \(report.signals[0].fault)") }
        guard let outcome = probe.outcome else { throw HistoryError("the snapshot child never exited") }
        return outcome
    }

    /// Forwards the workload to the executor and takes the parent's figures at the fork and at the
    /// child's exit. The executor runs a thread's queued accesses before another thread's accesses and
    /// before any event, so at the child's exit every write the parent made is done.
    struct SnapshotProbe: WorkloadSink {
        let executor: MachineExecutor
        let child: Int
        var anonAtFork: UInt64 = 0
        var hugeAtFork: UInt64 = 0
        var faultsAtFork = 0
        var cyclesAtFork = 0.0
        var outcome: Outcome?

        init(executor: MachineExecutor, child: Int) { self.executor = executor; self.child = child }

        mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) {
            executor.access(thread: thread, address: address, kind: kind, count: count)
        }

        mutating func event(thread: Int, _ event: WorkloadEvent) {
            let machine = executor.machine
            let parent = machine.cpus[0]
            if case .exit = event, thread == child, outcome == nil {
                let anon = HistoryRun.meminfo(machine.kernel, "AnonPages")
                let latency = parent.faultLatency
                outcome = Outcome(copiedBytes: anon > anonAtFork ? anon - anonAtFork : 0,
                                  writeFaults: parent.counters.faults - faultsAtFork,
                                  p50Cycles: latency.percentile(50), p99Cycles: latency.percentile(99),
                                  faultCycles: parent.counters.faultCycles - cyclesAtFork, hugeBytesAtFork: hugeAtFork,
                                  frequencyGHz: machine.machineDescription.frequencyGHz)
            }
            executor.event(thread: thread, event)
            if case .fork = event {
                anonAtFork = HistoryRun.meminfo(machine.kernel, "AnonPages")
                hugeAtFork = HistoryRun.meminfo(machine.kernel, "AnonHugePages")
                faultsAtFork = parent.counters.faults
                cyclesAtFork = parent.counters.faultCycles
                parent.faultLatency = FaultLatencyHistogram()
            }
        }
    }

    static let landmark = HistoryLandmark(name: "fork-cow", title: "Fork and copy-on-write under THP (Redis BGSAVE)") { () throws(HistoryError) in
        let size: UInt64 = 256 << 20
        let old = try run(.linux2010, size: size)
        let today = try run(.linux6_18, size: size)
        let never = try run(.never, size: size)
        func describe(_ o: Outcome) -> String {
            "\(ByteCount.human(o.copiedBytes)) copied in \(Format.count(o.writeFaults)) write faults; p50 \(Format.fixed(o.microseconds(o.p50Cycles), 2)) µs, p99 \(Format.fixed(o.microseconds(o.p99Cycles), 2)) µs"
        }
        let copyUnit = "MiB copied while the child lived"
        let latencyUnit = "µs p99 write-fault latency"
        let figures = [
            HistoryFigure(Variant.linux2010.rawValue, reported: "each first write to a shared 2 MiB page copies 2 MiB: latency spikes, memory grows",
                          modelled: describe(old), unit: copyUnit, modelledValue: HistoryRun.mib(old.copiedBytes)),
            HistoryFigure(Variant.linux6_18.rawValue, reported: "since 5.8 the PMD is split and 4 KiB copied",
                          modelled: describe(today), unit: copyUnit, modelledValue: HistoryRun.mib(today.copiedBytes)),
            HistoryFigure(Variant.never.rawValue, reported: "4 KiB copies (what Redis recommends)",
                          modelled: describe(never), unit: copyUnit, modelledValue: HistoryRun.mib(never.copiedBytes)),
            HistoryFigure("p99, " + Variant.linux2010.rawValue, reported: "a copy of 2 MiB per write fault", modelled: "\(Format.fixed(old.microseconds(old.p99Cycles), 2)) µs",
                          unit: latencyUnit, modelledValue: old.microseconds(old.p99Cycles)),
            HistoryFigure("p99, " + Variant.linux6_18.rawValue, reported: "a copy of 4 KiB per write fault", modelled: "\(Format.fixed(today.microseconds(today.p99Cycles), 2)) µs",
                          unit: latencyUnit, modelledValue: today.microseconds(today.p99Cycles)),
            HistoryFigure("p99, " + Variant.never.rawValue, reported: "a copy of 4 KiB per write fault", modelled: "\(Format.fixed(never.microseconds(never.p99Cycles), 2)) µs",
                          unit: latencyUnit, modelledValue: never.microseconds(never.p99Cycles)),
        ]
        let agrees = old.hugeBytesAtFork > 0 && today.hugeBytesAtFork > 0 && never.hugeBytesAtFork == 0
            && old.copiedBytes > 2 * today.copiedBytes && old.p50Cycles > 10 * today.p50Cycles
            && today.copiedBytes == never.copiedBytes && today.p99Cycles < 2 * never.p99Cycles
        return HistoryResult(
            name: "fork-cow", title: "Fork and copy-on-write under THP (Redis BGSAVE)",
            source: "Redis's documentation, \"Diagnosing latency issues\" → \"Latency induced by transparent huge pages\" (redis.io/docs/latest/operate/oss_and_stack/management/optimization/latency/): after fork a write to a huge page copies 2 MiB, so Redis asks for enabled=never; commit 3917c80280c9 \"thp: change CoW semantics for anon-THP\" (Kirill A. Shutemov, Linux 5.8): a write fault on a shared anonymous huge PMD splits it and copies 4 KiB (\"the primary reason THP is unusable for some workloads, like Redis\")",
            setup: "the kvfork workload: \(ByteCount.human(size)) of 4 KiB values written, fork, the child reads every value once and exits while the parent SETs Zipf-chosen values (s = 0.99, one 8-byte store each); skylake-sp fault costs; figures are the parent's between the fork and the child's exit",
            figures: figures,
            direction: "2 MiB copies in the 2010 design (more memory copied, write faults two orders of magnitude slower); 6.18 with THPs copies what enabled=never copies, at 4 KiB fault latency",
            agrees: agrees,
            notes: ["The sources give no single figure: the direction is the comparison. The fork itself is not costed (the 2010 design copies one PMD entry per 2 MiB, 6.18 too while the PMD is whole; 4 KiB pages need 512 PTEs), nor is the split of the PMD in 6.18, the child's disk writes, or Redis's event loop: the latency is that of the fault alone, from the fault cost model (fault-2m + 512 × (copy-4k − zero) for a 2 MiB copy, fault-4k + copy-4k − zero for 4 KiB)."])
    }
}
