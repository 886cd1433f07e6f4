import Testing
import VMCore
import Kernel
import Machine
import Workloads
import Simulation
import Experiments
import TestSupport

/// Random streams of accesses and events — nonsense included: threads that were never spawned,
/// spawns of threads that exist, accesses after `exit`, unmapped addresses, calls of any length —
/// run through `MachineExecutor` on one to four CPUs, with and without simulated-time order, in
/// metadata mode and in data mode (frames that hold bytes: marker bytes, zero-page checks). A stream
/// a trace file can carry must never stop the run: it ends with a report whose counts add up, the
/// kernel's invariants hold, and the same stream gives the same report twice.
@Suite("Random event streams")
struct RandomEventStreamTests {
    /// One step of a stream: what a trace reader hands the executor.
    enum Step {
        case access(thread: Int, address: UInt64, kind: AccessKind, count: Int)
        case run(thread: Int, address: UInt64, stride: UInt64, count: Int, kind: AccessKind)
        case event(thread: Int, WorkloadEvent)
    }

    /// Three 8 MiB windows (two 2 MiB-aligned, one not) that the calls and accesses aim at, so that
    /// they meet often enough to fault, split, merge and unmap one another's pages. The first is never
    /// unmapped or made inaccessible, so that processes live long enough to mix their calls.
    static let windows: [UInt64] = [1 << 40, 1 << 41, (1 << 42) + 0x5000]

    static func stream(seed: UInt64, length: Int) -> [Step] {
        var rng = TestSupport.SplitMix64(seed: seed)
        let threads = 6
        // A start that gives the nonsense something to hit: the windows mapped, three more threads, and
        // two more processes (4 and 5, copies of the first), so that one death does not end the run.
        var steps: [Step] = Self.windows.map { .event(thread: 0, .mmap(address: $0 & ~0x1F_FFFF, length: 10 << 20,
                                                                       protection: .readWrite, shared: false)) }
        steps += (1...3).map { .event(thread: 0, .spawn(thread: $0)) }
        steps += (4...5).map { .event(thread: 0, .fork(child: $0)) }
        func percent() -> UInt64 { rng.next() % 100 }
        /// A page in a window: the first (which stays accessible) for `safe` odds in 100.
        func address(safe: UInt64) -> UInt64 {
            let window = percent() < safe ? Self.windows[0] : Self.windows[1 + Int(rng.next() % 2)]
            return window + (rng.next() % (8 << 20)) & ~0xFFF
        }
        func callLength() -> UInt64 {
            switch rng.next() % 4 {
            case 0: 4_096
            case 1: (rng.next() % 512 + 1) << 12
            case 2: 2 << 20
            default: rng.next() % (6 << 20)  // not page-aligned, or zero: the kernel says EINVAL
            }
        }
        for _ in 0..<length {
            // Threads 0-6 (6 exists only if spawned or forked later), and now and then one that never can.
            let thread = percent() < 2 ? [-1, 64, Int.max][Int(rng.next() % 3)] : Int(rng.next() % UInt64(threads + 1))
            let kind: AccessKind = switch rng.next() % 400 { case 0: .fetch; case 1..<200: .load; default: .store }
            let protection: Protection = percent() < 80 ? .readWrite : [.read, .none][Int(rng.next() % 2)]
            let step = percent()
            switch step {
            case 0..<43:
                steps.append(.access(thread: thread, address: address(safe: 96) + rng.next() % 4_096 & ~7,
                                     kind: kind, count: Int(rng.next() % 3) + 1))
            case 43..<53:
                steps.append(.run(thread: thread, address: address(safe: 96), stride: [4_096, 64, 8_192][Int(rng.next() % 3)],
                                  count: Int(rng.next() % 600) + 1, kind: kind))
            case 53..<70:
                let start = address(safe: protection == .readWrite ? 30 : 0) & ~0x1F_FFFF
                steps.append(.event(thread: thread, .mmap(address: start, length: callLength(), protection: protection,
                                                          shared: percent() < 20)))
            case 70..<73: steps.append(.event(thread: thread, .munmap(address: address(safe: 0), length: callLength())))
            case 73..<76:
                steps.append(.event(thread: thread, .mprotect(address: address(safe: protection == .readWrite ? 50 : 0),
                                                              length: callLength(), protection: protection)))
            case 76..<81:
                let advice = MadviseAdvice.allCases[Int(rng.next() % UInt64(MadviseAdvice.allCases.count))]
                steps.append(.event(thread: thread, .madvise(address: address(safe: 50), length: callLength(), advice: advice)))
            case 81..<83:
                steps.append(.event(thread: thread, .mremap(address: address(safe: 0), oldLength: callLength(),
                                                            newLength: callLength(), newAddress: address(safe: 0))))
            case 83..<85: steps.append(.event(thread: thread, .brk(address: address(safe: 0))))
            case 85..<88: steps.append(.event(thread: thread, .getMempolicy(address: address(safe: 50))))
            case 88..<92: steps.append(.event(thread: thread, .spawn(thread: Int(rng.next() % UInt64(threads + 2)))))
            case 92..<94: steps.append(.event(thread: thread, .fork(child: Int(rng.next() % UInt64(threads + 2)))))
            case 94 where percent() < 25: steps.append(.event(thread: thread, .exit))
            case 95..<98: steps.append(.event(thread: thread, .idle(milliseconds: rng.next() % 3)))
            default: steps.append(.event(thread: thread, .beginMeasurement))
            }
        }
        return steps
    }

    static func run(_ steps: [Step], cpus: Int, simulatedTime: Bool, data: Bool, enabled: TransparentHugepageSettings.Enabled) throws
        -> (ReplayReport, [String]) {
        var setup = SystemBuilder()
        setup.cpus = cpus
        setup.enabled = enabled
        setup.simulatedTime = simulatedTime
        setup.memoryBytes = 96 << 20
        if data { setup.mode = .data }
        let executor = try setup.makeExecutor()
        for step in steps {
            switch step {
            case .access(let thread, let address, let kind, let count):
                executor.access(thread: thread, address: address, kind: kind, count: count)
            case .run(let thread, let address, let stride, let count, let kind):
                executor.accessRun(thread: thread, address: address, stride: stride, count: count, kind: kind)
            case .event(let thread, let event):
                executor.event(thread: thread, event)
            }
        }
        let report = executor.finish()
        return (report, executor.machine.kernel.checkInvariants())
    }

    @Test("any stream ends in a report whose counts add up, with the kernel's invariants holding, the same twice",
          arguments: [(1, false, false), (2, true, false), (4, true, false), (3, false, false), (1, false, true), (2, true, true)])
    func randomStreams(cpus: Int, simulatedTime: Bool, data: Bool) throws {
        for seed in 1...6 as ClosedRange<UInt64> {
            let steps = Self.stream(seed: seed &* 0x9E37_79B9 &+ UInt64(cpus), length: 1_500)
            let enabled: TransparentHugepageSettings.Enabled = seed % 2 == 0 ? .always : .never
            let (report, problems) = try Self.run(steps, cpus: cpus, simulatedTime: simulatedTime, data: data, enabled: enabled)
            #expect(problems.isEmpty, "seed \(seed): \(problems.prefix(5))")
            var eventsFed = 0, accessesFed = 0
            for step in steps {
                switch step {
                case .event: eventsFed += 1
                case .access(_, _, _, let count): accessesFed += count
                case .run(_, _, _, let count, _): accessesFed += count
                }
            }
            // Every event is either run (whatever the kernel answered) or dropped; every access is
            // either made or dropped.
            #expect(report.events + report.droppedEvents == eventsFed, "seed \(seed)")
            #expect(report.accesses.reduce(0, +) + report.droppedAccesses == accessesFed, "seed \(seed)")
            // The streams are nonsense often enough that some of each must have happened, or the test
            // exercises nothing.
            #expect(report.total.faults > 0 && report.droppedEvents > 0 && !report.failedCalls.isEmpty, "seed \(seed)")
            // The same stream on a new system gives the same answers, whatever ran on this host thread before.
            let (again, _) = try Self.run(steps, cpus: cpus, simulatedTime: simulatedTime, data: data, enabled: enabled)
            #expect(again == report, "seed \(seed): not deterministic")
        }
    }
}
