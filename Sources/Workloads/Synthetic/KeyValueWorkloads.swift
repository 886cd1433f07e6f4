import VMCore
import Kernel

/// A key-value store's fragmentation pattern, the one HawkEye and others measure with Redis: insert
/// 4 KiB values until nine tenths of `size` are live, delete a random 80 % of them (each deletion
/// returns its page with `MADV_DONTNEED`, as jemalloc's purge does), pause a minute of simulated time
/// (the store serves what is left; khugepaged and the policies' threads run), then insert 2 MiB
/// values, in a second mapping, until `size` is live again. Values are written whole on insert, one
/// store per page. All of that is set-up; the measured phase is `accesses` GETs, 8-byte loads from
/// random live values.
///
/// ```
///  region 1  [v v v v v v v v v v …]  insert 4 KiB values to 90 % of size
///            [v . . v . . . . v . …]  delete 80 %: holes inside 2 MiB ranges
///            (60 s idle)               khugepaged may collapse the holed ranges again: bloat
///  region 2  [VVVV…][VVVV…] …          insert 2 MiB values back up to size
/// ```
/// With a `--memory` near `size`, a policy whose khugepaged refilled the holes runs short of memory in
/// the third phase (reclaim, swap, or the out-of-memory outcome); docs/policies.md has which do.
struct KeyValueStoreWorkload {
    let p: SyntheticParameters
    static let smallValue = PageGeometry.pageSize
    static let largeValue = PageGeometry.pmdSize
    /// The pause between the deletions and the large inserts, in milliseconds of simulated time.
    static let pauseMilliseconds: UInt64 = 60_000

    func generate(into sink: inout some WorkloadSink) {
        let base = SyntheticLayout.base
        var rng = SplitMix64(seed: p.seed)
        // Phase 1: small values up to 90 % of the size.
        let smallCount = Int(p.size / Self.smallValue * 9 / 10)
        sink.event(thread: 0, .mmap(address: base, length: p.size, protection: .readWrite, shared: false))
        if p.adviseHugepage { sink.event(thread: 0, .madvise(address: base, length: p.size, advice: .hugepage)) }
        for i in 0..<smallCount { sink.access(thread: 0, address: base + UInt64(i) * Self.smallValue, kind: .store, count: 1) }
        // Phase 2: delete a random 80 % (a partial Fisher–Yates shuffle picks them).
        var keys = Array(0..<smallCount)
        let deletions = smallCount * 8 / 10
        for d in 0..<deletions {
            let j = d + Int(rng.below(UInt64(smallCount - d)))
            keys.swapAt(d, j)
            sink.event(thread: 0, .madvise(address: base + UInt64(keys[d]) * Self.smallValue, length: Self.smallValue,
                                           advice: .dontNeed))
        }
        var live: [(address: UInt64, bytes: UInt64)] = keys[deletions...].map { (base + UInt64($0) * Self.smallValue, Self.smallValue) }
        // The store serves its remaining values a while before the large inserts, so kernel threads
        // (khugepaged, a policy's samplers) get simulated time between the phases, as Redis's do.
        sink.event(thread: 0, .idle(milliseconds: Self.pauseMilliseconds))
        // Phase 3: 2 MiB values in a second region until `size` is live again.
        let liveSmall = UInt64(smallCount - deletions) * Self.smallValue
        let largeCount = (p.size - min(p.size, liveSmall)) / Self.largeValue
        let region2 = base + ((p.size + Self.largeValue - 1) / Self.largeValue + 1) * Self.largeValue
        if largeCount > 0 {
            sink.event(thread: 0, .mmap(address: region2, length: largeCount * Self.largeValue, protection: .readWrite, shared: false))
            if p.adviseHugepage {
                sink.event(thread: 0, .madvise(address: region2, length: largeCount * Self.largeValue, advice: .hugepage))
            }
        }
        for v in 0..<largeCount {
            let value = region2 + v * Self.largeValue
            for page in Swift.stride(from: UInt64(0), to: Self.largeValue, by: Int(PageGeometry.pageSize)) {
                sink.access(thread: 0, address: value + page, kind: .store, count: 1)
            }
            live.append((value, Self.largeValue))
        }
        beginMeasurement(p, into: &sink)
        // GETs: a random live value, a random word of it.
        for _ in 0..<p.accesses {
            let v = live[Int(rng.below(UInt64(live.count)))]
            sink.access(thread: 0, address: v.address + rng.below(v.bytes / 8) * 8, kind: .load, count: 1)
        }
    }

    /// Where the second region starts, for tests.
    static func largeRegion(size: UInt64) -> UInt64 {
        SyntheticLayout.base + ((size + largeValue - 1) / largeValue + 1) * largeValue
    }
}

/// A key-value store that snapshots itself while writes continue (Redis `BGSAVE`): 4 KiB values fill
/// `size`; then, measured, the store forks a child (thread `threads`) that reads every value once, in
/// key order, and exits, while the parent's threads keep SETting values chosen Zipf-like (s = 0.99, a
/// few hot keys), each SET one store into the value. Parent and child alternate in quanta; once the
/// child is done, the rest of the `accesses` are the parent's. The parent's writes during the child's
/// life are the copy-on-write cost: 4 KiB each, or 2 MiB where a huge page is shared.
struct KeyValueForkWorkload {
    let p: SyntheticParameters

    func generate(into sink: inout some WorkloadSink) {
        let base = SyntheticLayout.base
        mapAndFirstTouch(p, base: base, into: &sink)
        beginMeasurement(p, into: &sink)
        let values = p.size / PageGeometry.pageSize
        let child = p.threads
        sink.event(thread: 0, .fork(child: child))
        var rng = SplitMix64(seed: p.seed)
        let zipf = ZipfSampler(count: values, exponent: 0.99)
        var keyPermutation = CyclicPermutation(count: values, rng: &rng)
        let scrambleKey = keyPermutation.next()
        var dumped: UInt64 = 0
        var remaining = p.accesses
        var turn = 0
        while remaining > 0 {
            let n = min(threadQuantum, remaining)
            if turn == child {
                if dumped < values {
                    let issued = Int(min(UInt64(n), values - dumped))
                    for _ in 0..<issued {
                        sink.access(thread: child, address: base + dumped * PageGeometry.pageSize, kind: .load, count: 1)
                        dumped += 1
                    }
                    remaining -= issued
                    if dumped == values { sink.event(thread: child, .exit) }
                }
            } else {
                for _ in 0..<n {
                    let rank = zipf.sample(rng.unit())
                    let key = keyPermutation.scramble((rank &+ scrambleKey) & keyPermutation.mask) % values
                    sink.access(thread: turn, address: base + key * PageGeometry.pageSize + rng.below(512) * 8,
                                kind: .store, count: 1)
                }
                remaining -= n
            }
            turn = (turn + 1) % (p.threads + 1)
        }
        if dumped < values { sink.event(thread: child, .exit) }
    }
}
