import VMCore

/// `thp_memscale`, the benchmark the split PMD lock was merged with (Linux 3.13, Kirill Shutemov's
/// "split page table lock for PMD tables"; Alex Thorlton's test): each of `threads` threads allocates
/// a buffer of its own and writes one byte in every 4 KiB page of it. The buffers together are
/// `size` bytes (a thread's is its slice); `thpsim run --workload memscale --size S` gives each
/// thread S (the grid passes S × threads here).
///
/// The set-up is what glibc 2.17 and NPTL do on Linux 3.12 (`MemscaleLayout`): thread 0, standing
/// for the main thread, maps every thread's stack; each thread's first `malloc()` maps it an arena;
/// then each `malloc(S)` is an `mmap` of its own, at the address Linux's top-down placement gives it
/// (`TopDownPlacement`), replayed with `MAP_FIXED`. Buffers are 4 KiB-aligned but not 2 MiB-aligned
/// (Linux before 6.7 does not align anonymous mappings to huge pages) and lie one below the other;
/// neighbours merge into one VMA, but the 2 MiB range a buffer shares with the one below it was
/// written (malloc's chunk header) before that one was mapped, so it faults 4 KiB pages: the set-up
/// reaches the kernel in the layout's order (`MemscaleLayout.orderingPoint`). The stacks' and arenas'
/// first writes are faults of the program's own, as in the real run.
///
/// After writing a page, a thread asks which node it landed on: `get_mempolicy(&node, NULL, 0, page,
/// MPOL_F_NODE | MPOL_F_ADDR)`. The cover letter does not show the test's source, but its run on
/// 3.12 does: Alex Thorlton's NMI backtraces of `thp_memscale` (linux-mm, 7 November 2013, "BUG: mm,
/// numa: test segfaults, only when NUMA balancing is on") stop in `_raw_spin_lock` ←
/// `follow_page_mask` ← `__get_user_pages` ← `SyS_get_mempolicy`, which Mel Gorman answered is
/// "probably the mm->page_table_lock being contended on", to be fixed by the split PMD lock. And the
/// cover letter's counters need a lookup per page: with THP on and the split lock, 57,829 faults
/// took 459 CPU-seconds, and its hugetlbfs variant, with 21,027 faults, 2,588 CPU-seconds before the
/// patch and 395 after: far more than so few faults can take.
///
/// Threads then touch in turn, one page each, as threads running at once on CPUs of their own would.
/// The touch is the benchmark (thp_memscale times it); as in every synthetic workload it is the
/// set-up, and the measured phase after it writes `accesses` words at random pages of each thread's
/// buffer (`--accesses 0` for the benchmark alone).
struct MemscaleWorkload {
    let p: SyntheticParameters
    /// The order in which the threads' set-up reaches the kernel (docs/concurrency.md, "memscale":
    /// the fault count with THP depends on it; others are for tests).
    var order: MemscaleLayout.Order = .stacksThenArenasThenBuffers

    /// Linux's `mmap_base` for the workload (2 MiB-aligned: the synthetic layout's base).
    static let top: UInt64 = SyntheticLayout.base
    /// The lowest address the layout may use: far below any set-up `--size` allows (1 TiB of
    /// buffers, 256 threads' stacks and heaps).
    static let bottom: UInt64 = 1 << 44

    /// The set-up's system calls and first writes, and where each buffer is (`MemscaleLayout`).
    var layout: MemscaleLayout {
        let requests = (0..<p.threads).map { p.slice($0).length }
        guard let layout = MemscaleLayout(requests: requests, order: order,
                                          ceiling: Self.top, floor: Self.bottom) else {
            preconditionFailure("memscale: \(p.threads) threads × \(p.size / UInt64(p.threads)) bytes do not fit below \(Self.top)")
        }
        return layout
    }

    func generate(into sink: inout some WorkloadSink) {
        let layout = self.layout
        for step in layout.steps {
            switch step {
            case .event(let thread, let event): sink.event(thread: thread, event)
            case .store(let thread, let address): sink.access(thread: thread, address: address, kind: .store, count: 1)
            }
        }
        // Each buffer starts after malloc's chunk header and has its slice's pages.
        let maps = (0..<p.threads).map { (address: layout.buffers[$0].address, length: p.slice($0).length) }
        let mostPages = maps.map { $0.length / PageGeometry.pageSize }.max() ?? 0
        for page in 0..<mostPages {
            for (t, m) in maps.enumerated() where page < m.length / PageGeometry.pageSize {
                let address = m.address + page * PageGeometry.pageSize + MemscaleLayout.chunkHeader
                sink.access(thread: t, address: address, kind: .store, count: 1)
                sink.event(thread: t, .getMempolicy(address: address))
            }
        }
        beginMeasurement(p, into: &sink)
        var rng = SplitMix64(seed: p.seed)
        var remaining = p.accesses
        while remaining > 0 {
            for (t, m) in maps.enumerated() where remaining > 0 {
                let page = rng.below(m.length / PageGeometry.pageSize)
                sink.access(thread: t, address: m.address + page * PageGeometry.pageSize + MemscaleLayout.chunkHeader + 8 * rng.below(500),
                            kind: .store, count: 1)
                remaining -= 1
            }
        }
    }
}
