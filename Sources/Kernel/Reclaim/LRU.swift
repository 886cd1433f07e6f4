#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import VMCore
import PhysicalMemory

/// Which anonymous LRU list (Linux: `LRU_INACTIVE_ANON`, `LRU_ACTIVE_ANON`).
enum AnonLRU: Int, Sendable, CaseIterable {
    case inactive = 0
    case active = 1
}

/// The active and inactive anonymous LRU lists of the model's one node, one pair per memory cgroup
/// (Linux: a `struct lruvec` per memcg and node, with its `lists[LRU_INACTIVE_ANON]` and
/// `lists[LRU_ACTIVE_ANON]`; one `lru_lock` here for all of them). A folio is on the lists of the
/// cgroup it is charged to, lruvec 0 when it is charged to none (the root's); a run without cgroups
/// has lruvec 0 alone.
///
/// A folio is one entry, its head, and counts as many pages as it has (a THP: one entry, 512 pages).
/// The links are intrusive, in a side array of 16-byte nodes indexed by PFN, so the 16-byte frame
/// record stays as it is:
///
/// ```
///   hot ──► [pfn a] ⇄ [pfn b] ⇄ … ⇄ [pfn z] ◄── cold        next[a] = b + 1, prev[b] = a + 1
///   (new and putback folios)        (reclaim isolates here)   0 = no neighbour
/// ```
/// Invariant, under `lock`: a folio is on a list exactly while its head has `PG_lru`, and on the
/// active one exactly while it also has `PG_active`, of the lruvec of its charge; `pages` are the
/// lists' lengths in pages summed over the lruvecs, which `/proc/vmstat` shows as
/// `nr_inactive_anon`/`nr_active_anon`. The lists hold no reference (as in
/// Linux): a folio whose last reference goes is taken off in the free path (`putPage`), and whoever
/// takes one off to work on it — isolates it — takes a reference first (`folio_isolate_lru()`).
///
/// The lock is a leaf but for the stages' locks (below): nothing else is taken while it is
/// held. Faults take it under a PTE or PMD lock, splits under `compound_lock` and with the folio's
/// refcount frozen.
///
/// **Staging.** A new folio is on its list from `add` on: it has `PG_lru`, and every operation sees
/// it there. But `add` only stages it on the executing simulated CPU's own stage (one per configured
/// CPU, found by `SimulatedCPU.current`), and the next operation that takes
/// `lock` links the staged folios first, each CPU's in the order they came (`lockFlushed()`), so what
/// any operation sees is what linking at once would have given, but for the order among folios that
/// different CPUs added at about the same time (which Linux does not promise either). A fault then
/// writes no line another CPU writes: linking at the hot end writes the lists' ends, their counts,
/// the lock and the previous hottest folio's node, which another CPU's fault has just written
/// (docs/performance.md, concurrent huge faults). This is the host's batching, not Linux's: Linux's per-CPU `lru_add` batches
/// (2.6.38's `lru_add_pvecs`, 6.18's `cpu_fbatches.lru_add`) hold a reference and keep their folios
/// off the lists and without `PG_lru` until drained; the model's staged folios hold nothing and are
/// on the lists already, so reclaim, migration and the invariants see them as before.
///
/// Lock order: `lock`, then a stage's lock. `add` takes only its CPU's stage's, and `lock` (then the
/// stages') when that stage is full.
///
/// Beside the links, each folio records where it was born, for the reverse map of reclaim: its mm's
/// fork family and the linear page index of its first page (Linux: `folio->mapping`, the anon_vma,
/// and `folio->index`), written by `add` under the lock.
final class LRULists: @unchecked Sendable {   // every mutable field is guarded by `lock`
    let lock = SpinLock()
    private let frames: FrameTable
    /// One 16-byte node per frame, so that putting a folio on a list touches one cache line.
    private struct Node {
        var next: UInt32
        var prev: UInt32
        /// The fork family (high 28 bits) and linear page index (low 36 bits).
        var origin: UInt64
    }
    private let nodes: UnsafeMutablePointer<Node>
    private static let indexBits: UInt64 = 36
    /// The lists' ends and sizes, one per lruvec, guarded by `lock` (behind a pointer, like the
    /// nodes: the lock, not exclusivity checking, keeps them consistent).
    private struct Heads {
        var hot: (UInt32, UInt32) = (0, 0)
        var cold: (UInt32, UInt32) = (0, 0)
        var pageCounts: (Int, Int) = (0, 0)
        var folioCounts: (Int, Int) = (0, 0)
    }
    private let heads: UnsafeMutablePointer<Heads>
    /// The lists' sizes summed over the lruvecs (`heads` has one more slot for them, the last).
    private var totals: UnsafeMutablePointer<Heads> { heads + Self.lruvecCount }
    /// Lruvecs: one per memory cgroup index (`MemoryCgroups.maxCount`) and the root's, 0.
    static let lruvecCount = MemoryCgroups.maxCount + 1
    /// The highest lruvec a folio was ever linked on: scans stop there.
    private var highestLruvec = 0
    /// Per frame, the lruvec a folio heading there is linked on (written when it is linked).
    private let lruvecOf: UnsafeMutablePointer<UInt16>
    /// The kernel's charge records, which say a folio's lruvec when it is linked; unretained (the
    /// kernel keeps them alive), so a link retains and releases nothing.
    var charges: Unmanaged<MemoryCgroups>?
    /// The lruvec the last direct reclaim stopped at; the next starts after it (Linux: the
    /// `mem_cgroup_reclaim_cookie` of a partial walk).
    let directReclaimCursor = Atomic<Int>(0)
    /// Folios taken off by `isolate` and not put back yet (Linux: counted in `NR_ISOLATED_ANON`).
    private var isolatedHeads: Set<UInt32> = []
    /// Folios `add` has put on a list but not linked yet, per CPU: stack 0 for the inactive list,
    /// stack 1 for the active one (see "Staging").
    private let staged: PerCPUStacks
    /// Folios a CPU stages before it links them (the size of 2.6.38's `PAGEVEC_SIZE`, for scale).
    static let stageSize = 14

    /// Empty lists over `frames`, with a stage for each of `cpus` CPUs.
    init(frames: FrameTable, cpus: Int = SimulatedCPU.defaultCount) {
        self.frames = frames
        staged = PerCPUStacks(capacities: [Self.stageSize, Self.stageSize], cpus: cpus)
        heads = .allocate(capacity: Self.lruvecCount + 1)
        heads.initialize(repeating: Heads(), count: Self.lruvecCount + 1)
        // Zeroed (every node unlinked) and backed by the host only where folios have been.
        nodes = HostMemory.allocate(Node.self, count: frames.count)
        lruvecOf = HostMemory.allocate(UInt16.self, count: frames.count)
    }

    deinit {
        staged.release()
        HostMemory.release(nodes, count: frames.count)
        HostMemory.release(lruvecOf, count: frames.count)
        heads.deinitialize(count: Self.lruvecCount + 1)
        heads.deallocate()
    }

    /// The lruvec a folio goes on when it is linked: its cgroup's index, 0 without cgroups (one
    /// relaxed load).
    @inline(__always) private func lruvec(for pfn: PFN) -> Int {
        guard let charges else { return 0 }
        return charges._withUnsafeGuaranteedRef { $0.active.load(ordering: .relaxed) ? Int($0.ownerIndex(of: pfn)) : 0 }
    }

    @inline(__always) private func packOrigin(_ family: Int, _ index: UInt64) -> UInt64 {
        UInt64(truncatingIfNeeded: family) << Self.indexBits | (index & ((1 << Self.indexBits) - 1))
    }

    // MARK: Links (lock held)

    private func end(_ ends: (UInt32, UInt32), _ list: AnonLRU) -> UInt32 { list == .active ? ends.1 : ends.0 }
    private func setEnd(_ ends: inout (UInt32, UInt32), _ list: AnonLRU, _ v: UInt32) {
        if list == .active { ends.1 = v } else { ends.0 = v }
    }
    /// Adds to the counts of `list` of the lruvec `pfn` is linked on, and to the totals.
    @inline(__always) private func account(_ pfn: PFN, _ list: AnonLRU, pages: Int, folios: Int) {
        @inline(__always) func add(_ h: UnsafeMutablePointer<Heads>) {
            if list == .active {
                h.pointee.pageCounts.1 += pages; h.pointee.folioCounts.1 += folios
            } else {
                h.pointee.pageCounts.0 += pages; h.pointee.folioCounts.0 += folios
            }
        }
        add(heads + Int(lruvecOf[pfn.index]))
        add(totals)
    }

    /// Links `pfn` at the hot end of `list` of the lruvec of its charge, or at its cold end (Linux:
    /// `lruvec_add_folio()`, `list_add()`, `list_add_tail()`).
    private func link(_ pfn: PFN, _ list: AnonLRU, cold atCold: Bool = false, lruvec known: Int? = nil) {
        let v = known ?? lruvec(for: pfn)
        lruvecOf[pfn.index] = UInt16(truncatingIfNeeded: v)
        if v > highestLruvec { highestLruvec = v }
        let h = heads + v
        let me = pfn.rawValue &+ 1
        if atCold {
            let old = end(h.pointee.cold, list)
            nodes[pfn.index].prev = old
            nodes[pfn.index].next = 0
            if old == 0 { setEnd(&h.pointee.hot, list, me) } else { nodes[Int(old - 1)].next = me }
            setEnd(&h.pointee.cold, list, me)
        } else {
            let old = end(h.pointee.hot, list)
            nodes[pfn.index].next = old
            nodes[pfn.index].prev = 0
            if old == 0 { setEnd(&h.pointee.cold, list, me) } else { nodes[Int(old - 1)].prev = me }
            setEnd(&h.pointee.hot, list, me)
        }
    }

    /// Links `pfn` just on the hot side of `neighbour`, which is on `list`, in the neighbour's lruvec.
    private func link(_ pfn: PFN, before neighbour: PFN, _ list: AnonLRU) {
        let v = Int(lruvecOf[neighbour.index])
        lruvecOf[pfn.index] = UInt16(truncatingIfNeeded: v)
        let me = pfn.rawValue &+ 1
        let before = nodes[neighbour.index].prev
        nodes[pfn.index].prev = before
        nodes[pfn.index].next = neighbour.rawValue &+ 1
        nodes[neighbour.index].prev = me
        if before == 0 { setEnd(&heads[v].hot, list, me) } else { nodes[Int(before - 1)].next = me }
    }

    /// Whether `pfn`, which has `PG_lru` for `list`, is linked into it rather than staged.
    private func isLinked(_ pfn: PFN, _ list: AnonLRU) -> Bool {
        // A staged folio is no list's end; its `lruvecOf` may be left from the frame's last folio.
        nodes[pfn.index].next != 0 || nodes[pfn.index].prev != 0
            || end(heads[Int(lruvecOf[pfn.index])].hot, list) == pfn.rawValue &+ 1
    }

    private func unlink(_ pfn: PFN, _ list: AnonLRU) {
        let h = heads + Int(lruvecOf[pfn.index])
        let p = nodes[pfn.index].prev, n = nodes[pfn.index].next
        if p == 0 { setEnd(&h.pointee.hot, list, n) } else { nodes[Int(p - 1)].next = n }
        if n == 0 { setEnd(&h.pointee.cold, list, p) } else { nodes[Int(n - 1)].prev = p }
        nodes[pfn.index].prev = 0
        nodes[pfn.index].next = 0
    }

    private func listOf(_ flags: FrameFlags) -> AnonLRU { flags.contains(.active) ? .active : .inactive }

    // MARK: Operations

    /// Puts a new folio on `list`, recording its family and linear index for the reverse map
    /// (Linux: `folio_add_new_anon_rmap()` setting `folio->mapping`/`index`, then `folio_add_lru()`
    /// → `lru_add()`). The folio is staged on the executing CPU's stage (see "Staging").
    /// - Precondition: the folio is on no list; `head` is its head; no other thread can reach it
    ///   yet (no entry maps it), so its flags and node are written without a lock.
    @inline(__always)
    func add(_ head: PFN, to list: AnonLRU, family: Int, index: UInt64) {
        nodes[head.index].origin = packOrigin(family, index)
        let old = frames.insertFlagsUnshared(head, list == .active ? [.lru, .active] : .lru)
        precondition(!old.contains(.lru), "\(head) is already on an LRU list")
        if list == .inactive && old.contains(.active) { frames.removeFlags(head, .active) }
        let cpu = SimulatedCPU.current
        let stagedHere = staged.withStripe(cpu) { $0.push(list.rawValue, head.rawValue) }
        if stagedHere { return }
        // This CPU's stage is full: link it, and this folio after it. Other CPUs' stages stay; their
        // folios came at the same time as these, in no order the model promises.
        lock.lock()
        flushStage(cpu)
        link(head, list)
        account(head, list, pages: frames.order(head).pages, folios: 1)
        lock.unlock()
    }

    /// Takes `lock` and links every CPU's staged folios, oldest first (see "Staging"). Every
    /// operation on the lists but `add` and `delete` starts here.
    func lockFlushed() {
        lock.lock()
        flushStages()
    }

    /// Links every CPU's staged folios, CPU 0's first; `lock` is held (Linux: `lru_add_drain_all()`,
    /// which drains each CPU's `cpu_fbatches.lru_add`).
    private func flushStages() {
        for cpu in 0..<staged.cpus { flushStage(cpu) }
    }

    /// How many CPUs have a stage.
    var cpus: Int { staged.cpus }

    /// Folios staged on CPU `cpu` and not linked yet (for tests: a stage is per simulated CPU).
    func stagedCount(cpu: Int) -> Int {
        let stripe = staged.stripe(cpu)
        return stripe.count(0) + stripe.count(1)
    }

    /// Links the folios staged on CPU `cpu`, oldest first (Linux: `lru_add_drain_cpu()`).
    /// - Precondition: `lock` is held.
    private func flushStage(_ cpu: Int) {
        let stripe = staged.stripe(cpu)
        // A folio staged by an add that happened before this operation is seen here; one staged at
        // the same time is an add that comes after it.
        guard stripe.count(0) + stripe.count(1) > 0 else { return }
        staged.withStripe(cpu) { stripe in
            for list in AnonLRU.allCases {
                stripe.drain(list.rawValue) { pfn in
                    link(PFN(pfn), list)
                    account(PFN(pfn), list, pages: frames.order(PFN(pfn)).pages, folios: 1)
                }
            }
        }
    }

    /// Takes a dying folio off its list (Linux: `__page_cache_release()` → `lruvec_del_folio()` in
    /// `__folio_put()`).
    func delete(_ head: PFN) {
        lock.lock()
        let flags = frames.flags(head)
        if flags.contains(.lru) {
            let list = listOf(flags)
            // Only a folio still staged needs the stages linked first; the others are left staged.
            // (Scanning every CPU's stage on every free was 12 % of a data-mode 4 KiB fault's cost.)
            if !isLinked(head, list) { flushStages() }
            unlink(head, list)
            account(head, list, pages: -frames.order(head).pages, folios: -1)
            frames.removeFlags(head, [.lru, .active])
        }
        lock.unlock()
    }

    /// Takes the folio off its list with a reference, so that the caller can work on it off the lock;
    /// false when it is on no list (someone else isolated it) or is being freed (Linux:
    /// `folio_isolate_lru()`).
    func isolate(_ head: PFN) -> Bool {
        lockFlushed()
        defer { lock.unlock() }
        let flags = frames.flags(head)
        guard flags.contains(.lru), frames.tryGetReference(head) else { return false }
        takeOff(head, listOf(flags))
        return true
    }

    private func takeOff(_ head: PFN, _ list: AnonLRU) {
        unlink(head, list)
        account(head, list, pages: -frames.order(head).pages, folios: -1)
        frames.removeFlags(head, .lru)
        isolatedHeads.insert(head.rawValue)
    }

    /// Isolates folios from the cold end of `list` of `lruvec` until `pages` pages are taken or every
    /// folio was looked at once; a folio whose last reference is going is moved to the hot end and
    /// left (Linux: `isolate_lru_folios()` on one lruvec). Returns the folios, each with a reference,
    /// and the pages scanned.
    func isolateFromCold(_ list: AnonLRU, of lruvec: Int = 0, pages wanted: Int) -> (folios: [PFN], scanned: Int) {
        var taken: [PFN] = []
        var takenPages = 0, scanned = 0
        lockFlushed()
        let h = heads + lruvec
        var remaining = list == .active ? h.pointee.folioCounts.1 : h.pointee.folioCounts.0
        while takenPages < wanted && remaining > 0 {
            remaining -= 1
            let last = end(h.pointee.cold, list)
            guard last != 0 else { break }
            let head = PFN(last - 1)
            let pages = frames.order(head).pages
            scanned += pages
            guard frames.tryGetReference(head) else {
                unlink(head, list)
                link(head, list, lruvec: lruvec)
                continue
            }
            takeOff(head, list)
            taken.append(head)
            takenPages += pages
        }
        lock.unlock()
        return (taken, scanned)
    }

    /// Puts an isolated folio back on `list` (its hot end, or the cold end for pieces a reclaimer
    /// wants to see again soon); the caller then drops the isolation's reference (Linux:
    /// `folio_putback_lru()`, `move_folios_to_lru()`).
    func putBack(_ head: PFN, on list: AnonLRU, cold atCold: Bool = false) {
        lockFlushed()
        let removed = isolatedHeads.remove(head.rawValue)
        precondition(removed != nil, "\(head) was not isolated")
        if list == .active { frames.insertFlags(head, [.lru, .active]) } else {
            frames.insertFlags(head, .lru)
            frames.removeFlags(head, .active)
        }
        link(head, list, cold: atCold)
        account(head, list, pages: frames.order(head).pages, folios: 1)
        lock.unlock()
    }

    /// Forgets an isolated folio its isolator is about to free (Linux: the `NR_ISOLATED_ANON` of a
    /// folio migration or reclaim freed).
    func release(_ head: PFN) {
        lock.lock()
        let removed = isolatedHeads.remove(head.rawValue)
        precondition(removed != nil, "\(head) was not isolated")
        frames.removeFlags(head, .active)
        lock.unlock()
    }

    /// After a split of the folio at `head` (already rewritten as a 4 KiB page, with `oldPages` before):
    /// the pages in `tails` join the head's list just on its hot side, with its `PG_active`, in
    /// order; if the head is isolated they go to the cold end of its list instead, where the
    /// reclaimer that isolated it finds them next. Their reverse-map index follows the head's.
    /// (Linux: `lru_add_split_folio()`, 2.6.38: `lru_add_page_tail()`.)
    /// - Precondition: `lock` is held, taken by `lockFlushed()` (the split takes it around rewriting
    ///   the frames' headers).
    func addSplitTails(_ head: PFN, oldPages: Int, tails: [PFN]) {
        let flags = frames.flags(head)
        let list = listOf(flags)
        if flags.contains(.lru) { account(head, list, pages: 1 - oldPages, folios: 0) }
        let origin = nodes[head.index].origin
        for tail in tails {
            nodes[tail.index].origin = origin &+ UInt64(tail.rawValue &- head.rawValue)
            frames.insertFlags(tail, list == .active ? [.lru, .active] : .lru)
            if list == .inactive { frames.removeFlags(tail, .active) }
            if flags.contains(.lru) { link(tail, before: head, list) } else { link(tail, list, cold: true) }
            account(tail, list, pages: 1, folios: 1)
        }
    }

    /// Records where an unmapped folio the kernel put on a list before anything mapped it (a page swap
    /// readahead read) is mapped first: its family and linear index, for the reverse map.
    func setOrigin(_ head: PFN, family: Int, index: UInt64) {
        lock.lock()
        nodes[head.index].origin = packOrigin(family, index)
        lock.unlock()
    }

    /// The folio's fork family and the linear page index of its first page.
    /// - Precondition: the caller isolated the folio (or holds `lock`).
    func origin(of head: PFN) -> (family: Int, index: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        let origin = nodes[head.index].origin
        return (Int(origin >> Self.indexBits), origin & ((1 << Self.indexBits) - 1))
    }

    /// The lists' sizes in pages, summed over the lruvecs (Linux: `node_page_state(NR_INACTIVE_ANON)`, …).
    var pages: (inactive: Int, active: Int) {
        lockFlushed()
        defer { lock.unlock() }
        return totals.pointee.pageCounts
    }

    /// The sizes of one lruvec's lists in pages (Linux: `lruvec_page_state(lruvec, NR_INACTIVE_ANON)`, …).
    func pages(of lruvec: Int) -> (inactive: Int, active: Int) {
        lockFlushed()
        defer { lock.unlock() }
        return heads[lruvec].pageCounts
    }

    /// The lruvecs that hold folios now, the root's first (Linux: the memcgs `mem_cgroup_iter()`
    /// visits, their lruvecs empty or not).
    var lruvecsInUse: [Int] {
        lockFlushed()
        defer { lock.unlock() }
        return (0...highestLruvec).filter { heads[$0].folioCounts.0 + heads[$0].folioCounts.1 > 0 }
    }

    /// One lruvec's lists for the invariant checker: each list's folios from hot to cold, and its counts.
    struct LruvecSnapshot {
        var lruvec: Int
        var lists: [[PFN]]
        var pages: [Int]
        var folios: [Int]
    }

    /// Every lruvec that ever held a folio, the isolated folios, and the totals, for the invariant
    /// checker.
    func snapshot() -> (lruvecs: [LruvecSnapshot], isolated: Set<UInt32>, totalPages: [Int], totalFolios: [Int]) {
        lockFlushed()
        defer { lock.unlock() }
        var lruvecs: [LruvecSnapshot] = []
        for v in 0...highestLruvec {
            var lists: [[PFN]] = []
            for list in AnonLRU.allCases {
                var out: [PFN] = []
                var at = end(heads[v].hot, list)
                while at != 0 && out.count <= frames.count {
                    out.append(PFN(at - 1))
                    at = nodes[Int(at - 1)].next
                }
                lists.append(out)
            }
            lruvecs.append(LruvecSnapshot(lruvec: v, lists: lists, pages: [heads[v].pageCounts.0, heads[v].pageCounts.1],
                                          folios: [heads[v].folioCounts.0, heads[v].folioCounts.1]))
        }
        return (lruvecs, isolatedHeads, [totals.pointee.pageCounts.0, totals.pointee.pageCounts.1],
                [totals.pointee.folioCounts.0, totals.pointee.folioCounts.1])
    }

    /// The lruvec the folio at `head` is linked on (for the invariant checker).
    func linkedLruvec(_ head: PFN) -> Int { Int(lruvecOf[head.index]) }
}

extension Kernel {
    /// How the anonymous LRU lists treat new and referenced pages. The one place the design's
    /// `anonLRU` is read.
    @inline(__always) var anonLRURules: KernelDesign.AnonLRUPolicy { design.anonLRU }

    /// Puts a new folio on `list` (Linux: `folio_add_lru()`). A kernel method, called by address-space
    /// code, so that the lists object is one reference from `self` and not retained around the call
    /// (see `addHugeMapping`).
    func folioAddLRU(_ head: PFN, to list: AnonLRU, family: Int, index: UInt64) {
        lru.add(head, to: list, family: family, index: index)
    }
}

extension AddressSpace {
    /// Puts a new anonymous folio that this mm maps at `address` of `vma` (its first page) on the list
    /// the design says, recording where it lives for the reverse map (Linux:
    /// `folio_add_new_anon_rmap()` and `folio_add_lru_vma()`; 2.6.38: `page_add_new_anon_rmap()`).
    @inline(__always) func addNewAnonFolioToLRU(_ head: PFN, _ vma: VMA, at address: VirtualAddress) {
        kernel.folioAddLRU(head, to: kernel.anonLRURules.newPagesActive ? .active : .inactive,
                           family: anonFamily, index: vma.pageIndex(of: address))
    }
}
