import VMCore
import Kernel

/// A malloc-like heap (glibc's non-main arena): a `PROT_NONE` reservation of `size` that becomes
/// read-write in 128 KiB steps as the top grows (`grow_heap()`), objects of 32 B–256 KiB in
/// power-of-two classes with exact-class reuse, and the interior pages of freed chunks of 128 KiB or
/// more returned with `MADV_DONTNEED` (glibc's trimming). A malloc writes the chunk header only, so
/// big objects leave most of their pages untouched: sparse touching inside huge-page-sized ranges.
///
/// Because the read-write VMA ends at the top, a fault's aligned 2 MiB range rarely fits in it while
/// the heap grows, so even `enabled=always` gives (almost) no huge faults: as with real arenas, huge
/// pages come from khugepaged collapsing the sparse ranges later (with `max_ptes_none` deciding bloat).
///
/// Set-up mallocs until the top reaches `size`. The measured phase mixes frees (1 in 8), mallocs
/// (1 in 8) and loads/stores into live objects; each operation is exactly one access.
struct HeapWorkload {
    let p: SyntheticParameters
    static let growStep: UInt64 = 128 << 10
    static let trimThreshold: UInt64 = 128 << 10
    static let header: UInt64 = 16

    func generate(into sink: inout some WorkloadSink) {
        let base = SyntheticLayout.base
        var rng = SplitMix64(seed: p.seed)
        var top: UInt64 = 0          // bytes of the arena handed out
        var committed: UInt64 = 0    // bytes made read-write
        var liveAddress: [UInt64] = [], liveClass: [UInt8] = []
        var free = [[UInt64]](repeating: [], count: 19)
        sink.event(thread: 0, .mmap(address: base, length: p.size, protection: .none, shared: false))
        // glibc.malloc.hugetlb=1: the arena is advised when it is created (`madvise_thp()`).
        if p.adviseHugepage { sink.event(thread: 0, .madvise(address: base, length: p.size, advice: .hugepage)) }

        func randomClass() -> UInt8 {
            let u = rng.unit()
            return UInt8(5 + Int(14 * u * u))    // 2^5 … 2^18 bytes, small ones more likely
        }
        /// Returns the chunk address, or nil when the arena is full and the class's free list empty.
        func malloc(_ c: UInt8) -> UInt64? {
            if let reused = free[Int(c)].popLast() { return reused }
            let chunk = (UInt64(1) << UInt64(c)) + Self.header
            guard top + chunk <= p.size else { return nil }
            let address = base + top
            top += chunk
            if top > committed {
                let grow = min(p.size - committed, (top - committed + Self.growStep - 1) / Self.growStep * Self.growStep)
                sink.event(thread: 0, .mprotect(address: base + committed, length: grow, protection: .readWrite))
                committed += grow
            }
            return address
        }

        // Set-up: allocate until the arena is full, writing each header.
        var failures = 0
        while failures < 64 {
            let c = randomClass()
            guard let a = malloc(c) else { failures += 1; continue }
            sink.access(thread: 0, address: a, kind: .store, count: 1)
            liveAddress.append(a); liveClass.append(c)
        }
        beginMeasurement(p, into: &sink)

        for _ in 0..<p.accesses {
            let op = rng.below(8)
            if op == 0, !liveAddress.isEmpty {
                let i = Int(rng.below(UInt64(liveAddress.count)))
                let a = liveAddress[i], c = liveClass[i]
                liveAddress.swapAt(i, liveAddress.count - 1); liveAddress.removeLast()
                liveClass.swapAt(i, liveClass.count - 1); liveClass.removeLast()
                sink.access(thread: 0, address: a, kind: .store, count: 1)
                let bytes = UInt64(1) << UInt64(c)
                if bytes >= Self.trimThreshold {
                    let from = (a + Self.header + PageGeometry.pageSize - 1) & ~(PageGeometry.pageSize - 1)
                    let to = (a + Self.header + bytes) & ~(PageGeometry.pageSize - 1)
                    if to > from { sink.event(thread: 0, .madvise(address: from, length: to - from, advice: .dontNeed)) }
                }
                free[Int(c)].append(a)
            } else if op == 1, let a = { let c = randomClass(); return malloc(c).map { ($0, c) } }() {
                sink.access(thread: 0, address: a.0, kind: .store, count: 1)
                liveAddress.append(a.0); liveClass.append(a.1)
            } else if !liveAddress.isEmpty {
                let i = Int(rng.below(UInt64(liveAddress.count)))
                let bytes = UInt64(1) << UInt64(liveClass[i])
                let address = liveAddress[i] + Self.header + rng.below(bytes / 8) * 8
                sink.access(thread: 0, address: address, kind: rng.below(3) == 0 ? .store : .load, count: 1)
            } else {
                sink.access(thread: 0, address: base, kind: .load, count: 1)
            }
        }
    }
}
