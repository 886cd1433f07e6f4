import Synchronization
import VMCore
import PhysicalMemory

/// One kill by the OOM killer, as the kernel log reports it (Linux: `dump_header()` and "Memory
/// cgroup out of memory: Killed process PID … anon-rss:…kB", or "Out of memory: Killed process …",
/// from `__oom_kill_process()`).
public struct OOMKill: Sendable, Hashable {
    /// The cgroup whose `memory.max` was reached; empty for the system-wide OOM killer (the machine
    /// out of memory).
    public var cgroup: String
    /// The process killed.
    public var pid: Int
    /// The process whose charge failed; 0 when a write to `memory.max` called the OOM killer.
    public var triggeredBy: Int
    /// The victim's resident anonymous memory at death, in bytes (Linux: `anon-rss`).
    public var rssBytes: UInt64
    /// The victim's swap entries at death, in bytes.
    public var swapBytes: UInt64
    /// The victim's badness: resident and swapped pages, its page tables, and its `oom_score_adj`
    /// share (Linux: `oom_badness()`).
    public var points: Int
    /// Simulated time of the kill, nanoseconds.
    public var nanoseconds: UInt64
}

extension AddressSpace {
    /// Resident and swapped bytes (Linux: `get_mm_rss()` and `MM_SWAPENTS`), read from the page tables,
    /// and the page tables' own pages (`mm_pgtables_bytes()`).
    func oomFootprint() -> (rss: UInt64, swap: UInt64, pageTables: Int) {
        var rss: UInt64 = 0, swap: UInt64 = 0
        for vma in vmas.areas {
            rss += smapsEntry(for: vma).fields["Rss"] ?? 0
            swap += swappedBytes(in: vma)
        }
        return (rss, swap, pageTablePages())
    }

    /// The page tables below this mm's PGD — PUD, PMD and PTE tables, and the PTE tables deposited
    /// for huge PMDs — counted by walking them (Linux: `mm_pgtables_bytes()` / `PAGE_SIZE`, kept by
    /// `mm_inc_nr_ptes()` and `mm_inc_nr_pmds()` as tables come and go).
    /// - Precondition: the mmap lock is held.
    func pageTablePages() -> Int {
        func count(_ table: PageTable, _ level: PageTableLevel) -> Int {
            guard let lower = level.lower else { return 0 }
            var n = level == .pmd ? depositedTables(in: table).count : 0
            for i in 0..<PageGeometry.entriesPerTable {
                let entry = table[i]
                guard entry.isPresent, !entry.isHuge else { continue }
                n += 1 + count(kernel.table(at: entry), lower)
            }
            return n
        }
        return count(root, .pgd)
    }
}

extension Kernel {
    /// The cgroup's OOM killer: picks the process with the highest badness (`oomBadness`) among the
    /// live processes of the cgroup and of the cgroups below it (a later one on a tie, as the task
    /// walk does) and kills it, with the rest of its `memory.oom.group` if one is set, counting
    /// `oom_kill` in the victim's cgroup (and so in each one above it). A victim
    /// other than the faulting process exits now, its memory freed and uncharged (Linux: the OOM
    /// reaper); the faulting process, when chosen, is marked and exits when its fault returns
    /// (`AddressSpace.handleFault`). Returns whether a process was killed (Linux:
    /// `mem_cgroup_out_of_memory()` → `out_of_memory()` → `select_bad_process()`, `oom_badness()`,
    /// `oom_kill_process()`, `__oom_kill_process()`, `oom_reap_task_mm()`).
    /// - Precondition: the faulting process's mmap lock is held for reading, no page-table lock.
    func outOfMemory(in memcg: MemoryCgroup, faulting current: AddressSpace?) -> Bool {
        var chosen: (mm: AddressSpace, rss: UInt64, swap: UInt64, points: Int)?
        let total = oomTotalPages(memcg)
        for mm in memoryCgroups.processes(below: memcg) where !mm.oomKilled.load(ordering: .relaxed) {
            // The faulting mm's lock is already held for reading; the others' are taken.
            let footprint = mm === current ? mm.oomFootprint() : mm.mmapLock.withReadLock { mm.oomFootprint() }
            guard let points = Self.oomBadness(mm, footprint, totalPages: total) else { continue }
            if let c = chosen, points < c.points { continue }
            chosen = (mm, footprint.rss, footprint.swap, points)
        }
        guard let victim = chosen else { return false }
        let group = oomGroup(of: victim.mm, domain: memcg)
        kill(victim.mm, rss: victim.rss, swap: victim.swap, points: victim.points, domain: memcg.name, current: current)
        if let group { killGroup(group, domain: memcg.name, current: current, holdingCurrent: true) }
        return true
    }

    /// Kills `mm`, chosen by the OOM killer of `domain` ("" for the system-wide one): marks it, counts
    /// `oom_kill` in its cgroup (and those above) and in `/proc/vmstat`, records the kill, and makes it
    /// exit now unless it is `current`, which exits as its fault returns (Linux: `__oom_kill_process()`).
    private func kill(_ mm: AddressSpace, rss: UInt64, swap: UInt64, points: Int, domain: String, current: AddressSpace?) {
        mm.oomKilled.store(true, ordering: .relaxed)
        mm.memcg?.count(.oomKill)
        vmstat.count(.oomKill)   // `count_vm_event(OOM_KILL)`
        memoryCgroups.kills.withLock {
            $0.append(OOMKill(cgroup: domain, pid: mm.pid, triggeredBy: current?.pid ?? 0, rssBytes: rss,
                              swapBytes: swap, points: points, nanoseconds: clock.now))
        }
        if mm !== current { mm.exit() }
    }

    /// The highest cgroup with `memory.oom.group` set from the victim's cgroup up to the OOM killer's
    /// `domain` (nil: the root), or nil (Linux: `mem_cgroup_get_oom_group()`).
    private func oomGroup(of victim: AddressSpace, domain: MemoryCgroup?) -> MemoryCgroup? {
        var group: MemoryCgroup?
        var level = victim.memcg
        while let c = level {
            if c.oomGroup.load(ordering: .relaxed) { group = c }
            if c === domain { break }
            level = c.parent
        }
        return group
    }

    /// Kills every other live process below `group` too, counting `oom_group_kill` in it (Linux:
    /// `oom_kill_process()` → `memcg_memory_event(oom_group, MEMCG_OOM_GROUP_KILL)`,
    /// `mem_cgroup_scan_tasks(oom_group, oom_kill_memcg_member)`). `holdingCurrent`: the caller holds
    /// `current`'s mmap lock for reading (a cgroup's OOM killer, inside the fault).
    private func killGroup(_ group: MemoryCgroup, domain: String, current: AddressSpace?, holdingCurrent: Bool) {
        group.count(.oomGroupKill)
        for mm in memoryCgroups.processes(below: group) where !mm.oomKilled.load(ordering: .relaxed) {
            let footprint = holdingCurrent && mm === current ? mm.oomFootprint() : mm.mmapLock.withReadLock { mm.oomFootprint() }
            kill(mm, rss: footprint.rss, swap: footprint.swap,
                 points: Int((footprint.rss + footprint.swap) >> PageGeometry.pageShift) + footprint.pageTables,
                 domain: domain, current: current)
        }
    }

    /// The system-wide OOM killer, for a fault of `current` that found no memory — free pages below
    /// the min watermark after direct reclaim — outside any cgroup's limit: picks the process with the
    /// highest badness among all live processes (a later one on a tie), kills it (and its
    /// `memory.oom.group`),
    /// counts `oom_kill` in `/proc/vmstat` and in the victim's cgroup, and records the kill (cgroup
    /// ""). A victim other than `current` exits now, its memory freed, and the fault is tried again;
    /// `current`, when chosen, is marked and exits as its fault returns. Returns the victim, or nil
    /// when no process is left to kill (Linux: `__alloc_pages_may_oom()` → `out_of_memory()` with no
    /// memcg → `select_bad_process()`, `oom_badness()`, `oom_kill_process()`; the allocation then
    /// retries).
    /// - Precondition: no page-table lock is held; `current`'s mmap lock is held for reading when
    ///   `holdingCurrent` (a GUP fault, whose caller keeps it: Linux runs the killer inside the
    ///   allocation, under that lock), and no mmap lock otherwise (a user fault drops it first).
    func outOfMemorySystemWide(faulting current: AddressSpace, holdingCurrent: Bool = false) -> AddressSpace? {
        var chosen: (mm: AddressSpace, rss: UInt64, swap: UInt64, points: Int)?
        let total = oomTotalPages(nil)
        for mm in addressSpaces where !mm.oomKilled.load(ordering: .relaxed) {
            let footprint = holdingCurrent && mm === current
                ? (mm.hasExited ? nil : mm.oomFootprint())
                : mm.mmapLock.withReadLock({ mm.hasExited ? nil : mm.oomFootprint() })
            guard let footprint, let points = Self.oomBadness(mm, footprint, totalPages: total) else { continue }
            if let c = chosen, points < c.points { continue }
            chosen = (mm, footprint.rss, footprint.swap, points)
        }
        guard let victim = chosen else { return nil }
        let group = oomGroup(of: victim.mm, domain: nil)
        kill(victim.mm, rss: victim.rss, swap: victim.swap, points: victim.points, domain: "", current: current)
        if let group { killGroup(group, domain: "", current: current, holdingCurrent: holdingCurrent) }
        return victim.mm
    }

    /// A process's badness: its resident and swapped pages and its page tables' pages, plus
    /// `oom_score_adj` thousandths of `totalPages`; nil for `oom_score_adj` -1000, which is never
    /// chosen (Linux: `oom_badness()`).
    static func oomBadness(_ mm: AddressSpace, _ footprint: (rss: UInt64, swap: UInt64, pageTables: Int),
                           totalPages: Int) -> Int? {
        let adj = mm.oomScoreAdj.load(ordering: .relaxed)
        guard adj != -1000 else { return nil }
        return Int((footprint.rss + footprint.swap) >> PageGeometry.pageShift) + footprint.pageTables
            + adj * (totalPages / 1000)
    }

    /// The pages the OOM killer weighs `oom_score_adj` against: a cgroup's `memory.max` plus what swap
    /// it may use (Linux: `mem_cgroup_get_max()`, capped at memory and swap), or all of memory and
    /// swap for the system-wide killer (`totalram_pages() + total_swap_pages`).
    func oomTotalPages(_ memcg: MemoryCgroup?) -> Int {
        let everything = memory.totalPages + swapDevice.capacity
        guard let memcg else { return everything }
        let max = min(memcg.limitPages, memory.totalPages)
        let swap = min(memcg.swapMaxPages.load(ordering: .relaxed), swapDevice.capacity)
        return Swift.max(1, max + swap)
    }

    /// Whether an allocation would find no page now: free memory at or below the min watermark.
    var isOutOfMemory: Bool { !memory.hasFreePages(above: memory.buddy.watermarks.min) }
}
