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
    /// The victim's badness: resident plus swapped pages (Linux: `oom_badness()`; page tables left out).
    public var points: Int
    /// Simulated time of the kill, nanoseconds.
    public var nanoseconds: UInt64
}

extension AddressSpace {
    /// Resident and swapped bytes (Linux: `get_mm_rss()` and `MM_SWAPENTS`), read from the page tables.
    func oomFootprint() -> (rss: UInt64, swap: UInt64) {
        var rss: UInt64 = 0, swap: UInt64 = 0
        for vma in vmas.areas {
            rss += smapsEntry(for: vma).fields["Rss"] ?? 0
            swap += swappedBytes(in: vma)
        }
        return (rss, swap)
    }
}

extension Kernel {
    /// The cgroup's OOM killer: picks the process with the most resident plus swapped pages among the
    /// live processes of the cgroup and of the cgroups below it (a later one on a tie, as the task
    /// walk does) and kills it, counting `oom_kill` in the victim's cgroup (and so in each one above
    /// it). A victim
    /// other than the faulting process exits now, its memory freed and uncharged (Linux: the OOM
    /// reaper); the faulting process, when chosen, is marked and exits when its fault returns
    /// (`AddressSpace.handleFault`). Returns whether a process was killed (Linux:
    /// `mem_cgroup_out_of_memory()` → `out_of_memory()` → `select_bad_process()`, `oom_badness()`,
    /// `oom_kill_process()`, `__oom_kill_process()`, `oom_reap_task_mm()`).
    /// - Precondition: the faulting process's mmap lock is held for reading, no page-table lock.
    func outOfMemory(in memcg: MemoryCgroup, faulting current: AddressSpace?) -> Bool {
        var chosen: (mm: AddressSpace, rss: UInt64, swap: UInt64, points: Int)?
        for mm in memoryCgroups.processes(below: memcg) where !mm.oomKilled.load(ordering: .relaxed) {
            // The faulting mm's lock is already held for reading; the others' are taken.
            let footprint = mm === current ? mm.oomFootprint() : mm.mmapLock.withReadLock { mm.oomFootprint() }
            let points = Int((footprint.rss + footprint.swap) >> PageGeometry.pageShift)
            if let c = chosen, points < c.points { continue }
            chosen = (mm, footprint.rss, footprint.swap, points)
        }
        guard let victim = chosen else { return false }
        victim.mm.oomKilled.store(true, ordering: .relaxed)
        (victim.mm.memcg ?? memcg).count(.oomKill)
        vmstat.count(.oomKill)   // `__oom_kill_process()`: `count_vm_event(OOM_KILL)`
        memoryCgroups.kills.withLock {
            $0.append(OOMKill(cgroup: memcg.name, pid: victim.mm.pid, triggeredBy: current?.pid ?? 0, rssBytes: victim.rss,
                              swapBytes: victim.swap, points: victim.points, nanoseconds: clock.now))
        }
        if victim.mm !== current { victim.mm.exit() }
        return true
    }

    /// The system-wide OOM killer, for a fault of `current` that found no memory — free pages below
    /// the min watermark after direct reclaim — outside any cgroup's limit: picks the process with the
    /// most resident plus swapped pages among all live processes (a later one on a tie), kills it,
    /// counts `oom_kill` in `/proc/vmstat` and in the victim's cgroup, and records the kill (cgroup
    /// ""). A victim other than `current` exits now, its memory freed, and the fault is tried again;
    /// `current`, when chosen, is marked and exits as its fault returns. Returns the victim, or nil
    /// when no process is left to kill (Linux: `__alloc_pages_may_oom()` → `out_of_memory()` with no
    /// memcg → `select_bad_process()`, `oom_badness()`, `oom_kill_process()`; the allocation then
    /// retries).
    /// - Precondition: no mmap lock or page-table lock is held (the fault's lock was dropped).
    func outOfMemorySystemWide(faulting current: AddressSpace) -> AddressSpace? {
        var chosen: (mm: AddressSpace, rss: UInt64, swap: UInt64, points: Int)?
        for mm in addressSpaces where !mm.oomKilled.load(ordering: .relaxed) {
            guard let footprint = mm.mmapLock.withReadLock({ mm.hasExited ? nil : mm.oomFootprint() }) else { continue }
            let points = Int((footprint.rss + footprint.swap) >> PageGeometry.pageShift)
            if let c = chosen, points < c.points { continue }
            chosen = (mm, footprint.rss, footprint.swap, points)
        }
        guard let victim = chosen else { return nil }
        victim.mm.oomKilled.store(true, ordering: .relaxed)
        victim.mm.memcg?.count(.oomKill)
        vmstat.count(.oomKill)
        memoryCgroups.kills.withLock {
            $0.append(OOMKill(cgroup: "", pid: victim.mm.pid, triggeredBy: current.pid, rssBytes: victim.rss,
                              swapBytes: victim.swap, points: victim.points, nanoseconds: clock.now))
        }
        if victim.mm !== current { victim.mm.exit() }
        return victim.mm
    }

    /// Whether an allocation would find no page now: free memory at or below the min watermark.
    var isOutOfMemory: Bool { !memory.hasFreePages(above: memory.buddy.watermarks.min) }
}
