import VMCore

/// A program that touches its memory sparsely, sleeps, then uses all of it: each thread writes one
/// page in eight of its slice, every thread idles for 10 s (time in which khugepaged could collapse
/// the sparse ranges), then uniform random 8-byte loads cover the whole size.
struct IdleWorkload {
    let p: SyntheticParameters
    static let idleMilliseconds: UInt64 = 10_000

    func generate(into sink: inout some WorkloadSink) {
        let base = SyntheticLayout.base
        for t in 1..<p.threads { sink.event(thread: 0, .spawn(thread: t)) }
        sink.event(thread: 0, .mmap(address: base, length: p.size, protection: .readWrite, shared: false))
        if p.adviseHugepage { sink.event(thread: 0, .madvise(address: base, length: p.size, advice: .hugepage)) }
        for t in 0..<p.threads {
            let (start, length) = p.slice(t)
            var offset: UInt64 = 0
            while offset < length {
                sink.access(thread: t, address: base + start + offset, kind: .store, count: 1)
                offset += 8 * PageGeometry.pageSize
            }
        }
        sink.event(thread: 0, .idle(milliseconds: Self.idleMilliseconds))
        sink.event(thread: 0, .beginMeasurement)
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
