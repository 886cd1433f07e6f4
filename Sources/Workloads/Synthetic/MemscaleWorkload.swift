import VMCore

/// `thp_memscale`, the benchmark the split PMD lock was merged with (Linux 3.13, Kirill Shutemov's
/// "split page table lock for PMD tables"; Alex Thorlton's test): each of `threads` threads allocates
/// a buffer of its own and writes one byte in every 4 KiB page of it. The buffers together are
/// `size` bytes (a thread's is its slice); `thpsim run --workload memscale --size S` gives each
/// thread S (the grid passes S × threads here).
///
/// Each buffer comes from `malloc()`, which glibc serves with `mmap()` for large sizes, placed
/// top-down: buffers are 4 KiB-aligned but not 2 MiB-aligned (Linux before 6.7 does not align
/// anonymous mappings to huge pages), so with THP each buffer's partial 2 MiB ranges at its two ends
/// fault 4 KiB pages. The buffers stay separate VMAs, as the cover letter's counts show they were:
/// 58,313 faults with THP on is about 720 per thread, one huge fault per aligned 2 MiB range plus
/// each buffer's unaligned ends (buffers that merged into one VMA would fault about 245 per thread;
/// its hugetlbfs run, 2 MiB-aligned, faulted 256 per thread). The model keeps them apart with one
/// unmapped page between buffers. The data starts after malloc's 16-byte chunk header.
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
/// Threads touch in turn, one page each, as threads running at once on CPUs of their own would. The
/// touch is the benchmark (thp_memscale times it); as in every synthetic workload it is the set-up,
/// and the measured phase after it writes `accesses` words at random pages of each thread's buffer
/// (`--accesses 0` for the benchmark alone).
struct MemscaleWorkload {
    let p: SyntheticParameters

    /// The highest address of the buffers (2 MiB-aligned: the synthetic layout's base).
    static let top: UInt64 = SyntheticLayout.base

    /// Where thread `t`'s buffer is mapped, and its length: below thread `t - 1`'s, one page apart.
    func mapping(_ t: Int) -> (address: UInt64, length: UInt64) {
        let (start, length) = p.slice(t)
        return (Self.top - start - length - UInt64(t + 1) * PageGeometry.pageSize, length)
    }

    func generate(into sink: inout some WorkloadSink) {
        for t in 1..<max(1, p.threads) { sink.event(thread: 0, .spawn(thread: t)) }
        for t in 0..<p.threads {
            let m = mapping(t)
            sink.event(thread: t, .mmap(address: m.address, length: m.length, protection: .readWrite, shared: false))
        }
        let maps = (0..<p.threads).map(mapping)
        let mostPages = maps.map { $0.length / PageGeometry.pageSize }.max() ?? 0
        for page in 0..<mostPages {
            for (t, m) in maps.enumerated() where page < m.length / PageGeometry.pageSize {
                let address = m.address + page * PageGeometry.pageSize + 16
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
                sink.access(thread: t, address: m.address + page * PageGeometry.pageSize + 16 + 8 * rng.below(500),
                            kind: .store, count: 1)
                remaining -= 1
            }
        }
    }
}
