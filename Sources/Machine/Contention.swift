/// What sharing costs between the CPUs of a machine, in cycles unless named otherwise: cache-line
/// transfers, lock hand-offs, system calls, memory bandwidth, and the hold times of the kernel's
/// critical sections on the fault path. Used only when a machine has more than one CPU
/// (`SimulatedTime`); a one-CPU machine's figures do not depend on them.
///
/// The hold times are estimates of the instructions Linux runs under each lock (named per field),
/// not measurements; docs/concurrency.md ("Simulated time") lists them with their reasons.
public struct ContentionParameters: Sendable, Hashable {
    /// CPUs per socket (a socket shares a last-level cache and a memory controller).
    public var cpusPerSocket = 28
    /// Moving a modified cache line from another core of the same socket (a "HITM" snoop).
    public var sameSocketTransferCycles: Double = 100
    /// Moving a modified cache line from a core of another socket (over UPI / Infinity Fabric).
    public var remoteSocketTransferCycles: Double = 300
    /// Memory bandwidth of one socket in bytes per cycle, shared by the CPUs zeroing and copying pages
    /// at the same simulated time.
    public var socketBandwidthBytesPerCycle: Double = 48
    /// Entering and leaving the kernel for a system call (`entry_SYSCALL_64` to `sysret`).
    public var systemCallCycles: Double = 150
    /// Work a VMA-changing system call does under the mmap lock held for writing (`mmap_region()`,
    /// `do_munmap()` for one VMA, without the page work, which is charged as faults and flushes).
    public var mmapWriteHoldCycles: Double = 2_000
    /// An atomic read-modify-write on a line this CPU already owns (`lock xadd` in `down_read()`).
    public var atomicCycles: Double = 20
    /// Under the PMD lock in a huge fault: the `pmd_none()` re-check, `page_add_new_anon_rmap()`,
    /// the deposit of the PTE table, `set_pmd_at()`, the mm counters (`__do_huge_pmd_anonymous_page()`).
    public var hugePMDHoldCycles: Double = 400
    /// Under the PTE lock in a 4 KiB fault: the `pte_none()` re-check, rmap, `set_pte_at()`
    /// (`do_anonymous_page()`).
    public var ptePTEHoldCycles: Double = 200
    /// Under the PMD lock (or `page_table_lock`) installing a PTE table (`__pte_alloc()`: `pmd_populate()`).
    public var pteTableInstallHoldCycles: Double = 150
    /// Under `zone->lock`: taking an order-9 block off the free lists (`__rmqueue()` with its split).
    public var zoneHugeHoldCycles: Double = 600
    /// Under `zone->lock`: refilling a per-CPU list with a batch of 4 KiB pages (`rmqueue_bulk()`).
    public var zoneBatchHoldCycles: Double = 1_800
    /// 4 KiB pages a per-CPU list refill takes (`pcp->batch`, 31 on large zones).
    public var zoneBatchPages = 31
    /// Under `lru_lock`: adding a full per-CPU pagevec to the LRU lists (`__pagevec_lru_add()`).
    public var lruBatchHoldCycles: Double = 1_000
    /// Folios a per-CPU pagevec holds before it is added to the LRU (`PAGEVEC_SIZE`, 14; 15 in 5.x).
    public var lruBatchFolios = 14
    /// Under the PMD or PTE lock in `follow_page_mask()`: re-reading the entry and `get_page()`, an
    /// atomic on the page's count (and, in the 2010 design, the tail's) (`follow_trans_huge_pmd()`,
    /// `follow_page_pte()`).
    public var followPageHoldCycles: Double = 100
    /// The rest of a `get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)`: `find_vma_intersection()`, the walk
    /// down to the entry, `page_to_nid()`, `put_page()` (`do_get_mempolicy()`, `lookup_node()`).
    public var nodeLookupCycles: Double = 300
    /// Under a PTE table's lock in a zap, per entry cleared: `ptep_get_and_clear_full()`, the page's
    /// `page_remove_rmap()` (an atomic on its mapcount, a line of `struct page` the zap is the first
    /// to touch in a while), `tlb_remove_page()`'s store into the gather, the mm counter
    /// (`zap_pte_range()`).
    public var zapEntryCycles: Double = 60
    /// Under a PTE table's lock in a zap, per table: `pte_offset_map_lock()`'s walk to the entries and
    /// the lazy-MMU bracket around them (`zap_pte_range()`).
    public var zapTableHoldCycles: Double = 100
    /// Under the PMD lock zapping a huge PMD: `pmdp_get_and_clear()`, `page_remove_rmap()` of the huge
    /// page, the deposited table's withdrawal, the mm counter (`zap_huge_pmd()`).
    public var zapHugePMDHoldCycles: Double = 300
    /// Under `lru_lock`, per folio freed that was on an LRU list: `__ClearPageLRU()` and
    /// `del_page_from_lru_list()` (`release_pages()`).
    public var lruReleaseFolioCycles: Double = 50
    /// Folios `free_pages_and_swap_cache()` hands `release_pages()` at once, which takes `lru_lock`
    /// once for those of them on an LRU list (`PAGEVEC_SIZE`, 14, in 2.6.38; `folio_batch`es of 31
    /// for `folios_put_refs()` since 6.x: the model keeps 14 for both).
    public var releaseBatchFolios = 14
    /// Per folio freed, off every lock: `put_page_testzero()` and `free_hot_cold_page()` putting it on
    /// the CPU's per-CPU list (`release_pages()`, `free_unref_folios()`).
    public var freeFolioCycles: Double = 100
    /// 4 KiB pages a per-CPU list holds before a free gives `zoneBatchPages` of them back to the buddy
    /// lists under `zone->lock` (`free_pcppages_bulk()`): `pcp->high`, 6 × `pcp->batch` = 186 on large
    /// zones (2.6.38 `setup_pageset()`; later kernels tune it, 6.7+ upward).
    public var pcpHighPages = 186
    /// Per entry of a huge PMD split into 512 PTEs: the entry written (`set_pte_at()`) and, in 6.x,
    /// the page's mapcount raised (`__split_huge_pmd_locked()`); in 2.6.38 also each tail's count
    /// and flags set under `lru_lock` (`__split_huge_page_refcount()`) and its PTE under
    /// `page_table_lock` (`__split_huge_page_map()`).
    public var splitEntryCycles: Double = 40
    /// Under a PTE table's lock in mprotect, per entry whose protection changed:
    /// `ptep_modify_prot_start()`, `pte_modify()`, `ptep_modify_prot_commit()` — the entry alone, no
    /// `struct page` (`change_pte_range()`).
    public var protectEntryCycles: Double = 30
    /// Under the PMD lock changing a huge PMD's protection: `pmdp_get_and_clear()` (or 6.x's
    /// `pmdp_invalidate()`), `pmd_modify()`, `set_pmd_at()` (`change_huge_pmd()`).
    public var protectHugePMDHoldCycles: Double = 100
    /// Under the parent's PTE table's lock in fork, per entry copied: `get_page()` and
    /// `page_dup_rmap()` (atomics on the page's count and mapcount, `struct page` lines the copy is the
    /// first to touch in a while), the child's `set_pte_at()`, the rss counters (`copy_one_pte()`,
    /// 6.x `copy_present_pte()`); a write-protect adds an atomic (`ptep_set_wrprotect()`).
    public var forkEntryCycles: Double = 60
    /// Under the parent's PMD lock (and the child's) copying a huge PMD: `get_page()`,
    /// `page_dup_rmap()`, `pmdp_set_wrprotect()`, the deposit of a PTE table, `set_pmd_at()`
    /// (`copy_huge_pmd()`).
    public var forkHugePMDHoldCycles: Double = 300
    /// Under the source PTE table's lock (and the destination's) in mremap, per entry moved:
    /// `ptep_get_and_clear()`, `move_pte()`, `set_pte_at()` (`move_ptes()`).
    public var moveEntryCycles: Double = 40
    /// Pages reclaim isolates from the LRU lists under one hold of `lru_lock` (`isolate_lru_pages()`
    /// takes up to `SWAP_CLUSTER_MAX`, 32, per call of `shrink_inactive_list()`/`shrink_active_list()`).
    public var isolateBatchPages = 32

    public init() {}

    /// A preset's defaults: the socket size of the part the preset's core is sold in at its largest,
    /// transfer latencies from cache-to-cache measurements (Intel MLC `c2c`, AMD's and Chips and
    /// Cheese's published core-to-core latencies) and bandwidth from the memory channels
    /// (channels × transfer rate × 8 bytes at the preset's frequency). docs/concurrency.md cites each.
    public static func preset(named name: String) -> ContentionParameters {
        var c = ContentionParameters()
        switch name {
        case "skylake-sp":          // Xeon Platinum 8180: 28 cores, 6 × DDR4-2666 = 128 GB/s at 2.5 GHz
            c.cpusPerSocket = 28; c.sameSocketTransferCycles = 110; c.remoteSocketTransferCycles = 330
            c.socketBandwidthBytesPerCycle = 51
        case "icelake-sp":          // Xeon Platinum 8380: 40 cores, 8 × DDR4-3200 = 205 GB/s at 2.6 GHz
            c.cpusPerSocket = 40; c.sameSocketTransferCycles = 120; c.remoteSocketTransferCycles = 340
            c.socketBandwidthBytesPerCycle = 79
        case "zen3":                // EPYC 7763: 64 cores, 8 × DDR4-3200 = 205 GB/s at 3.0 GHz
            c.cpusPerSocket = 64; c.sameSocketTransferCycles = 250; c.remoteSocketTransferCycles = 600
            c.socketBandwidthBytesPerCycle = 68
        case "zen4":                // EPYC 9654: 96 cores, 12 × DDR5-4800 = 461 GB/s at 3.0 GHz
            c.cpusPerSocket = 96; c.sameSocketTransferCycles = 250; c.remoteSocketTransferCycles = 600
            c.socketBandwidthBytesPerCycle = 154
        case "zen5":                // EPYC 9755: 128 cores, 12 × DDR5-6000 = 576 GB/s at 2.6 GHz
            c.cpusPerSocket = 128; c.sameSocketTransferCycles = 220; c.remoteSocketTransferCycles = 550
            c.socketBandwidthBytesPerCycle = 221
        default: break
        }
        return c
    }

    /// Why these parameters cannot be used, or nil.
    public var problem: String? {
        if cpusPerSocket < 1 { return "cpus-per-socket must be at least 1" }
        if !(socketBandwidthBytesPerCycle > 0) { return "socket bandwidth must be positive" }
        if zoneBatchPages < 1 || lruBatchFolios < 1 || releaseBatchFolios < 1 || isolateBatchPages < 1 { return "batch sizes must be at least 1" }
        if pcpHighPages < zoneBatchPages { return "pcp-high must be at least the batch" }
        for v in [sameSocketTransferCycles, remoteSocketTransferCycles, systemCallCycles, mmapWriteHoldCycles, atomicCycles,
                  hugePMDHoldCycles, ptePTEHoldCycles, pteTableInstallHoldCycles, zoneHugeHoldCycles,
                  zoneBatchHoldCycles, lruBatchHoldCycles, followPageHoldCycles, nodeLookupCycles,
                  zapEntryCycles, zapTableHoldCycles, zapHugePMDHoldCycles, lruReleaseFolioCycles,
                  freeFolioCycles, splitEntryCycles, protectEntryCycles, protectHugePMDHoldCycles, forkEntryCycles,
                  forkHugePMDHoldCycles, moveEntryCycles] where !(v >= 0) {
            return "costs must not be negative"
        }
        return nil
    }
}
