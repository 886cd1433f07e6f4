import VMCore
import PhysicalMemory
import Kernel
import Machine
import Simulation

/// Linux 6.7's alignment of large anonymous mappings to 2 MiB ("mm: align larger anonymous mappings
/// on THP boundaries", commit efa7df3e3bb5) and its fix in 6.12 ("mm, mmap: limit THP alignment of
/// anonymous mappings to PMD-aligned sizes"): will-it-scale `malloc1`, and the 4,632 KiB mappings of
/// SPEC's cactusBSSN (docs/history.md).
public enum AnonymousAlignmentLandmark {
    /// Which mmaps a design variant aligns to 2 MiB.
    public enum Rule: String, Sendable, CaseIterable {
        /// Before 6.7 (and 6.7's revert): none.
        case none = "before 6.7 (no alignment)"
        /// 6.7 to 6.11: every anonymous mmap of 2 MiB or more.
        case atLeastPMD = "6.7 (length >= 2 MiB aligned)"
        /// 6.12+: lengths that are multiples of 2 MiB.
        case pmdMultiples = "6.12+ (multiples of 2 MiB aligned)"

        /// Linux 6.18 with this rule for anonymous mmaps.
        public var design: KernelDesign {
            var d = KernelDesign.linux6_18
            d.alignsLargeAnonymousMappings = self != .none
            d.alignsOnlyPMDMultiples = self == .pmdMultiples
            return d
        }
    }

    /// What `malloc1` cost per iteration.
    public struct Malloc1: Sendable, Hashable {
        public var faultCyclesPerIteration: Double
        public var hugeFaultsPerIteration: Double
        /// Whether the mappings started on a 2 MiB boundary.
        public var aligned: Bool
    }

    /// will-it-scale `malloc1` (one process): `malloc(128 MiB)` and `free()` in a loop. glibc serves
    /// it with an mmap of 128 MiB + 4 KiB (the chunk header rounded up to a page) and writes the
    /// header at its start, then munmaps it; under `enabled=always` that write faults a THP where the
    /// mapping starts on a 2 MiB boundary.
    public static func malloc1(_ rule: Rule, iterations: Int) throws(HistoryError) -> Malloc1 {
        var system = HistoryRun.system(rule.design, memory: 512 << 20, tunables: [("enabled", "always")])
        system.machine = .skylakeSP
        let machine: Machine
        do throws(SysfsError) { machine = try system.makeMachine() } catch { throw HistoryError(error.message) }
        let mm = try HistoryRun.process(machine.kernel)
        let cpu = machine.cpus[0]
        cpu.switchTo(mm)
        let length: UInt64 = (128 << 20) + 4096
        var aligned = true
        let hugeBefore = machine.kernel.vmstatValues()["thp_fault_alloc"] ?? 0
        for _ in 0..<iterations {
            let chunk = try HistoryRun.mmap(mm, length)
            aligned = aligned && chunk.isAligned(PageGeometry.pmdSize)
            if case .failure(let fault) = cpu.access(chunk, .write) { throw HistoryError("malloc1's header write failed: \(fault.outcome)") }
            do throws(Errno) { try mm.munmap(chunk, length: length) } catch { throw HistoryError("munmap failed: \(error)") }
        }
        let huge = (machine.kernel.vmstatValues()["thp_fault_alloc"] ?? 0) - hugeBefore
        return Malloc1(faultCyclesPerIteration: cpu.counters.faultCycles / Double(iterations),
                       hugeFaultsPerIteration: Double(huge) / Double(iterations), aligned: aligned)
    }

    /// What `count` anonymous mmaps of `length` each, all written, end up as.
    public struct Mappings: Sendable, Hashable {
        public var vmas: Int
        public var hugeBytes: UInt64
        public var firstAligned: Bool
    }

    /// cactusBSSN's pattern: many mmaps of 4,632 KiB, then each written whole from the lowest
    /// address up, under `enabled=always`.
    public static func mappings(_ rule: Rule, count: Int, length: UInt64 = 4632 << 10) throws(HistoryError) -> Mappings {
        let kernel = try HistoryRun.kernel(rule.design, memory: (UInt64(count) * length + (64 << 20)).roundedUp(to: 64 << 20),
                                           tunables: [("enabled", "always")])
        let mm = try HistoryRun.process(kernel)
        var starts: [VirtualAddress] = []
        for _ in 0..<count { starts.append(try HistoryRun.mmap(mm, length)) }
        for start in starts.sorted() {
            var offset: UInt64 = 0
            while offset < length {
                if case .failure(let fault) = mm.access(start + offset, .write) { throw HistoryError("write failed: \(fault.outcome)") }
                offset += PageGeometry.pageSize
            }
        }
        return Mappings(vmas: mm.vmas.count, hugeBytes: HistoryRun.meminfo(kernel, "AnonHugePages"),
                        firstAligned: starts.first?.isAligned(PageGeometry.pmdSize) ?? false)
    }

    static let landmark = HistoryLandmark(name: "anon-alignment", title: "Anonymous mmap alignment (6.7) and its fix (6.12)") { () throws(HistoryError) in
        let iterations = 1_000, count = 64
        let before = try malloc1(.none, iterations: iterations)
        let with67 = try malloc1(.atLeastPMD, iterations: iterations)
        let with612 = try malloc1(.pmdMultiples, iterations: iterations)
        let slowdown = with67.faultCyclesPerIteration / before.faultCyclesPerIteration
        let maps67 = try mappings(.atLeastPMD, count: count)
        let maps612 = try mappings(.pmdMultiples, count: count)
        func cycles(_ m: Malloc1) -> String {
            "\(Format.count(Int(m.faultCyclesPerIteration))) fault cycles/iteration (\(m.aligned ? "aligned" : "unaligned"), \(Format.fixed(m.hugeFaultsPerIteration, 0)) THP/iteration)"
        }
        let figures = [
            HistoryFigure("malloc1, \(Rule.none.rawValue)", reported: "1 (baseline)", modelled: cycles(before), unit: "× baseline",
                          reportedValue: 1, modelledValue: 1),
            HistoryFigure("malloc1, \(Rule.atLeastPMD.rawValue)", reported: "≈ 29.8× slower (+2,883 % on revert)", modelled: cycles(with67) + ", \(Format.fixed(slowdown, 1))×",
                          unit: "× baseline", reportedValue: 29.83, modelledValue: slowdown),
            HistoryFigure("malloc1, \(Rule.pmdMultiples.rawValue)", reported: "as before 6.7 (128 MiB + 4 KiB is not a multiple of 2 MiB)",
                          modelled: cycles(with612) + ", \(Format.fixed(with612.faultCyclesPerIteration / before.faultCyclesPerIteration, 1))×",
                          unit: "× baseline", reportedValue: 1, modelledValue: with612.faultCyclesPerIteration / before.faultCyclesPerIteration),
            HistoryFigure("\(count) × 4,632 KiB, \(Rule.atLeastPMD.rawValue)", reported: "each aligned, padding between them: no merging (cactusBSSN up to 600 % slower)",
                          modelled: "\(maps67.vmas) VMAs, first \(maps67.firstAligned ? "aligned" : "unaligned"), AnonHugePages \(ByteCount.human(maps67.hugeBytes))",
                          unit: "MiB AnonHugePages", modelledValue: HistoryRun.mib(maps67.hugeBytes)),
            HistoryFigure("\(count) × 4,632 KiB, \(Rule.pmdMultiples.rawValue)", reported: "not aligned: they merge into one area THPs can back",
                          modelled: "\(maps612.vmas) VMAs, first \(maps612.firstAligned ? "aligned" : "unaligned"), AnonHugePages \(ByteCount.human(maps612.hugeBytes))",
                          unit: "MiB AnonHugePages", modelledValue: HistoryRun.mib(maps612.hugeBytes)),
        ]
        let agrees = with67.aligned && !before.aligned && !with612.aligned && slowdown > 10
            && with612.faultCyclesPerIteration == before.faultCyclesPerIteration
            && !maps612.firstAligned && maps612.vmas < maps67.vmas && maps612.hugeBytes > maps67.hugeBytes
        return HistoryResult(
            name: "anon-alignment", title: "Anonymous mmap alignment (6.7) and its fix (6.12)",
            source: "commit efa7df3e3bb5 \"mm: align larger anonymous mappings on THP boundaries\" (6.7); the kernel test robot's will-it-scale malloc1 report on it (per-process ops +2,883 % with the commit reverted); commit d4148aeab412 \"mm, mmap: limit THP alignment of anonymous mappings to PMD-aligned sizes\" (6.12, Vlastimil Babka: cactusBSSN's 4,632 KiB mappings)",
            setup: "linux-6.18 with each alignment rule, enabled=always, skylake-sp costs; malloc1: \(Format.count(iterations)) iterations of mmap(128 MiB + 4 KiB), write the header, munmap; \(count) mappings of 4,632 KiB, then all written whole",
            figures: figures,
            direction: "6.7's alignment makes every malloc1 iteration fault and zero a whole THP (tens of times slower); 6.12's rule leaves 128 MiB + 4 KiB and 4,632 KiB mappings unaligned",
            agrees: agrees,
            notes: ["The model counts fault cycles only: malloc1's mmap and munmap system calls, and freeing the THP, cost the same in each variant here, which is why the model's ratio is the fault costs' (fault-2m over fault-4k) and larger than will-it-scale's throughput ratio."])
    }
}

extension UInt64 {
    func roundedUp(to multiple: UInt64) -> UInt64 { (self + multiple - 1) / multiple * multiple }
}
