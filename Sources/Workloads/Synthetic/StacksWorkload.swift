import VMCore

/// Many thread stacks, the JVM case: `threads` stacks of `size / threads` bytes each (at least
/// 16 KiB), mapped back to back. Each thread touches its stack from the top down to a random depth
/// (with THP the touched 2 MiB ranges become huge pages), then the runtime `mprotect`s guard pages
/// (20 KiB, HotSpot's yellow and red zones) at the bottom, which splits a huge page there. The
/// measured phase is loads and stores near each stack's top (7 in 8 within the top 64 KiB).
struct StacksWorkload {
    let p: SyntheticParameters
    static let guardBytes: UInt64 = 20 << 10

    var stackBytes: UInt64 { max(16 << 10, p.size / UInt64(p.threads) & ~(PageGeometry.pageSize - 1)) }

    func generate(into sink: inout some WorkloadSink) {
        let base = SyntheticLayout.base
        var rng = SplitMix64(seed: p.seed)
        let stack = stackBytes
        var depths = [UInt64](repeating: 0, count: p.threads)
        for t in 0..<p.threads {
            let bottom = base + UInt64(t) * stack
            sink.event(thread: 0, .mmap(address: bottom, length: stack, protection: .readWrite, shared: false))
            if t > 0 { sink.event(thread: 0, .spawn(thread: t)) }
            // Depth: a quarter of the stack up to all of it above the guard zone, in whole pages.
            let usable = stack - Self.guardBytes
            let depth = (usable / 4 + rng.below(usable - usable / 4 + 1)) & ~(PageGeometry.pageSize - 1)
            depths[t] = max(PageGeometry.pageSize, depth)
            var offset: UInt64 = PageGeometry.pageSize
            while offset <= depths[t] {
                sink.access(thread: t, address: bottom + stack - offset, kind: .store, count: 1)
                offset += PageGeometry.pageSize
            }
        }
        for t in 0..<p.threads {
            sink.event(thread: t, .mprotect(address: base + UInt64(t) * stack, length: Self.guardBytes, protection: .none))
        }
        beginMeasurement(p, into: &sink)
        var remaining = p.accesses
        var t = 0
        while remaining > 0 {
            let n = min(threadQuantum, remaining)
            let top = base + UInt64(t + 1) * stack
            for _ in 0..<n {
                let span = rng.below(8) == 0 ? depths[t] : min(depths[t], 64 << 10)
                let address = top - 8 - rng.below(span / 8) * 8
                sink.access(thread: t, address: address, kind: rng.below(2) == 0 ? .store : .load, count: 1)
            }
            remaining -= n
            t = (t + 1) % p.threads
        }
    }
}
