import Foundation
import Synchronization
import VMCore
import HostIntrinsics

/// Whether a CPU runs its cache model on a second host thread (`CachePipeline`).
public enum CacheThreadMode: String, Sendable, Hashable, CaseIterable {
    /// The cache model runs inline on the thread that runs the CPU.
    case off
    /// A second thread whenever the CPU can use one (a machine of one CPU, not in simulated-time
    /// order, not a guest CPU, caching page tables and data).
    case on
    /// `on` when the host has a core to spare: two or more cores, and, when the run starts, no more
    /// threads runnable than leave one of them idle; else `off`. (On a host whose cores are all busy
    /// the thread cannot run beside the model and only adds the hand-over's cost.)
    case auto

    /// Whether the mode asks for the thread on this host now.
    public var wantsThread: Bool {
        switch self {
        case .off: false
        case .on: true
        case .auto: Self.hostHasSpareCore
        }
    }

    /// Whether a core is idle now: the threads runnable on the host (`/proc/loadavg`'s fourth field,
    /// `nr_running()`, which counts the thread asking) leave one of the cores free, at the least of
    /// five looks 2 ms apart — a thread that runs for a moment (a shell, a kernel thread) is seen in
    /// one look, a busy program in all. Not the load average: it decays over a minute, so the runs
    /// just before — thpsim's own, with their cache threads — would keep the next one from using the
    /// core they have left idle.
    static var hostHasSpareCore: Bool {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        guard cores >= 2 else { return false }
        var least = Int.max
        for look in 0..<5 {
            if look > 0 { usleep(2_000) }
            guard let running = runnableThreads() else { return true }
            least = min(least, running)
            if least - 1 <= cores - 2 { return true }
        }
        return false
    }

    /// The runnable threads on the host now (Linux: `/proc/loadavg`, "1.00 0.50 0.25 2/345 6789"), or
    /// nil where that file is missing or unreadable.
    static func runnableThreads(loadavg path: String = "/proc/loadavg") -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let fields = text.split(separator: " ")
        guard fields.count >= 4, let slash = fields[3].firstIndex(of: "/") else { return nil }
        return Int(fields[3][..<slash])
    }
}

/// The cache model of a one-CPU machine on a second host thread.
///
/// In a run of one CPU the cache model's answers flow only into the CPU's tally (data and walk
/// cycles, walk references from memory, write-backs): no TLB, walk or kernel decision depends on them.
/// So the access path (`CPU.run(_:)`, the thread that runs the CPU: the *producer*) writes each cache
/// operation as one 64-bit word (a fused walk's four as one op of three words, `Kind.walk4K`) into a
/// single-producer, single-consumer ring, and the *cache thread* runs them through the same
/// `CacheModel` and applies the charges in the same order with the same floating-point operations
/// as the inline path, so every count and cycle sum is bit for bit the same.
///
/// ```
///  CPU.run (producer)                                cache thread (consumer)
///  walk entry, data line ─► op ─► ring[head & mask] ─► ring[tail & mask] ─► CacheModel.access
///     every `publishInterval` words: written ═════►  (acquire)             └► totals: data/walk
///       settle(): wait until read == head ◄═══════════  read (release)            cycles, from-memory
///                 then totals → CPU.tally                                         refs, write-backs
/// ```
///
/// Between `activate` and `settle` the consumer owns the cache model and `totals`; the CPU owns
/// them otherwise. `CPU` settles before anything reads or changes them (`counters`, `cache`, `reset`,
/// a change of cache modelling or of `independentAccesses`). Idle, the consumer spins briefly
/// (`idleSpins`), then yields its core between looks for `idleWait`, then sleeps until the next
/// publication. Linux has no counterpart: this is how
/// the simulator uses a second host core, not something the simulated machine does.
final class CachePipeline: @unchecked Sendable {
    /// What an op asks of the consumer (its first word's low three bits).
    enum Kind: UInt64 {
        /// A walk's read of a page-table entry: bits 3–5 the source (`1 + level`), from bit 8 the line.
        case walkEntry = 0
        /// The end of a walk: its cost goes into the walk cycles.
        case walkEnd = 1
        /// A data line through the cache model: bit 3 a write, bit 4 streaming, from bit 8 the line.
        case data = 2
        /// Bits 8–15 (n ≥ 1) more accesses to the line just charged, from bit 16: the L1 latency n
        /// times (`CPU.chargeRepeated`), the line marked dirty first when bit 3 (a write) is set.
        case repeatLine = 3
        /// Three words: a walk that read a PMD entry and a PTE, then its data line (`walk4K`): what
        /// `walkEntry`, `walkEntry`, `walkEnd` and `data` (not streaming) do, in that order. The first
        /// word has the PMD entry's line from bit 8, the second the PTE's line, the third the data
        /// line from bit 1 and bit 0 a write.
        case walk4K = 4
    }
    static let writeBit: UInt64 = 1 << 3
    static let streamingBit: UInt64 = 1 << 4

    @inline(__always) static func walkEntry(address: UInt64, source: Int) -> UInt64 {
        (address >> 6) << 8 | UInt64(truncatingIfNeeded: source) << 3 | Kind.walkEntry.rawValue
    }
    static let walkEnd = Kind.walkEnd.rawValue
    @inline(__always) static func data(line: UInt64, write: Bool, streaming: Bool) -> UInt64 {
        line << 8 | (streaming ? streamingBit : 0) | (write ? writeBit : 0) | Kind.data.rawValue
    }
    /// The three words of a `walk4K` op: the entries at `pmd` and `pte` (physical addresses), then
    /// the data line `line`.
    @inline(__always) static func walk4K(pmd: UInt64, pte: UInt64, line: UInt64, write: Bool) -> (UInt64, UInt64, UInt64) {
        ((pmd >> 6) << 8 | Kind.walk4K.rawValue, pte >> 6, line << 1 | (write ? 1 : 0))
    }
    /// - Precondition: 1 ≤ `count` < 256.
    @inline(__always) static func repeatLine(_ line: UInt64, write: Bool, count: Int) -> UInt64 {
        line << 16 | UInt64(truncatingIfNeeded: count) << 8 | (write ? writeBit : 0) | Kind.repeatLine.rawValue
    }

    /// The tally fields the cache model's results go into.
    struct Totals {
        var dataCycles = 0.0
        var walkCycles = 0.0
        var walkReferencesFromMemory = 0
        var writebacks = 0
        /// The cache model's write-backs already charged (`CPU.chargedWritebacks`).
        var chargedWritebacks = 0
    }

    /// The ring's size in words (a power of two): 2 MiB, some 80,000 accesses of a random stream, so
    /// that the producer seldom waits for a consumer the host's scheduler has put aside for a while.
    static let capacity = 1 << 18
    static var mask: Int { capacity &- 1 }
    /// The producer makes its ops visible every this many words (32 KiB of ring, about 1,300 accesses
    /// of a random stream), and when it settles. A publication wakes the consumer if it sleeps; one
    /// that is awake finds it within `idleWait`, yielding its core meanwhile: the cache thread takes
    /// little more host time than its work needs (a consumer that spun between publications of 32
    /// ops without yielding took a core of its own and, on a host whose cores were busy, doubled
    /// the run's wall time). An op of several words is
    /// published whole: the producer publishes early when it would not fit before `Producer.limit`.
    static let defaultPublishInterval = 4096
    /// `defaultPublishInterval`, or a shorter interval a test asks for (so that ops of several words
    /// meet publication boundaries often).
    let publishInterval: Int
    /// How many spin-wait hints (a few microseconds) an idle consumer waits before it yields.
    static let idleSpins = 128
    /// How long (host nanoseconds) an idle consumer then waits, yielding its core between looks at
    /// `written`, before it sleeps: longer than the producer takes to fill a publication interval,
    /// so that while the producer runs the consumer never sleeps and the producer never wakes it. A
    /// wake-up is a system call on the producer's thread (a lock, a signal, an inter-processor
    /// interrupt to the sleeping core; a consumer that slept after `idleSpins` was woken at five
    /// publications in six of a gups run) and a sleeping consumer starts late, which the producer
    /// waits out at the next `settle`. The host's clock decides only when the cache thread sleeps,
    /// never an answer.
    static let idleWait = 250_000
    /// A look at `written` this long (host nanoseconds) after the one before, across a yield, means
    /// that the yield let another thread run on the consumer's core: on a host with no core to
    /// spare, a consumer that kept yielding would take turns from the producer, so it sleeps.
    static let busyHostGap = 20_000

    /// The host's monotonic clock in nanoseconds (`clock_gettime(CLOCK_MONOTONIC)`).
    @inline(__always)
    static func monotonicNanoseconds() -> Int {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return t.tv_sec &* 1_000_000_000 &+ t.tv_nsec
    }

    /// The producer's side, kept in the CPU itself (no reference to load per op).
    struct Producer {
        /// nil until the CPU has a pipeline.
        let ring: UnsafeMutablePointer<UInt64>?
        /// Words written so far (the next one's index before masking).
        var head = 0
        /// `head` may run up to this before `publish` is due.
        var limit = CachePipeline.defaultPublishInterval
        /// The consumer's `read` when the producer last looked.
        var readSeen = 0
    }

    let ring: UnsafeMutablePointer<UInt64>
    /// `written` (the producer's published head), `read` (the consumer's tail), `sleeping` and
    /// `stopping`, each on a 128-byte line of its own.
    private let shared: UnsafeMutableRawPointer
    private var written: UnsafeMutablePointer<Atomic<Int>> { shared.assumingMemoryBound(to: Atomic<Int>.self) }
    private var read: UnsafeMutablePointer<Atomic<Int>> { (shared + 128).assumingMemoryBound(to: Atomic<Int>.self) }
    private var sleeping: UnsafeMutablePointer<Atomic<Bool>> { (shared + 256).assumingMemoryBound(to: Atomic<Bool>.self) }
    private var stopping: UnsafeMutablePointer<Atomic<Bool>> { (shared + 384).assumingMemoryBound(to: Atomic<Bool>.self) }
    /// What the consumer keeps, on lines of its own: the producer touches it only while the
    /// consumer is idle (`activate`, `settle`).
    struct State {
        var totals = Totals()
        /// The walk in progress: its cost so far (`CPUWalk.cost`).
        var walkCost = 0.0
        /// The CPU's `independentAccesses` at `activate`.
        var independent = false
    }
    private let state: UnsafeMutablePointer<State>
    private let wake = NSCondition()

    /// The consumer's copy of what it needs from the CPU: the model, and the CPU's constants.
    private let cache: CacheModel
    private let l1Latency: Double
    private let mlp: Double
    private let walkStartCycles: Double

    /// Makes the ring and starts the cache thread for `cache`, with the CPU's latencies.
    init(cache: CacheModel, l1Latency: Double, mlp: Double, walkStartCycles: Double,
         publishInterval: Int = CachePipeline.defaultPublishInterval) {
        precondition(publishInterval >= 4 && publishInterval <= Self.capacity / 2)
        self.publishInterval = publishInterval
        self.cache = cache
        self.l1Latency = l1Latency
        self.mlp = mlp
        self.walkStartCycles = walkStartCycles
        ring = .allocate(capacity: Self.capacity)
        ring.initialize(repeating: 0, count: Self.capacity)
        shared = .allocate(byteCount: 512, alignment: 128)
        shared.bindMemory(to: UInt8.self, capacity: 512).initialize(repeating: 0, count: 512)
        (shared).bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
        (shared + 128).bindMemory(to: Atomic<Int>.self, capacity: 1).initialize(to: Atomic(0))
        (shared + 256).bindMemory(to: Atomic<Bool>.self, capacity: 1).initialize(to: Atomic(false))
        (shared + 384).bindMemory(to: Atomic<Bool>.self, capacity: 1).initialize(to: Atomic(false))
        let block = UnsafeMutableRawPointer.allocate(byteCount: 256, alignment: 128)
        state = block.bindMemory(to: State.self, capacity: 1)
        state.initialize(to: State(walkCost: walkStartCycles))
        let thread = Thread { [self] in consume() }
        thread.name = "thpsim-cache"
        thread.stackSize = 1 << 20
        thread.start()
    }

    deinit {
        ring.deallocate()
        state.deinitialize(count: 1)
        UnsafeMutableRawPointer(state).deallocate()
        shared.deallocate()
    }

    /// A producer for this ring, starting where the consumer is.
    func producer() -> Producer {
        let at = read.pointee.load(ordering: .acquiring)
        return Producer(ring: ring, head: at, limit: at &+ publishInterval, readSeen: at)
    }

    /// Hands the cache model and `start` to the consumer (which is idle: every op published so far is
    /// done), with the CPU's `independentAccesses`.
    func activate(_ start: Totals, independent: Bool) {
        state.pointee = State(totals: start, walkCost: walkStartCycles, independent: independent)
    }

    /// Makes the producer's ops visible, wakes a sleeping consumer, and moves `p.limit` on: to the
    /// next publication, or as far as the ring has room (waiting for the consumer when it is full).
    /// The producer calls it when `p.head` reaches `p.limit`, or before then when its next op would
    /// not fit (so that the consumer never sees part of an op).
    ///
    /// A plain release store and load: a consumer that goes to sleep just as the producer publishes
    /// may miss this publication's wake-up, never a later one's that finds it asleep, and the
    /// producer waits for it only after a full fence (`waitForConsumer`), so it never waits on a
    /// sleeping consumer.
    @inline(never)
    func publish(_ p: inout Producer) {
        written.pointee.store(p.head, ordering: .releasing)
        if sleeping.pointee.load(ordering: .relaxed) { wakeConsumer() }
        if p.head &+ publishInterval &- p.readSeen > Self.capacity {
            p.readSeen = read.pointee.load(ordering: .acquiring)
            if p.head &+ publishInterval &- p.readSeen > Self.capacity {
                waitForConsumer(until: p.head &+ publishInterval &- Self.capacity, &p)
            }
        }
        p.limit = p.head &+ publishInterval
    }

    /// Waits until the consumer has run ops up to `position` (the producer's published head or
    /// before), waking it if it sleeps (Dekker's handshake with `consume()`: each side stores its
    /// flag, then loads the other's, both sequentially consistent).
    private func waitForConsumer(until position: Int, _ p: inout Producer) {
        written.pointee.store(p.head, ordering: .sequentiallyConsistent)
        if sleeping.pointee.load(ordering: .sequentiallyConsistent) { wakeConsumer() }
        var backoff = SpinBackoff()
        while true {
            p.readSeen = read.pointee.load(ordering: .acquiring)
            if p.readSeen &- position >= 0 { return }
            backoff.wait()
        }
    }

    /// Publishes every op and waits until the consumer has done them all; then the caller owns the
    /// cache model and `totals` again.
    func settle(_ p: inout Producer) -> Totals {
        if p.readSeen != p.head { waitForConsumer(until: p.head, &p) }
        p.limit = p.head &+ publishInterval
        return state.pointee.totals
    }

    private func wakeConsumer() {
        wake.lock()
        wake.signal()
        wake.unlock()
    }

    /// Ends the cache thread once it has done the ops published (the producer publishes nothing after).
    func stop() {
        stopping.pointee.store(true, ordering: .sequentiallyConsistent)
        wakeConsumer()
    }

    /// The cache thread: runs published ops in order, then spins and sleeps while there are none.
    private func consume() {
        var tail = read.pointee.load(ordering: .relaxed)
        var spins = 0
        var idleSince = 0, lastLook = 0
        while true {
            let end = written.pointee.load(ordering: .acquiring)
            if end != tail {
                run(from: tail, to: end)
                tail = end
                read.pointee.store(tail, ordering: .releasing)
                spins = 0
                continue
            }
            if stopping.pointee.load(ordering: .acquiring) { return }
            if spins < Self.idleSpins {
                spins &+= 1
                thpsim_cpu_relax()
                continue
            }
            // Still idle: wait on, giving the core to any other thread that wants it, until
            // `idleWait` has passed since the spins ended, or until a yield let another thread run
            // (its look came late): then the host has no core to spare and the consumer sleeps.
            let now = Self.monotonicNanoseconds()
            if spins == Self.idleSpins {
                spins &+= 1
                idleSince = now
                lastLook = now
            }
            if now &- idleSince < Self.idleWait && now &- lastLook < Self.busyHostGap {
                lastLook = now
                sched_yield()
                continue
            }
            wake.lock()
            sleeping.pointee.store(true, ordering: .sequentiallyConsistent)
            while written.pointee.load(ordering: .sequentiallyConsistent) == tail
                    && !stopping.pointee.load(ordering: .sequentiallyConsistent) {
                wake.wait()
            }
            sleeping.pointee.store(false, ordering: .relaxed)
            wake.unlock()
            spins = 0
        }
    }

    /// Runs ops `start..<end` of the ring: what `CPU.readEntry`, `CPU.walk`'s end, `CPU.touchData`
    /// and `CPU.runRest` do inline, in the same order with the same arithmetic.
    private func run(from start: Int, to end: Int) {
        let independent = state.pointee.independent
        let repeatCost = independent ? l1Latency / mlp : l1Latency
        var c = Charges(cache: cache, first: cache.firstLevel, totals: state.pointee.totals, walkCost: state.pointee.walkCost,
                        memoryLatency: cache.memoryLatency, independent: independent, mlp: mlp,
                        l1Latency: l1Latency, walkStartCycles: walkStartCycles, repeatCost: repeatCost,
                        wholeCost: repeatCost.magnitude < 0x1p20 && Double(Int64(repeatCost)) == repeatCost)
        let ring = ring
        var i = start
        while i != end {
            let op = ring[i & Self.mask]
            switch op & 7 {
            case Kind.walk4K.rawValue:
                // Published whole (`CPU.emit(_:_:_:)`).
                assert(end &- i >= 3, "an op of three words published in part")
                let pte = ring[(i &+ 1) & Self.mask], data = ring[(i &+ 2) & Self.mask]
                i &+= 3
                c.walkEntry(line: op >> 8, source: 1 &+ PageTableLevel.pmd.rawValue)
                c.walkEntry(line: pte, source: 1 &+ PageTableLevel.pte.rawValue)
                c.walkEnd()
                c.data(line: data >> 1, write: data & 1 != 0, streaming: false)
            case Kind.walkEntry.rawValue:
                i &+= 1
                c.walkEntry(line: op >> 8, source: Int(truncatingIfNeeded: (op >> 3) & 7))
            case Kind.walkEnd.rawValue:
                i &+= 1
                c.walkEnd()
            case Kind.data.rawValue:
                i &+= 1
                c.data(line: op >> 8, write: op & Self.writeBit != 0, streaming: op & Self.streamingBit != 0)
            default:
                i &+= 1
                c.repeatLine(op)
            }
        }
        state.pointee.walkCost = c.walkCost
        state.pointee.totals = c.totals
    }

    /// The consumer's charges while it runs ops: the tally fields and the walk in progress, with the
    /// CPU's constants (held in registers by `run`).
    private struct Charges {
        let cache: CacheModel
        /// The model's first level (`CacheModel.firstLevel`): the model does not change kind while
        /// the consumer runs.
        let first: CacheModel.FirstLevel?
        var totals: Totals
        var walkCost: Double
        let memoryLatency: Double
        let independent: Bool
        let mlp: Double
        let l1Latency: Double
        let walkStartCycles: Double
        /// An L1 hit's charge (`CPU.chargeRepeated`), and whether it is a whole number.
        let repeatCost: Double
        let wholeCost: Bool

        /// `CPU.readEntry` of the entry on `line` through the cache model.
        @inline(__always)
        mutating func walkEntry(line: UInt64, source: Int) {
            let latency = first.map { cache.access($0, line: line, dirty: 0, source: source) }
                ?? cache.access(physicalAddress: line << 6, source: source)
            if latency == memoryLatency { totals.walkReferencesFromMemory &+= 1 }
            chargeWritebacks()
            walkCost += latency
        }

        /// The end of `CPU.walk`: its cost into the walk cycles.
        @inline(__always)
        mutating func walkEnd() {
            totals.walkCycles += independent ? walkCost / mlp : walkCost
            walkCost = walkStartCycles
        }

        /// `CPU.touchData` of `line`.
        @inline(__always)
        mutating func data(line: UInt64, write: Bool, streaming: Bool) {
            let latency = first.map { cache.access($0, line: line, dirty: write ? CacheModel.dirtyBit : 0, source: CacheModel.dataSource) }
                ?? cache.access(physicalAddress: line << 6, write: write)
            let charged = streaming ? l1Latency : latency
            totals.dataCycles += independent ? charged / mlp : charged
            chargeWritebacks()
        }

        /// `CPU.chargeWritebacks`.
        @inline(__always)
        mutating func chargeWritebacks() {
            if cache.writebacks != totals.chargedWritebacks {
                let n = cache.writebacks &- totals.chargedWritebacks
                totals.chargedWritebacks = cache.writebacks
                totals.writebacks &+= n
                totals.dataCycles += Double(n) * memoryLatency / mlp
            }
        }

        /// A `repeatLine` op: `CPU.runRest`'s repeats of the line just charged (`CPU.chargeRepeated`).
        @inline(__always)
        mutating func repeatLine(_ op: UInt64) {
            if op & CachePipeline.writeBit != 0 { cache.markDirty(physicalAddress: (op >> 16) << 6) }
            let n = Int(truncatingIfNeeded: (op >> 8) & 0xFF)
            var total = totals.dataCycles
            if wholeCost && total.magnitude < 0x1p52 && Double(Int64(total)) == total {
                totals.dataCycles = total + Double(n) * repeatCost
            } else {
                for _ in 0..<n { total += repeatCost }
                totals.dataCycles = total
            }
        }
    }
}

extension CPU {
    /// Writes one cache operation for the cache thread (only while `pipelined`).
    @inline(__always)
    func emit(_ op: UInt64) {
        ops.ring.unsafelyUnwrapped[ops.head & CachePipeline.mask] = op
        ops.head &+= 1
        if ops.head == ops.limit { pipeline.unsafelyUnwrapped.publish(&ops) }
    }

    /// Whether `run(_:)` hands the cache model to the cache thread: allowed on this machine, not a
    /// guest CPU (whose walks read host tables through the model and count them as they go), both
    /// page tables and data go through the model, and the stream walks (`lookAhead`: the last batch
    /// walked for at least one record in 16). A stream that seldom walks (sequential, a program's
    /// trace) spends few instructions per cache operation outside the model, so the cache thread
    /// would set the pace and the hand-over would cost more than it saves: it stays inline.
    @inline(__always)
    var wantsPipeline: Bool { cacheThreadAllowed && lookAhead && nested == nil && modelsDataCache && modelsWalkCache }

    /// Hands the cache model and the tally's cache fields to the cache thread (made the first time).
    @inline(never)
    func startPipeline() {
        let pipeline: CachePipeline
        if let p = self.pipeline {
            pipeline = p
        } else {
            pipeline = CachePipeline(cache: cacheModel, l1Latency: l1Latency, mlp: mlp, walkStartCycles: walkStartCycles)
            self.pipeline = pipeline
            ops = pipeline.producer()
        }
        pipeline.activate(CachePipeline.Totals(dataCycles: tally.dataCycles, walkCycles: tally.walkCycles,
                                               walkReferencesFromMemory: tally.walkReferencesFromMemory,
                                               writebacks: tally.writebacks, chargedWritebacks: chargedWritebacks),
                          independent: independentAccesses)
        pipelined = true
    }

    /// Waits until the cache thread has run every cache operation, then takes the cache model and
    /// the tally's cache fields back. Everything that reads or changes them calls this first.
    @inline(__always)
    func settle() {
        if pipelined { settlePipeline() }
    }

    @inline(never)
    func settlePipeline() {
        let t = pipeline.unsafelyUnwrapped.settle(&ops)
        tally.dataCycles = t.dataCycles
        tally.walkCycles = t.walkCycles
        tally.walkReferencesFromMemory = t.walkReferencesFromMemory
        tally.writebacks = t.writebacks
        chargedWritebacks = t.chargedWritebacks
        pipelined = false
    }
}
