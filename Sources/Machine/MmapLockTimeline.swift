/// The mmap locks of a machine's address spaces as reader-writer semaphores in simulated time: per
/// mm, the writers' holds, each from when the writer asked (`down_write()`) to its `up_write()`; per
/// CPU, its readers' holds, each from `down_read()` to `up_read()`.
///
/// The rules are the rwsem's, FIFO with a hand-off to a waiting writer (Linux: `down_read()` →
/// `rwsem_down_read_slowpath()`, `down_write()` → `rwsem_down_write_slowpath()`):
/// - a reader asking at `t` waits only for the writers that asked at or before `t` and had not
///   released by `t` — holding the lock then, or waiting for it (new readers queue behind a waiting
///   writer); it enters at the last of their releases;
/// - a writer asking at `t` waits for every holder that asked at or before `t` and had not released by
///   `t`: the readers inside (and those queued behind an earlier writer) and the writers before it.
///
/// ```
///  writer W:        asks ────── waits for R1 ────── holds ─────────── releases
///  reader R1:  ─ inside ────────── up_read ┘
///  reader R2:             asks ─ waits (W is queued) ───────────────── enters ──
///  reader R0:  ─ done ┘                       (asked before W, left before: no wait either way)
/// ```
///
/// Holds are charged in the order the executor runs CPUs, which is simulated-time order only up to a
/// scheduling quantum (and each system call is charged at its own CPU's clock, after the other CPUs'
/// queued work): a hold charged earlier for a later time does not wait for one charged afterwards for
/// an earlier time. A reader asking at or after every writer's release — the case of nearly every
/// fault — costs one comparison (`writersEnd`).
final class MmapLockTimeline {
    /// One hold, from the request to the release.
    struct Hold {
        var request: Double
        var end: Double
    }
    /// One read hold of a CPU, with its mm.
    struct ReadHold {
        var request: Double
        var end: Double
        var mm: Int
    }

    /// Per mm: the latest release of its writers (−∞ if none).
    @exclusivity(unchecked) private(set) var writersEnd = ContiguousArray<Double>()
    /// Per mm: its writers' holds that end after the horizon (and, below `keptWriters`, older ones).
    @exclusivity(unchecked) private var writers: [ContiguousArray<Hold>] = []
    /// Per CPU, a ring of its last `readRing` read holds, in time order (a CPU holds one at a time):
    /// CPU `c`'s hold number `i` is at `c * readRing + i % readRing`. A fixed buffer, so that noting a
    /// hold — twice per page in `memscale` — is three stores and no allocation.
    private let readHolds: UnsafeMutablePointer<ReadHold>
    /// Per CPU: how many read holds it has noted.
    private let readCounts: UnsafeMutablePointer<Int>
    private let cpuCount: Int

    /// Read holds a CPU keeps: a writer asking at a time before a CPU's oldest kept hold asked does
    /// not see that CPU's older holds (a CPU that many faults ahead of the writer's, when it is
    /// charged).
    static let readRing = 1_024
    /// Writers' holds an mm keeps before those that end by the horizon are dropped.
    static let keptWriters = 16

    init(cpuCount: Int) {
        self.cpuCount = cpuCount
        readHolds = .allocate(capacity: cpuCount * Self.readRing)
        readCounts = .allocate(capacity: cpuCount)
        readCounts.initialize(repeating: 0, count: cpuCount)
    }

    deinit {
        readHolds.deallocate()
        readCounts.deallocate()
    }

    /// Adds an mm with no holds; returns its index.
    func addMM() -> Int {
        writersEnd.append(-.infinity)
        writers.append(ContiguousArray())
        return writersEnd.count - 1
    }

    /// When a reader of `mm` asking at `t` enters: `t`, or the last release of the writers that asked
    /// by `t` and still held or waited for the lock at `t`.
    @inline(__always) func readerEnters(_ mm: Int, at t: Double) -> Double {
        if t >= writersEnd[mm] { return t }
        return latestRelease(of: writers[mm], at: t)
    }

    /// The last release among `holds` that asked by `t` and end after it (or `t`).
    private func latestRelease(of holds: ContiguousArray<Hold>, at t: Double) -> Double {
        var enter = t
        for h in holds where h.request <= t && h.end > enter { enter = h.end }
        return enter
    }

    /// When a writer of `mm` asking at `t` may take the lock: after the writers before it and the
    /// readers that asked by `t` and had not left.
    func writerStarts(_ mm: Int, at t: Double) -> Double {
        var start = t < writersEnd[mm] ? latestRelease(of: writers[mm], at: t) : t
        let ring = Self.readRing
        for cpu in 0..<cpuCount {
            let n = readCounts[cpu]
            let base = readHolds + cpu * ring
            // The first kept hold that asked after `t`; the one before it is the only one that may
            // hold at `t`.
            var lo = max(0, n - ring), hi = n
            let first = lo
            while lo < hi {
                let mid = (lo + hi) / 2
                if base[mid % ring].request <= t { lo = mid + 1 } else { hi = mid }
            }
            guard lo > first else { continue }
            let h = base[(lo - 1) % ring]
            if h.mm == mm && h.end > t && h.end > start { start = h.end }
        }
        return start
    }

    /// Notes that `cpu` held `mm`'s lock for reading from `request` (when it asked) to `end`.
    @inline(__always) func noteRead(cpu: Int, mm: Int, request: Double, end: Double) {
        let n = readCounts[cpu]
        readHolds[cpu &* Self.readRing &+ (n & (Self.readRing &- 1))] = ReadHold(request: request, end: end, mm: mm)
        readCounts[cpu] = n &+ 1
    }

    /// Notes that a writer of `mm` asked at `request` and released at `end`.
    func noteWrite(mm: Int, request: Double, end: Double, horizon: Double) {
        writers[mm].append(Hold(request: request, end: end))
        if end > writersEnd[mm] { writersEnd[mm] = end }
        if writers[mm].count > Self.keptWriters { writers[mm].removeAll { $0.end <= horizon } }
    }
}
