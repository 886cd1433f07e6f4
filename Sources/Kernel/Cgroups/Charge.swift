import Synchronization
import VMCore
import PhysicalMemory

extension AddressSpace {
    /// Charges a new folio of 2^`order` pages at `head` to this process's cgroup, reclaiming from the
    /// cgroup and, for small folios, calling its OOM killer when the charge would pass `memory.max`
    /// (Linux: `mem_cgroup_charge()` → `charge_memcg()` → `try_charge_memcg()`). A process in the
    /// root cgroup pays one branch. When it returns false the caller frees the folio (uncharged) and
    /// falls back or fails the fault.
    @inline(__always) func charge(_ head: PFN, order: PageOrder) -> Bool {
        guard let memcgRef else { return true }
        let pages = order.pages
        // 0: charged, within `memory.high`; 1: charged, over it; 2: over `memory.max`.
        let outcome = memcgRef._withUnsafeGuaranteedRef { memcg -> Int in
            guard memcg.tryCharge(pages) else { return 2 }
            kernel.chargeRecords._withUnsafeGuaranteedRef { $0.record(head, pages: pages, memcg) }
            return memcg.usagePages > memcg.highPages.load(ordering: .relaxed) ? 1 : 0
        }
        if _fastPath(outcome == 0) { return true }
        return chargeOverHighOrMax(head, pages: pages, charged: outcome == 1)
    }

    /// The rarer outcomes of `charge`: the charge went through but passed `memory.high` (reclaim
    /// from the cgroup), or it would pass `memory.max` (the slow path).
    @inline(never)
    private func chargeOverHighOrMax(_ head: PFN, pages: Int, charged: Bool) -> Bool {
        guard let memcg else { return true }
        if charged {
            kernel.reclaimHigh(memcg, holding: self)
            return true
        }
        return kernel.chargeSlow(memcg, head, pages: pages, for: self)
    }

    /// Charges a new folio only if it fits under `memory.max` now: for callers holding a page-table
    /// lock, which may not reclaim (Linux: a charge with `GFP_NOWAIT`, failing instead of reclaiming).
    func chargeWithoutReclaim(_ head: PFN, order: PageOrder) -> Bool {
        guard let memcg else { return true }
        guard memcg.tryCharge(order.pages) else {
            memcg.count(.max)
            return false
        }
        kernel.memoryCgroups.record(head, pages: order.pages, memcg)
        return true
    }

    /// Charges a page table just allocated for this process to its cgroup, and counts it in the
    /// cgroup's `pagetables` (Linux allocates user page tables with `GFP_PGTABLE_USER`, which has
    /// `__GFP_ACCOUNT`: `pagetable_alloc()` → `__memcg_kmem_charge_page()`, `NR_PAGETABLE` per memcg).
    /// In a fault (`mayReclaim`) the charge is a small one like a 4 KiB page's: over `memory.max` it
    /// reclaims from the cgroup and may call its OOM killer; false means the fault fails and the
    /// caller frees the table. Elsewhere (fork, mremap) the model charges without reclaim, past the
    /// limit if need be, where Linux would reclaim or fail with ENOMEM. The root pays one branch;
    /// nothing is charged per access. `Kernel.freeTable` uncharges.
    @inline(__always) func chargeTable(_ table: PageTable, mayReclaim: Bool) -> Bool {
        guard let memcgRef else { return true }
        if mayReclaim {
            guard charge(table.pfn, order: .base) else { return false }
        } else {
            memcgRef._withUnsafeGuaranteedRef { memcg in
                memcg.forceCharge(1)
                kernel.chargeRecords._withUnsafeGuaranteedRef { $0.record(table.pfn, pages: 1, memcg) }
            }
        }
        memcgRef._withUnsafeGuaranteedRef { $0.pageTablePages.add(1, ordering: .relaxed) }
        return true
    }

    /// Counts a `memory.stat` event for this process's cgroup; nothing in the root.
    @inline(__always) func countMemcg(_ event: MemoryCgroup.StatEvent) {
        if let memcgRef { memcgRef._withUnsafeGuaranteedRef { $0.count(event) } }
    }
}

extension Kernel {
    /// Linux: `MAX_RECLAIM_RETRIES`.
    static let maxReclaimRetries = 16
    /// Charges of more pages than this never call the OOM killer (Linux: `PAGE_ALLOC_COSTLY_ORDER` 3 in
    /// `mem_cgroup_oom()`): a THP charge that reclaim cannot make room for fails, and the fault falls
    /// back to small pages.
    static let costlyChargePages = 1 << 3

    /// The slow path of a charge over `memory.max`: count a `max` event, reclaim from the cgroup,
    /// retry; after `MAX_RECLAIM_RETRIES` failed rounds call the cgroup's OOM killer (small charges
    /// only) and retry while it kills; fail when the faulting process itself was killed or nothing
    /// could be (Linux: `try_charge_memcg()`).
    func chargeSlow(_ memcg: MemoryCgroup, _ head: PFN, pages: Int, for mm: AddressSpace) -> Bool {
        var retries = Self.maxReclaimRetries
        while true {
            if memcg.tryCharge(pages) {
                memoryCgroups.record(head, pages: pages, memcg)
                return true
            }
            if mm.oomKilled.load(ordering: .relaxed) { return false }
            memcg.count(.max)
            let reclaimed = reclaimCgroup(memcg, pages: pages, holding: mm)
            if memcg.margin >= pages { continue }
            if retries > 0 {
                retries -= 1
                // Linux retries without counting a round when small charges made progress; the model
                // counts every round so that a cgroup that keeps losing its gains still ends.
                _ = reclaimed
                continue
            }
            guard pages <= Self.costlyChargePages else { return false }
            memcg.count(.oom)
            guard outOfMemory(in: memcg, faulting: mm) else { return false }
            if mm.oomKilled.load(ordering: .relaxed) { return false }
            retries = Self.maxReclaimRetries
        }
    }

    /// Reclaims pages from the cgroup while it is above `memory.high` (Linux: `reclaim_high()` from
    /// `mem_cgroup_handle_over_high()`, run when the task returns to user space; the model runs it
    /// after the charge and does not add the throttling sleep).
    func reclaimHigh(_ memcg: MemoryCgroup, holding mm: AddressSpace?) {
        let over = memcg.usagePages - memcg.highPages.load(ordering: .relaxed)
        guard over > 0 else { return }
        memcg.count(.high)
        reclaimCgroup(memcg, pages: max(over, Self.swapClusterMax), holding: mm)
    }

    /// Reclaim restricted to the folios charged to `memcg`: first its folios on the deferred-split
    /// queue (partially mapped ones, and underused THPs when `shrink_underused` is on), then its
    /// folios on the LRU lists while the cgroup may still swap (`memory.swap.max`) and the swap
    /// device has room. `mm` is a process whose mmap lock the caller holds for reading (the faulting
    /// one), which is not locked again. Returns the pages uncharged (Linux: `try_to_free_mem_cgroup_pages()` →
    /// `shrink_node_memcgs()`, with `shrink_slab()` for the memcg-aware deferred-split shrinker).
    @discardableResult
    func reclaimCgroup(_ memcg: MemoryCgroup, pages target: Int, holding mm: AddressSpace? = nil) -> Int {
        let before = memcg.usagePages
        func uncharged() -> Int { before - memcg.usagePages }
        vmstat.count(.allocstallNormal)
        deferredSplitScan(limit: 128, only: memcg)
        guard uncharged() < target else { return uncharged() }
        var swappedOut = 0
        var priority = Self.defaultPriority
        while priority >= 0 && uncharged() < target && swapDevice.usedSlots < swapDevice.capacity
                && mayStillSwap(memcg, holding: mm) {
            let owned: (PFN) -> Bool = { [memoryCgroups] in memoryCgroups.owner(of: $0) === memcg }
            let sizes = lru.pages
            var inactive = sizes.inactive >> priority, active = sizes.active >> priority
            while (inactive > 0 || active > 0) && uncharged() < target {
                if inactive > 0 {
                    let batch = min(inactive, Self.swapClusterMax)
                    inactive -= batch
                    _ = shrinkInactiveList(batch, by: .direct, &swappedOut, only: owned)
                }
                if active > 0 {
                    let batch = min(active, Self.swapClusterMax)
                    active -= batch
                    if inactiveIsLow() { shrinkActiveList(batch, only: owned) }
                }
            }
            priority -= 1
        }
        return max(0, uncharged())
    }

    /// Whether the cgroup is below `memory.swap.max` (Linux: `mem_cgroup_get_nr_swap_pages()` > 0).
    func mayStillSwap(_ memcg: MemoryCgroup, holding mm: AddressSpace? = nil) -> Bool {
        let limit = memcg.swapMaxPages.load(ordering: .relaxed)
        return limit == Int.max || (limit > 0 && swapPages(of: memcg, holding: mm) < limit)
    }

    /// Pages of swap the cgroup's processes hold (Linux: `memory.swap.current`; the model counts the
    /// swap entries in its processes' page tables, so an entry shared after fork counts in each).
    func swapPages(of memcg: MemoryCgroup, holding held: AddressSpace? = nil) -> Int {
        memcg.processes.reduce(0) { sum, mm in
            let bytes = { mm.vmas.areas.reduce(UInt64(0)) { $0 + mm.swappedBytes(in: $1) } }
            return sum + Int((mm === held ? bytes() : mm.mmapLock.withReadLock(bytes)) >> PageGeometry.pageShift)
        }
    }
}
