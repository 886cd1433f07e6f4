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
/// one the whole cluster, and reads every slot of the window that swap entries name. On a
/// non-rotational device (`SwapConfiguration.clusters`) today's kernel reads ahead by address
/// instead: the swap entries of the faulting VMA around the fault, within its PTE table, sized the
/// same way from state kept per VMA (`swap_vma_readahead()`).
///
/// A read-ahead page is charged as the faulting page is, to the cgroup its slot's swap is charged to
/// (`AddressSpace.swapInCgroup(slot:)`), goes on the inactive
/// list unmapped and clean, standing for its slot in the swap cache, and counts in `pswpin` (or
/// `swpin_zero`); a fault that later finds it maps it without a read (a minor fault) and counts
/// `swap_ra_hit`. Reclaim frees it like any clean cached page. The fault does not wait for the
/// read-ahead reads (Linux submits them unplugged with its own and waits for its page only).
///
/// Not modelled: the workingset's activation of refaulting pages (`workingset_refault()`), and the
/// OOM killer for a read-ahead page's charge (a page its cgroup has no room for after one round of
/// reclaim is not read).
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
        case .adaptive:
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

    /// Whether swap-ins read ahead by the faulting VMA's addresses rather than by slot clusters: today's
    /// design on a non-rotational device (Linux: `swap_use_vma_readahead()`, with
    /// `/sys/kernel/mm/swap/vma_ra_enabled` on and no rotational device in use).
    var readsAheadByVMA: Bool { design.swapReadahead == .adaptive && swapDevice.hasClusters }

    /// The largest VMA readahead window, as a power of two (Linux: `SWAP_RA_ORDER_CEILING` on 64-bit).
    static let vmaReadaheadOrderCeiling = 5
}

/// A VMA's readahead state: the address of the last fault or swap-cache hit in it, the window then,
/// and the read-ahead pages found since (Linux: `vma->swap_readahead_info`, `SWAP_RA_VAL()`; a VMA
/// without one reads as 4 hits at address 0, window 0).
struct VMASwapReadahead {
    var address: UInt64 = 0
    var window = 0
    var hits = 4
    /// Linux keeps the hits in the low bits of the word (`SWAP_RA_HITS_MAX`).
    static let maxHits = 63
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
        let counts = kernel.design.swapReadahead == .adaptive
        let faultIndex = vma.pageIndex(of: va)
        for s in window where s != slot {
            // Where it would be if its neighbour's order held; `swapIn` records where it is mapped.
            readAhead(slot: s, index: faultIndex &+ UInt64(bitPattern: Int64(s - slot)), marking: counts, &fault)
        }
    }

    /// Today's readahead on a non-rotational device: the window (`swap_vma_ra_win()`) — the VMA's
    /// state sized as `swapin_nr_pages()` sizes the global one, starting at the fault when it follows
    /// the last fault or hit, ending there when it precedes it, centred otherwise, within the VMA and
    /// the 2 MiB the fault's PTE table maps — then each swap entry of `table` in it, read ahead (Linux:
    /// `swap_vma_readahead()`, which reads the entries without the PTE lock).
    /// - Precondition: the mmap lock is held for reading, no page-table lock; `table` maps `va`.
    func readAheadByVMA(at va: VirtualAddress, _ vma: VMA, _ table: PageTable, _ fault: inout FaultContext) {
        let maxWindow = 1 << min(kernel.swapDevice.pageCluster, Kernel.vmaReadaheadOrderCeiling)
        guard maxWindow > 1 else { return }
        let page = Int(PageGeometry.pageSize)
        let faddr = Int(va.rawValue)
        let key = vma.start.rawValue
        let last = swapReadahead.withLock { $0[key] } ?? VMASwapReadahead()
        let window = SwapReadaheadState.pages(previousOffset: Int(last.address) / page, offset: faddr / page,
                                              hits: last.hits, maxPages: maxWindow, previousWindow: last.window)
        noteSwapReadahead(VMASwapReadahead(address: UInt64(faddr), window: window, hits: 0), for: key)
        guard window > 1 else { return }
        let previous = Int(last.address)
        let left = faddr == previous + page ? faddr
                 : previous == faddr + page ? faddr - window * page + page
                 : faddr - (window - 1) / 2 * page
        let pmd = Int(PageGeometry.pmdSize)
        let start = max(left, Int(vma.start.rawValue), faddr & ~(pmd - 1))
        let end = min(left + window * page, Int(vma.end.rawValue), (faddr & ~(pmd - 1)) + pmd)
        for address in stride(from: start, to: end, by: page) where address != faddr {
            let entry = table[VirtualAddress(UInt64(address)).tableIndex(.pte)]
            guard entry.isSwapEntry else { continue }
            readAhead(slot: entry.swapSlot, index: vma.pageIndex(of: VirtualAddress(UInt64(address))), marking: true, &fault)
        }
    }

    /// Records a VMA's readahead state, keyed by the VMA's start; entries of VMAs gone are dropped once
    /// they outnumber the VMAs (Linux keeps the word in the VMA; here the new part of a split VMA, and
    /// a VMA whose start a merge moved, start afresh).
    /// - Precondition: the mmap lock is held.
    func noteSwapReadahead(_ state: VMASwapReadahead, for key: UInt64) {
        swapReadahead.withLock { table in
            table[key] = state
            if table.count > max(64, 2 * vmas.count) {
                let starts = Set(vmas.areas.map(\.start.rawValue))
                table = table.filter { starts.contains($0.key) }
            }
        }
    }

    /// Reads slot `s` ahead into a new page for the swap cache, if it may (`SwapDevice.Map.mayReadAhead`),
    /// the page's place in the reverse map `index` (a guess for a read by slot, exact for one by
    /// address), marked `PG_readahead` when `marking` (today's design).
    private func readAhead(slot s: Int, index: UInt64, marking: Bool, _ fault: inout FaultContext) {
        let device = kernel.swapDevice
        guard device.map.withLock({ $0.mayReadAhead(s) }) else { return }
        guard let pfn = kernel.allocateAnonymousPage(zeroed: false, &fault.reclaim) else { return }
        kernel.countAllocation(pages: 1)
        guard kernel.chargeReadahead(pfn, to: swapInCgroup(slot: s), holding: self) else {
            kernel.putPage(pfn)
            return
        }
        kernel.memory.frames.insertFlags(pfn, .swapBacked)
        let buffer = kernel.memory.storage?.bytes(of: pfn)
        // On its list before a lookup can find it in the cache, so that the origin the fault that maps
        // it records comes after this one (Linux: the folio stays locked from `add_to_swap_cache()`
        // through `folio_add_lru()`). Meanwhile reclaim keeps it (unmapped, uncached) and migration
        // leaves it (this reference looks like a pin); the device's lock is a leaf, so not taken
        // around this.
        kernel.folioAddLRU(pfn, to: .inactive, family: anonFamily, index: index)
        let zeroFilled = device.map.withLock { m -> Bool? in
            // Checked again under the lock that keeps it so until the page stands for the slot.
            guard m.mayReadAhead(s) else { return nil }
            let zero = device.read(s, into: buffer, m)
            _ = kernel.addToSwapCache(pfn, slot: s, &m)
            if marking { m.readahead.insert(pfn) }
            return zero
        }
        guard let zeroFilled else {
            // Freed, it leaves its list in the free path.
            kernel.putPage(pfn)
            return
        }
        if zeroFilled { kernel.vmstat.count(.swpinZero) } else { kernel.countSwapIn(pages: 1) }
        if marking { kernel.vmstat.count(.swapRA) }
        // The cache's reference keeps it (`folio_put()` after the read is queued).
        kernel.putPage(pfn)
    }

    /// A fault on `va` in `vma` found `pfn` in the swap cache: if swap readahead read it, a hit (Linux:
    /// `swap_cache_get_folio()` → `folio_test_clear_readahead()`, `SWAP_RA_HIT`); the hit feeds the
    /// global window, or with readahead by VMA that VMA's state, which every hit moves to `va`
    /// (`swap_update_readahead()`).
    func noteSwapCacheHit(_ pfn: PFN, at va: VirtualAddress, _ vma: VMA) {
        let readahead = kernel.swapDevice.map.withLock { $0.readahead.remove(pfn) != nil }
        if readahead { kernel.vmstat.count(.swapRAHit) }
        guard kernel.readsAheadByVMA else {
            if readahead { kernel.swapReadaheadState.hit() }
            return
        }
        let key = vma.start.rawValue
        var state = swapReadahead.withLock { $0[key] } ?? VMASwapReadahead()
        state.address = va.rawValue
        if readahead { state.hits = min(state.hits + 1, VMASwapReadahead.maxHits) }
        noteSwapReadahead(state, for: key)
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
    /// `swapin_nr_pages()`).
    func window(for offset: Int, maxPages: Int) -> Int {
        lock.lock()
        defer { lock.unlock() }
        let found = hits
        hits = 0
        let pages = Self.pages(previousOffset: previousOffset, offset: offset, hits: found, maxPages: maxPages,
                               previousWindow: lastWindow)
        if found == 0 { previousOffset = offset }
        lastWindow = pages
        return pages
    }

    /// A window from the hits since the last read (Linux: `__swapin_nr_pages()`): with none, 2 pages
    /// for an offset beside the previous one and 1 otherwise; with some, the hits plus two rounded up
    /// to a power of two, at least 4; at most `maxPages`; never below half `previousWindow`.
    static func pages(previousOffset: Int, offset: Int, hits: Int, maxPages: Int, previousWindow: Int) -> Int {
        var pages: Int
        if hits == 0 {
            pages = offset == previousOffset + 1 || offset == previousOffset - 1 ? 2 : 1
        } else {
            pages = 4
            while pages < hits + 2 { pages <<= 1 }
        }
        pages = min(pages, maxPages)
        // It does not shrink faster than by half.
        return max(pages, previousWindow / 2)
    }
}
