import Synchronization
import VMCore
import PhysicalMemory

extension AddressSpace {
    /// Charges a new folio of 2^`order` pages at `head` to this process's cgroup, reclaiming from the
    /// cgroup and, for small folios, calling its OOM killer when the charge would pass `memory.max`
    /// (Linux: `mem_cgroup_charge()` → `charge_memcg()` → `try_charge_memcg()`). A process in the
    /// root cgroup pays one branch. The charge counts in every cgroup above the process's too, and
    /// any of their limits can refuse it. When it returns false the caller frees the folio
    /// (uncharged) and falls back or fails the fault.
    @inline(__always) func charge(_ head: PFN, order: PageOrder) -> Bool {
        guard let memcgRef else { return true }
        let pages = order.pages
        // 0: charged, within every `memory.high`; 1: charged, over one; 2: over a `memory.max`.
        let outcome = memcgRef._withUnsafeGuaranteedRef { memcg -> Int in
            guard memcg.tryChargeHierarchy(pages) == nil else { return 2 }
            kernel.chargeRecords._withUnsafeGuaranteedRef { $0.record(head, pages: pages, memcg) }
            return memcg.isOverHigh() ? 1 : 0
        }
        if _fastPath(outcome == 0) { return true }
        return chargeOverHighOrMax(head, pages: pages, charged: outcome == 1)
    }

    /// The rarer outcomes of `charge`: the charge went through but passed a `memory.high` (reclaim
    /// from each cgroup over it), or it would pass a `memory.max` (the slow path).
    @inline(never)
    private func chargeOverHighOrMax(_ head: PFN, pages: Int, charged: Bool) -> Bool {
        guard let memcg else { return true }
        if charged {
            kernel.reclaimHigh(memcg, holding: self)
            return true
        }
        return kernel.chargeSlow(memcg, head, pages: pages, for: self)
    }

    /// The cgroup a page read from swap slot `slot` is charged to: the one the slot's swap is charged
    /// to while it is online, else this process's (Linux: `mem_cgroup_swapin_charge_folio()`: the
    /// memcg `swap_cgroup` recorded for the entry if `css_tryget_online()` takes it, else
    /// `get_mem_cgroup_from_mm()` — for a read-ahead page, which has no mm, the faulting task's).
    func swapInCgroup(slot: Int) -> MemoryCgroup? {
        let id = kernel.swapDevice.owner(of: slot)
        if id != 0, let owner = kernel.memoryCgroups.cgroup(index: Int(id)), !owner.removed.load(ordering: .relaxed) {
            return owner
        }
        return memcg
    }

    /// Charges the page a fault on swap slot `slot` reads for itself to `swapInCgroup(slot:)`, as
    /// `charge` charges this process's: reclaiming from that cgroup and calling its OOM killer over a
    /// `memory.max` (a process that swaps in a page another cgroup swapped out after fork charges
    /// that cgroup).
    func chargeSwapIn(_ pfn: PFN, slot: Int) -> Bool {
        guard let target = swapInCgroup(slot: slot), target !== memcg else { return charge(pfn, order: .base) }
        if target.tryChargeHierarchy(1) == nil {
            kernel.memoryCgroups.record(pfn, pages: 1, target)
            if target.isOverHigh() { kernel.reclaimHigh(target, holding: self) }
            return true
        }
        return kernel.chargeSlow(target, pfn, pages: 1, for: self)
    }

    /// Charges a new folio only if it fits under `memory.max` now: for callers holding a page-table
    /// lock, which may not reclaim (Linux: a charge with `GFP_NOWAIT`, failing instead of reclaiming).
    func chargeWithoutReclaim(_ head: PFN, order: PageOrder) -> Bool {
        guard let memcg else { return true }
        if let over = memcg.tryChargeHierarchy(order.pages) {
            over.count(.max)
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

    /// The slow path of a charge over a `memory.max` — the process's cgroup's or one above it, the
    /// cgroup over its limit: count a `max` event there, reclaim from it and the cgroups below it,
    /// retry; after `MAX_RECLAIM_RETRIES` failed rounds call its OOM killer (small charges only),
    /// which picks among the processes below it, and retry while it kills; fail when the faulting
    /// process itself was killed or nothing could be (Linux: `try_charge_memcg()` with
    /// `mem_over_limit`, `mem_cgroup_oom()`).
    func chargeSlow(_ memcg: MemoryCgroup, _ head: PFN, pages: Int, for mm: AddressSpace) -> Bool {
        var retries = Self.maxReclaimRetries
        while true {
            guard let over = memcg.tryChargeHierarchy(pages) else {
                memoryCgroups.record(head, pages: pages, memcg)
                return true
            }
            if mm.oomKilled.load(ordering: .relaxed) { return false }
            over.count(.max)
            let reclaimed = reclaimCgroup(over, pages: pages, holding: mm)
            if over.margin >= pages { continue }
            if retries > 0 {
                retries -= 1
                // Linux retries without counting a round when small charges made progress; the model
                // counts every round so that a cgroup that keeps losing its gains still ends.
                _ = reclaimed
                continue
            }
            guard pages <= Self.costlyChargePages else { return false }
            over.count(.oom)
            guard outOfMemory(in: over, faulting: mm) else { return false }
            if mm.oomKilled.load(ordering: .relaxed) { return false }
            retries = Self.maxReclaimRetries
        }
    }

    /// Reclaims pages from the cgroup and each one above it that is above its `memory.high`, from
    /// the process's cgroup up, and counts a `memory.swap.events` `high` in each one above its
    /// `memory.swap.high` (swap is not reclaimed) (Linux: `reclaim_high()` and
    /// `swap_find_max_overage()` from `mem_cgroup_handle_over_high()`, run when the task returns to
    /// user space; the model runs it after the charge and does not add the throttling sleep).
    func reclaimHigh(_ memcg: MemoryCgroup, holding mm: AddressSpace?) {
        var level: MemoryCgroup? = memcg
        while let c = level {
            let over = c.usagePages - c.highPages.load(ordering: .relaxed)
            if over > 0 {
                c.count(.high)
                reclaimCgroup(c, pages: max(over, Self.swapClusterMax), holding: mm)
            }
            if c.swapPages.load(ordering: .relaxed) > c.swapHighPages.load(ordering: .relaxed) {
                c.swapHighEvents.add(1, ordering: .relaxed)
            }
            level = c.parent
        }
    }

    /// Reclaim restricted to the folios charged to `memcg` and the cgroups below it: first their
    /// folios on the deferred-split queues (partially mapped ones, and underused THPs when `shrink_underused` is on), then its
    /// folios on the LRU lists while the cgroup may still swap (`memory.swap.max`) and the swap
    /// device has room. `mm` is a process whose mmap lock the caller holds for reading (the faulting
    /// one), which is not locked again. Returns the pages uncharged (Linux: `try_to_free_mem_cgroup_pages()` →
    /// `shrink_node_memcgs()`, with `shrink_slab()` for the memcg-aware deferred-split shrinker).
    @discardableResult
    func reclaimCgroup(_ memcg: MemoryCgroup, pages target: Int, holding mm: AddressSpace? = nil) -> Int {
        let before = memcg.usagePages
        func uncharged() -> Int { before - memcg.usagePages }
        for c in memoryCgroups.subtree(memcg) {
            deferredSplitScan(limit: 128, only: c)
            guard uncharged() < target else { return uncharged() }
        }
        guard uncharged() < target else { return uncharged() }
        var swappedOut = 0
        var priority = Self.defaultPriority
        let subtree = memoryCgroups.subtree(memcg).sorted { $0.id < $1.id }
        // `memory.min` and `memory.low` of the cgroups below it (`MemoryProtection.swift`).
        var protection: ReclaimProtection? = memoryCgroups.anyProtection ? ReclaimProtection(target: memcg) : nil
        while true {
            while priority >= 0 && uncharged() < target && swapDevice.usedSlots < swapDevice.capacity
                    && mayStillSwap(memcg) {
                // The lists of the cgroup and of each one below it (Linux: `shrink_node_memcgs()` from
                // the target memcg, `mem_cgroup_iter()` over its subtree).
                for c in subtree where uncharged() < target {
                    let verdict = protection?.verdict(for: c, in: memoryCgroups) ?? .scan
                    guard verdict != .skip else { continue }
                    // A cgroup below the target at its own `memory.swap.max` keeps its pages.
                    guard c === memcg || mayStillSwap(c, below: memcg) else { continue }
                    shrinkLruvec(Int(c.id), priority: priority, by: .cgroup, verdict, &swappedOut) { uncharged() >= target }
                }
                priority -= 1
            }
            // Nothing uncharged while `memory.low` was spared: once more without it.
            guard protection?.shouldRetry(freedNothing: uncharged() <= 0) == true else { break }
            priority = Self.defaultPriority
        }
        return max(0, uncharged())
    }

    /// Whether the cgroup and every one above it are below their `memory.swap.max` (Linux:
    /// `mem_cgroup_get_nr_swap_pages()` > 0, the least room on the way up), looking up to `top`
    /// (excluded; nil: the root). Reclaim asks it for each cgroup's lists, global reclaim's too
    /// (`can_reclaim_anon_pages()`).
    func mayStillSwap(_ memcg: MemoryCgroup?, below top: MemoryCgroup? = nil) -> Bool {
        var level = memcg
        while let c = level, c !== top {
            let limit = c.swapMaxPages.load(ordering: .relaxed)
            if limit != Int.max && c.swapPages.load(ordering: .relaxed) >= limit { return false }
            level = c.parent
        }
        return true
    }

    /// Swap pages charged to the cgroup and those below it (Linux: `memory.swap.current`, the
    /// `memcg->swap` page counter): each slot once, to the cgroup of the page written to it, until
    /// the slot is freed (`SwapDevice.charge`).
    func swapPages(of memcg: MemoryCgroup) -> Int { memcg.swapPages.load(ordering: .relaxed) }
}
