import VMCore

/// Where Linux would place a program's `mmap` calls without `MAP_FIXED`, so that a generator can
/// replay them with `MAP_FIXED` at the addresses the real program would have got: the x86-64
/// top-down layout of Linux 3.x (`arch_get_unmapped_area_topdown()` → `vm_unmapped_area()` with
/// `VM_UNMAPPED_AREA_TOPDOWN`), which puts each mapping at the top of the highest free gap below
/// `mmap_base` that fits it. Anonymous mappings get no 2 MiB alignment (that came with Linux 6.7's
/// `thp_get_unmapped_area()`).
///
/// It tracks only which ranges are mapped: protections and merges do not move later placements
/// (the kernel model replaying the calls keeps the VMAs).
///
/// ```
///   ceiling (mmap_base) ─┬──────────────┐
///                        │ mapped       │
///                        ├──────────────┤ ◄─ gap too small for `length`: skipped
///                        │ mapped       │
///                        ├──────────────┤ ◄─ the first gap from the top that fits:
///                        │ new mapping  │     [gap end − length, gap end)
///                        ├──────────────┤
///                        ⋮   free       ⋮
///   floor ───────────────┴──────────────┘
/// ```
struct TopDownPlacement {
    /// The highest address a mapping may end at (Linux: `mm->mmap_base`).
    let ceiling: UInt64
    /// The lowest address a mapping may start at (Linux: `info.low_limit`, `PAGE_SIZE` there).
    let floor: UInt64
    /// Mapped ranges `[start, end)`, sorted by start, disjoint; touching ranges are kept apart
    /// (merging them would not change a placement).
    private(set) var mapped: [(start: UInt64, end: UInt64)] = []

    init(ceiling: UInt64, floor: UInt64) {
        precondition(ceiling % PageGeometry.pageSize == 0 && floor % PageGeometry.pageSize == 0 && floor < ceiling)
        self.ceiling = ceiling
        self.floor = floor
    }

    /// Whether `[start, start + length)` lies between floor and ceiling and overlaps nothing mapped.
    func isFree(_ start: UInt64, length: UInt64) -> Bool {
        guard start >= floor, length <= ceiling - start else { return false }
        return !mapped.contains { $0.start < start + length && start < $0.end }
    }

    /// The address Linux would choose for `length` bytes (page-aligned), nil when nothing fits. A
    /// `hint` is taken as it is when the range there is free (Linux: the `addr` test at the top of
    /// `arch_get_unmapped_area_topdown()`); otherwise the highest fitting gap's top.
    func address(length: UInt64, hint: UInt64? = nil) -> UInt64? {
        precondition(length > 0 && length % PageGeometry.pageSize == 0)
        if let hint, hint % PageGeometry.pageSize == 0, isFree(hint, length: length) { return hint }
        var gapEnd = ceiling
        for range in mapped.reversed() {
            if range.end < gapEnd, gapEnd - range.end >= length { return gapEnd - length }
            gapEnd = min(gapEnd, range.start)
            if gapEnd <= floor { return nil }
        }
        return gapEnd - floor >= length ? gapEnd - length : nil
    }

    /// Places `length` bytes as `mmap(hint, length, …)` would and records them.
    mutating func map(length: UInt64, hint: UInt64? = nil) -> UInt64? {
        guard let start = address(length: length, hint: hint) else { return nil }
        let i = mapped.firstIndex { $0.start > start } ?? mapped.endIndex
        mapped.insert((start, start + length), at: i)
        return start
    }

    /// Forgets `[start, start + length)`, splitting ranges it cuts (Linux: `do_munmap()`).
    mutating func unmap(_ start: UInt64, length: UInt64) {
        let end = start + length
        var kept: [(start: UInt64, end: UInt64)] = []
        kept.reserveCapacity(mapped.count + 1)
        for r in mapped {
            if r.end <= start || r.start >= end { kept.append(r); continue }
            if r.start < start { kept.append((r.start, start)) }
            if r.end > end { kept.append((end, r.end)) }
        }
        mapped = kept
    }
}
