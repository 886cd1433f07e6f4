import VMCore

/// Redis BGSAVE: `threads` writer threads fill the data set (`size`), then thread 0 forks a child
/// (thread `threads`) that reads the whole set sequentially once and exits, while the parent's
/// threads keep writing random words, breaking copy-on-write sharing (of huge pages, with THP).
/// Accesses alternate in quanta between the parent's threads and the child; when the child is done,
/// the rest go to the parent.
struct ForkServerWorkload {
    let p: SyntheticParameters

    func generate(into sink: inout some WorkloadSink) {
        let base = SyntheticLayout.base
        mapAndFirstTouch(p, base: base, into: &sink)
        beginMeasurement(p, into: &sink)
        let child = p.threads
        sink.event(thread: 0, .fork(child: child))
        var rng = SplitMix64(seed: p.seed)
        var childOffset: UInt64 = 0
        var childDone = false
        var remaining = p.accesses
        var turn = 0                   // 0..<threads: a parent thread; threads: the child
        while remaining > 0 {
            let n = min(threadQuantum, remaining)
            if turn == child && !childDone {
                var issued = 0
                while issued < n && childOffset < p.size {
                    sink.access(thread: child, address: base + childOffset, kind: .load, count: 1)
                    childOffset += 8; issued += 1
                }
                remaining -= issued
                if childOffset >= p.size { childDone = true; sink.event(thread: child, .exit) }
            } else if turn < p.threads {
                for _ in 0..<n {
                    sink.access(thread: turn, address: base + rng.below(p.size / 8) * 8, kind: .store, count: 1)
                }
                remaining -= n
            }
            turn = (turn + 1) % (p.threads + 1)
        }
        if !childDone { sink.event(thread: child, .exit) }
    }
}
