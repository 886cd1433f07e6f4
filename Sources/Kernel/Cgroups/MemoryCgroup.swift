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
public final class MemoryCgroup: @unchecked Sendable {
    /// The cgroup's name below the root (`/sys/fs/cgroup/NAME`).
    public let name: String
    /// The index that frames charged to the cgroup record (Linux: `folio->memcg_data` points at it).
    let id: UInt16

    /// Pages charged (Linux: `page_counter.usage`).
    let usage = Atomic<Int>(0)
    /// The most pages ever charged (Linux: `page_counter.watermark`).
    let peak = Atomic<Int>(0)
    let maxPages = Atomic<Int>(Int.max)
    let highPages = Atomic<Int>(Int.max)
    let swapMaxPages = Atomic<Int>(Int.max)
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
    /// `memory.events`, then the `memory.stat` events, one atomic each.
    private let counters: UnsafeMutablePointer<Atomic<Int>>
    private static let counterCount = Event.allCases.count + StatEvent.allCases.count
    /// The processes in the cgroup, by pid (Linux: the css_set links `cgroup.procs` lists).
    let members = SpinLocked<[Int: WeakAddressSpace]>([:])

    init(name: String, id: UInt16) {
        self.name = name
        self.id = id
        counters = .allocate(capacity: Self.counterCount)
        for i in 0..<Self.counterCount { (counters + i).initialize(to: Atomic(0)) }
    }

    deinit {
        counters.deinitialize(count: Self.counterCount)
        counters.deallocate()
    }

    /// The value of an event counter.
    public func value(of event: Event) -> Int { counters[event.rawValue].load(ordering: .relaxed) }
    /// The value of a counted `memory.stat` event.
    public func value(of event: StatEvent) -> Int { counters[Event.allCases.count + event.rawValue].load(ordering: .relaxed) }
    /// Linux: `memcg_memory_event()`.
    func count(_ event: Event) { counters[event.rawValue].add(1, ordering: .relaxed) }
    /// Linux: `count_memcg_events()`.
    @inline(__always) func count(_ event: StatEvent) { counters[Event.allCases.count + event.rawValue].add(1, ordering: .relaxed) }

    /// Pages charged now.
    public var usagePages: Int { usage.load(ordering: .relaxed) }
    /// `memory.max` in pages (`Int.max`: no limit).
    public var limitPages: Int { maxPages.load(ordering: .relaxed) }

    /// Charges `pages` if the counter stays within `memory.max`; one atomic add in the common case
    /// (Linux: `page_counter_try_charge()`, which also raises the watermark).
    @inline(__always) func tryCharge(_ pages: Int) -> Bool {
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

    /// Charges `pages` whatever the limit (Linux: `page_counter_charge()`, the charge
    /// `try_charge_memcg()` forces for `__GFP_NOFAIL`); raises the watermark like `tryCharge`.
    func forceCharge(_ pages: Int) {
        let new = usage.wrappingAdd(pages, ordering: .relaxed).newValue
        if new > peak.load(ordering: .relaxed) { peak.store(new, ordering: .relaxed) }
    }

    /// Linux: `page_counter_uncharge()`.
    @inline(__always) func uncharge(_ pages: Int) {
        let left = usage.wrappingSubtract(pages, ordering: .relaxed).newValue
        precondition(left >= 0, "memory cgroup \(name): uncharged more than was charged")
    }

    /// Pages that can still be charged before `memory.max` (Linux: `mem_cgroup_margin()`).
    var margin: Int { max(0, limitPages - usagePages) }

    /// The live processes in the cgroup, by pid.
    public var processes: [AddressSpace] {
        members.withLock { $0.values.compactMap(\.space).filter { !$0.hasExited }.sorted { $0.pid < $1.pid } }
    }
}

/// The memory cgroups of a kernel: the root (nil: processes there are not charged, as the v2 root
/// has no `memory.max`) and its children, and which cgroup each frame is charged to.
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
    /// Index → cgroup; slot 0 is "not charged". Written once per slot under `lock`.
    private let table: UnsafeMutablePointer<Unmanaged<MemoryCgroup>?>
    /// Frame → index of the cgroup it is charged to on its own (0: none). Untouched host pages stay
    /// unbacked.
    private let owners: UnsafeMutablePointer<UInt16>
    /// The frame table, whose heads' link words hold the records of folios charged whole.
    private let frameTable: FrameTable
    private var frames: Int { frameTable.count }
    private let byName = SpinLocked<[String: MemoryCgroup]>([:])
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

    /// The OOM kills so far, oldest first.
    public var oomKills: [OOMKill] { kills.withLock { $0 } }

    /// Creates the cgroup `name` below the root (Linux: `mkdir /sys/fs/cgroup/NAME` →
    /// `mem_cgroup_css_alloc()`). Names are one path component: EINVAL for an empty name, ".", "..",
    /// or one with "/" or a newline; EEXIST when it exists; ENOSPC past `maxCount` cgroups.
    func create(_ name: String) throws(Errno) -> MemoryCgroup {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), !name.contains("\n") else { throw .EINVAL }
        let result: Result<MemoryCgroup, Errno> = byName.withLock { groups in
            if groups[name] != nil { return .failure(.EEXIST) }
            guard groups.count < Self.maxCount else { return .failure(.ENOSPC) }
            let id = UInt16(groups.count + 1)
            let memcg = MemoryCgroup(name: name, id: id)
            table[Int(id)] = Unmanaged.passRetained(memcg)
            groups[name] = memcg
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
        for memcg in all where charged[Int(memcg.id)] != memcg.usagePages {
            problems.append("memory cgroup \(memcg.name): usage \(memcg.usagePages) pages, but \(charged[Int(memcg.id)]) frames are charged to it")
        }
        return Array(problems.prefix(10))
    }

    /// Pages of PMD-mapped-size folios (THPs) charged to `memcg` now (Linux: `NR_ANON_THPS` per memcg).
    func thpPages(of memcg: MemoryCgroup, _ frameTable: FrameTable) -> Int {
        var pages = 0, pfn = 0
        let thp = PageGeometry.pmdOrder.pages
        while pfn < frames {
            let head = PFN(UInt32(pfn))
            let id = wholeRecord(head) ?? owners[pfn]
            if id == memcg.id && frameTable.flags(head).contains(.head) && frameTable.order(head) == PageGeometry.pmdOrder {
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
