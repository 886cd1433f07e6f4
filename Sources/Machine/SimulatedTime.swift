import VMCore
import Kernel

/// The kernel locks whose waits simulated time reports, by Linux's names.
public enum LockClass: Int, Sendable, CaseIterable {
    /// The mm's `mmap_lock` (`mmap_sem` before 5.8): an rwsem whose count is one line every fault writes.
    case mmapLock
    /// The mm's `page_table_lock`: every huge PMD and PTE-table install before 3.13.
    case pageTableLock
    /// A PTE table's split lock (`pte_lockptr()`).
    case ptl
    /// A PMD table's split lock (`pmd_lockptr()`, 3.13+).
    case pmdPTL
    /// The LRU lists' lock (`zone->lru_lock`, `lruvec->lru_lock` since 5.11).
    case lruLock
    /// The buddy free lists' lock (`zone->lock`).
    case zoneLock

    /// The name Linux's lock statistics use.
    public var name: String {
        switch self {
        case .mmapLock: "mmap_lock"
        case .pageTableLock: "page_table_lock"
        case .ptl: "ptl"
        case .pmdPTL: "pmd_ptl"
        case .lruLock: "lru_lock"
        case .zoneLock: "zone->lock"
        }
    }
}

/// The two choices of a kernel design that a fault's and a lookup's lock timelines read: which lock
/// guards a huge PMD (`page_table_lock` or the split PMD lock) and how a contended spin lock passes
/// on. The hot charges take this trivial value rather than the whole `KernelDesign`, whose copy, with
/// the reference counts of what it holds, cost about 100 instructions per fault and per lookup.
public struct LockDesign: Sendable, Hashable {
    public var pmdLock: KernelDesign.PMDLockGranularity
    public var spinLocks: KernelDesign.SpinLockKind

    public init(pmdLock: KernelDesign.PMDLockGranularity, spinLocks: KernelDesign.SpinLockKind) {
        self.pmdLock = pmdLock
        self.spinLocks = spinLocks
    }

    public init(_ design: KernelDesign) {
        self.init(pmdLock: design.pmdLock, spinLocks: design.spinLocks)
    }
}

extension Kernel {
    /// This kernel's `LockDesign`, read field by field from its design (no copy of the design).
    @inline(__always) public var lockDesign: LockDesign {
        LockDesign(pmdLock: design.pmdLock, spinLocks: design.spinLocks)
    }
}

/// Time on a machine of many CPUs: each CPU's clock is its cycles (`CPU.counters.cycles`: accesses,
/// walks, faults' work, flushes) plus what sharing cost it here — waits for locks other CPUs held,
/// cache lines other CPUs wrote, system calls, memory bandwidth other CPUs were using.
///
/// Lock acquisitions have a timeline: per lock, the simulated time it is next free and the CPU that
/// held it last. A fault's acquisitions follow from what it recorded doing (`FaultContext`) and the
/// design's locks, in the order Linux's handler takes them (`do_anonymous_page()`,
/// `__do_huge_pmd_anonymous_page()`): the mmap lock's count (`down_read()`), `zone->lock` when the
/// allocation needs the buddy lists, the zeroing (which shares the socket's memory bandwidth), the
/// PTE-table install, the PMD or PTE lock, the LRU lock when the per-CPU pagevec fills, and the
/// count again (`up_read()`). A lock found busy makes the CPU spin until it is free, plus a hand-off;
/// a line another CPU wrote last costs a transfer. The CPUs' work must reach this in simulated-time
/// order (`MachineExecutor` interleaves threads by their CPUs' clocks), so that a lock's timeline is
/// read at the times it is taken.
///
/// Exists only on machines of more than one CPU: a one-CPU machine's times are its cycles.
public final class SimulatedTime: @unchecked Sendable {
    public let parameters: ContentionParameters
    let cpuCount: Int
    /// Cycles each CPU spent on sharing (waits, transfers, system calls, bandwidth), beyond its counters.
    public let extraCycles: SimulatedTimeCounters<Double>
    /// Cycles spent spinning or waiting, per lock class (`LockClass.rawValue`), over all CPUs.
    public let waitCycles: SimulatedTimeCounters<Double>
    /// Acquisitions that found their lock busy, per lock class.
    public let contended: SimulatedTimeCounters<Int>
    /// Acquisitions, per lock class.
    public let acquisitions: SimulatedTimeCounters<Int>
    /// Cycles spent on cache-line transfers of shared lines (lock words, the mmap lock's count).
    @exclusivity(unchecked) public private(set) var transferCycles = 0.0
    /// Cycles CPUs waited for memory bandwidth while zeroing or copying.
    @exclusivity(unchecked) public private(set) var bandwidthCycles = 0.0
    /// System calls charged.
    @exclusivity(unchecked) public internal(set) var systemCalls = 0
    /// A time no CPU that still has work is behind: the lowest clock among them, as the executor last
    /// saw it (it only moves forward). Timelines may forget what ended by then.
    @exclusivity(unchecked) public private(set) var horizon = -Double.infinity

    /// Moves the horizon to `time`, the lowest clock of the CPUs that have work to run, if it is later.
    public func advanceHorizon(to time: Double) {
        if time > horizon { horizon = time }
    }

    /// Split PTE and PMD locks, by pid and table (`key(_:_:_:)`): the index of each one's timeline.
    private var lockIndex: [UInt64: Int] = [:]
    @exclusivity(unchecked) var lockTimelines = ContiguousArray<Timeline>()
    /// The split locks' timelines that may hold more than their last reservation, by index: those
    /// used since the last `compactSplitLocks()`. A lock is made for every page table a run
    /// touches and mostly used while its table fills, so the rest are kept down to their last
    /// reservation once it ends by the horizon, and host memory follows the tables in use.
    @exclusivity(unchecked) private var activeSplitLocks = ContiguousArray<Int>()
    /// Whether each split lock is in `activeSplitLocks`, by index.
    @exclusivity(unchecked) private var splitLockActive = ContiguousArray<Bool>()
    /// `activeSplitLocks` is compacted when it reaches this (twice what was left active last time,
    /// at least 256), so the work is constant per lock used.
    @exclusivity(unchecked) private var compactionThreshold = 256
    /// Per CPU and kind of split lock (PTE, PMD): the key it looked up last and its index. A CPU's
    /// faults mostly fall in the 2 MiB range of its previous one, so this spares the hash lookup.
    @exclusivity(unchecked) private var lastLockKeys: ContiguousArray<UInt64>
    @exclusivity(unchecked) private var lastLockIndices: ContiguousArray<Int>
    /// Per address space (by `mmIndex`): its mmap lock's count line and its `page_table_lock`.
    @exclusivity(unchecked) var countLines: [LineTimeline] = []
    @exclusivity(unchecked) var pageTableLocks: [Timeline] = []
    private var mmIndex: [Int: Int] = [:]
    @exclusivity(unchecked) private var lastPID = -1, lastMM = 0
    /// `zone->lock` and `lru_lock` (one zone, one node).
    @exclusivity(unchecked) var zoneLock = Timeline(), lruLock = Timeline()
    /// The mmap locks' holds: writers' by mm (`mmIndex`), readers' by CPU.
    let mmapLocks: MmapLockTimeline
    /// Per socket: bytes its memory channels carry in each slot of `bandwidthSlotCycles`, by slot.
    /// A buffer of its own, written in place: an array's uniqueness check before each write was one
    /// of the two a fault's `stream` made.
    private let memorySlots: UnsafeMutablePointer<BandwidthSlots>
    private let socketCount: Int
    /// The granularity of the bandwidth timeline.
    static let bandwidthSlotCycles = 10_000.0
    /// Per CPU: pages left in its per-CPU list, folios in its pagevec.
    private let pcpPages: SimulatedTimeCounters<Int>
    private let pagevecFolios: SimulatedTimeCounters<Int>
    private let zeroRate: Double
    /// A read served by the last-level cache: what each of a ticket lock's spinning waiters costs the
    /// next owner in a hand-off (`acquire`).
    private let sharedCacheReadCycles: Double
    /// The socket of each CPU (CPUs are numbered socket by socket), looked up rather than divided for
    /// every reservation a timeline weighs. A buffer of its own, which `TransferCosts` reads.
    private let socketOf: UnsafeMutablePointer<Int32>

    init(cpuCount: Int, description: MachineDescription) {
        self.cpuCount = cpuCount
        parameters = description.contention
        sharedCacheReadCycles = description.caches.last?.latency ?? description.contention.sameSocketTransferCycles
        socketOf = .allocate(capacity: cpuCount)
        for cpu in 0..<cpuCount { (socketOf + cpu).initialize(to: Int32(cpu / description.contention.cpusPerSocket)) }
        extraCycles = SimulatedTimeCounters(repeating: 0, count: cpuCount)
        waitCycles = SimulatedTimeCounters(repeating: 0, count: LockClass.allCases.count)
        contended = SimulatedTimeCounters(repeating: 0, count: LockClass.allCases.count)
        acquisitions = SimulatedTimeCounters(repeating: 0, count: LockClass.allCases.count)
        let sockets = (cpuCount + parameters.cpusPerSocket - 1) / parameters.cpusPerSocket
        socketCount = max(1, sockets)
        memorySlots = .allocate(capacity: socketCount)
        memorySlots.initialize(repeating: BandwidthSlots(), count: socketCount)
        lastLockKeys = ContiguousArray(repeating: .max, count: 2 * cpuCount)
        lastLockIndices = ContiguousArray(repeating: 0, count: 2 * cpuCount)
        pcpPages = SimulatedTimeCounters(repeating: 0, count: cpuCount)
        pagevecFolios = SimulatedTimeCounters(repeating: 0, count: cpuCount)
        mmapLocks = MmapLockTimeline(cpuCount: cpuCount)
        let zero = description.timing.zeroPageCycles
        zeroRate = zero > 0 ? Double(PageGeometry.pageSize) / zero : .infinity
    }

    deinit {
        socketOf.deallocate()
        memorySlots.deinitialize(count: socketCount)
        memorySlots.deallocate()
        for counters in [extraCycles, waitCycles] { counters.release() }
        for counters in [contended, acquisitions, pcpPages, pagevecFolios] { counters.release() }
    }

    /// The socket of `cpu`.
    @inline(__always) func socket(_ cpu: Int) -> Int { cpu / parameters.cpusPerSocket }

    /// The least a transfer between two CPUs costs (`transfer(from:to:)` of two different CPUs).
    private var leastTransferCycles: Double { min(parameters.sameSocketTransferCycles, parameters.remoteSocketTransferCycles) }

    /// What moving a line last written by `from` to `to` costs.
    @inline(__always) func transfer(from: Int32, to: Int) -> Double {
        if from < 0 || Int(from) == to { return 0 }
        return socketOf[Int(from)] == socketOf[to] ? parameters.sameSocketTransferCycles : parameters.remoteSocketTransferCycles
    }

    /// What moving a line to one CPU costs from each other CPU (`transfer(from:to:)`), as plain
    /// values that a timeline's `duration` closure captures without retaining `self`.
    struct TransferCosts {
        let sockets: UnsafeMutablePointer<Int32>
        let cpu: Int32, socket: Int32
        let sameSocket: Double, remoteSocket: Double

        /// What moving the line last written by `holder` costs (nothing from nobody or from the CPU itself).
        @inline(__always) func from(_ holder: Int32) -> Double {
            if holder < 0 || holder == cpu { return 0 }
            return sockets[Int(holder)] == socket ? sameSocket : remoteSocket
        }
    }

    @inline(__always) func transferCosts(to cpu: Int) -> TransferCosts {
        TransferCosts(sockets: socketOf, cpu: Int32(truncatingIfNeeded: cpu), socket: socketOf[cpu],
                      sameSocket: parameters.sameSocketTransferCycles, remoteSocket: parameters.remoteSocketTransferCycles)
    }

    /// The timeline of the split lock `key` (`kind` 0 for a PTE table's, 1 for a PMD table's), and
    /// whether it was made now (nobody took the lock before).
    @inline(__always) func splitLock(_ key: UInt64, kind: Int, cpu: Int) -> (index: Int, new: Bool) {
        let memo = 2 &* cpu &+ kind
        if lastLockKeys[memo] == key { return (lastLockIndices[memo], false) }
        return splitLockLookedUp(key, memo: memo)
    }

    /// `splitLock` past the CPU's memo: the hash lookup, out of line so that the charges that
    /// inline `splitLock` stay small (a turn of many CPUs runs more code than the host's
    /// instruction cache holds).
    @inline(never)
    private func splitLockLookedUp(_ key: UInt64, memo: Int) -> (index: Int, new: Bool) {
        let index: Int, new: Bool
        if let known = lockIndex[key] {
            index = known; new = false
        } else {
            index = lockTimelines.count; new = true
            lockIndex[key] = index
            lockTimelines.append(Timeline())
            splitLockActive.append(false)
        }
        lastLockKeys[memo] = key
        lastLockIndices[memo] = index
        // A lock leaves the memo only here, so one that a CPU keeps taking is noted once.
        if !splitLockActive[index] {
            splitLockActive[index] = true
            activeSplitLocks.append(index)
            if activeSplitLocks.count >= compactionThreshold { compactSplitLocks() }
        }
        return (index, new)
    }

    /// Keeps each active split lock whose reservations all end by the horizon down to its last one
    /// (`Timeline.compact(horizon:)`), and notes which remain active. A lock in a CPU's memo stays
    /// active: the memo's hits do not note it again.
    private func compactSplitLocks() {
        var kept = 0
        let memo = Set(lastLockIndices.indices.lazy.filter { self.lastLockKeys[$0] != .max }.map { self.lastLockIndices[$0] })
        for index in activeSplitLocks {
            if !memo.contains(index) && lockTimelines[index].compact(horizon: horizon) {
                splitLockActive[index] = false
            } else {
                activeSplitLocks[kept] = index
                kept += 1
            }
        }
        activeSplitLocks.removeLast(activeSplitLocks.count - kept)
        compactionThreshold = max(256, 2 * kept)
    }

    /// Host bytes the split locks' timelines hold (their reservations' storage), for measuring.
    var splitLockStorageBytes: Int { lockTimelines.reduce(0) { $0 + $1.storageBytes } }

    /// How many split locks exist, and how many are active (not yet compacted).
    var splitLockCounts: (all: Int, active: Int) { (lockTimelines.count, activeSplitLocks.count) }

    /// The index of `pid`'s timelines, made on first use.
    @inline(__always) func mm(_ pid: Int) -> Int {
        if pid == lastPID { return lastMM }
        return mmLookedUp(pid)
    }

    /// `mm` of a pid other than the last one asked: out of line, as `splitLockLookedUp`.
    @inline(never)
    private func mmLookedUp(_ pid: Int) -> Int {
        let i: Int
        if let known = mmIndex[pid] {
            i = known
        } else {
            i = countLines.count
            mmIndex[pid] = i
            // CPUs are numbered socket by socket: a request after a CPU of another socket pays a
            // remote transfer (`transfer(from:to:)`).
            countLines.append(LineTimeline(shortest: parameters.atomicCycles,
                                           shortestAfterOther: parameters.atomicCycles + leastTransferCycles,
                                           groupSize: parameters.cpusPerSocket,
                                           shortestAfterOtherGroup: parameters.atomicCycles + parameters.remoteSocketTransferCycles))
            _ = mmapLocks.addMM()
            pageTableLocks.append(Timeline())
        }
        lastPID = pid
        lastMM = i
        return i
    }

    static func key(_ kind: UInt64, _ pid: Int, _ index: UInt64) -> UInt64 {
        (kind << 60) | (UInt64(truncatingIfNeeded: pid) & 0xF_FFFF) << 40 | (index & 0xFF_FFFF_FFFF)
    }

    /// An atomic read-modify-write of a shared line at time `t` by `cpu`: the line serves one writer
    /// at a time, and a writer other than the one before it pays a transfer. Returns the delay.
    ///
    /// Timelines come unretained (`Unmanaged`), as `acquire`'s do: `self` owns them for its life, and
    /// a retain and release around every request was 5 % of an 80-CPU run's instructions.
    func writeLine(_ line: Unmanaged<LineTimeline>, cpu: Int, at t: Double) -> Double {
        let atomic = parameters.atomicCycles
        let cost = transferCosts(to: cpu)
        let (start, previous) = line._withUnsafeGuaranteedRef {
            $0.reserve(at: t, horizon: horizon, cpu: cpu) { holder in cost.from(holder) + atomic }
        }
        let move = cost.from(previous)
        transferCycles += move
        return start - t + move
    }

    /// Takes a spin lock of kind `kind` at time `t` for `hold` cycles: waits until it is free, plus a
    /// hand-off when it waited and a transfer of the lock's line when another CPU held it before.
    /// Returns the delay before the critical section starts.
    ///
    /// The hand-off after a release is one transfer of the line for a queued spin lock. For a ticket
    /// lock every waiter spins reading the lock's line: the release invalidates each copy, the waiters
    /// read the line again one after another, and the next owner's read comes, on average, halfway
    /// among theirs (Boyd-Wickizer, Kaashoek, Morris, Zeldovich, "Non-scalable locks are dangerous",
    /// Linux Symposium 2012, whose model and measurements have the hand-off grow linearly with the
    /// waiters). The waiters at a release are taken to be as many as the holder found ahead of it
    /// when it asked (the queue a busy lock keeps); each waiter's read is served by the last-level
    /// cache, where the line sits once the first reader has fetched it (`sharedCacheReadCycles`; a
    /// waiter on another socket would cost more: docs/concurrency.md says how much that changes).
    ///
    /// Not inlined: one copy of the lock's search serves every charge (a fault takes up to five
    /// locks, a page lookup one), so a turn of many CPUs runs less distinct code (`chargeFault` was
    /// 9.3 KB and `chargeNodeLookup` 8.8 KB with a copy per call site).
    @inline(never)
    func acquire(_ lock: Unmanaged<Timeline>, _ lockClass: LockClass, _ kind: KernelDesign.SpinLockKind,
                         cpu: Int, at t: Double, hold: Double) -> Double {
        let c = lockClass.rawValue
        acquisitions[c] &+= 1
        let p = parameters
        let handoff = p.sameSocketTransferCycles
        let perWaiter = kind == .ticket ? sharedCacheReadCycles / 2 : 0
        let cost = transferCosts(to: cpu)
        let (start, previous) = lock._withUnsafeGuaranteedRef {
            $0.reserve(at: t, horizon: horizon, cpu: cpu, shortest: hold + handoff,
                       shortestAfterOther: hold + handoff + leastTransferCycles) { holder, ahead in
                cost.from(holder) + hold + handoff + perWaiter * Double(ahead)
            }
        }
        let move = cost.from(previous)
        transferCycles += move
        if start > t {
            // A spinning waiter: the holder's release reaches it as one more transfer of the line.
            contended[c] &+= 1
            let wait = start - t + max(move, handoff)
            waitCycles[c] += wait
            return wait
        }
        return move
    }

    /// Zeroing or copying `bytes` at time `t` on `cpu`'s socket at the core's speed, unless the
    /// socket's channels are full with other CPUs' streams in the same slots of time. Returns the
    /// stall beyond the core's own time.
    func stream(_ bytes: UInt64, cpu: Int, at t: Double) -> Double {
        guard bytes > 0 else { return 0 }
        let s = socket(cpu)
        precondition(s < socketCount, "socket out of range")
        let slot = Self.bandwidthSlotCycles
        let capacity = parameters.socketBandwidthBytesPerCycle * slot
        var left = Double(bytes)
        var now = t
        let first = Int(t / slot)
        var index = first
        while left > 0 {
            let slotEnd = Double(index + 1) * slot
            let coreBytes = (slotEnd - now) * zeroRate
            let used = memorySlots[s][index]
            let take = min(left, coreBytes, max(0, capacity - used))
            if take > 0 { (memorySlots + s).pointee.set(index, used + take) }
            left -= take
            now = left > 0 ? slotEnd : now + take / zeroRate
            index += 1
        }
        // Slots far behind are dropped once there are many: those more than 2,048 slots before `t`.
        if memorySlots[s].count > 4096 { (memorySlots + s).pointee.drop(below: first - 2048) }
        let stall = max(0, now - (t + Double(bytes) / zeroRate))
        bandwidthCycles += stall
        return stall
    }

    /// Charges `cpu` what sharing cost one fault that started at `start` (its clock before the fault)
    /// and whose own work took `cycles`, from what the kernel recorded.
    /// The fault's figures this reads of its `FaultContext`, passed one by one so that the fault
    /// path copies no context: the faulting address, the huge and base pages allocated, the bytes
    /// zeroed plus twice the bytes copied (`streamBytes`), and whether it mapped anything.
    func chargeFault(address va: UInt64, hugePages: Int, basePages: Int, streamBytes: UInt64, mapped: Bool,
                     cpu: Int, pid: Int, design: LockDesign, start: Double, cycles: Double) {
        let p = parameters
        var delay = 0.0
        let m = mm(pid)
        // down_read(): the rwsem's count, after the writers that hold or wait for the lock.
        delay += mmapLocks.readerEnters(m, at: start) - start
        delay += writeLine(.passUnretained(countLines[m]), cpu: cpu, at: start + delay)
        acquisitions[LockClass.mmapLock.rawValue] &+= 1
        let downReadWait = delay
        let splitPMD = design.pmdLock == .splitPMDLock
        let pmdClass: LockClass = splitPMD ? .pmdPTL : .pageTableLock
        let spin = design.spinLocks
        /// The PMD lock of `va`: the mm's page_table_lock, or the PMD table's split lock.
        func takePMDLock(at t: Double, hold: Double) -> Double {
            splitPMD ? acquire(.passUnretained(lockTimelines[splitLock(Self.key(3, pid, va >> 30), kind: 1, cpu: cpu).index]), pmdClass, spin,
                               cpu: cpu, at: t, hold: hold)
                     : acquire(.passUnretained(pageTableLocks[m]), pmdClass, spin, cpu: cpu, at: t, hold: hold)
        }
        if hugePages > 0 {
            // The order-9 allocation takes zone->lock (no per-CPU list holds order 9 before 6.7).
            delay += acquire(.passUnretained(zoneLock), .zoneLock, spin, cpu: cpu, at: start + delay, hold: p.zoneHugeHoldCycles)
        } else if basePages > 0 {
            if pcpPages[cpu] < basePages {
                delay += acquire(.passUnretained(zoneLock), .zoneLock, spin, cpu: cpu, at: start + delay, hold: p.zoneBatchHoldCycles)
                pcpPages[cpu] += p.zoneBatchPages
            }
            pcpPages[cpu] -= min(pcpPages[cpu], basePages)
        }
        delay += stream(streamBytes, cpu: cpu, at: start + delay)
        let end = start + cycles
        if hugePages > 0 {
            delay += takePMDLock(at: end - p.hugePMDHoldCycles + delay, hold: p.hugePMDHoldCycles)
        } else if basePages > 0 || mapped {
            let ptl = splitLock(Self.key(4, pid, va >> 21), kind: 0, cpu: cpu)
            if ptl.new {
                // The first fault in the 2 MiB range installs its PTE table.
                delay += takePMDLock(at: start + delay, hold: p.pteTableInstallHoldCycles)
            }
            delay += acquire(.passUnretained(lockTimelines[ptl.index]), .ptl, spin, cpu: cpu, at: end - p.ptePTEHoldCycles + delay, hold: p.ptePTEHoldCycles)
        }
        if hugePages > 0 || basePages > 0 {
            pagevecFolios[cpu] += 1
            if pagevecFolios[cpu] >= p.lruBatchFolios {
                pagevecFolios[cpu] = 0
                delay += acquire(.passUnretained(lruLock), .lruLock, spin, cpu: cpu, at: end + delay, hold: p.lruBatchHoldCycles)
            }
        }
        // up_read(): the count again.
        let before = delay
        delay += writeLine(.passUnretained(countLines[m]), cpu: cpu, at: end + delay)
        waitCycles[LockClass.mmapLock.rawValue] += downReadWait + delay - before
        extraCycles[cpu] += delay
        mmapLocks.noteRead(cpu: cpu, mm: m, request: start, end: end + delay)
    }

    /// Charges `cpu`, at its clock `now`, a `get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)` of the page at
    /// `address` (Linux 2.6.38–5.x: `do_get_mempolicy()` takes the mmap lock for reading,
    /// `lookup_node()` → `get_user_pages()` → `follow_page_mask()` takes the lock of the entry that
    /// maps the page, then `up_read()`): the system call, the mmap lock's count line twice, and that
    /// lock — the PMD lock for a page behind a huge PMD (`follow_trans_huge_pmd()` under the mm's
    /// `page_table_lock` before 3.13, the PMD table's split lock after), the PTE table's split lock
    /// otherwise (`follow_page_pte()`).
    public func chargeNodeLookup(cpu: Int, pid: Int, address va: UInt64, hugePMD: Bool, design: LockDesign, now: Double) {
        systemCalls &+= 1
        let p = parameters
        let m = mm(pid)
        let spin = design.spinLocks
        let half = p.nodeLookupCycles / 2
        var delay = p.systemCallCycles / 2
        let asked = now + delay
        // down_read(): the rwsem's count, after the writers that hold or wait for the lock.
        delay += mmapLocks.readerEnters(m, at: asked) - asked
        delay += writeLine(.passUnretained(countLines[m]), cpu: cpu, at: now + delay)
        acquisitions[LockClass.mmapLock.rawValue] &+= 1
        let beforeLock = delay
        delay += half
        if hugePMD {
            if design.pmdLock == .splitPMDLock {
                let lock = splitLock(Self.key(3, pid, va >> 30), kind: 1, cpu: cpu).index
                delay += acquire(.passUnretained(lockTimelines[lock]), .pmdPTL, spin, cpu: cpu, at: now + delay, hold: p.followPageHoldCycles)
            } else {
                delay += acquire(.passUnretained(pageTableLocks[m]), .pageTableLock, spin, cpu: cpu, at: now + delay, hold: p.followPageHoldCycles)
            }
        } else {
            let lock = splitLock(Self.key(4, pid, va >> 21), kind: 0, cpu: cpu).index
            delay += acquire(.passUnretained(lockTimelines[lock]), .ptl, spin, cpu: cpu, at: now + delay, hold: p.followPageHoldCycles)
        }
        delay += p.followPageHoldCycles + half
        // up_read().
        let before = delay
        delay += writeLine(.passUnretained(countLines[m]), cpu: cpu, at: now + delay)
        waitCycles[LockClass.mmapLock.rawValue] += beforeLock - p.systemCallCycles / 2 + delay - before
        extraCycles[cpu] += delay + p.systemCallCycles / 2
        mmapLocks.noteRead(cpu: cpu, mm: m, request: asked, end: now + delay)
    }

    /// Charges `cpu` — khugepaged's (`KernelConfiguration.kernelThreadCPU`) — from its clock `now`, one
    /// collapse of `collapse.pid`'s range, in the order `collapse_huge_page()` takes the locks (Linux
    /// 2.6.38 and 6.18 alike, but for the PMD lock, which is the design's): the scan's `down_read()` and
    /// `up_read()` on the mm's count line; `down_write()` — faults of the mm on other CPUs wait from
    /// here to `up_write()`; the PMD lock while the PMD is cleared (`pmdp_clear_flush()`); the PTE
    /// table's lock while its 512 entries are checked (`__collapse_huge_page_isolate()`), with
    /// `lru_lock` taken for each page isolated (`isolate_lru_page()`); the copy (`copyCycles`, and the
    /// socket's memory bandwidth for reading and writing 2 MiB), each old entry cleared
    /// (`__collapse_huge_page_copy()`: under the PTE lock of a table nobody else reaches any more, so
    /// without a timeline) and the old pages freed as a zap frees them (`chargeRelease`); the PMD lock
    /// again for `set_pmd_at()`; `up_write()`.
    public func chargeCollapse(_ collapse: CollapseRecord, cpu: Int, design: KernelDesign, now: Double, copyCycles: Double) {
        let p = parameters
        let pid = collapse.pid
        let m = mm(pid)
        let spin = design.spinLocks
        let mmap = LockClass.mmapLock.rawValue
        var t = now
        var wait = 0.0
        // The scan under the mmap lock for reading (`khugepaged_scan_pmd()`; its work is not charged
        // here), then up_read().
        wait += mmapLocks.readerEnters(m, at: t) - t
        wait += writeLine(.passUnretained(countLines[m]), cpu: cpu, at: t + wait)
        t += wait
        let upRead = writeLine(.passUnretained(countLines[m]), cpu: cpu, at: t)
        wait += upRead
        t += upRead
        mmapLocks.noteRead(cpu: cpu, mm: m, request: now, end: t)
        acquisitions[mmap] &+= 2
        // down_write(): after the readers inside and the writers before it, then the count's line.
        let writeAsked = t
        var writeWait = mmapLocks.writerStarts(m, at: t) - t
        writeWait += writeLine(.passUnretained(countLines[m]), cpu: cpu, at: t + writeWait)
        if wait + writeWait > 0 { contended[mmap] &+= 1 }
        waitCycles[mmap] += wait + writeWait
        t += writeWait
        /// The PMD lock of the range for `hold` cycles at `t`; returns the time it is released.
        func pmdLocked(at t: Double, hold: Double) -> Double {
            if design.pmdLock == .splitPMDLock {
                let lock = splitLock(Self.key(3, pid, collapse.address >> 30), kind: 1, cpu: cpu).index
                return t + acquire(.passUnretained(lockTimelines[lock]), .pmdPTL, spin, cpu: cpu, at: t, hold: hold) + hold
            }
            return t + acquire(.passUnretained(pageTableLocks[m]), .pageTableLock, spin, cpu: cpu, at: t, hold: hold) + hold
        }
        t = pmdLocked(at: t, hold: p.zapHugePMDHoldCycles)
        // The PTE table's lock while its entries are checked and the pages isolated from the LRU.
        let isolate = p.zapTableHoldCycles + Double(PageGeometry.entriesPerTable) * p.zapEntryCycles
        let ptl = splitLock(Self.key(4, pid, collapse.address >> 21), kind: 0, cpu: cpu).index
        t += acquire(.passUnretained(lockTimelines[ptl]), .ptl, spin, cpu: cpu, at: t, hold: isolate) + isolate
        for _ in 0..<collapse.pagesCopied {
            t += acquire(.passUnretained(lruLock), .lruLock, spin, cpu: cpu, at: t, hold: p.lruReleaseFolioCycles) + p.lruReleaseFolioCycles
        }
        // The copy, each old entry cleared, the old pages freed.
        t += copyCycles + stream(2 * PageGeometry.pmdSize, cpu: cpu, at: t)
        t += Double(collapse.pagesCopied) * p.zapEntryCycles
        t = chargeRelease(collapse.freed, cpu: cpu, spin: spin, at: t)
        // set_pmd_at() under the PMD lock, then up_write().
        t = pmdLocked(at: t, hold: p.hugePMDHoldCycles)
        mmapLocks.noteWrite(mm: m, request: writeAsked, end: t, horizon: horizon)
        extraCycles[cpu] += t - now
    }

    /// Charges `cpu` — the kernel threads' — from its clock `now`, the waits of reclaim isolating
    /// `pages` pages from the LRU lists: `lru_lock` once per `isolateBatchPages`, held
    /// `lruReleaseFolioCycles` per page, the batches `workPerPage` per page apart
    /// (`shrink_inactive_list()` → `isolate_lru_pages()`, then the batch's reclaim). The work itself
    /// is in the kernel threads' cycles already (`reclaimPageCycles` per page reclaimed): only the
    /// waits for other CPUs' holds are added.
    public func chargeLRUIsolation(pages: Int, cpu: Int, design: KernelDesign, now: Double, workPerPage: Double) {
        let p = parameters
        var t = now, left = pages, waited = 0.0
        while left > 0 {
            let batch = min(left, p.isolateBatchPages)
            let hold = Double(batch) * p.lruReleaseFolioCycles
            let wait = acquire(.passUnretained(lruLock), .lruLock, design.spinLocks, cpu: cpu, at: t, hold: hold)
            waited += wait
            t += wait + hold + Double(batch) * workPerPage
            left -= batch
        }
        extraCycles[cpu] += waited
    }

    /// Gives back what a zap or a collapse freed, from `start` on `cpu`, batch by batch as
    /// `release_pages()` does: for each `releaseBatchFolios` folios, `lru_lock` for those of them on an
    /// LRU list, then each folio freed (`freeFolioCycles`): a larger folio to the buddy lists under
    /// `zone->lock` (`__free_pages_ok()`), a small one onto the CPU's per-CPU list, which gives
    /// `zoneBatchPages` back under `zone->lock` once past `pcpHighPages` (`free_pcppages_bulk()`).
    /// Larger folios are taken to come first. Returns when it is done.
    func chargeRelease(_ freed: FolioRelease, cpu: Int, spin: KernelDesign.SpinLockKind, at start: Double) -> Double {
        let p = parameters
        var t = start
        var folios = freed.folios, onLRU = freed.onLRU, large = freed.largeFolios
        while folios > 0 {
            let batch = min(folios, p.releaseBatchFolios)
            let listed = min(onLRU, batch)
            if listed > 0 {
                let hold = Double(listed) * p.lruReleaseFolioCycles
                t += acquire(.passUnretained(lruLock), .lruLock, spin, cpu: cpu, at: t, hold: hold) + hold
            }
            let big = min(large, batch)
            for _ in 0..<big {
                t += p.freeFolioCycles
                t += acquire(.passUnretained(zoneLock), .zoneLock, spin, cpu: cpu, at: t, hold: p.zoneHugeHoldCycles) + p.zoneHugeHoldCycles
            }
            t += Double(batch - big) * p.freeFolioCycles
            pcpPages[cpu] += batch - big
            while pcpPages[cpu] > p.pcpHighPages {
                t += acquire(.passUnretained(zoneLock), .zoneLock, spin, cpu: cpu, at: t, hold: p.zoneBatchHoldCycles) + p.zoneBatchHoldCycles
                pcpPages[cpu] -= p.zoneBatchPages
            }
            folios -= batch; onLRU -= listed; large -= big
        }
        return t
    }

    /// Adds `cycles` to `cpu`'s clock (work charged elsewhere: a kernel thread's).
    public func charge(cpu: Int, cycles: Double) { extraCycles[cpu] += cycles }

    /// Wait cycles by Linux's lock name, for the locks that had any acquisition.
    public var waitsByLock: [String: Double] {
        var out: [String: Double] = [:]
        for c in LockClass.allCases where acquisitions[c.rawValue] > 0 { out[c.name] = waitCycles[c.rawValue] }
        return out
    }
}
