import VMCore
import Kernel

/// A set-associative TLB array's associativity as a type: a probe or a victim search specialized
/// for it is straight code, with no test of `ways` and no loop.
protocol TLBWays {
    static var count: Int { get }
    /// `TLBArray.wayBits` for `count` ways.
    static var bits: UInt64 { get }
}
enum FourWays: TLBWays {
    static var count: Int { 4 }
    static var bits: UInt64 { 2 }
}
enum TwelveWays: TLBWays {
    static var count: Int { 12 }
    static var bits: UInt64 { 4 }
}
enum SixteenWays: TLBWays {
    static var count: Int { 16 }
    static var bits: UInt64 { 4 }
}

extension TLBArray {
    /// Whether this array can take the specialized probe and fill of `W` ways.
    func fits<W: TLBWays>(_: W.Type) -> Bool { !wide && ways == W.count && wayBits == W.bits }

    /// `lookup(page:size:asid:)` of an array of `W` ways (`fits`), given the tag and its set's first slot.
    @inline(__always)
    func lookup<W: TLBWays>(tag t: UInt64, base: Int, _: W.Type) -> Int {
        // Whether any way holds the tag, then which: a miss (the common case of a walk) costs a
        // compare and a branch a way, where a scan that kept the way found made three instructions
        // a way. A tag is valid in at most one way (as `lookup(page:size:asid:)` relies on).
        let p = tags + base
        var hit = false
        var k = 0
        while k < W.count {
            if p[k] == t { hit = true; break }
            k &+= 1
        }
        guard hit else { return -1 }
        var i = 0
        while p[i] != t { i &+= 1 }
        clock &+= 1
        stamps[base &+ i] = clock &<< W.bits | UInt64(truncatingIfNeeded: i)
        return base &+ i
    }

    /// `insert(page:size:asid:payload:absent: true)` of an array of `W` ways (`fits`), given the tag
    /// and its set's first slot: the page is known not to be in the array.
    @discardableResult @inline(__always)
    func insertAbsent<W: TLBWays>(tag t: UInt64, base: Int, size: PageSize, payload: UInt64, _: W.Type) -> Int {
        let victim = base &+ Int(truncatingIfNeeded: oldestStamp(stamps + base, W.self) & ((1 &<< W.bits) &- 1))
        replace(victim, base: base, tag: t, size: size, payload: payload, wayBits: W.bits)
        return victim
    }

    /// The smallest of a set's `W` stamps (`oldestStamp(_:)` with the ways known).
    @inline(__always)
    func oldestStamp<W: TLBWays>(_ p: UnsafeMutablePointer<UInt64>, _: W.Type) -> UInt64 {
        @inline(__always) func least(_ a: UInt64, _ b: UInt64) -> UInt64 { a < b ? a : b }
        @inline(__always) func four(_ i: Int) -> UInt64 { least(least(p[i], p[i &+ 1]), least(p[i &+ 2], p[i &+ 3])) }
        switch W.count {
        case 4: return four(0)
        case 12: return least(least(four(0), four(4)), four(8))
        default: return least(least(four(0), four(4)), least(four(8), four(12)))
        }
    }
}

/// The specialized probe and fill through an unretained reference: each closure is inlined where
/// its small method is compiled, and the method where it is called (a closure written in the large
/// miss path stayed a call).
extension Unmanaged where Instance == TLBArray {
    /// The first slot of the set of `page` in an array of `W` ways.
    @inline(__always)
    func setBase<W: TLBWays>(_ page: UInt64, _: W.Type) -> Int {
        _withUnsafeGuaranteedRef { Int(truncatingIfNeeded: page & $0.setMask) &* W.count }
    }
    @inline(__always)
    func lookup<W: TLBWays>(tag t: UInt64, base: Int, _: W.Type) -> Int {
        _withUnsafeGuaranteedRef { $0.lookup(tag: t, base: base, W.self) }
    }
    @inline(__always)
    func insertAbsent<W: TLBWays>(tag t: UInt64, base: Int, size: PageSize, payload: UInt64, _: W.Type) {
        _withUnsafeGuaranteedRef { _ = $0.insertAbsent(tag: t, base: base, size: size, payload: payload, W.self) }
    }
    @inline(__always)
    func payload(_ slot: Int) -> UInt64 { _withUnsafeGuaranteedRef { $0.payload(slot) } }
}

/// The walker's two ways to the next table through an unretained kernel (as `TLBArray`'s above).
extension Unmanaged where Instance == Kernel {
    @inline(__always)
    func pageTable(below entry: PageTableEntry, in parent: PageTable, at index: Int) -> PageTable {
        _withUnsafeGuaranteedRef { $0.pageTable(below: entry, in: parent, at: index) }
    }
    @inline(__always)
    func pageTable(frame: PFN) -> PageTable { _withUnsafeGuaranteedRef { $0.pageTable(frame: frame) } }
}

/// Which specialized miss path a CPU's geometry allows (`CPU.accessMiss4K`).
enum MissPathShape: UInt8 {
    /// None: every miss takes `accessThroughTLBs`'s general path.
    case none
    /// A 4-way first L1 data array for 4 KiB pages, 4-way PDE and PDPTE caches, and a 12-way (`stlb12`) or
    /// 16-way (`stlb16`) first STLB array for 4 KiB pages.
    case stlb12, stlb16

    init(_ tlb: TLBHierarchy, _ pwc: PageWalkCache) {
        self = .none
        guard let l1 = tlb.l1Data.first, let l2 = tlb.l2.first,
              l1.pageSizes.contains(.size4K), l2.pageSizes.contains(.size4K), l1.fits(FourWays.self),
              pwc.hasPD, pwc.pd.fits(FourWays.self), pwc.hasPDPT, pwc.pdpt.fits(FourWays.self) else { return }
        // A 4 KiB fill of either level goes to its first array, as a 4 KiB entry.
        for info in [tlb.dataLevels.l1.info.pointee, tlb.dataLevels.l2.info.pointee] {
            guard info.fillArray.0 == 0 && info.fillSize.0 == .size4K else { return }
        }
        if l2.fits(TwelveWays.self) { self = .stlb12 } else if l2.fits(SixteenWays.self) { self = .stlb16 }
    }
}

extension CPU {
    /// A data access whose probe of the first L1 data array missed, while both TLB levels hold only
    /// 4 KiB entries of their first arrays and the walk is one-dimensional (the common case of 4 KiB
    /// pages and random accesses): the STLB probe, the walk, the fills and the data line as one
    /// function, which computes the page's tag (the same in both levels) and the PDE cache's tag
    /// and set once, and keeps the walk's tables in registers. It does exactly what
    /// `accessThroughTLBs` and `walk` do there — the same probes, LRU stamps, paging-structure-cache
    /// fills, counters and cache operations, in the same order; a huge leaf takes the levels' general
    /// fills and a fault `accessAfterFault`.
    ///
    /// Hardware: an STLB miss handled by the page-miss handler (Intel SDM vol. 3A, 4.10.3).
    @inline(never)
    func accessMiss4K<L2: TLBWays>(_ va: VirtualAddress, _ kind: MemoryAccess, _: L2.Type) -> Result<PFN, AccessFault> {
        tally.accesses &+= 1
        let v = va.rawValue
        let asid = asid
        let page = v &>> 12
        // The tag of the 4 KiB page, in the STLB and in the L1 data array alike.
        let tag = TLBArray.tag(page: page, size: .size4K, asid: asid)
        let l1 = firstL1Data.unsafelyUnwrapped
        let l2 = missPathSTLB.unsafelyUnwrapped
        let base1 = l1.setBase(page, FourWays.self)
        let base2 = l2.setBase(page, L2.self)
        // The L1 level missed (its only entries are the first array's, which `access` probed).
        tally.tlbCycles += independentAccesses ? l2TLBLatency / mlp : l2TLBLatency
        var missedL2 = true
        let hit = l2.lookup(tag: tag, base: base2, L2.self)
        if hit >= 0 {
            let entry = TLBEntry(rawValue: l2.payload(hit))
            if Self.permits(entry, kind) {
                tally.l2Hits &+= 1
                l1.insertAbsent(tag: tag, base: base1, size: .size4K, payload: entry.rawValue, FourWays.self)
                return complete4K(v, kind, entry)
            }
            if kind == .write && entry.isWritable { tally.dirtyAssists &+= 1 }
            missedL2 = false
        }

        // The walk (`walk`, `CPUWalk`, `PageTableWalk.walk`).
        tally.walks &+= 1
        var cost = walkStartCycles
        let kernel = loadedKernel.unsafelyUnwrapped
        let pd = missPathPD.unsafelyUnwrapped
        let pdPage = v &>> PageTableLevel.pmd.shift
        let pdTag = TLBArray.tag(page: pdPage, size: .size4K, asid: asid)
        let pdBase = pd.setBase(pdPage, FourWays.self)
        var table: PageTable
        var level: PageTableLevel
        // Where it starts (`PageWalkCache.deepest`).
        let known = pd.lookup(tag: pdTag, base: pdBase, FourWays.self)
        if known >= 0 {
            tally.pageWalkCacheHits &+= 1
            let frame = UInt32(truncatingIfNeeded: pd.payload(known))
            table = kernel.pageTable(frame: PFN(frame))
            level = .pte
        } else {
            let pdpt = missPathPDPT.unsafelyUnwrapped
            let pdptPage = v &>> PageTableLevel.pud.shift
            let pdptSlot = pdpt.lookup(tag: TLBArray.tag(page: pdptPage, size: .size4K, asid: asid),
                                       base: pdpt.setBase(pdptPage, FourWays.self), FourWays.self)
            if pdptSlot >= 0 {
                tally.pageWalkCacheHits &+= 1
                let frame = UInt32(truncatingIfNeeded: pdpt.payload(pdptSlot))
                // A table the look-ahead found in this batch (`pmdTables`, the slot of this
                // gigabyte) in that frame, when no kernel code has run since: the table
                // `pageTable(frame:)` finds.
                let known = pmdTables + Int(truncatingIfNeeded: (pdptPage &+ 1) & UInt64(Self.pmdTableSlots &- 1))
                if let t = known.pointee.table, t.pfn.rawValue == frame, pmdTablesFaults == tally.faults {
                    table = t
                } else {
                    table = kernel.pageTable(frame: PFN(frame))
                }
                level = .pmd
            } else if let frame = pageWalkCache.pml4Frame(v, asid: asid) {
                tally.pageWalkCacheHits &+= 1
                table = kernel.pageTable(frame: PFN(frame))
                level = .pud
            } else {
                table = root.unsafelyUnwrapped
                level = .pgd
            }
        }
        // The common walk, from a PDPTE-cache hit to a present 4 KiB leaf that permits the access:
        // both entries read first (a read changes nothing), then the walk's effects in its order.
        if level == .pmd {
            let i1 = Int(truncatingIfNeeded: pdPage & 511)
            let pmd = table[i1]
            if pmd.isPresent && !pmd.isHuge {
                let leafTable = kernel.pageTable(below: pmd, in: table, at: i1)
                let i0 = Int(truncatingIfNeeded: page & 511)
                let pte = leafTable[i0]
                if pte.isPresent && (kind != .write || pte.isWritable) {
                    tally.walkReferences &+= 2
                    let pmdAddress = (UInt64(table.pfn.rawValue) << 12) | (UInt64(i1) << 3)
                    let pteAddress = (UInt64(leafTable.pfn.rawValue) << 12) | (UInt64(i0) << 3)
                    let pipelinedLines = pipelined && modelsWalkCache && modelsDataCache
                    if !pipelinedLines {
                        cost += readEntry(at: pmdAddress, level: .pmd)
                        cost += readEntry(at: pteAddress, level: .pte)
                    }
                    if pmd.rawValue & PageTableEntry.accessedBit == 0 { table.setHardwareBits(i1, PageTableEntry.accessedBit) }
                    pd.insertAbsent(tag: pdTag, base: pdBase, size: .size4K, payload: (pmd.rawValue & PageTableEntry.pfnMask) &>> 12, FourWays.self)
                    let wanted = PageTableEntry.accessedBit | (kind == .write ? PageTableEntry.dirtyBit : 0)
                    if pte.rawValue & wanted != wanted { leafTable.setHardwareBits(i0, wanted) }
                    let entry = TLBEntry(leaf: pte, write: kind == .write)
                    if missedL2 {
                        l2.insertAbsent(tag: tag, base: base2, size: .size4K, payload: entry.rawValue, L2.self)
                    } else {
                        refill4K(page, l2, entry)
                    }
                    l1.insertAbsent(tag: tag, base: base1, size: .size4K, payload: entry.rawValue, FourWays.self)
                    guard pipelinedLines else {
                        if pipelined { emit(CachePipeline.walkEnd) } else {
                            tally.walkCycles += independentAccesses ? cost / mlp : cost
                        }
                        lastDataLine = .max
                        return complete4K(v, kind, entry)
                    }
                    // The walk's two entries, its end and the data line (`touchData` after a walk:
                    // a new line, not the next of a stream) to the cache thread as one op.
                    filterStart = page
                    filterPages = 1
                    filterFrame = entry.frame
                    filterDirty = entry.isWritable && entry.isDirty
                    let line = (UInt64(entry.frame) << 6) | ((v & 0xFFF) >> 6)
                    lastDataLine = line
                    emit(CachePipeline.walk4K(pmd: pmdAddress, pte: pteAddress, line: line, write: kind == .write))
                    return .success(PFN(entry.frame))
                }
            }
        }
        // Any other walk: the leaf and its level, or nil with `present` the fault's P bit.
        var leaf: PageTableEntry? = nil
        var present = false
        while true {
            let i = Int(truncatingIfNeeded: (v &>> level.shift) & 511)
            tally.walkReferences &+= 1
            cost += readEntry(at: (UInt64(table.pfn.rawValue) << 12) | (UInt64(i) << 3), level: level)
            let entry = table[i]
            guard entry.isPresent else { break }
            if level == .pte || entry.isHuge {
                if kind == .write && !entry.isWritable { present = true; break }
                let wanted = PageTableEntry.accessedBit | (kind == .write ? PageTableEntry.dirtyBit : 0)
                if entry.rawValue & wanted != wanted { table.setHardwareBits(i, wanted) }
                leaf = entry
                break
            }
            if entry.rawValue & PageTableEntry.accessedBit == 0 { table.setHardwareBits(i, PageTableEntry.accessedBit) }
            // The walk started above `level`, so the cache of `level` missed.
            if level == .pmd {
                pd.insertAbsent(tag: pdTag, base: pdBase, size: .size4K, payload: UInt64(entry.pfn.rawValue), FourWays.self)
            } else {
                pageWalkCache.fill(level, v, asid: asid, frame: entry.pfn.rawValue, absent: true)
            }
            table = kernel.pageTable(below: entry, in: table, at: i)
            level = level.lower.unsafelyUnwrapped
        }
        if pipelined { emit(CachePipeline.walkEnd) } else {
            tally.walkCycles += independentAccesses ? cost / mlp : cost
        }
        lastDataLine = .max

        guard let leaf else { return accessAfterFault(va, kind, tlb.dataLevels, present: present) }
        let entry = TLBEntry(leaf: leaf, write: kind == .write)
        guard level == .pte else {
            // A huge leaf: the levels' general fills (`accessThroughTLBs`).
            let size = PageSize(leafLevel: level)
            let levels = tlb.dataLevels
            levels.l2.fill(va: v, asid: asid, size: size, entry: entry, absent: missedL2)
            let inL1 = levels.l1.fill(va: v, asid: asid, size: size, entry: entry, absent: true)
            return complete(v, kind, entry.piece(containing: v, of: size, as: inL1?.size ?? size), inL1?.size ?? size)
        }
        if missedL2 {
            l2.insertAbsent(tag: tag, base: base2, size: .size4K, payload: entry.rawValue, L2.self)
        } else {
            refill4K(page, l2, entry)
        }
        l1.insertAbsent(tag: tag, base: base1, size: .size4K, payload: entry.rawValue, FourWays.self)
        return complete4K(v, kind, entry)
    }

    /// The STLB's refill of the 4 KiB `page` after a walk whose STLB hit forbade the access (a write
    /// to a clean entry), as `accessThroughTLBs` makes it. Rare, so out of line.
    @inline(never)
    func refill4K(_ page: UInt64, _ l2: Unmanaged<TLBArray>, _ entry: TLBEntry) {
        let asid = asid
        l2._withUnsafeGuaranteedRef { _ = $0.insert(page: page, size: .size4K, asid: asid, payload: entry.rawValue) }
    }

    /// Writes an op of three words for the cache thread (only while `pipelined`), published whole:
    /// when it would not fit before the next publication, the words before it are published first
    /// (`publish` leaves room for a whole interval).
    @inline(__always)
    func emit(_ op: (UInt64, UInt64, UInt64)) {
        if ops.limit &- ops.head < 3 { pipeline.unsafelyUnwrapped.publish(&ops) }
        let h = ops.head
        let ring = ops.ring.unsafelyUnwrapped
        ring[h & CachePipeline.mask] = op.0
        ring[(h &+ 1) & CachePipeline.mask] = op.1
        ring[(h &+ 2) & CachePipeline.mask] = op.2
        ops.head = h &+ 3
        if h &+ 3 == ops.limit { pipeline.unsafelyUnwrapped.publish(&ops) }
    }

    /// The full path of a data access whose probe of the first L1 data array missed (`probed`) or
    /// was not made: `accessMiss4K` when it applies, else `accessThroughTLBs`.
    @inline(never)
    func accessMiss(_ va: VirtualAddress, _ kind: MemoryAccess, probed: Bool) -> Result<PFN, AccessFault> {
        if probed && missPathShape != .none && nested == nil
            && missPathCounts.l1._withUnsafeGuaranteedRef({ $0.others }) == 0
            && missPathCounts.l2._withUnsafeGuaranteedRef({ $0.others }) == 0 {
            return missPathShape == .stlb12 ? accessMiss4K(va, kind, TwelveWays.self) : accessMiss4K(va, kind, SixteenWays.self)
        }
        return accessThroughTLBs(va, kind, probedFirst4K: probed)
    }

    /// `complete(_:_:_:_:)` for a 4 KiB data page.
    @inline(__always)
    func complete4K(_ v: UInt64, _ kind: MemoryAccess, _ entry: TLBEntry) -> Result<PFN, AccessFault> {
        filterStart = v &>> 12
        filterPages = 1
        filterFrame = entry.frame
        filterDirty = entry.isWritable && entry.isDirty
        if modelsDataCache { touchData(frame: entry.frame, va: v, write: kind == .write) }
        return .success(PFN(entry.frame))
    }
}

extension PageWalkCache {
    /// The PML4E cache's part of `deepest(_:asid:)`, after misses in the PDE and PDPTE caches.
    @inline(__always)
    func pml4Frame(_ va: UInt64, asid: UInt16) -> UInt32? {
        guard hasPML4 else { return nil }
        let s = pml4.lookup(page: va >> 39, size: .size4K, asid: asid)
        return s >= 0 ? UInt32(truncatingIfNeeded: pml4.payload(s)) : nil
    }
}
