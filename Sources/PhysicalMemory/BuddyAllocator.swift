import Synchronization
import VMCore

/// The binary buddy allocator of one zone: free blocks of 2^order frames, orders 0 through 10, on one
/// free list per order, threaded through the frame table (Linux: `mm/page_alloc.c`, `struct free_area`).
///
/// A free block of order `o` starts at a PFN aligned to 2^o; its buddy is `pfn ^ (1 << o)`. Freeing
/// merges a block with its buddy while the buddy is free at the same order, so no two free buddies of
/// one order ever coexist.
///
/// **Untouched blocks.** The max-order blocks at the bottom of memory that nothing has allocated yet
/// are on no list: their records stay zero, so the host backs none of the frame table they cover
/// (a 1 TiB machine declares 4 GiB of records; a run costs the host what it touches). They are the
/// max-order list's cold end, in the order the boot-time loop would have linked them, so allocation
/// order is the same as with every block listed; the next one is taken when the list is empty, and
/// `isolateFreePage` lists them down to the one it needs (Linux: `DEFERRED_STRUCT_PAGE_INIT`,
/// `deferred_grow_zone()`).
///
/// ```
///  PFN 0                     untouched × 2^10                                       frames.count
///  | untouched max-order blocks | blocks the allocator has handed out or listed | tail blocks |
///    (all-zero records)           (max-order list: freed blocks first, then the listed ones, top down)
/// ```
public final class BuddyAllocator: @unchecked Sendable {
    public let frames: FrameTable
    public let watermarks: Watermarks

    /// Inline, beside the lock: a refill touches the lock's lines and no array buffer of its own.
    struct FreeLists {
        var heads = InlineArray<11, UInt32>(repeating: FrameTable.noLink)
        var blocks = InlineArray<11, Int>(repeating: 0)
        /// Max-order blocks from PFN 0 up that have never been on a list (see "Untouched blocks").
        var untouched = 0
    }
    /// The zone lock (Linux: `zone->lock`) and what it guards.
    let lists = SpinLocked(FreeLists())
    /// Base pages on the free lists; readable without the lock. With the per-CPU lists' pages it
    /// makes `freePages`. It changes only under the zone lock, so a CPU allocating from its own list
    /// does not write a line other CPUs read (docs/performance.md, concurrent huge faults). Linux's
    /// `NR_FREE_PAGES` is this count alone: it leaves per-CPU-list pages out, where the model's
    /// `freePages` (and so `MemFree`) counts them.
    let freeCount = Atomic<Int>(0)

    /// Which watermark an allocation may not go below.
    public enum Reserve: Sendable {
        /// Ordinary allocations stop at the min watermark (Linux: `ALLOC_WMARK_MIN`).
        case min
        /// Allocations that may use everything (Linux: `ALLOC_NO_WATERMARKS`).
        case none
    }

    /// The per-CPU lists (see `PerCPUPageLists.swift`).
    let perCPU: PerCPUPageLists

    /// Builds the allocator with every frame free; `perCPULists` turns on the per-CPU lists, one set
    /// for each of `cpus` CPUs.
    public init(frames: FrameTable, watermarks: Watermarks, perCPULists: Bool = false,
                cpus: Int = SimulatedCPU.defaultCount) {
        self.frames = frames
        self.watermarks = watermarks
        perCPU = PerCPUPageLists(totalPages: frames.count, enabled: perCPULists, cpus: cpus)
        // Whole max-order blocks stay untouched; the smaller ones of a ragged end are listed, as the
        // largest aligned blocks that fit (Linux: `__free_pages_memory()`).
        let whole = frames.count >> Int(PageOrder.max.rawValue)
        lists.withLock { $0.untouched = whole }
        freeCount.store(whole << Int(PageOrder.max.rawValue), ordering: .relaxed)
        var pfn = whole << Int(PageOrder.max.rawValue)
        while pfn < frames.count {
            var order = Int(PageOrder.max.rawValue) - 1
            while order > 0 && (pfn & ((1 << order) - 1) != 0 || pfn + (1 << order) > frames.count) { order -= 1 }
            freeToFreeLists(PFN(pfn), order: PageOrder(order))
            pfn += 1 << order
        }
    }

    /// Frames `0 ..< untouchedFrames` are in untouched max-order blocks: free, on no list, with
    /// all-zero records (see "Untouched blocks"). Exact when no CPU is allocating.
    public var untouchedFrames: Int { lists.withLock { $0.untouched } << Int(PageOrder.max.rawValue) }

    /// Free base pages now, on the free lists and on the per-CPU lists (a lockless sum: exact when no
    /// CPU is allocating or freeing).
    public var freePages: Int { freeCount.load(ordering: .relaxed) + perCPU.pages }

    /// Whether more than `pages` base pages are free. The common answer, from the free lists alone,
    /// reads one word; only near the bound are the per-CPU lists added in (Linux: `zone_watermark_ok()`
    /// with `zone_page_state()`, and the snapshot only below `percpu_drift_mark`).
    @inline(__always) public func hasFreePages(above pages: Int) -> Bool {
        freeCount.load(ordering: .relaxed) > pages || freePages > pages
    }

    /// Takes a block of 2^order frames, or nil when none is free above the reserve. The frames come
    /// back of kind `.free` with zero counts; the caller sets their kind (Linux: `__rmqueue_smallest()`
    /// behind `alloc_pages()`).
    public func allocate(order: PageOrder, reserve: Reserve = .min) -> PFN? {
        let wanted = order.pages
        if reserve == .min && !hasFreePages(above: watermarks.min + wanted - 1) { return nil }
        if perCPU.caches(order), let pfn = allocateFromPerCPUList(order) {
            return pfn
        }
        if let pfn = allocateFromFreeLists(order: order, reserve: reserve) { return pfn }
        // Blocks parked on per-CPU lists may be what is missing (Linux: `drain_all_pages()` on the
        // allocation slow path).
        guard drainPerCPULists() > 0 else { return nil }
        return allocateFromFreeLists(order: order, reserve: reserve)
    }

    /// The zone-lock path of `allocate`.
    func allocateFromFreeLists(order: PageOrder, reserve: Reserve) -> PFN? {
        let wanted = order.pages
        return lists.withLock { lists -> PFN? in
            if reserve == .min && !hasFreePages(above: watermarks.min + wanted - 1) { return nil }
            guard let pfn = takeBlock(order: order, &lists) else { return nil }
            freeCount.wrappingSubtract(wanted, ordering: .relaxed)
            return pfn
        }
    }

    /// Unlinks a free block of `order`, splitting a larger one if needed; the free count is the
    /// caller's (Linux: `__rmqueue_smallest()`).
    func takeBlock(order: PageOrder, _ lists: inout FreeLists) -> PFN? {
        var current = Int(order.rawValue)
        while current <= Int(PageOrder.max.rawValue) && lists.heads[current] == FrameTable.noLink { current += 1 }
        let pfn: PFN
        var preZeroed = false
        if current <= Int(PageOrder.max.rawValue) {
            pfn = PFN(lists.heads[current])
            preZeroed = frames.flags(pfn).contains(.preZeroed)
            unlink(pfn, order: current, &lists)
            frames.clear(pfn)
        } else {
            // The max-order list's cold end: the highest untouched block, whose records are zero.
            guard lists.untouched > 0 else { return nil }
            lists.untouched -= 1
            current = Int(PageOrder.max.rawValue)
            pfn = PFN(UInt32(lists.untouched << current))
        }
        // Split: give the upper halves back (Linux: `expand()`).
        while current > Int(order.rawValue) {
            current -= 1
            push(pfn + (1 << current), order: current, &lists, preZeroed: preZeroed)
        }
        // The taken block says so until its allocator writes its header (`allocateFolioNotingPreZeroed`).
        if _slowPath(preZeroed) { frames.insertFlagsUnshared(pfn, .preZeroed) }
        return pfn
    }

    /// Returns a block of 2^order frames, merging it with free buddies (Linux: `__free_one_page()`).
    /// - Precondition: the block was allocated at this order and nothing maps or references it.
    public func free(_ start: PFN, order: PageOrder) {
        precondition(start.isAligned(order: order), "freeing a misaligned block")
        if order.rawValue == 0 { frames.clear(start) } else { frames.clearFolio(start, order: order) }
        if perCPU.caches(order) {
            freeToPerCPUList(start, order: order)
            return
        }
        freeToFreeLists(start, order: order)
    }

    /// The zone-lock path of `free`: merge with free buddies and put on a free list.
    func freeToFreeLists(_ start: PFN, order: PageOrder) {
        lists.withLock { lists in
            var pfn = start
            var current = Int(order.rawValue)
            while current < Int(PageOrder.max.rawValue) {
                let buddy = pfn.buddy(order: PageOrder(current))
                guard buddy.index < frames.count,
                      frames.flags(buddy).contains(.buddy),
                      Int(frames.order(buddy).rawValue) == current else { break }
                unlink(buddy, order: current, &lists)
                frames.clear(buddy)
                pfn = min(pfn, buddy)
                current += 1
            }
            push(pfn, order: current, &lists)
            freeCount.wrappingAdd(order.pages, ordering: .relaxed)
        }
    }

    func push(_ pfn: PFN, order: Int, _ lists: inout FreeLists, preZeroed: Bool = false) {
        frames.setHeader(pfn, kind: .free, order: PageOrder(order), flags: preZeroed ? [.buddy, .preZeroed] : .buddy)
        let old = lists.heads[order]
        frames.setNextFree(pfn, old)
        frames.setPrevFree(pfn, FrameTable.noLink)
        if old != FrameTable.noLink { frames.setPrevFree(PFN(old), pfn.rawValue) }
        lists.heads[order] = pfn.rawValue
        lists.blocks[order] += 1
    }

    /// Puts the untouched blocks from the highest down to the one holding `pfn` on the max-order
    /// list's cold end, in that order, as they would have been listed at boot (Linux:
    /// `deferred_grow_zone()`). Nothing happens for a frame above the untouched ones.
    func listUntouched(downTo pfn: PFN, _ lists: inout FreeLists) {
        let shift = Int(PageOrder.max.rawValue)
        let target = pfn.index >> shift
        guard target < lists.untouched else { return }
        var tail = lists.heads[shift]
        while tail != FrameTable.noLink && frames.nextFree(PFN(tail)) != FrameTable.noLink { tail = frames.nextFree(PFN(tail)) }
        while lists.untouched > target {
            lists.untouched -= 1
            let block = PFN(UInt32(lists.untouched << shift))
            frames.setHeader(block, kind: .free, order: .max, flags: .buddy)
            frames.setNextFree(block, FrameTable.noLink)
            frames.setPrevFree(block, tail)
            if tail == FrameTable.noLink { lists.heads[shift] = block.rawValue } else { frames.setNextFree(PFN(tail), block.rawValue) }
            tail = block.rawValue
            lists.blocks[shift] += 1
        }
    }

    func unlink(_ pfn: PFN, order: Int, _ lists: inout FreeLists) {
        let next = frames.nextFree(pfn), prev = frames.prevFree(pfn)
        if prev == FrameTable.noLink { lists.heads[order] = next } else { frames.setNextFree(PFN(prev), next) }
        if next != FrameTable.noLink { frames.setPrevFree(PFN(next), prev) }
        lists.blocks[order] -= 1
    }

    /// Free blocks per order, as `/proc/buddyinfo` shows them.
    public var freeBlocksPerOrder: [Int] {
        lists.withLock { lists in
            (0..<lists.blocks.count).map { lists.blocks[$0] + ($0 == Int(PageOrder.max.rawValue) ? lists.untouched : 0) }
        }
    }

    /// The unusable free space index for `order`: the fraction of free memory that lies in blocks too
    /// small for an allocation of that order; 0 means none, 1 means all (Linux: `unusable_free_index()`
    /// in `mm/vmstat.c`, shown in debugfs `extfrag/unusable_index`).
    public func unusableFreeIndex(order: PageOrder) -> Double {
        let blocks = freeBlocksPerOrder
        let total = blocks.enumerated().reduce(0) { $0 + $1.element << $1.offset }
        guard total > 0 else { return 0 }
        let usable = blocks.enumerated().reduce(0) { $0 + ($1.offset >= Int(order.rawValue) ? $1.element << $1.offset : 0) }
        return Double(total - usable) / Double(total)
    }

    /// Walks every free list and calls `body(head, order)` for each free block; with `untouched`, the
    /// untouched blocks after the max-order list, highest first.
    public func forEachFreeBlock(untouched: Bool = true, _ body: (PFN, PageOrder) -> Void) {
        lists.withLock { lists in
            for order in 0...Int(PageOrder.max.rawValue) {
                var cursor = lists.heads[order]
                while cursor != FrameTable.noLink {
                    body(PFN(cursor), PageOrder(order))
                    cursor = frames.nextFree(PFN(cursor))
                }
            }
            guard untouched else { return }
            for block in stride(from: lists.untouched - 1, through: 0, by: -1) {
                body(PFN(UInt32(block << Int(PageOrder.max.rawValue))), .max)
            }
        }
    }
}

/// The min/low/high free-page watermarks of a zone (Linux: `zone->_watermark`, set by
/// `__setup_per_zone_wmarks()`).
public struct Watermarks: Sendable, Equatable {
    public var min: Int
    public var low: Int
    public var high: Int
    public init(min: Int, low: Int, high: Int) {
        precondition(min <= low && low <= high)
        self.min = min; self.low = low; self.high = high
    }
    /// No reserve at all: every frame is allocatable (for small test machines).
    public static let zero = Watermarks(min: 0, low: 0, high: 0)

    /// Linux's defaults for a zone of `pages` base pages: `min_free_kbytes = sqrt(16 × kB)` clamped to
    /// 128 kB…256 MiB (Linux: `calculate_min_free_kbytes()`), and low/high gaps of the larger of min/4
    /// and 0.1 % of the zone (`watermark_scale_factor` = 10).
    public static func linuxDefaults(pages: Int) -> Watermarks {
        let kilobytes = pages * 4
        var minKB = Int(Double(kilobytes * 16).squareRoot())
        minKB = Swift.min(Swift.max(minKB, 128), 262_144)
        let minPages = minKB / 4
        let gap = Swift.max(minPages / 4, pages * 10 / 10_000)
        return Watermarks(min: minPages, low: minPages + gap, high: minPages + 2 * gap)
    }
}
