import Synchronization
import VMCore
import PhysicalMemory

/// What a compaction run achieved (Linux: `enum compact_result`).
public enum CompactionResult: Equatable, Sendable {
    /// A free block of the order existed already; nothing was done (`COMPACT_SUCCESS` from
    /// `compaction_suitable()`... before any scanning, or `COMPACT_SKIPPED`).
    case skipped
    /// Migration made a free block of the order (`COMPACT_SUCCESS`).
    case success
    /// The scanners met without one (`COMPACT_COMPLETE`).
    case failed
}

/// Compaction: make a free block of a given order by moving movable pages out of the way.
///
/// Memory is looked at in pageblocks of 512 frames (order 9). The *migrate scanner* walks pageblocks
/// from the lowest PFN up, the *free scanner* from the highest down; a pageblock the migrate scanner
/// can empty (only free frames and small anonymous pages in it) has its pages migrated into free pages
/// the free scanner takes from the top, and the freed frames merge in the buddy allocator. It stops
/// when a free block of the wanted order exists, or when the scanners meet (Linux: `compact_zone()`,
/// `isolate_migratepages_block()`, `isolate_freepages_block()`, `__compact_finished()`).
///
/// ```
///  pfn 0 ──► migrate scanner                               free scanner ◄── last pfn
///  [ a . a . | . a . . | ###### | . . . . | . . a . ]     a: movable page, #: unmovable, .: free
///     ▲ emptied: a → free pages taken from the top
/// ```
/// Simplifications: one zone, no pageblock migratetypes, pages of page tables, shmem and the kernel are
/// unmovable, and huge pages are not moved (moving one would need a free pageblock, which is what
/// compaction is looking for). The reverse map of small pages is built once per run by walking the
/// page tables of every process (Linux follows each page's anon_vma instead).
extension Kernel {
    /// Frames per pageblock (Linux: `pageblock_nr_pages`).
    static let pageblockPages = PageGeometry.pmdOrder.pages

    /// Runs compaction until a free block of `order` exists or the scanners meet, counting
    /// `compact_migrate_scanned`, `compact_free_scanned` and `compact_isolated` (Linux: `compact_zone()`).
    /// - Precondition: no lock is held.
    @discardableResult
    public func compactZone(order: PageOrder = PageGeometry.pmdOrder) -> CompactionResult {
        var work = CompactionWork()
        return compactZone(order: order, &work)
    }

    /// `compactZone(order:)` adding the frames it scanned and the pages it isolated to `work`.
    @discardableResult
    func compactZone(order: PageOrder, _ work: inout CompactionWork) -> CompactionResult {
        // Pages parked on per-CPU lists do not merge; give them back first, and after each pageblock
        // (Linux: `drain_all_pages()` around compaction).
        func freeBlockAvailable() -> Bool {
            memory.buddy.drainPerCPULists()
            return memory.buddy.hasFreeBlock(order: order)
        }
        if freeBlockAvailable() { return .skipped }
        let rmap = smallPageMappings()
        let frames = memory.frames
        let blocks = memory.totalPages / Self.pageblockPages
        var migrateBlock = 0
        var freeBlock = blocks - 1
        var freeCursor = memory.totalPages - 1

        /// The free scanner: the next free page from the top, above the migrate scanner's pageblock.
        func nextFreePage() -> PFN? {
            while freeBlock > migrateBlock {
                let blockStart = freeBlock * Self.pageblockPages
                while freeCursor >= blockStart {
                    let pfn = PFN(UInt32(freeCursor))
                    freeCursor -= 1
                    vmstat.count(.compactFreeScanned)
                    work.scanned &+= 1
                    if frames.kind(pfn) == .free, let page = memory.allocatePage(at: pfn, kind: .anonymous) {
                        countAllocation(pages: 1)
                        vmstat.count(.compactIsolated)
                        return page
                    }
                }
                freeBlock -= 1
                freeCursor = freeBlock * Self.pageblockPages + Self.pageblockPages - 1
            }
            return nil
        }

        while migrateBlock < freeBlock {
            defer { migrateBlock += 1 }
            let start = migrateBlock * Self.pageblockPages
            var movable: [PFN] = []
            var suitable = true
            for i in start..<(start + Self.pageblockPages) {
                let pfn = PFN(UInt32(i))
                vmstat.count(.compactMigrateScanned)
                work.scanned &+= 1
                switch frames.kind(pfn) {
                case .free: continue
                case .anonymous where frames.flags(pfn).isDisjoint(with: [.head, .tail]): movable.append(pfn)
                default: suitable = false
                }
                if !suitable { break }
            }
            guard suitable, !movable.isEmpty else { continue }
            for pfn in movable {
                guard let target = nextFreePage() else { return freeBlockAvailable() ? .success : .failed }
                vmstat.count(.compactIsolated)
                work.migrated &+= 1
                if case .migrated = migratePage(pfn, to: target, mappings: rmap[pfn] ?? []) { continue }
                putPage(target)
            }
            if freeBlockAvailable() { return .success }
        }
        return freeBlockAvailable() ? .success : .failed
    }

    /// Direct compaction by an allocation that found no free block: counts `compact_stall` and then
    /// `compact_success` or `compact_fail` (Linux: `__alloc_pages_direct_compact()`).
    /// What it did is added to `work`.
    func directCompaction(order: PageOrder, _ work: inout CompactionWork) -> Bool {
        vmstat.count(.compactStall)
        work.stalls &+= 1
        let done = compactZone(order: order, &work) != .failed
        vmstat.count(done ? .compactSuccess : .compactFail)
        return done
    }

    /// Every PTE that maps a small anonymous page, by page: a snapshot that migration re-checks under
    /// the mappers' locks (Linux: the anon_vma rmap walk of `try_to_migrate()`).
    func smallPageMappings() -> [PFN: [(AddressSpace, VirtualAddress)]] {
        var rmap: [PFN: [(AddressSpace, VirtualAddress)]] = [:]
        let frames = memory.frames
        for mm in addressSpaces {
            mm.mmapLock.withReadLock {
                guard !mm.hasExited else { return }
                for vma in mm.vmas.areas where !vma.isShared {
                    mm.forEachPTETable(vma.start, vma.end, huge: { _, _, _, _ in .handled }) { table, from, to in
                        var va = from
                        while va < to {
                            let entry = table[va.tableIndex(.pte)]
                            if entry.isMapped && !entry.isSpecial && frames.kind(entry.pfn) == .anonymous {
                                rmap[entry.pfn, default: []].append((mm, va))
                            }
                            va = va + PageGeometry.pageSize
                        }
                        return true
                    }
                }
            }
        }
        return rmap
    }
}

/// kcompactd, the background compaction thread: woken when an allocation of a huge page failed or the
/// `defrag` setting defers compaction, it runs at the next tick of simulated time and compacts until an
/// order-9 block is free (Linux: `kcompactd()`, `wakeup_kcompactd()`, counted as `compact_daemon_wake`).
public final class Kcompactd: Sendable {
    private let pending = Atomic<Bool>(false)
    init() {}

    /// Linux: `wakeup_kcompactd()`.
    func wake() { pending.store(true, ordering: .releasing) }

    /// Whether a wake-up is pending.
    public var isWoken: Bool { pending.load(ordering: .acquiring) }

    /// Runs one pass if woken (Linux: `kcompactd_do_work()`).
    func runIfWoken(_ kernel: Kernel) {
        guard pending.exchange(false, ordering: .acquiringAndReleasing) else { return }
        kernel.vmstat.count(.compactDaemonWake)
        kernel.compactZone(order: PageGeometry.pmdOrder)
    }
}

/// What a huge-page allocation may do when no order-9 block is free.
enum HugeAllocationDefrag {
    /// Fail at once.
    case none
    /// Compact directly, stalling the caller (`__GFP_DIRECT_RECLAIM`).
    case direct
    /// Fail at once and wake kcompactd (`__GFP_KSWAPD_RECLAIM` for a THP).
    case wakeKcompactd
}

extension TransparentHugepageSettings {
    /// What a huge-page fault's allocation does under `defrag`, for a VMA with or without
    /// `MADV_HUGEPAGE` (Linux: `vma_thp_gfp_mask()`; 2.6.38 had `always`, `madvise` and `never` with
    /// the same meanings).
    func faultDefrag(madvised: Bool) -> HugeAllocationDefrag {
        switch defrag {
        case .always: .direct
        case .defer: .wakeKcompactd
        case .deferMadvise: madvised ? .direct : .wakeKcompactd
        case .madvise: madvised ? .direct : .none
        case .never: .none
        }
    }
}
