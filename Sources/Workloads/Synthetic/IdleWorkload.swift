import VMCore

/// A program that touches its memory sparsely, sleeps, then uses all of it: each thread writes one
/// page in eight of its slice, every thread idles for 10 s (time in which khugepaged could collapse
/// the sparse ranges), then uniform random 8-byte loads cover the whole size.
struct IdleWorkload {
    let p: SyntheticParameters
    static let idleMilliseconds: UInt64 = 10_000

    func generate(into sink: inout some WorkloadSink) {
        let base = SyntheticLayout.base
        mapAndFirstTouch(p, base: base, pageStep: 8, into: &sink)
        sink.event(thread: 0, .idle(milliseconds: Self.idleMilliseconds))
        beginMeasurement(p, into: &sink)
        var rng = SplitMix64(seed: p.seed)
        var remaining = p.accesses
        var t = 0
        while remaining > 0 {
            let n = min(threadQuantum, remaining)
            for _ in 0..<n { sink.access(thread: t, address: base + rng.below(p.size / 8) * 8, kind: .load, count: 1) }
            remaining -= n
            t = (t + 1) % p.threads
        }
    }
}
