import VMCore
import Kernel
import HostIntrinsics

/// One entry of a batch of program accesses for `CPU.run(_:)`: `count` accesses of one kind to the
/// page of `address`.
///
/// With `stride` 0 (a trace's record, which keeps pages, not offsets), a run of `count` accesses
/// keeps one access's TLB state: it costs one access through the MMU and `count - 1` L1 TLB hits,
/// and only the first access's data line goes through the cache model.
///
/// With `stride` ≥ 1 (a page run), the record is exactly the `count` accesses at `address`,
/// `address + stride`, …, all in the 4 KiB page of `address`: the first goes through the MMU, each
/// of the others is the hit in the last-translation filter it would be on its own (a data page's
/// translation covers the page), and every access's data line is charged as `access(_:_:)` charges it.
public struct AccessRecord: Sendable {
    public var address: UInt64
    public var count: Int
    public var kind: MemoryAccess
    /// Bytes between the accesses of a page run; 0: a trace's run of `count` accesses to one page.
    public var stride: UInt32

    @inlinable
    public init(address: UInt64, count: Int, kind: MemoryAccess, stride: UInt32 = 0) {
        self.address = address
        self.count = count
        self.kind = kind
        self.stride = stride
    }
}

extension CPU {
    /// The access path's batch entry point: runs `records` in order on this CPU, each through the
    /// TLBs, the walker and the kernel's fault handler as `access(_:_:)` does. A caller outside this
    /// module makes one call per batch, so the per-access loop is compiled here with the TLB arrays,
    /// the cache model and the filter inlined, and nothing of the CPU's internals is exposed.
    ///
    /// Returns how many records completed: all of them, or the index of the record whose access the
    /// kernel could not resolve, with its fault (that record's first access was counted; the records
    /// after it were not run).
    ///
    /// On a CPU allowed a cache thread (`Machine.cacheThread`), the batch's cache operations go to
    /// it (`CachePipeline`), which may still be running them when this returns: every reader of
    /// the cache model and of the counters waits for it (`settle()`).
    public func run(_ records: UnsafeBufferPointer<AccessRecord>) -> (completed: Int, fault: AccessFault?) {
        if _slowPath(wantsPipeline != pipelined) { if pipelined { settle() } else { startPipeline() } }
        // The specialized miss path's eligibility that holds for the whole batch (the geometry and a
        // one-dimensional walk) is checked here once; each access checks only what a fault or a huge
        // fill may change (`accessFused`).
        if missPathShape != .none && nested == nil {
            return missPathShape == .stlb12 ? runBatch(records, FusedPath<TwelveWays>.self)
                : runBatch(records, FusedPath<SixteenWays>.self)
        }
        return runBatch(records, GeneralPath.self)
    }

    /// `run(_:)`'s loop with the access of `Path`: `access(_:_:)`, or `accessFused` with the miss
    /// path's STLB ways known, which calls `accessMiss4K` directly (one call per miss, not three).
    @inline(never)
    func runBatch<Path: BatchAccessPath>(_ records: UnsafeBufferPointer<AccessRecord>, _: Path.Type) -> (completed: Int, fault: AccessFault?) {
        // The page-table entries of the accesses `prefetchDistance` ahead are fetched into the host's
        // caches while this one runs: a walk over tables larger than the host's caches otherwise
        // waits for host memory. The look-down reaches the last-level table through the store's
        // hints (`Kernel.leafEntryAddress(_:inPMDTable:)`), not its frame record, as the walk does.
        // Hints only; they change no simulated state.
        // One reference to the kernel per batch, none per record.
        // Only while the stream walks: after a batch that walked for fewer than one record in
        // `lookAheadWalkRatio` (sequential and local streams), the next batch looks nowhere ahead.
        let walked: (kernel: Unmanaged<Kernel>, root: PageTable)? = nested == nil && lookAhead
            ? kernel.flatMap { k in root.map { (.passUnretained(k), $0) } } : nil
        let walksBefore = tally.walks
        defer {
            lookAhead = (tally.walks &- walksBefore) &* Self.lookAheadWalkRatio >= records.count
            if walked != nil { emptyPMDTables() }
        }
        var ahead = LookAhead()
        if let walked {
            pmdTablesFaults = tally.faults
            for i in 0..<min(Self.prefetchDistance, records.count) {
                prefetchLeafEntry(records[i].address, walked.kernel, walked.root, &ahead)
            }
        }
        for i in records.indices {
            if let walked { lookAhead(from: i, records, walked.kernel, walked.root, &ahead) }
            let r = records[i]
            switch Path.access(self, VirtualAddress(r.address), r.kind) {
            case .success:
                if r.count > 1 {
                    if r.stride != 0 {
                        if let fault = runRest(r) { return (i, fault) }
                    } else {
                        let more = r.count &- 1
                        tally.accesses &+= more
                        tally.l1Hits &+= more
                    }
                }
            case .failure(let fault):
                return (i, fault)
            }
        }
        return (records.count, nil)
    }

    /// `access(_:_:)` on a CPU whose geometry takes the specialized miss path (`missPathShape`, an
    /// STLB of `L2` ways) and whose walks are one-dimensional: a miss of the first L1 data array
    /// goes to `accessMiss4K` directly while both levels hold only 4 KiB entries of their first
    /// arrays (`accessMiss`'s other conditions hold for the batch), else to `accessMiss`.
    @inline(__always)
    func accessFused<L2: TLBWays>(_ va: VirtualAddress, _ kind: MemoryAccess, _: L2.Type) -> Result<PFN, AccessFault> {
        accessHit(va, kind) { probed in
            if probed && missPathCounts.l1._withUnsafeGuaranteedRef({ $0.others }) == 0
                && missPathCounts.l2._withUnsafeGuaranteedRef({ $0.others }) == 0 {
                return accessMiss4K(va, kind, L2.self)
            }
            return accessMiss(va, kind, probed: probed)
        }
    }

    /// The accesses of a page run after its first, which has just succeeded: each is a hit in the
    /// last-translation filter (the first left its page there, and a data access in the filter's
    /// page neither faults nor changes TLB state), counted as an L1 TLB hit, and its data line goes
    /// through `touchData` as the filter's path sends it; an access to the line just charged (the
    /// cache model's most recent line) costs the L1 latency without a lookup, so the run charges
    /// those by the line, not one by one.
    ///
    /// Should the filter not hold the page (a run outside one page, or an instruction fetch), the
    /// rest goes through `access(_:_:)` one by one; returns the fault of an access the kernel could
    /// not resolve there. Not inlined into `run`: it is called once a run, and inlined it costs
    /// every record of a trace's replay spilled registers.
    @inline(never)
    func runRest(_ r: AccessRecord) -> AccessFault? {
        let stride = UInt64(r.stride)
        let more = r.count &- 1
        let page = r.address >> 12
        let offset = page &- filterStart
        let last = r.address &+ UInt64(truncatingIfNeeded: more) &* stride
        guard offset < filterPages, last >> 12 == page, last > r.address, r.kind != .execute,
              r.kind == .read || filterDirty else {
            var va = r.address
            for _ in 0..<more {
                va &+= stride
                if case .failure(let fault) = access(VirtualAddress(va), r.kind) { return fault }
            }
            return nil
        }
        tally.accesses &+= more
        tally.l1Hits &+= more
        guard modelsDataCache else { return nil }
        let frame = filterFrame &+ UInt32(truncatingIfNeeded: offset)
        let write = r.kind == .write
        let repeatCost = independentAccesses ? l1Latency / mlp : l1Latency
        let wholeCost = repeatCost.magnitude < 0x1p20 && Double(Int64(repeatCost)) == repeatCost
        // Accesses left in a line: a shift for a power-of-two stride, else a division.
        let shift = stride & (stride &- 1) == 0 ? stride.trailingZeroBitCount : -1
        var va = r.address &+ stride
        var left = more
        while left > 0 {
            // This access, then those after it in its 64-byte line.
            var sameLine = 0
            if stride < 64 {
                let room = 63 &- (va & 63)
                sameLine = min(left &- 1, Int(truncatingIfNeeded: shift >= 0 ? room >> UInt64(shift) : room / stride))
            }
            touchData(frame: frame, va: va, write: write)
            if sameLine > 0 {
                if pipelined {
                    emit(CachePipeline.repeatLine(lastDataLine, write: write, count: sameLine))
                } else {
                    if write { cacheModel.markDirty(physicalAddress: lastDataLine << 6) }
                    chargeRepeated(repeatCost, sameLine, whole: wholeCost)
                }
            }
            va &+= UInt64(truncatingIfNeeded: sameLine &+ 1) &* stride
            left &-= sameLine &+ 1
        }
        return nil
    }

    /// Adds `cost` to the data cycles `n` (< 2³²) times, with the result of `n` additions in a row:
    /// one multiplication when every partial sum is an integer below 2⁵³ (then each addition is
    /// exact), else the additions themselves. `whole`: `cost` is an integer below 2²⁰.
    @inline(__always)
    func chargeRepeated(_ cost: Double, _ n: Int, whole: Bool) {
        var total = tally.dataCycles
        if whole && total.magnitude < 0x1p52 && Double(Int64(total)) == total {
            tally.dataCycles = total + Double(n) * cost
            return
        }
        for _ in 0..<n { total += cost }
        tally.dataCycles = total
    }

    /// What `run(_:)`'s look-ahead remembers from one record to the next.
    struct LookAhead {
        /// The 32 KiB of address space of the last line of entries looked at: a record there (the
        /// common case of sequential and local streams) needs no lookup at all.
        var lastLine = UInt64.max
    }

    /// Empties `pmdTables`.
    @inline(__always)
    func emptyPMDTables() {
        for i in 0..<Self.pmdTableSlots { pmdTables[i] = (0, nil) }
    }

    /// The look-ahead before record `i` of a batch that walks: the last-level entry of the record
    /// `prefetchDistance` ahead. Not inlined into `run(_:)` (a trace's records, which rarely walk, do
    /// not pay for it; `access(_:_:)` is a call from `run` all the same: the optimizer declines it).
    @inline(never)
    func lookAhead(from i: Int, _ records: UnsafeBufferPointer<AccessRecord>, _ kernel: Unmanaged<Kernel>,
                   _ root: PageTable, _ ahead: inout LookAhead) {
        if tally.faults != pmdTablesFaults {
            pmdTablesFaults = tally.faults
            emptyPMDTables()
        }
        let near = i &+ Self.prefetchDistance
        if near < records.count {
            let address = records[near].address
            if address >> 15 != ahead.lastLine {
                ahead.lastLine = address >> 15
                prefetchLeafEntry(address, kernel, root, &ahead)
            }
        }
    }

    /// How many records ahead `run(_:)` prefetches page-table entries: enough for a host memory
    /// access to complete behind the accesses in between.
    static var prefetchDistance: Int { 4 }
    /// A batch looks ahead when the one before walked for at least one record in this many.
    static var lookAheadWalkRatio: Int { 16 }

    /// Prefetches the last-level entry that a walk of `address` would read, unless a recent prefetch
    /// covered the same 64-byte line of entries (eight 4 KiB pages): sequential and local streams,
    /// whose entries stay in the host's caches, skip the lookup.
    @inline(__always)
    func prefetchLeafEntry(_ address: UInt64, _ kernel: Unmanaged<Kernel>, _ root: PageTable,
                           _ ahead: inout LookAhead) {
        let line = address >> 15
        let slot = Int(truncatingIfNeeded: line & UInt64(Self.prefetchFilterSize &- 1))
        if prefetchedLines[slot] == line &+ 1 { return }
        prefetchedLines[slot] = line &+ 1
        kernel._withUnsafeGuaranteedRef { k in
            let key = (address >> PageTableLevel.pud.shift) &+ 1
            let known = pmdTables + Int(truncatingIfNeeded: key & UInt64(Self.pmdTableSlots &- 1))
            if known.pointee.key != key { known.pointee = (key, k.pmdTable(address, root: root)) }
            if let table = known.pointee.table, let entry = k.leafEntryAddress(address, inPMDTable: table) {
                thpsim_prefetch(entry)
            }
        }
    }
}

/// How `CPU.runBatch` makes each record's first access.
protocol BatchAccessPath {
    static func access(_ cpu: CPU, _ va: VirtualAddress, _ kind: MemoryAccess) -> Result<PFN, AccessFault>
}

/// Every access through `CPU.access(_:_:)`.
enum GeneralPath: BatchAccessPath {
    @inline(__always)
    static func access(_ cpu: CPU, _ va: VirtualAddress, _ kind: MemoryAccess) -> Result<PFN, AccessFault> {
        cpu.access(va, kind)
    }
}

/// Every access through `CPU.accessFused`, with an STLB of `L2` ways.
enum FusedPath<L2: TLBWays>: BatchAccessPath {
    @inline(__always)
    static func access(_ cpu: CPU, _ va: VirtualAddress, _ kind: MemoryAccess) -> Result<PFN, AccessFault> {
        cpu.accessFused(va, kind, L2.self)
    }
}
