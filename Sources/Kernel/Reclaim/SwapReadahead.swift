import Synchronization
import VMCore
import PhysicalMemory

/// Swap readahead: a fault that must read its slot from the device reads the slots around it too, into
/// the swap cache, betting that the pages swapped out beside it come back soon (Linux:
/// `swapin_readahead()`; `mm/swap_state.c`).
///
/// ```
///  swap offsets:  | header | 1 … 7 | 8 … 15 | 16 … 23 | …       window = 2^page-cluster (8), aligned
///  fault on 11:            ─────── ▓▓▓▓▓▓▓▓                        reads 8…15: 11 for the fault, the
///                                                                  others into the cache (swap_ra)
/// ```
/// The window is the aligned cluster of `SwapConfiguration.pageCluster` that holds the slot, counted in
/// Linux's swap offsets: the device's first page is its header, so the model's slot `s` is offset
/// `s + 1`, and a run of pages written from the first slot on starts one short of a cluster boundary.
/// Which slots of the cluster are read, and how large it is, is the design's
/// (`KernelDesign.SwapReadahead`): 2.6.38 reads the run of slots in use around the faulting one,
/// always the whole cluster; today's kernel sizes the window by the read-ahead pages faults found
/// since the last read (`swapin_nr_pages()`), so that a random swap-in reads one page and a sequential
/// one the whole cluster, and reads every slot of the window that swap entries name.
///
/// A read-ahead page is charged as the faulting page is, to the cgroup its slot's swap is charged to
/// (`AddressSpace.swapInCgroup(slot:)`), goes on the inactive
/// list unmapped and clean, standing for its slot in the swap cache, and counts in `pswpin` (or
/// `swpin_zero`); a fault that later finds it maps it without a read (a minor fault) and counts
/// `swap_ra_hit`. Reclaim frees it like any clean cached page. The fault does not wait for the
/// read-ahead reads (Linux submits them unplugged with its own and waits for its page only).
///
/// Not modelled: VMA-based readahead (`swap_vma_readahead()`, which today's kernel uses instead on
/// non-rotational devices), the workingset's activation of refaulting pages (`workingset_refault()`),
/// and the OOM killer for a read-ahead page's charge (a page its cgroup has no room for after one
/// round of reclaim is not read).
extension Kernel {
    /// The slots a fault that reads `slot` reads ahead, ascending, the faulting one among them; empty
    /// when it reads its own only (Linux: the window of `swap_cluster_readahead()`,
    /// `swapin_nr_pages()`; 2.6.38: `valid_swaphandles()`).
    func readaheadWindow(around slot: Int) -> Range<Int> {
        let cluster = 1 << swapDevice.pageCluster
        guard cluster > 1 else { return slot..<slot }
        // Linux's offsets: the header is offset 0, so the model's slot s is offset s + 1.
        let offset = slot + 1
        let lastOffset = swapDevice.capacity
        switch design.swapReadahead {
        case .adaptiveCluster:
            let pages = swapReadaheadState.window(for: offset, maxPages: cluster)
            guard pages > 1 else { return slot..<slot }
            let mask = pages - 1
            let first = max(1, offset & ~mask), last = min(lastOffset, offset | mask)
            return (first - 1)..<last
        case .contiguousSlots:
            let base = max(1, offset & ~(cluster - 1)), end = min(lastOffset + 1, (offset & ~(cluster - 1)) + cluster)
            return swapDevice.map.withLock { m -> Range<Int> in
                var high = offset
                while high + 1 < end && m.isUsed(high) { high += 1 }   // slot high is offset high + 1
                var low = offset
                while low - 1 >= base && m.isUsed(low - 2) { low -= 1 }
                return low == high ? slot..<slot : (low - 1)..<high
            }
        }
    }
}

extension AddressSpace {
    /// Reads ahead the slots of `window` other than `slot`, which this fault on `va` in `vma` reads
    /// itself: each that swap entries name, that no page stands for in the cache and whose bytes are
    /// written gets a new page, charged to its swap's cgroup, read (under the device's lock, as
    /// `swapcache_prepare()` holds the slot) and cached, on the inactive list (Linux:
    /// `swap_cluster_readahead()` → `__read_swap_cache_async()`, `swap_read_folio()`,
    /// `folio_set_readahead()`, `count_vm_event(SWAP_RA)`; 2.6.38: `read_swap_cache_async()`).
    /// - Precondition: the mmap lock is held for reading, no page-table lock.
    func readAhead(_ window: Range<Int>, around slot: Int, at va: VirtualAddress, _ vma: VMA,
                   _ fault: inout FaultContext) {
        let device = kernel.swapDevice
        let frames = kernel.memory.frames
        let counts = kernel.design.swapReadahead == .adaptiveCluster
        let faultIndex = vma.pageIndex(of: va)
        for s in window where s != slot {
            guard device.map.withLock({ $0.mayReadAhead(s) }) else { continue }
            guard let pfn = kernel.allocateAnonymousPage(zeroed: false, &fault.reclaim) else { continue }
            kernel.countAllocation(pages: 1)
            guard kernel.chargeReadahead(pfn, to: swapInCgroup(slot: s), holding: self) else {
                kernel.putPage(pfn)
                continue
            }
            frames.insertFlags(pfn, .swapBacked)
            let buffer = kernel.memory.storage?.bytes(of: pfn)
            // On its list before a lookup can find it in the cache, so that the origin the fault that
            // maps it records comes after this guess, from where it would be if its neighbour's order
            // held (Linux: the folio stays locked from `add_to_swap_cache()` through
            // `folio_add_lru()`). Meanwhile reclaim keeps it (unmapped, uncached) and migration leaves
            // it (this reference looks like a pin); the device's lock is a leaf, so not taken around this.
            let index = faultIndex &+ UInt64(bitPattern: Int64(s - slot))
            kernel.folioAddLRU(pfn, to: .inactive, family: anonFamily, index: index)
            let zeroFilled = device.map.withLock { m -> Bool? in
                // Checked again under the lock that keeps it so until the page stands for the slot.
                guard m.mayReadAhead(s) else { return nil }
                let zero = device.read(s, into: buffer, m)
                _ = kernel.addToSwapCache(pfn, slot: s, &m)
                if counts { m.readahead.insert(pfn) }
                return zero
            }
            guard let zeroFilled else {
                // Freed, it leaves its list in the free path.
                kernel.putPage(pfn)
                continue
            }
            if zeroFilled { kernel.vmstat.count(.swpinZero) } else { kernel.countSwapIn(pages: 1) }
            if counts { kernel.vmstat.count(.swapRA) }
            // The cache's reference keeps it (`folio_put()` after the read is queued).
            kernel.putPage(pfn)
        }
    }
}

extension Kernel {
    /// Charges a read-ahead page to `memcg` (`AddressSpace.swapInCgroup(slot:)`; nil, the root,
    /// charges nothing), reclaiming from it once if it is at its `memory.max`; false when there is
    /// still no room (Linux: `mem_cgroup_swapin_charge_folio()`; the model calls no OOM killer for a
    /// read-ahead page). `mm` is the faulting process, whose mmap lock the caller holds for reading.
    func chargeReadahead(_ pfn: PFN, to memcg: MemoryCgroup?, holding mm: AddressSpace) -> Bool {
        guard let memcg else { return true }
        if let over = memcg.tryChargeHierarchy(1) {
            over.count(.max)
            reclaimCgroup(over, pages: 1, holding: mm)
            guard memcg.tryChargeHierarchy(1) == nil else { return false }
        }
        memoryCgroups.record(pfn, pages: 1, memcg)
        if memcg.isOverHigh() { reclaimHigh(memcg, holding: mm) }
        return true
    }

    /// A fault found `pfn` in the swap cache: if swap readahead read it, it is a hit for the window
    /// (Linux: `swap_cache_get_folio()` → `folio_test_clear_readahead()`, `SWAP_RA_HIT`,
    /// `swapin_readahead_hits`).
    func noteSwapCacheHit(_ pfn: PFN) {
        guard swapDevice.map.withLock({ $0.readahead.remove(pfn) != nil }) else { return }
        vmstat.count(.swapRAHit)
        swapReadaheadState.hit()
    }
}

/// The state of today's readahead window, global as Linux's is: read-ahead pages found since the last
/// read, the offset of the last read that found none, and the last window (Linux: the statics of
/// `swapin_nr_pages()`; `swapin_readahead_hits` starts at 4, so the first window is the whole cluster).
final class SwapReadaheadState: @unchecked Sendable {   // one lock guards all three
    private let lock = SpinLock()
    private var hits = 4
    private var previousOffset = 0
    private var lastWindow = 0

    func hit() {
        lock.lock()
        hits += 1
        lock.unlock()
    }

    /// The window, in pages, for a read of swap offset `offset`, at most `maxPages` (Linux:
    /// `swapin_nr_pages()` → `__swapin_nr_pages()`).
    func window(for offset: Int, maxPages: Int) -> Int {
        lock.lock()
        defer { lock.unlock() }
        let found = hits
        hits = 0
        var pages: Int
        if found == 0 {
            // No hits to judge by: the whole window only for the slot beside the last one read.
            pages = offset == previousOffset + 1 || offset == previousOffset - 1 ? 2 : 1
        } else {
            pages = 4
            while pages < found + 2 { pages <<= 1 }
        }
        pages = min(pages, maxPages)
        // It does not shrink faster than by half.
        pages = max(pages, lastWindow / 2)
        if found == 0 { previousOffset = offset }
        lastWindow = pages
        return pages
    }
}
