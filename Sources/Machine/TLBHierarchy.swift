/// The TLBs of one simulated CPU: L1 data arrays (one per page size, or one for all), L1 instruction
/// arrays, and the unified second-level TLB (STLB), each tagged with an ASID so that translations of
/// different address spaces coexist as with PCIDs.
///
/// ```
///  access ──► L1 dTLB [4K | 2M | 1G]  ─miss─►  STLB [4K+2M | 1G]  ─miss─►  page walk
///  fetch  ──► L1 iTLB [4K | 2M]       ─miss─┘
/// ```
/// A page larger than every size an array holds is kept as the largest piece it can hold (AMD
/// "smashing" of 1 GiB pages into 2 MiB entries; Intel splinters guest pages the host maps smaller).
/// Hardware: Intel SDM vol. 3A, 4.10.2; AMD's optimization guides, "Translation-Lookaside Buffer".
public final class TLBHierarchy: @unchecked Sendable {
    public let l1Data: ContiguousArray<TLBArray>
    public let l1Instruction: ContiguousArray<TLBArray>
    public let l2: ContiguousArray<TLBArray>
    /// The same arrays as unretained references for the lookup path, which then does no reference
    /// counting; `l1Data`, `l1Instruction` and `l2` own them.
    let dataLevels: Levels
    let instructionLevels: Levels

    public init(_ d: MachineDescription) {
        func build(_ specs: [TLBArraySpec]) -> ContiguousArray<TLBArray> {
            ContiguousArray(specs.map { TLBArray(entries: $0.entries, ways: $0.ways, pageSizes: $0.pageSizes) })
        }
        l1Data = build(d.l1Data)
        l1Instruction = build(d.l1Instruction)
        l2 = build(d.l2)
        dataLevels = Levels(l1: ArrayList(l1Data), l2: ArrayList(l2))
        instructionLevels = Levels(l1: ArrayList(l1Instruction), l2: ArrayList(l2))
    }

    deinit {
        dataLevels.l1.free(); dataLevels.l2.free(); instructionLevels.l1.free(); instructionLevels.l2.free()
    }

    /// The arrays of one level, unretained.
    public struct ArrayList: @unchecked Sendable {
        let base: UnsafeMutablePointer<Unmanaged<TLBArray>>
        public let count: Int
        init(_ arrays: ContiguousArray<TLBArray>) {
            count = arrays.count
            base = .allocate(capacity: arrays.count)
            for (i, a) in arrays.enumerated() { (base + i).initialize(to: .passUnretained(a)) }
        }
        func free() { base.deallocate() }
        /// Calls `body` with array `i` without retaining it.
        @inline(__always) func with<R>(_ i: Int, _ body: (TLBArray) -> R) -> R {
            base[i]._withUnsafeGuaranteedRef(body)
        }
    }
    public struct Levels: Sendable {
        public let l1: ArrayList
        public let l2: ArrayList
    }

    /// A hit: which array of the level, which slot, at which page size.
    public struct Hit: Sendable, Hashable {
        public var array: Int
        public var slot: Int
        public var size: PageSize
    }

    /// Looks `va` up in one level's arrays, refreshing LRU on a hit. `skippingFirst4K`: the caller
    /// already probed the first array for a 4 KiB page and missed (a miss changes nothing).
    @inline(__always)
    public static func lookup(_ arrays: ArrayList, va: UInt64, asid: UInt16, skippingFirst4K: Bool = false) -> Hit? {
        var i = 0
        while i < arrays.count {
            let with4K = i != 0 || !skippingFirst4K
            let (slot, size) = arrays.with(i) { probe($0, va: va, asid: asid, with4K: with4K) }
            if slot >= 0 { return Hit(array: i, slot: slot, size: size) }
            i &+= 1
        }
        return nil
    }

    /// One array's probes, smallest page size first: the slot and size of a hit, or slot -1.
    @inline(__always)
    static func probe(_ a: TLBArray, va: UInt64, asid: UInt16, with4K: Bool = true) -> (Int, PageSize) {
        if with4K && a.holds(.size4K) {
            let s = a.lookup(page: va >> 12, size: .size4K, asid: asid)
            if s >= 0 { return (s, .size4K) }
        }
        if a.holds(.size2M) {
            let s = a.lookup(page: va >> 21, size: .size2M, asid: asid)
            if s >= 0 { return (s, .size2M) }
        }
        if a.holds(.size1G) {
            let s = a.lookup(page: va >> 30, size: .size1G, asid: asid)
            if s >= 0 { return (s, .size1G) }
        }
        return (-1, .size4K)
    }

    /// Looks `va` up in one level's arrays (the owning form, for tests and tools).
    public static func lookup(_ arrays: ContiguousArray<TLBArray>, va: UInt64, asid: UInt16) -> Hit? {
        let list = ArrayList(arrays)
        defer { list.free() }
        return lookup(list, va: va, asid: asid)
    }

    /// The payload of a hit.
    @inline(__always)
    public static func payload(_ arrays: ArrayList, _ hit: Hit) -> TLBEntry {
        TLBEntry(rawValue: arrays.with(hit.array) { $0.payload(hit.slot) })
    }

    /// Fills a translation of a page of `size` into the level: into the array that holds `size`, or
    /// the largest smaller size some array holds (the piece containing `va`). Returns where it went.
    @discardableResult
    public static func fill(_ arrays: ArrayList, va: UInt64, asid: UInt16, size: PageSize, entry: TLBEntry) -> Hit? {
        var bestArray = -1
        var bestSize = PageSize.size4K
        var i = 0
        while i < arrays.count {
            if let s = arrays.with(i, { $0.pageSizes.largest(atMost: size) }), bestArray < 0 || s > bestSize {
                bestArray = i; bestSize = s
            }
            i &+= 1
        }
        guard bestArray >= 0 else { return nil }
        let piece = entry.piece(containing: va, of: size, as: bestSize)
        let slot = arrays.with(bestArray) { $0.insert(page: va >> bestSize.shift, size: bestSize, asid: asid, payload: piece.rawValue) }
        return Hit(array: bestArray, slot: slot, size: bestSize)
    }

    /// Fills a translation into one level (the owning form, for tests and tools).
    @discardableResult
    public static func fill(_ arrays: ContiguousArray<TLBArray>, va: UInt64, asid: UInt16, size: PageSize, entry: TLBEntry) -> Hit? {
        let list = ArrayList(arrays)
        defer { list.free() }
        return fill(list, va: va, asid: asid, size: size, entry: entry)
    }

    /// Invalidates `[start, end)` of `asid` in every array; returns the entries removed.
    @discardableResult
    public func invalidate(asid: UInt16, start: UInt64, end: UInt64) -> Int {
        var n = 0
        for a in l1Data { n += a.invalidate(asid: asid, start: start, end: end) }
        for a in l1Instruction { n += a.invalidate(asid: asid, start: start, end: end) }
        for a in l2 { n += a.invalidate(asid: asid, start: start, end: end) }
        return n
    }

    /// Invalidates every translation of `asid`.
    @discardableResult
    public func invalidateAll(asid: UInt16) -> Int {
        var n = 0
        for a in l1Data { n += a.invalidateAll(asid: asid) }
        for a in l1Instruction { n += a.invalidateAll(asid: asid) }
        for a in l2 { n += a.invalidateAll(asid: asid) }
        return n
    }
}

/// What a TLB entry stores besides its tag: the first frame of the page it maps and the permission
/// and dirty bits copied from the leaf entry.
///
/// ```
///  63 ........ 36  35  34  33  32  31 ............. 0
/// +--------------+---+---+---+---+------------------+
/// |      0       | U | X | D | W |  PFN (first 4K)  |
/// +--------------+---+---+---+---+------------------+
/// ```
public struct TLBEntry: RawRepresentable, Sendable, Hashable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let writableBit: UInt64 = 1 << 32
    public static let dirtyBit: UInt64 = 1 << 33
    public static let executableBit: UInt64 = 1 << 34
    public static let userBit: UInt64 = 1 << 35

    public init(frame: UInt32, writable: Bool, dirty: Bool, executable: Bool, user: Bool) {
        rawValue = UInt64(frame) | (writable ? Self.writableBit : 0) | (dirty ? Self.dirtyBit : 0)
            | (executable ? Self.executableBit : 0) | (user ? Self.userBit : 0)
    }
    public var frame: UInt32 { UInt32(truncatingIfNeeded: rawValue) }
    public var isWritable: Bool { rawValue & Self.writableBit != 0 }
    public var isDirty: Bool { rawValue & Self.dirtyBit != 0 }
    public var isExecutable: Bool { rawValue & Self.executableBit != 0 }

    /// The entry for the piece of size `piece` that contains `va`, of a page of size `size`.
    public func piece(containing va: UInt64, of size: PageSize, as piece: PageSize) -> TLBEntry {
        if piece == size { return self }
        let offsetPages = (va & (size.bytes &- 1) & ~(piece.bytes &- 1)) >> 12
        return TLBEntry(rawValue: (rawValue & ~0xFFFF_FFFF) | UInt64(frame &+ UInt32(truncatingIfNeeded: offsetPages)))
    }
}
