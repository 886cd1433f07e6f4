import VMCore
import PhysicalMemory

/// The files of a memory cgroup's directory that the model has, as `/sys/fs/cgroup/NAME/FILE` in a
/// v2 hierarchy (Documentation/admin-guide/cgroup-v2.rst, "Memory Interface Files").
public enum MemoryCgroupFile: String, CaseIterable, Sendable {
    case max = "memory.max"
    case high = "memory.high"
    case swapMax = "memory.swap.max"
    case swapHigh = "memory.swap.high"
    case min = "memory.min"
    case low = "memory.low"
    case reclaim = "memory.reclaim"
    case oomGroup = "memory.oom.group"
    case current = "memory.current"
    case peak = "memory.peak"
    case swapCurrent = "memory.swap.current"
    case swapEvents = "memory.swap.events"
    case stat = "memory.stat"
    case events = "memory.events"
    case eventsLocal = "memory.events.local"
    case procs = "cgroup.procs"

    /// Whether the file has a write handler (the others are mode 0444: EACCES on write).
    public var isWritable: Bool {
        switch self {
        case .max, .high, .swapMax, .swapHigh, .min, .low, .reclaim, .oomGroup, .procs: true
        default: false
        }
    }

    /// Files whose content is `key value` lines.
    public var isKeyed: Bool { self == .stat || self == .events || self == .eventsLocal || self == .swapEvents }
}

extension Kernel {
    /// Creates the memory cgroup at `path` below the root (Linux: `mkdir /sys/fs/cgroup/PATH`):
    /// "NAME" below the root, "PARENT/NAME" below the cgroup PARENT.
    /// - Throws: EINVAL for an empty, "." or ".." component or a newline, ENOENT when the parent does
    ///   not exist, EEXIST, EBUSY when the parent has processes (`MemoryCgroups.create`), ENOSPC
    ///   past `MemoryCgroups.maxCount`.
    @discardableResult
    public func createMemoryCgroup(_ name: String) throws(Errno) -> MemoryCgroup {
        try memoryCgroups.create(name)
    }

    /// Removes the memory cgroup at `path` (Linux: `rmdir /sys/fs/cgroup/PATH`), which must have no
    /// processes and no cgroups below it; what is charged to it stays charged (`MemoryCgroups.remove`).
    /// - Throws: ENOENT for an unknown cgroup, EBUSY when it has processes or children.
    public func removeMemoryCgroup(_ path: String) throws(Errno) {
        try memoryCgroups.remove(path)
    }

    /// Moves a process into `memcg` (nil: the root) (Linux: writing its pid to `cgroup.procs` →
    /// `cgroup_attach_task()`). In v2 the pages it already has stay charged where they are; only new
    /// charges go to the new cgroup.
    /// - Throws: EBUSY when `memcg` has cgroups below it (cgroup v2's "no internal processes": the
    ///   model enables the memory controller in every `cgroup.subtree_control`); ESRCH when the
    ///   process has exited.
    public func move(_ mm: AddressSpace, to memcg: MemoryCgroup?) throws(Errno) {
        if let memcg, memcg.childCount.load(ordering: .relaxed) > 0 { throw .EBUSY }
        let moved = mm.mmapLock.withWriteLock { () -> Bool in
            guard !mm.hasExited else { return false }
            if let old = mm.memcg { _ = old.members.withLock { $0.removeValue(forKey: mm.pid) } }
            mm.memcg = nil
            if let memcg { attachLocked(mm, to: memcg) }
            return true
        }
        if !moved { throw .ESRCH }
    }

    /// Puts a new process (fork's child) in `memcg`.
    func attach(_ mm: AddressSpace, to memcg: MemoryCgroup) { attachLocked(mm, to: memcg) }

    private func attachLocked(_ mm: AddressSpace, to memcg: MemoryCgroup) {
        mm.memcg = memcg
        memcg.members.withLock { $0[mm.pid] = WeakAddressSpace(mm) }
    }

    /// Reads `file` of the cgroup `name` as Linux prints it.
    /// - Throws: ENOENT for an unknown cgroup or file.
    public func readCgroupFile(_ name: String, _ file: String) throws(Errno) -> String {
        guard let memcg = memoryCgroups.cgroup(named: name), let f = MemoryCgroupFile(rawValue: file) else { throw .ENOENT }
        let page = Int(PageGeometry.pageSize)
        func limit(_ pages: Int) -> String { pages == Int.max ? "max\n" : "\(pages * page)\n" }
        switch f {
        case .max: return limit(memcg.limitPages)
        case .high: return limit(memcg.highPages.load(ordering: .relaxed))
        case .swapMax: return limit(memcg.swapMaxPages.load(ordering: .relaxed))
        case .swapHigh: return limit(memcg.swapHighPages.load(ordering: .relaxed))
        case .min: return limit(memcg.minPages.load(ordering: .relaxed))
        case .low: return limit(memcg.lowPages.load(ordering: .relaxed))
        case .current: return "\(memcg.usagePages * page)\n"
        case .peak: return "\(memcg.peak.load(ordering: .relaxed) * page)\n"
        case .swapCurrent: return "\(swapPages(of: memcg) * page)\n"
        case .swapEvents:
            // Linux: `swap_events_show()`.
            return "high \(memcg.swapHighEvents.load(ordering: .relaxed))\nmax \(memcg.swapMaxEvents.load(ordering: .relaxed))\nfail \(memcg.swapFailEvents.load(ordering: .relaxed))\n"
        case .procs: return memcg.processes.map { "\($0.pid)\n" }.joined()
        case .reclaim: throw .EINVAL   // write-only: no show handler (`cgroup_seqfile_show()`)
        case .oomGroup: return memcg.oomGroup.load(ordering: .relaxed) ? "1\n" : "0\n"
        case .events:
            return MemoryCgroup.Event.allCases.map { "\($0.name) \(memcg.value(of: $0))\n" }.joined()
        case .eventsLocal:
            return MemoryCgroup.Event.allCases.map { "\($0.name) \(memcg.localValue(of: $0))\n" }.joined()
        case .stat:
            return memoryStat(memcg).map { "\($0.name) \($0.value)\n" }.joined()
        }
    }

    /// The lines of `memory.stat` the model has, in Linux's order: sizes in bytes, then events
    /// (Linux: `memory_stat_format()` with `memory_stats[]` and `memcg_vm_event_stat[]`), each for
    /// the cgroup and the cgroups below it, as v2 prints them. Every charged page is anonymous in
    /// the model except the page tables (`pagetables`).
    public func memoryStat(_ memcg: MemoryCgroup) -> [(name: String, value: Int)] {
        let page = Int(PageGeometry.pageSize)
        let groups = memoryCgroups
        let tables = groups.subtreePageTablePages(memcg)
        return [("anon", (memcg.usagePages - tables) * page),
                ("pagetables", tables * page),
                ("anon_thp", groups.thpPages(of: memcg, memory.frames) * page),
                ("pgfault", groups.subtreeValue(of: .pgfault, memcg)),
                ("thp_fault_alloc", groups.subtreeValue(of: .thpFaultAlloc, memcg)),
                ("thp_collapse_alloc", groups.subtreeValue(of: .thpCollapseAlloc, memcg))]
    }

    /// Writes `value` to `file` of the cgroup `name`, as Linux's write handlers do.
    ///
    /// `memory.max`, `memory.high`, `memory.swap.max`, `memory.min`, `memory.low` take "max" or a byte count with an optional
    /// K/M/G/T/P/E suffix, rounded down to pages (Linux: `page_counter_memparse()` → `memparse()`).
    /// Lowering `memory.max` below the usage reclaims and then calls the OOM killer until the usage
    /// fits or nobody is left (Linux: `memory_max_write()`); lowering `memory.high` reclaims
    /// (`memory_high_write()`). `cgroup.procs` takes a pid and moves that process
    /// (`__cgroup_procs_write()`).
    /// - Throws: ENOENT for an unknown cgroup or file, EACCES for a read-only file, EINVAL for a
    ///   value the parser refuses, ESRCH for a pid with no live process.
    public func writeCgroupFile(_ name: String, _ file: String, _ value: String) throws(Errno) {
        guard let memcg = memoryCgroups.cgroup(named: name), let f = MemoryCgroupFile(rawValue: file) else { throw .ENOENT }
        guard f.isWritable else { throw .EACCES }
        let text = Self.kernelStrip(value)
        switch f {
        case .procs:
            guard let pid = Self.kstrtoint(text) else { throw .EINVAL }
            guard let mm = liveSpaces.withLock({ $0[pid]?.space }) else { throw .ESRCH }
            try move(mm, to: memcg)
        case .max:
            let pages = try Self.pageCounterMemparse(text)
            memcg.maxPages.store(pages, ordering: .relaxed)
            var reclaims = Self.maxReclaimRetries
            while memcg.usagePages > pages {
                if reclaims > 0 {
                    if reclaimCgroup(memcg, pages: memcg.usagePages - pages) == 0 { reclaims -= 1 }
                    continue
                }
                memcg.count(.oom)
                guard outOfMemory(in: memcg, faulting: nil) else { break }
            }
        case .high:
            let pages = try Self.pageCounterMemparse(text)
            memcg.highPages.store(pages, ordering: .relaxed)
            var reclaims = Self.maxReclaimRetries
            while memcg.usagePages > pages && reclaims > 0 {
                if reclaimCgroup(memcg, pages: memcg.usagePages - pages) == 0 { reclaims -= 1 }
            }
        case .swapMax:
            memcg.swapMaxPages.store(try Self.pageCounterMemparse(text), ordering: .relaxed)
        case .swapHigh:
            // `swap_high_write()`: the limit only; nothing is reclaimed.
            memcg.swapHighPages.store(try Self.pageCounterMemparse(text), ordering: .relaxed)
        case .reclaim:
            try proactiveReclaim(memcg, text)
        case .oomGroup:
            // `memory_oom_group_write()`: `kstrtoint()`, then 0 or 1.
            guard let v = Self.kstrtoint(text), v == 0 || v == 1 else { throw .EINVAL }
            memcg.oomGroup.store(v == 1, ordering: .relaxed)
        case .min, .low:
            // Protection takes effect at the next reclaim; writing it reclaims nothing
            // (`memory_min_write()`, `memory_low_write()`).
            let pages = try Self.pageCounterMemparse(text)
            if f == .min { memcg.minPages.store(pages, ordering: .relaxed) } else { memcg.lowPages.store(pages, ordering: .relaxed) }
            if pages > 0 { memoryCgroups.protectionSet.store(true, ordering: .relaxed) }
        default:
            throw .EACCES
        }
    }

    /// `memory.reclaim`: reclaims the bytes written from the cgroup and those below it, in rounds of a
    /// quarter of what is left (at least `SWAP_CLUSTER_MAX` pages each); EAGAIN once 17 rounds in
    /// all reclaimed nothing (Linux: `memory_reclaim()` → `try_to_free_mem_cgroup_pages()` with
    /// `MEMCG_RECLAIM_PROACTIVE`, `MAX_RECLAIM_RETRIES` counted down after each empty round).
    /// The value is a byte count as `memparse()` reads it (no `max`), optionally followed by
    /// `swappiness=N` (0–200) or `swappiness=max`: with 0 nothing anonymous may be reclaimed, and the
    /// model has nothing else, so such a write fails with EAGAIN unless it asks for 0 bytes; other
    /// values reclaim as without (the model's lists are anonymous only: Linux's file/anon balance
    /// has nothing to weigh). Anything else is EINVAL.
    func proactiveReclaim(_ memcg: MemoryCgroup, _ text: String) throws(Errno) {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
        // An empty value asks for nothing, as `memparse()` reads it as 0.
        guard words.first != "max" else { throw .EINVAL }
        let target = try words.first.map { size throws(Errno) in try Self.pageCounterMemparse(String(size)) } ?? 0
        var anonymous = true
        for option in words.dropFirst() {
            guard option.hasPrefix("swappiness=") else { throw .EINVAL }
            let value = option.dropFirst("swappiness=".count)
            if value == "max" { continue }
            guard let n = Self.kstrtoint(String(value)), (0...200).contains(n) else { throw .EINVAL }
            anonymous = n > 0
        }
        var reclaimed = 0
        var retries = Self.maxReclaimRetries
        while reclaimed < target {
            let batch = (target - reclaimed) / 4
            let got = anonymous ? reclaimCgroup(memcg, pages: max(batch, Self.swapClusterMax)) : 0
            if got == 0 {
                if retries == 0 { throw .EAGAIN }
                retries -= 1
            }
            reclaimed += got
        }
    }

    /// Linux: `strstrip()` (leading and trailing whitespace).
    static func kernelStrip(_ s: String) -> String {
        let ws: Set<Character> = [" ", "\t", "\n", "\r", "\u{0B}", "\u{0C}"]
        var sub = Substring(s)
        while let c = sub.first, ws.contains(c) { sub.removeFirst() }
        while let c = sub.last, ws.contains(c) { sub.removeLast() }
        return String(sub)
    }

    /// Pages for a limit: "max" (`Int.max`), or bytes as `memparse()` reads them — a number in base
    /// 10, 16 ("0x") or 8 (leading "0"), then at most one of K, M, G, T, P, E (either case) —
    /// divided by the page size. Like Linux, an empty value is 0 and an overflowing one wraps
    /// (`simple_strtoull()` does not check). EINVAL when anything is left over.
    public static func pageCounterMemparse(_ text: String) throws(Errno) -> Int {
        if text == "max" { return Int.max }
        let bytes = Array(text.utf8)
        var i = 0
        var base: UInt64 = 10
        if bytes.count >= 2 && bytes[0] == 0x30 && (bytes[1] | 0x20) == 0x78,
           bytes.count > 2, hexValue(bytes[2]) != nil {
            base = 16; i = 2
        } else if bytes.first == 0x30 {
            base = 8
        }
        var value: UInt64 = 0
        while i < bytes.count, let d = hexValue(bytes[i]), UInt64(d) < base {
            value = value &* base &+ UInt64(d)
            i += 1
        }
        if i < bytes.count {
            let shift: UInt64? = switch bytes[i] | 0x20 {
            case 0x6B: 10  // k
            case 0x6D: 20  // m
            case 0x67: 30  // g
            case 0x74: 40  // t
            case 0x70: 50  // p
            case 0x65: 60  // e
            default: nil
            }
            if let shift {
                value = value &<< shift
                i += 1
            }
        }
        guard i == bytes.count else { throw .EINVAL }
        // Linux: min(bytes / PAGE_SIZE, PAGE_COUNTER_MAX), PAGE_COUNTER_MAX = LONG_MAX / PAGE_SIZE.
        let pages = value / PageGeometry.pageSize
        let counterMax = UInt64(Int.max) / PageGeometry.pageSize
        return pages >= counterMax ? Int.max : Int(pages)
    }

    private static func hexValue(_ c: UInt8) -> Int? {
        switch c {
        case 0x30...0x39: Int(c - 0x30)
        case 0x61...0x66: Int(c - 0x61 + 10)
        case 0x41...0x46: Int(c - 0x41 + 10)
        default: nil
        }
    }

    /// Linux: `kstrtoint(s, 0, &v)` for a pid (decimal here; the sign and range are checked).
    static func kstrtoint(_ s: String) -> Int? {
        guard let v = Int32(s) else { return nil }
        return Int(v)
    }
}
