import VMCore
import PhysicalMemory
import Kernel

/// Thread stacks under `enabled=always`: THPs back them whole unless `MAP_STACK` makes them
/// `VM_NOHUGEPAGE` (Linux 6.7+: "mm: mmap: map MAP_STACK to VM_NOHUGEPAGE", commit c4608d1bf7c6;
/// JDK-8303215; the stress-ng pthread regression that 6.7's alignment caused) (docs/history.md).
public enum ThreadStacksLandmark {
    /// The kernels compared.
    public enum Variant: String, Sendable, CaseIterable {
        /// The 2010 design: no alignment, MAP_STACK ignored.
        case linux2010 = "linux-2.6.38 (2010)"
        /// Linux 6.18: MAP_STACK ⇒ VM_NOHUGEPAGE.
        case linux6_18 = "linux-6.18"
        /// Linux 6.18 without the MAP_STACK rule (6.7's alignment, before c4608d1bf7c6).
        case withoutRule = "linux-6.18 without MAP_STACK ⇒ VM_NOHUGEPAGE"

        public var design: KernelDesign {
            switch self {
            case .linux2010: return .linux2_6_38
            case .linux6_18: return .linux6_18
            case .withoutRule:
                var d = KernelDesign.linux6_18
                d.mapStackDisablesHugepages = false
                return d
            }
        }
    }

    /// What the stacks cost.
    public struct Outcome: Sendable, Hashable {
        /// Anonymous memory resident after every thread touched its stack (`AnonPages`).
        public var rssBytes: UInt64
        public var hugeBytes: UInt64
    }

    /// `threads` stacks of `stackSize` each, mapped as a thread library does
    /// (`mmap(MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK)`, one after another below a 4 KiB read-only mapping
    /// that stands for what the process mapped before), each writing the `touched` bytes at its top.
    /// Stacks without a guard page, as the JVM asks glibc for its Java threads.
    public static func run(_ variant: Variant, threads: Int, stackSize: UInt64 = 2 << 20,
                           touched: UInt64 = 16 << 10) throws(HistoryError) -> Outcome {
        let memory = (UInt64(threads) * stackSize + (256 << 20)).roundedUp(to: 256 << 20)
        let kernel = try HistoryRun.kernel(variant.design, memory: memory, tunables: [("enabled", "always")])
        let mm = try HistoryRun.process(kernel)
        do throws(Errno) {
            _ = try mm.mmap(length: PageGeometry.pageSize, protection: [.read], flags: .private)
        } catch { throw HistoryError("mmap failed: \(error)") }
        for _ in 0..<threads {
            let stack = try HistoryRun.mmap(mm, stackSize, flags: [.private, .stack])
            var va = stack + (stackSize - touched)
            while va < stack + stackSize {
                if case .failure(let fault) = mm.access(va, .write) { throw HistoryError("stack write failed: \(fault.outcome)") }
                va = va + PageGeometry.pageSize
            }
        }
        return Outcome(rssBytes: HistoryRun.meminfo(kernel, "AnonPages"), hugeBytes: HistoryRun.meminfo(kernel, "AnonHugePages"))
    }

    static let landmark = HistoryLandmark(name: "thread-stacks", title: "Thread stacks and MAP_STACK (6.7)") { () throws(HistoryError) in
        let threads = 10_000
        var outcomes: [(Variant, Outcome)] = []
        for v in Variant.allCases { outcomes.append((v, try run(v, threads: threads))) }
        let touched = UInt64(threads) * (16 << 10), whole = UInt64(threads) * (2 << 20)
        let reported: [Variant: String] = [
            .linux2010: "THPs back the stacks (up to \(ByteCount.human(whole)))",
            .linux6_18: "\(ByteCount.human(touched)) (what is touched)",
            .withoutRule: "\(ByteCount.human(whole)): a THP per stack (stress-ng pthread, JDK-8303215)",
        ]
        let figures = outcomes.map { v, o in
            HistoryFigure(v.rawValue, reported: reported[v]!,
                          modelled: "RSS \(ByteCount.human(o.rssBytes)), AnonHugePages \(ByteCount.human(o.hugeBytes))",
                          unit: "MiB RSS", reportedValue: HistoryRun.mib(v == .linux6_18 ? touched : whole),
                          modelledValue: HistoryRun.mib(o.rssBytes))
        }
        let rss = Dictionary(uniqueKeysWithValues: outcomes.map { ($0.0, $0.1.rssBytes) })
        let agrees = rss[.linux6_18]! < rss[.withoutRule]! / 8 && rss[.linux6_18]! < rss[.linux2010]! / 8
        return HistoryResult(
            name: "thread-stacks", title: "Thread stacks and MAP_STACK (6.7)",
            source: "commit c4608d1bf7c6 \"mm: mmap: map MAP_STACK to VM_NOHUGEPAGE\" (6.7); JDK-8303215 (bugs.openjdk.org/browse/JDK-8303215); the stress-ng pthread regression reported against efa7df3e3bb5",
            setup: "\(Format.count(threads)) threads, each a 2 MiB MAP_STACK mapping (no guard page) whose top 16 KiB is written; enabled=always; metadata mode",
            figures: figures,
            direction: "without the MAP_STACK rule each stack costs a whole THP (2 MiB instead of 16 KiB); with it, only what is touched",
            agrees: agrees,
            notes: ["The model has no threads: each stack is mapped and touched by one process, as the threads' shared address space would be. glibc's guard page (PROT_NONE at the bottom) is left out: with it inside a 2 MiB mapping no aligned 2 MiB range fits, and the JVM's own guard zones come after the first touch."])
    }
}
