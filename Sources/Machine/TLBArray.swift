import VMCore

/// One set-associative TLB array with exact LRU replacement: the building block of every TLB level,
/// of the page-walk caches and of the nested TLB.
///
/// Entries live in three flat arrays indexed by slot = set × ways + way. A tag packs the page number,
/// the page size and the address-space identifier, with bit 63 marking the slot valid:
///
/// ```
///  63   62 ........................ 16  15 14  13 12  11 ........ 0
/// +---+-------------------------------+------+------+--------------+
/// | V |  page number at its own size  | size |  0   |  ASID (PCID) |
/// +---+-------------------------------+------+------+--------------+
/// ```
/// The set of a page is its page number masked by `sets - 1` (sets are a power of two). LRU keeps a
/// last-use stamp per slot; a hit refreshes it and a fill replaces the invalid or oldest way.
///
/// A stamp packs the array's use counter with the slot's way, so that the victim is simply the
/// smallest stamp of the set (a branch-free minimum, no index kept beside it):
///
/// ```
///  63 ............................... wayBits   wayBits-1 ... 0
/// +-------------------------------------------+-----------------+
/// | the array's use count at the slot's last   |       way       |
/// | hit or fill; 0 while the slot is invalid   |                 |
/// +-------------------------------------------+-----------------+
/// ```
/// An invalid way's stamp is its way number, below every valid stamp, so the first invalid way goes
/// first; valid ways' counts are distinct, so the oldest goes next: the exact LRU choice of the
/// original scan ("the first way with the smallest count"), as long as the counter stays below
/// 2^(64 − wayBits) (2^60 uses of a 12-way array).
/// Invariants: a (page, size, ASID) is valid in at most one slot; an invalid slot's stamp is its way.
///
/// Hardware: the L1 dTLB/iTLB arrays and the STLB (Intel SDM vol. 3A, 4.10.2; AMD "L1/L2 TLB").
public final class TLBArray: @unchecked Sendable {
    public let sets: Int
    public let ways: Int
    public let pageSizes: PageSizeSet
    let setMask: UInt64
    let tags: UnsafeMutablePointer<UInt64>
    let payloads: UnsafeMutablePointer<UInt64>
    let stamps: UnsafeMutablePointer<UInt64>
    @exclusivity(unchecked) var clock: UInt64 = 0
    /// Bits of a stamp that hold the way (enough for `ways - 1`), and their mask.
    let wayBits: UInt64
    let wayMask: UInt64
    /// Valid entries per page size, so lookups skip sizes the array holds none of.
    @exclusivity(unchecked) var occupancy: (UInt32, UInt32, UInt32) = (0, 0, 0)
    /// In a TLB level (`TLBHierarchy`), the level's count of entries other than its first array's
    /// 4 KiB ones, which this array keeps up to date with `occupancy`; `firstInLevel`: this array is
    /// that first array.
    @exclusivity(unchecked) var levelCount: TLBLevelCount?
    @exclusivity(unchecked) var firstInLevel = false
    /// Wide (fully associative, more than 16 ways) arrays keep a hash index and a recency list
    /// instead of scanning every way (`TLBArray+Wide.swift`).
    let wide: Bool
    let index: UnsafeMutablePointer<Int32>
    let indexMask: Int
    let indexShift: UInt64
    let newer: UnsafeMutablePointer<Int32>
    let older: UnsafeMutablePointer<Int32>
    @exclusivity(unchecked) var newest: Int32 = 0
    @exclusivity(unchecked) var oldestSlot: Int32 = 0

    public static let validBit: UInt64 = 1 << 63

    /// - Precondition: `entries` is a multiple of `ways` and `entries / ways` a power of two.
    public init(entries: Int, ways: Int, pageSizes: PageSizeSet = .size4K) {
        precondition(entries > 0 && ways > 0 && entries % ways == 0, "bad TLB geometry")
        let sets = entries / ways
        precondition(sets & (sets - 1) == 0, "TLB sets must be a power of two")
        self.sets = sets
        self.ways = ways
        self.pageSizes = pageSizes
        setMask = UInt64(sets - 1)
        tags = .allocate(capacity: entries); tags.initialize(repeating: 0, count: entries)
        payloads = .allocate(capacity: entries); payloads.initialize(repeating: 0, count: entries)
        stamps = .allocate(capacity: entries)
        wayBits = UInt64(Int.bitWidth - (ways - 1).leadingZeroBitCount)
        wayMask = (1 << wayBits) &- 1
        for slot in 0..<entries { (stamps + slot).initialize(to: UInt64(slot % ways)) }
        wide = sets == 1 && ways > 16
        let indexSize = wide ? max(64, 1 << (Int.bitWidth - (4 * ways - 1).leadingZeroBitCount)) : 1
        index = .allocate(capacity: indexSize)
        indexMask = indexSize - 1
        indexShift = UInt64(64 - indexSize.trailingZeroBitCount)
        newer = .allocate(capacity: entries)
        older = .allocate(capacity: entries)
        resetRecency()
    }

    deinit {
        tags.deallocate(); payloads.deallocate(); stamps.deallocate()
        index.deallocate(); newer.deallocate(); older.deallocate()
    }

    public var entries: Int { sets * ways }

    /// The stamp of a use of `way` now (`clock` already advanced).
    @inline(__always) func stamp(way: Int) -> UInt64 { clock &<< wayBits | UInt64(truncatingIfNeeded: way) }

    /// The tag of a page: page number at its size, size and ASID, marked valid.
    @inline(__always)
    public static func tag(page: UInt64, size: PageSize, asid: UInt16) -> UInt64 {
        validBit | (page << 16) | (UInt64(size.rawValue) << 14) | UInt64(asid & 0xFFF)
    }

    @inline(__always) func count(_ size: PageSize) -> UInt32 {
        switch size {
        case .size4K: occupancy.0
        case .size2M: occupancy.1
        case .size1G: occupancy.2
        }
    }

    @inline(__always) func adjust(_ size: PageSize, _ delta: Int32) {
        switch size {
        case .size4K: occupancy.0 = UInt32(bitPattern: Int32(bitPattern: occupancy.0) &+ delta)
        case .size2M: occupancy.1 = UInt32(bitPattern: Int32(bitPattern: occupancy.1) &+ delta)
        case .size1G: occupancy.2 = UInt32(bitPattern: Int32(bitPattern: occupancy.2) &+ delta)
        }
        if let levelCount, !(firstInLevel && size == .size4K) { levelCount.others &+= delta }
    }

    /// The entries this array adds to its level's `TLBLevelCount`.
    var countedInLevel: UInt32 { firstInLevel ? occupancy.1 &+ occupancy.2 : occupancy.0 &+ occupancy.1 &+ occupancy.2 }

    /// Whether the array holds any entry of `size`.
    @inline(__always) public func holds(_ size: PageSize) -> Bool { count(size) != 0 }

    /// Looks `page` up and refreshes its LRU stamp on a hit. Returns the slot, or -1 on a miss.
    @inline(__always)
    public func lookup(page: UInt64, size: PageSize, asid: UInt16) -> Int {
        let t = Self.tag(page: page, size: size, asid: asid)
        if wide { return wideLookup(t, touch: true) }
        let base = Int(truncatingIfNeeded: page & setMask) &* ways
        var found = -1
        if ways > 8 {
            // Wide (fully associative) arrays: a loop without an early exit, which the compiler
            // vectorizes; a tag is valid in at most one way.
            var i = 0
            while i < ways {
                if tags[base &+ i] == t { found = base &+ i }
                i &+= 1
            }
        } else {
            var slot = base
            let end = base &+ ways
            while slot < end {
                if tags[slot] == t { found = slot; break }
                slot &+= 1
            }
        }
        if found >= 0 {
            clock &+= 1
            stamps[found] = stamp(way: found &- base)
        }
        return found
    }

    /// Probes for `va` at each page size the array holds entries of, smallest first (4 KiB only when
    /// `with4K`), refreshing LRU on a hit: the slot and size of the hit as `slot << 2 | size`, or -1.
    @inline(__always)
    func probe(va: UInt64, asid: UInt16, with4K: Bool) -> Int {
        if with4K && holds(.size4K) {
            let s = lookup(page: va >> 12, size: .size4K, asid: asid)
            if s >= 0 { return s << 2 | PageSize.size4K.rawValue }
        }
        if holds(.size2M) {
            let s = lookup(page: va >> 21, size: .size2M, asid: asid)
            if s >= 0 { return s << 2 | PageSize.size2M.rawValue }
        }
        if holds(.size1G) {
            let s = lookup(page: va >> 30, size: .size1G, asid: asid)
            if s >= 0 { return s << 2 | PageSize.size1G.rawValue }
        }
        return -1
    }

    /// Looks `page` up without touching LRU state (the functional view). Returns the slot or -1.
    public func peek(page: UInt64, size: PageSize, asid: UInt16) -> Int {
        let t = Self.tag(page: page, size: size, asid: asid)
        if wide { return wideLookup(t, touch: false) }
        let base = Int(truncatingIfNeeded: page & setMask) * ways
        for slot in base..<(base + ways) where tags[slot] == t { return slot }
        return -1
    }

    /// The payload stored with the entry in `slot`.
    @inline(__always) public func payload(_ slot: Int) -> UInt64 { payloads[slot] }

    /// Replaces the payload of a valid entry (e.g. when a walk set its dirty bit).
    @inline(__always) public func setPayload(_ slot: Int, _ value: UInt64) { payloads[slot] = value }

    /// Fills `page` into its set, replacing an invalid way or the least recently used one; refreshes
    /// the payload if the page is already present. Returns the slot. `absent`: the caller knows the
    /// page is not in the array (it looked it up and missed, and nothing filled the array since), so
    /// the fill skips looking for it and only picks the victim.
    @discardableResult @inline(__always)
    public func insert(page: UInt64, size: PageSize, asid: UInt16, payload: UInt64, absent: Bool = false) -> Int {
        let t = Self.tag(page: page, size: size, asid: asid)
        if wide { return wideInsert(t, size: size, payload: payload) }
        let base = Int(truncatingIfNeeded: page & setMask) &* ways
        let tags = self.tags, stamps = self.stamps
        assert(!absent || peek(page: page, size: size, asid: asid) < 0, "TLB fill told a present page is absent")
        var victim = -1
        if !absent { victim = slot(of: t, base: base) }
        if victim < 0 {
            // The least recently used way: the smallest stamp, whose low bits are its way (the
            // first empty way if any, else the oldest valid one).
            victim = base &+ Int(truncatingIfNeeded: oldestStamp(stamps + base) & wayMask)
        }
        replace(victim, base: base, tag: t, size: size, payload: payload, wayBits: wayBits)
        return victim
    }

    /// Puts the entry of tag `t` in `victim`, a slot of the set starting at `base`, as its most
    /// recently used way (`wayBits`: the array's, or a constant the caller knows).
    @inline(__always)
    func replace(_ victim: Int, base: Int, tag t: UInt64, size: PageSize, payload: UInt64, wayBits: UInt64) {
        let old = tags[victim]
        if old != t {
            // Replacing a valid entry of the same size (the steady state) leaves the counts as
            // they are.
            if old & Self.validBit == 0 || (old ^ t) & (3 << 14) != 0 { recount(replacing: old, with: size) }
            tags[victim] = t
        }
        payloads[victim] = payload
        clock &+= 1
        stamps[victim] = clock &<< wayBits | UInt64(truncatingIfNeeded: victim &- base)
    }

    /// The occupancy change of a fill that puts an entry of `size` where `old` was (invalid, or
    /// valid of another size). Not inlined: the steady state replaces an entry of the same size, and
    /// without the occupancy's switches `insert` stays under the optimizer's size limit for inlining
    /// (64 blocks) in the callers that fill levels.
    @inline(never)
    func recount(replacing old: UInt64, with size: PageSize) {
        if old & Self.validBit != 0 { adjust(Self.size(ofTag: old), -1) }
        adjust(size, 1)
    }

    /// The slot of set `base` that holds tag `t`, or -1. Not inlined: fills that follow a miss skip
    /// it (`absent`), and without it `insert` stays small enough to be inlined into the walk.
    @inline(never)
    func slot(of t: UInt64, base: Int) -> Int {
        var way = 0
        while way < ways {
            if tags[base &+ way] == t { return base &+ way }
            way &+= 1
        }
        return -1
    }

    /// The smallest of the `ways` stamps at `p`: a tree of minimums for 4 ways (the L1 dTLBs and the
    /// PDE cache) and 12 (the STLB): 12 loads and 11 compare-and-moves, where the compiler vectorizes
    /// a loop of 64-bit minimums, which without SSE 4.2 costs more than the scalar tree.
    @inline(__always)
    func oldestStamp(_ p: UnsafeMutablePointer<UInt64>) -> UInt64 {
        // The smaller of two by a mask, not `?:`: a conditional is two blocks more in the
        // optimizer's count, and with 14 of them `insert` would be past its inlining limit.
        @inline(__always) func least(_ a: UInt64, _ b: UInt64) -> UInt64 {
            b ^ ((a ^ b) & (0 &- UInt64(unsafeBitCast(a < b, to: UInt8.self))))
        }
        @inline(__always) func four(_ i: Int) -> UInt64 { least(least(p[i], p[i &+ 1]), least(p[i &+ 2], p[i &+ 3])) }
        switch ways {
        case 4: return four(0)
        case 12: return least(least(four(0), four(4)), four(8))
        default: return oldestStampScanning(p)
        }
    }

    /// `oldestStamp` for other associativities, not inlined: the fills stay small enough to be
    /// inlined where the walk and the TLB levels call them.
    @inline(never)
    func oldestStampScanning(_ p: UnsafeMutablePointer<UInt64>) -> UInt64 {
        var oldest = p[0]
        var i = 1
        while i < ways {
            oldest = min(oldest, p[i])
            i &+= 1
        }
        return oldest
    }

    static func size(ofTag t: UInt64) -> PageSize { PageSize(rawValue: Int((t >> 14) & 3))! }

    /// Invalidates the entry in `slot`.
    func clear(_ slot: Int) {
        let t = tags[slot]
        guard t & Self.validBit != 0 else { return }
        if wide { indexRemove(t); makeOldest(Int32(slot)) }
        adjust(Self.size(ofTag: t), -1)
        tags[slot] = 0
        stamps[slot] = UInt64(slot % ways)
    }

    /// Invalidates every entry of `asid` that maps any byte of `[start, end)`; returns how many went
    /// (Linux: `flush_tlb_one_user()` per page, `INVLPG`).
    @discardableResult
    public func invalidate(asid: UInt16, start: UInt64, end: UInt64) -> Int {
        var removed = 0
        // The sizes by raw value, not `pageSizes.sizes`, whose array was an allocation and a release
        // per call (about 370 instructions; memscale 80 CPUs makes ~95,600 calls).
        for raw in PageSize.size4K.rawValue...PageSize.size1G.rawValue {
            let size = PageSize(rawValue: raw)!
            guard pageSizes.contains(size) && holds(size) else { continue }
            let first = start >> size.shift
            let last = (end &- 1) >> size.shift
            if last &- first < UInt64(entries) {
                var page = first
                while page <= last {
                    let slot = peek(page: page, size: size, asid: asid)
                    if slot >= 0 { clear(slot); removed += 1 }
                    page &+= 1
                }
            } else {
                for slot in 0..<entries {
                    let t = tags[slot]
                    guard t & Self.validBit != 0, Self.size(ofTag: t) == size, UInt16(t & 0xFFF) == asid & 0xFFF else { continue }
                    let page = (t & ~Self.validBit) >> 16
                    if page >= first && page <= last { clear(slot); removed += 1 }
                }
            }
        }
        return removed
    }

    /// Invalidates every entry of `asid` (Linux: a CR3 write with a PCID, `invalidate_user_asid()`).
    @discardableResult
    public func invalidateAll(asid: UInt16) -> Int {
        // An empty array has nothing to scan: its tags, kilobytes of them in an STLB, stay out of
        // the host's caches (a machine of many CPUs flushes each CPU's TLBs, most of them empty
        // again by then).
        guard occupancy != (0, 0, 0) else { return 0 }
        var removed = 0
        for slot in 0..<entries where tags[slot] & Self.validBit != 0 && UInt16(tags[slot] & 0xFFF) == asid & 0xFFF {
            clear(slot)
            removed += 1
        }
        return removed
    }

    /// Empties the array.
    public func invalidateEverything() {
        tags.update(repeating: 0, count: entries)
        for slot in 0..<entries { stamps[slot] = UInt64(slot % ways) }
        if let levelCount { levelCount.others &-= Int32(bitPattern: countedInLevel) }
        occupancy = (0, 0, 0)
        resetRecency()
    }

    /// Valid entries, for tests and reports.
    public var validEntries: Int { Int(occupancy.0 + occupancy.1 + occupancy.2) }
    public func validEntries(of size: PageSize) -> Int { Int(count(size)) }
}

/// How many valid entries a TLB level holds other than its first array's 4 KiB ones (kept by the
/// level's arrays, `TLBArray.adjust`): while none, a lookup of the level is its first array's 4 KiB
/// probe (`TLBHierarchy.ArrayList.holdsOnlyFirst4K`).
final class TLBLevelCount: @unchecked Sendable {
    @exclusivity(unchecked) var others: Int32 = 0
}
