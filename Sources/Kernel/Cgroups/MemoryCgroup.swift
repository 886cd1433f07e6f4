import Synchronization
import VMCore
import PhysicalMemory

/// A memory cgroup of the v2 hierarchy: its page counter (`memory.current`, `memory.peak`), its
/// limits (`memory.max`, `memory.high`, `memory.swap.max`), its events and statistics, and its
/// processes (Linux: `struct mem_cgroup` with its `struct page_counter memory`).
///
/// Limits and usage are in pages; `Int.max` means "max" (Linux: `PAGE_COUNTER_MAX`). A folio is
/// charged whole when it is allocated for a process of the cgroup (`AddressSpace.charge`) and
/// uncharged when it is freed, whichever process frees it; moving a process does not move its
/// charges (v2: `memory.move_charge_at_immigrate` does not exist).
///
/// Cgroups nest: a charge counts in the cgroup and in each one above it, and must fit every
/// `memory.max` on the way up (Linux: `page_counter_try_charge()` walks the counter's parents).
public final class MemoryCgroup: @unchecked Sendable {
    /// The cgroup's path below the root (`/sys/fs/cgroup/NAME`): its components joined by "/".
    public let name: String
    /// The cgroup above this one; nil for a child of the root (Linux: `parent_mem_cgroup()`).
    public let parent: MemoryCgroup?
    /// How many cgroups were made directly below this one. A cgroup with children takes no
    /// processes (cgroup v2's "no internal processes" rule, with the memory controller enabled in
    /// every `cgroup.subtree_control`).
    let childCount = Atomic<Int>(0)
    /// The index that frames charged to the cgroup record (Linux: `folio->memcg_data` points at it).
    let id: UInt16

    /// Pages charged (Linux: `page_counter.usage`).
    let usage = Atomic<Int>(0)
    /// The most pages ever charged (Linux: `page_counter.watermark`).
    let peak = Atomic<Int>(0)
    let maxPages = Atomic<Int>(Int.max)
    let highPages = Atomic<Int>(Int.max)
    let swapMaxPages = Atomic<Int>(Int.max)
    /// Swap slots charged to this cgroup and the cgroups below it (Linux: `memcg->swap`, read as
    /// `memory.swap.current`): each slot once, to the cgroup of the page written to it.
    let swapPages = Atomic<Int>(0)
    /// `memory.swap.events` `max` and `fail`: swap-outs refused for `memory.swap.max` here or below
    /// (Linux: `MEMCG_SWAP_MAX`, `MEMCG_SWAP_FAIL`, hierarchical as `memory.events`).
    let swapMaxEvents = Atomic<Int>(0)
    let swapFailEvents = Atomic<Int>(0)
    /// `memory.swap.high` in pages: past it, each charge that returns to user space counts a `high`
    /// event of `memory.swap.events` here (Linux: `swap_find_max_overage()`, `MEMCG_SWAP_HIGH`; the
    /// throttling sleep it adds is not modelled), and a swap-in frees its slot at half of it
    /// (`mem_cgroup_swap_full()`).
    let swapHighPages = Atomic<Int>(Int.max)
    let swapHighEvents = Atomic<Int>(0)
    /// `memory.min` and `memory.low` in pages (0: no protection): reclaim leaves the cgroup's memory
    /// below them alone (`MemoryProtection.swift`).
    let minPages = Atomic<Int>(0)
    let lowPages = Atomic<Int>(0)
    /// `memory.oom.group`: an OOM kill of a process below this cgroup kills every process below it
    /// (`OOMKiller.swift`, Linux: `memcg->oom_group`).
    let oomGroup = Atomic<Bool>(false)
    /// Removed (`rmdir`): no longer named, still holding what was charged to it.
    public let removed = Atomic<Bool>(false)
    /// Page-table pages charged to the cgroup (Linux: `memory.stat` `pagetables`, `NR_PAGETABLE` per
    /// memcg); they are part of `usage` too.
    let pageTablePages = Atomic<Int>(0)
    /// The deferred-split queue of the folios charged to this cgroup, which its reclaim shrinks
    /// (Linux: `memcg->deferred_split_queue`).
    let deferredSplitQueue = DeferredSplitQueue()

    /// `memory.events` (Linux: `memcg->memory_events[]`, `memcg_memory_event()`).
    public enum Event: Int, CaseIterable, Sendable {
        case low, high, max, oom, oomKill, oomGroupKill
        public var name: String {
            switch self {
            case .low: "low"
            case .high: "high"
            case .max: "max"
            case .oom: "oom"
            case .oomKill: "oom_kill"
            case .oomGroupKill: "oom_group_kill"
            }
        }
    }
    /// Counted events of `memory.stat` (Linux: `memcg_vm_event_stat[]`).
    public enum StatEvent: Int, CaseIterable, Sendable {
        case pgfault, thpFaultAlloc, thpCollapseAlloc
        public var name: String {
            switch self {
            case .pgfault: "pgfault"
            case .thpFaultAlloc: "thp_fault_alloc"
            case .thpCollapseAlloc: "thp_collapse_alloc"
            }
        }
    }
    /// `memory.events` (this cgroup's and its descendants' events), then the `memory.stat` events
    /// counted here, then `memory.events.local` (this cgroup's own), one atomic each.
    private let counters: UnsafeMutablePointer<Atomic<Int>>
    private static let counterCount = 2 * Event.allCases.count + StatEvent.allCases.count
    private static var localEventsBase: Int { Event.allCases.count + StatEvent.allCases.count }
    /// The processes in the cgroup, by pid (Linux: the css_set links `cgroup.procs` lists).
    let members = SpinLocked<[Int: WeakAddressSpace]>([:])

    init(name: String, id: UInt16, parent: MemoryCgroup? = nil) {
        self.name = name
        self.id = id
        self.parent = parent
        counters = .allocate(capacity: Self.counterCount)
        for i in 0..<Self.counterCount { (counters + i).initialize(to: Atomic(0)) }
    }

    deinit {
        counters.deinitialize(count: Self.counterCount)
        counters.deallocate()
    }

    /// The value of an event counter in `memory.events`: this cgroup's events and its descendants'.
    public func value(of event: Event) -> Int { counters[event.rawValue].load(ordering: .relaxed) }
    /// The value of an event counter in `memory.events.local`: this cgroup's own events.
    public func localValue(of event: Event) -> Int { counters[Self.localEventsBase + event.rawValue].load(ordering: .relaxed) }
    /// The value of a `memory.stat` event counted in this cgroup itself (the file adds the
    /// descendants': `MemoryCgroups.subtreeValue(of:_:)`).
    public func value(of event: StatEvent) -> Int { counters[Event.allCases.count + event.rawValue].load(ordering: .relaxed) }
    /// Counts an event here (`memory.events.local`) and in this cgroup and every one above it
    /// (`memory.events`) (Linux: `memcg_memory_event()`, without the `memory_localevents` mount
    /// option).
    func count(_ event: Event) {
        counters[Self.localEventsBase + event.rawValue].add(1, ordering: .relaxed)
        var level: MemoryCgroup? = self
        while let memcg = level {
            memcg.counters[event.rawValue].add(1, ordering: .relaxed)
            level = memcg.parent
        }
    }
    /// Linux: `count_memcg_events()`.
    @inline(__always) func count(_ event: StatEvent) { counters[Event.allCases.count + event.rawValue].add(1, ordering: .relaxed) }

    /// Pages charged now.
    public var usagePages: Int { usage.load(ordering: .relaxed) }
    /// `memory.max` in pages (`Int.max`: no limit).
    public var limitPages: Int { maxPages.load(ordering: .relaxed) }

    /// Whether this cgroup is `other` or below it.
    public func isDescendant(of other: MemoryCgroup) -> Bool {
        var level: MemoryCgroup? = self
        while let memcg = level {
            if memcg === other { return true }
            level = memcg.parent
        }
        return false
    }

    /// Charges `pages` to this cgroup and every one above it if each stays within its `memory.max`.
    /// Returns nil when charged, or the cgroup whose limit refused (nothing is then charged anywhere)
    /// (Linux: `page_counter_try_charge()`, whose failing counter `try_charge_memcg()` takes as
    /// `mem_over_limit`). A child of the root: one atomic add in the common case.
    @inline(__always) func tryChargeHierarchy(_ pages: Int) -> MemoryCgroup? {
        guard parent != nil else { return tryCharge(pages) ? nil : self }
        return tryChargeNested(pages)
    }

    /// `tryChargeHierarchy` below another cgroup: each level in turn, and on a refusal the levels
    /// already charged uncharged again.
    @inline(never)
    private func tryChargeNested(_ pages: Int) -> MemoryCgroup? {
        var level: MemoryCgroup? = self
        while let memcg = level {
            guard memcg.tryCharge(pages) else {
                var charged: MemoryCgroup? = self
                while let c = charged, c !== memcg {
                    c.usage.wrappingSubtract(pages, ordering: .relaxed)
                    charged = c.parent
                }
                return memcg
            }
            level = memcg.parent
        }
        return nil
    }

    /// Whether this cgroup or one above it is over its `memory.high` or its `memory.swap.high` (Linux:
    /// the loop over `parent_mem_cgroup()` in `try_charge_memcg()` that sets `memcg_nr_pages_over_high`).
    @inline(__always) func isOverHigh() -> Bool {
        if usagePages > highPages.load(ordering: .relaxed) { return true }
        if swapPages.load(ordering: .relaxed) > swapHighPages.load(ordering: .relaxed) { return true }
        guard parent != nil else { return false }
        return ancestorIsOverHigh()
    }

    @inline(never)
    private func ancestorIsOverHigh() -> Bool {
        var level = parent
        while let memcg = level {
            if memcg.usagePages > memcg.highPages.load(ordering: .relaxed) { return true }
            if memcg.swapPages.load(ordering: .relaxed) > memcg.swapHighPages.load(ordering: .relaxed) { return true }
            level = memcg.parent
        }
        return false
    }

    /// Charges `pages` to this cgroup alone if its counter stays within `memory.max`; one atomic add
    /// in the common case (Linux: one level of `page_counter_try_charge()`, which also raises the
    /// watermark).
    @inline(__always) private func tryCharge(_ pages: Int) -> Bool {
        let new = usage.wrappingAdd(pages, ordering: .relaxed).newValue
        if new > maxPages.load(ordering: .relaxed) {
            usage.wrappingSubtract(pages, ordering: .relaxed)
            return false
        }
        // A plain store, racy by design: two CPUs charging at once may leave the lower of their values,
        // as Linux accepts ("racy, but we can live with an inaccurate watermark"); one CPU's charges, and
        // every charge made while no other runs, raise it exactly. No locked instruction per charge.
        if new > peak.load(ordering: .relaxed) { peak.store(new, ordering: .relaxed) }
        return true
    }

    /// Charges `pages` here and above whatever the limits (Linux: `page_counter_charge()`, the charge
    /// `try_charge_memcg()` forces for `__GFP_NOFAIL`); raises the watermarks like `tryCharge`.
    func forceCharge(_ pages: Int) {
        var level: MemoryCgroup? = self
        while let memcg = level {
            let new = memcg.usage.wrappingAdd(pages, ordering: .relaxed).newValue
            if new > memcg.peak.load(ordering: .relaxed) { memcg.peak.store(new, ordering: .relaxed) }
            level = memcg.parent
        }
    }

    /// Uncharges `pages` here and above (Linux: `page_counter_uncharge()`).
    @inline(__always) func uncharge(_ pages: Int) {
        var level: MemoryCgroup? = self
        while let memcg = level {
            let left = memcg.usage.wrappingSubtract(pages, ordering: .relaxed).newValue
            precondition(left >= 0, "memory cgroup \(memcg.name): uncharged more than was charged")
            level = memcg.parent
        }
    }

    /// Pages that can still be charged before `memory.max` (Linux: `mem_cgroup_margin()`).
    var margin: Int { max(0, limitPages - usagePages) }

    /// The live processes in the cgroup itself (its descendants': `MemoryCgroups.processes(below:)`),
    /// by pid.
    public var processes: [AddressSpace] {
        members.withLock { $0.values.compactMap(\.space).filter { !$0.hasExited }.sorted { $0.pid < $1.pid } }
    }
}

/// The memory cgroups of a kernel: the root (nil: processes there are not charged, as the v2 root
/// has no `memory.max`) and the cgroups below it, at any depth, and which cgroup each frame is
/// charged to.
///
/// Where the charge is recorded (Linux keeps the memcg pointer in `folio->memcg_data`, in the
/// folio's own `struct page`):
/// - a folio charged whole records its cgroup in its head's link word (`FrameTable.link`, unused
///   on an anonymous head), tagged with `wholeFolioTag`: the fault that charges it and the free that
///   uncharges it touch no line but the head's record, which they write anyway;
/// - a page charged on its own records it in `owners`, one 16-bit cgroup index per frame.
/// A split hands the head's record to every page first (`splitRecord`, Linux:
/// `folio_split_memcg_refs()`), so each page freed later is uncharged from the right cgroup.
public final class MemoryCgroups: @unchecked Sendable {
    /// Whether any cgroup was created: the free path looks at the charge record only then.
    let active = Atomic<Bool>(false)
    /// Whether a `memory.min` or `memory.low` was ever set above zero (`anyProtection`).
    let protectionSet = Atomic<Bool>(false)
    /// The `memory_recursiveprot` mount option (`recursiveProtection`).
    let recursiveProtectionSet = Atomic<Bool>(false)
    /// Index → cgroup; slot 0 is "not charged". Written once per slot under `lock`.
    private let table: UnsafeMutablePointer<Unmanaged<MemoryCgroup>?>
    /// Frame → index of the cgroup it is charged to on its own (0: none). Untouched host pages stay
    /// unbacked.
    private let owners: UnsafeMutablePointer<UInt16>
    /// The frame table, whose heads' link words hold the records of folios charged whole.
    private let frameTable: FrameTable
    private var frames: Int { frameTable.count }
    private let byName = SpinLocked<[String: MemoryCgroup]>([:])
    /// Cgroups removed (`rmdir`) while pages were still charged to them, and how many cgroups were
    /// ever made (their indices are not reused), both under `byName`'s lock.
    private var dying: [MemoryCgroup] = []
    private var made = 0
    /// The OOM kills so far, oldest first.
    let kills = SpinLocked<[OOMKill]>([])
    /// The most cgroups a kernel may have (the charge record is 16 bits).
    public static let maxCount = 1023

    init(frameTable: FrameTable) {
        self.frameTable = frameTable
        table = .allocate(capacity: Self.maxCount + 1)
        table.initialize(repeating: nil, count: Self.maxCount + 1)
        owners = calloc(max(1, frameTable.count), MemoryLayout<UInt16>.stride)!.assumingMemoryBound(to: UInt16.self)
    }

    deinit {
        for i in 0...Self.maxCount { table[i]?.release() }
        table.deallocate()
        free(owners)
    }

    /// The cgroup called `name`, or nil.
    public func cgroup(named name: String) -> MemoryCgroup? { byName.withLock { $0[name] } }

    /// Every cgroup, by name.
    public var all: [MemoryCgroup] { byName.withLock { $0.values.sorted { $0.name < $1.name } } }

    /// Every cgroup, removed ones (which may still hold charges) included.
    var allIncludingRemoved: [MemoryCgroup] { byName.withLock { Array($0.values) + dying } }

    /// The OOM kills so far, oldest first.
    public var oomKills: [OOMKill] { kills.withLock { $0 } }

    /// `memcg` and every cgroup below it, removed ones that still hold charges included (Linux's
    /// `mem_cgroup_iter()` walks dying memcgs too, and their statistics stay in their ancestors').
    public func subtree(_ memcg: MemoryCgroup) -> [MemoryCgroup] {
        guard memcg.childCount.load(ordering: .relaxed) > 0 else { return [memcg] }
        let (live, removed) = byName.withLock { groups in (Array(groups.values), dying) }
        return (live + removed).filter { $0.isDescendant(of: memcg) }.sorted { ($0.name, $0.id) < ($1.name, $1.id) }
    }

    /// Removes the cgroup at `path` (Linux: `rmdir /sys/fs/cgroup/PATH` → `cgroup_rmdir()`):
    /// EBUSY while it has processes or cgroups below it (`cgroup_destroy_locked()`), ENOENT for an
    /// unknown path. Its name is free at once; its charges stay until the pages are freed, counted in
    /// the cgroups above it, and reclaim from above (or global reclaim) still reaches its lists, as
    /// for Linux's dying memcgs. Going offline drops its `memory.min` and `memory.low`
    /// (`mem_cgroup_css_offline()`). Its parent keeps the memory controller in `subtree_control`, so
    /// it still takes no processes ("no internal processes") even once its last child is gone.
    func remove(_ path: String) throws(Errno) {
        let result: Result<Void, Errno> = byName.withLock { groups in
            guard let memcg = groups[path] else { return .failure(.ENOENT) }
            if !memcg.processes.isEmpty || groups.values.contains(where: { $0.parent === memcg }) { return .failure(.EBUSY) }
            groups[path] = nil
            memcg.removed.store(true, ordering: .relaxed)
            memcg.minPages.store(0, ordering: .relaxed)
            memcg.lowPages.store(0, ordering: .relaxed)
            dying.append(memcg)
            return .success(())
        }
        try result.get()
    }

    /// The live processes of `memcg` and of every cgroup below it, by pid (Linux:
    /// `mem_cgroup_scan_tasks()`).
    public func processes(below memcg: MemoryCgroup) -> [AddressSpace] {
        guard memcg.childCount.load(ordering: .relaxed) > 0 else { return memcg.processes }
        return subtree(memcg).flatMap(\.processes).sorted { $0.pid < $1.pid }
    }

    /// A `memory.stat` event counted in `memcg` and every cgroup below it (Linux: the rstat sums
    /// that `memory.stat` prints).
    public func subtreeValue(of event: MemoryCgroup.StatEvent, _ memcg: MemoryCgroup) -> Int {
        subtree(memcg).reduce(0) { $0 + $1.value(of: event) }
    }

    /// Page-table pages charged to `memcg` and the cgroups below it.
    func subtreePageTablePages(_ memcg: MemoryCgroup) -> Int {
        subtree(memcg).reduce(0) { $0 + $1.pageTablePages.load(ordering: .relaxed) }
    }

    /// Creates the cgroup at `path` below the root (Linux: `mkdir /sys/fs/cgroup/PATH` →
    /// `mem_cgroup_css_alloc()`): "NAME" for a child of the root, "PARENT/NAME" below the cgroup
    /// PARENT. EINVAL for an empty component, ".", "..", or a newline; ENOENT when the parent does
    /// not exist; EEXIST when the cgroup does; EBUSY when the parent has processes (the model
    /// enables the memory controller in every `cgroup.subtree_control`, which cgroup v2 refuses
    /// for a cgroup with processes: "no internal processes"); ENOSPC past `maxCount` cgroups.
    func create(_ path: String) throws(Errno) -> MemoryCgroup {
        let components = path.split(separator: "/", omittingEmptySubsequences: false)
        guard components.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.contains("\n") }) else { throw .EINVAL }
        let parentPath = components.dropLast().joined(separator: "/")
        let result: Result<MemoryCgroup, Errno> = byName.withLock { groups in
            var parent: MemoryCgroup?
            if !parentPath.isEmpty {
                guard let p = groups[parentPath] else { return .failure(.ENOENT) }
                parent = p
            }
            if groups[path] != nil { return .failure(.EEXIST) }
            if let parent, !parent.processes.isEmpty { return .failure(.EBUSY) }
            guard made < Self.maxCount else { return .failure(.ENOSPC) }
            made += 1
            let id = UInt16(made)
            let memcg = MemoryCgroup(name: path, id: id, parent: parent)
            parent?.childCount.add(1, ordering: .relaxed)
            table[Int(id)] = Unmanaged.passRetained(memcg)
            groups[path] = memcg
            return .success(memcg)
        }
        let memcg = try result.get()
        active.store(true, ordering: .releasing)
        return memcg
    }

    /// Marks a head's link word as the charge record of the whole folio, with the cgroup's index in
    /// the low 16 bits. No other link value has this bit (page-table slots and shmem indices are small).
    static let wholeFolioTag: UInt32 = 1 << 31

    /// The index of the cgroup the folio at `head` is charged to whole, or nil.
    @inline(__always) private func wholeRecord(_ head: PFN) -> UInt16? {
        let link = frameTable.link(head)
        return link & Self.wholeFolioTag != 0 ? UInt16(truncatingIfNeeded: link) : nil
    }

    /// Records that the folio at `head` of `pages` frames is charged to `memcg`: one store whatever
    /// its size.
    @inline(__always) func record(_ head: PFN, pages: Int, _ memcg: MemoryCgroup) {
        if pages > 1 {
            frameTable.setLink(head, Self.wholeFolioTag | UInt32(memcg.id))
        } else {
            owners[Int(head.rawValue)] = memcg.id
        }
    }

    /// Gives every page of the folio at `head` (2^`order` frames) its own record, before a split turns
    /// its tails into pages of their own (Linux: `folio_split_memcg_refs()`).
    func splitRecord(_ head: PFN, order: PageOrder) {
        let pages = order.pages
        guard pages > 1, let id = wholeRecord(head) else { return }
        (owners + Int(head.rawValue)).update(repeating: id, count: pages)
        frameTable.setLink(head, 0)
    }

    /// The index of the cgroup the folio at `head` is charged to, 0 for none: its lruvec (`LRULists`).
    @inline(__always) func ownerIndex(of head: PFN) -> UInt16 {
        wholeRecord(head) ?? owners[Int(head.rawValue)]
    }

    /// The cgroup whose index (its lruvec) is `index`, or nil for 0 (the root) and unused indices.
    func cgroup(index: Int) -> MemoryCgroup? {
        guard index > 0 && index <= Self.maxCount else { return nil }
        return table[index]?.takeUnretainedValue()
    }

    /// Charges `pages` swap slots to `memcg` — or, once it is removed, to the nearest cgroup above it
    /// that is not — and every cgroup above it; returns the index charged (0: the root, which counts
    /// nothing), or nil, charging nothing, when one of them would pass its `memory.swap.max`, counted
    /// as a `max` and a `fail` event of `memory.swap.events` (Linux: `__mem_cgroup_try_charge_swap()`
    /// with `mem_cgroup_id_get_online()` and `page_counter_try_charge()`).
    func tryChargeSwap(_ memcg: MemoryCgroup, pages: Int) -> UInt16? {
        var online: MemoryCgroup? = memcg
        while let c = online, c.removed.load(ordering: .relaxed) { online = c.parent }
        guard let target = online else { return 0 }
        var level: MemoryCgroup? = target
        while let c = level {
            let now = c.swapPages.add(pages, ordering: .relaxed).newValue
            if now > c.swapMaxPages.load(ordering: .relaxed) {
                // Undo this level and the ones below it.
                var undo: MemoryCgroup? = target
                while let u = undo {
                    u.swapPages.subtract(pages, ordering: .relaxed)
                    if u === c { break }
                    undo = u.parent
                }
                var event: MemoryCgroup? = target
                while let e = event {
                    e.swapMaxEvents.add(1, ordering: .relaxed)
                    e.swapFailEvents.add(1, ordering: .relaxed)
                    event = e.parent
                }
                return nil
            }
            level = c.parent
        }
        return target.id
    }

    /// Uncharges `pages` swap slots from the cgroup of index `id` and every one above it (Linux:
    /// `mem_cgroup_uncharge_swap()`).
    func unchargeSwap(_ id: UInt16, pages: Int) {
        var level = cgroup(index: Int(id))
        while let c = level {
            c.swapPages.subtract(pages, ordering: .relaxed)
            level = c.parent
        }
    }

    /// The cgroup the folio at `head` is charged to, or nil (a folio whose pages were charged one by
    /// one answers for its head page).
    func owner(of head: PFN) -> MemoryCgroup? {
        let id = wholeRecord(head) ?? owners[Int(head.rawValue)]
        return id == 0 ? nil : table[Int(id)]?.takeUnretainedValue()
    }

    /// Uncharges the folio at `head` of `pages` frames, freed now, from whichever cgroup it or each of
    /// its pages is charged to (Linux: `mem_cgroup_uncharge()` from the free path).
    @inline(__always) func uncharge(_ head: PFN, pages: Int) {
        guard active.load(ordering: .relaxed) else { return }
        if pages > 1, let id = wholeRecord(head) {
            // A folio charged whole (the common case): its head's record.
            frameTable.setLink(head, 0)
            table[Int(id)].unsafelyUnwrapped._withUnsafeGuaranteedRef { $0.uncharge(pages) }
            return
        }
        let base = owners + Int(head.rawValue)
        if pages == 1 {
            let id = base.pointee
            guard id != 0 else { return }
            base.pointee = 0
            table[Int(id)].unsafelyUnwrapped._withUnsafeGuaranteedRef { $0.uncharge(1) }
            return
        }
        var i = 0
        while i < pages {
            let id = base[i]
            if id == 0 { i += 1; continue }
            var run = 1
            while i + run < pages && base[i + run] == id { run += 1 }
            for j in i..<(i + run) { base[j] = 0 }
            table[Int(id)]!.takeUnretainedValue().uncharge(run)
            i += run
        }
    }

    /// Moves the charge record of a migrated folio to its new frames (Linux: `mem_cgroup_migrate()`).
    func migrateCharge(from old: PFN, to new: PFN, pages: Int) {
        guard active.load(ordering: .relaxed) else { return }
        if pages > 1, let id = wholeRecord(old) {
            frameTable.setLink(new, Self.wholeFolioTag | UInt32(id))
            frameTable.setLink(old, 0)
            return
        }
        let from = owners + Int(old.rawValue), to = owners + Int(new.rawValue)
        for i in 0..<pages {
            to[i] = from[i]
            from[i] = 0
        }
    }

    /// The index and size of the whole-folio record at `pfn`, if `pfn` heads a folio charged whole.
    private func wholeCharge(at pfn: PFN) -> (id: UInt16, pages: Int)? {
        guard let id = wholeRecord(pfn), frameTable.flags(pfn).contains(.head) else { return nil }
        return (id, frameTable.order(pfn).pages)
    }

    /// Each cgroup's usage equals the frames charged to it, and only allocated frames are charged
    /// (Linux: `page_counter` usage against the folios whose `memcg_data` names the memcg).
    func checkInvariants(_ frameTable: FrameTable) -> [String] {
        guard active.load(ordering: .acquiring) else { return [] }
        var problems: [String] = []
        var charged = [Int](repeating: 0, count: Self.maxCount + 1)
        var pfn = 0
        while pfn < frames {
            let frame = PFN(UInt32(pfn))
            if wholeRecord(frame) != nil {
                guard let whole = wholeCharge(at: frame) else {
                    problems.append("frame \(pfn) carries a whole folio's charge record but is not a folio's head")
                    pfn += 1
                    continue
                }
                if (0..<whole.pages).contains(where: { owners[pfn + $0] != 0 }) {
                    problems.append("folio \(pfn) is charged whole, but a page has a record of its own")
                }
                charged[Int(whole.id)] += whole.pages
                if frameTable.refcount(frame) == 0 {
                    problems.append("folio \(pfn) is charged to a memory cgroup but not allocated")
                }
                pfn += whole.pages
                continue
            }
            let id = owners[pfn]
            guard id != 0 else { pfn += 1; continue }
            charged[Int(id)] += 1
            if frameTable.refcount(frameTable.head(of: frame)) == 0 {
                problems.append("frame \(pfn) is charged to a memory cgroup but not allocated")
            }
            pfn += 1
        }
        for memcg in all {
            // A cgroup's usage counts the frames charged to it and to every cgroup below it.
            let frames = subtree(memcg).reduce(0) { $0 + charged[Int($1.id)] }
            if frames != memcg.usagePages {
                problems.append("memory cgroup \(memcg.name): usage \(memcg.usagePages) pages, but \(frames) frames are charged to it and below it")
            }
        }
        return Array(problems.prefix(10))
    }

    /// Pages of PMD-mapped-size folios (THPs) charged to `memcg` and the cgroups below it now
    /// (Linux: `NR_ANON_THPS` per memcg, summed over the subtree as `memory.stat` prints it).
    func thpPages(of memcg: MemoryCgroup, _ frameTable: FrameTable) -> Int {
        var pages = 0, pfn = 0
        let thp = PageGeometry.pmdOrder.pages
        var within = [Bool](repeating: false, count: Self.maxCount + 1)
        for c in subtree(memcg) { within[Int(c.id)] = true }
        while pfn < frames {
            let head = PFN(UInt32(pfn))
            let id = wholeRecord(head) ?? owners[pfn]
            if within[Int(id)] && frameTable.flags(head).contains(.head) && frameTable.order(head) == PageGeometry.pmdOrder {
                pages += thp
                pfn += thp
                continue
            }
            pfn += 1
        }
        return pages
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
