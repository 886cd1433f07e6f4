import VMCore

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
    /// Per level (L1 data, L1 instruction, STLB), the entries other than its first array's 4 KiB ones.
    let levelCounts: (TLBLevelCount, TLBLevelCount, TLBLevelCount)

    public init(_ d: MachineDescription) {
        func build(_ specs: [TLBArraySpec]) -> ContiguousArray<TLBArray> {
            ContiguousArray(specs.map { TLBArray(entries: $0.entries, ways: $0.ways, pageSizes: $0.pageSizes) })
        }
        l1Data = build(d.l1Data)
        l1Instruction = build(d.l1Instruction)
        l2 = build(d.l2)
        levelCounts = (TLBLevelCount(), TLBLevelCount(), TLBLevelCount())
        for (arrays, count) in [(l1Data, levelCounts.0), (l1Instruction, levelCounts.1), (l2, levelCounts.2)] {
            for (i, a) in arrays.enumerated() { a.levelCount = count; a.firstInLevel = i == 0 }
        }
        dataLevels = Levels(l1: ArrayList(l1Data, count: levelCounts.0), l2: ArrayList(l2, count: levelCounts.2))
        instructionLevels = Levels(l1: ArrayList(l1Instruction, count: levelCounts.1), l2: ArrayList(l2, count: levelCounts.2))
    }

    deinit {
        dataLevels.l1.free(); dataLevels.l2.free(); instructionLevels.l1.free(); instructionLevels.l2.free()
    }

    /// The arrays of one level, unretained, with the level's lookup and fill: the access path calls
    /// these on the value (no class metadata, no reference counting, no closure per array). Two
    /// words, so that choosing the data or the instruction levels per access copies four.
    public struct ArrayList: @unchecked Sendable {
        let base: UnsafeMutablePointer<Unmanaged<TLBArray>>
        let info: UnsafeMutablePointer<Info>
        /// How many arrays, and where a fill of each page size goes (indexed by `PageSize.rawValue`):
        /// the array that holds the size, or the largest smaller size some array holds (the first
        /// such array), and the size it is kept as; array -1 when no array holds it or anything
        /// smaller. Array sizes never change, so this is computed once.
        struct Info {
            var count: Int
            var fillArray: (Int8, Int8, Int8)
            var fillSize: (PageSize, PageSize, PageSize)
            /// The level's `TLBLevelCount` (unretained: the hierarchy owns it), nil for a list made
            /// of arrays outside a hierarchy.
            var levelCount: Unmanaged<TLBLevelCount>?
        }
        public var count: Int { info.pointee.count }

        init(_ arrays: ContiguousArray<TLBArray>, count levelCount: TLBLevelCount? = nil) {
            base = .allocate(capacity: arrays.count)
            for (i, a) in arrays.enumerated() { (base + i).initialize(to: .passUnretained(a)) }
            func target(_ size: PageSize) -> (Int8, PageSize) {
                var bestArray = -1
                var bestSize = PageSize.size4K
                for (i, a) in arrays.enumerated() {
                    if let s = a.pageSizes.largest(atMost: size), bestArray < 0 || s > bestSize {
                        bestArray = i; bestSize = s
                    }
                }
                return (Int8(bestArray), bestSize)
            }
            let (a0, s0) = target(.size4K), (a1, s1) = target(.size2M), (a2, s2) = target(.size1G)
            info = .allocate(capacity: 1)
            info.initialize(to: Info(count: arrays.count, fillArray: (a0, a1, a2), fillSize: (s0, s1, s2),
                                     levelCount: levelCount.map { .passUnretained($0) }))
        }
        func free() { base.deallocate(); info.deallocate() }
        /// Calls `body` with array `i` without retaining it.
        @inline(__always) func with<R>(_ i: Int, _ body: (TLBArray) -> R) -> R {
            base[i]._withUnsafeGuaranteedRef(body)
        }

        /// Looks `va` up in the level's arrays, refreshing LRU on a hit. `skippingFirst4K`: the
        /// caller already probed the first array for a 4 KiB page and missed (a miss changes nothing).
        @inline(__always)
        public func lookup(va: UInt64, asid: UInt16, skippingFirst4K: Bool = false) -> Hit? {
            let count = count
            var i = 0
            while i < count {
                let with4K = i != 0 || !skippingFirst4K
                // The slot and the size in one word (slot << 2 | size), -1 on a miss.
                let found = base[i]._withUnsafeGuaranteedRef { $0.probe(va: va, asid: asid, with4K: with4K) }
                if found >= 0 {
                    return Hit(array: i, slot: found >> 2, size: PageSize(rawValue: found & 3).unsafelyUnwrapped)
                }
                i &+= 1
            }
            return nil
        }

        /// Whether the level holds translations only as 4 KiB entries of its first array (no other
        /// size there, nothing in the others): then a lookup can hit only in that array's 4 KiB probe
        /// (`lookupFirst4K`). False for a list without a level count.
        @inline(__always)
        var holdsOnlyFirst4K: Bool {
            guard let count = info.pointee.levelCount else { return false }
            return count._withUnsafeGuaranteedRef { $0.others == 0 }
        }

        /// `lookup(va:asid:)` of a level that `holdsOnlyFirst4K`: the first array's 4 KiB probe.
        @inline(__always)
        func lookupFirst4K(va: UInt64, asid: UInt16) -> Hit? {
            let slot = base[0]._withUnsafeGuaranteedRef { a in
                a.holds(.size4K) ? a.lookup(page: va &>> 12, size: .size4K, asid: asid) : -1
            }
            return slot >= 0 ? Hit(array: 0, slot: slot, size: .size4K) : nil
        }

        /// The payload of a hit.
        @inline(__always)
        public func payload(_ hit: Hit) -> TLBEntry {
            TLBEntry(rawValue: base[hit.array]._withUnsafeGuaranteedRef { $0.payload(hit.slot) })
        }

        /// Fills a translation of a page of `size` into the level: into the array that holds `size`,
        /// or the largest smaller size some array holds (the piece containing `va`). Returns where
        /// it went. `absent`: the caller looked `va` up in this level and missed, and nothing filled
        /// the level since (the fill then only picks the victim; `TLBArray.insert`).
        @discardableResult @inline(__always)
        public func fill(va: UInt64, asid: UInt16, size: PageSize, entry: TLBEntry, absent: Bool = false) -> Hit? {
            let array: Int8, pieceSize: PageSize
            switch size {
            case .size4K: array = info.pointee.fillArray.0; pieceSize = info.pointee.fillSize.0
            case .size2M: array = info.pointee.fillArray.1; pieceSize = info.pointee.fillSize.1
            case .size1G: array = info.pointee.fillArray.2; pieceSize = info.pointee.fillSize.2
            }
            guard array >= 0 else { return nil }
            let piece = entry.piece(containing: va, of: size, as: pieceSize)
            let slot = base[Int(array)]._withUnsafeGuaranteedRef {
                $0.insert(page: va &>> pieceSize.shift, size: pieceSize, asid: asid, payload: piece.rawValue, absent: absent)
            }
            return Hit(array: Int(array), slot: slot, size: pieceSize)
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

    /// Looks `va` up in one level's arrays, refreshing LRU on a hit (`ArrayList.lookup`).
    public static func lookup(_ arrays: ArrayList, va: UInt64, asid: UInt16, skippingFirst4K: Bool = false) -> Hit? {
        arrays.lookup(va: va, asid: asid, skippingFirst4K: skippingFirst4K)
    }

    /// Looks `va` up in one level's arrays (the owning form, for tests and tools).
    public static func lookup(_ arrays: ContiguousArray<TLBArray>, va: UInt64, asid: UInt16) -> Hit? {
        let list = ArrayList(arrays)
        defer { list.free() }
        return list.lookup(va: va, asid: asid)
    }

    /// The payload of a hit (`ArrayList.payload`).
    public static func payload(_ arrays: ArrayList, _ hit: Hit) -> TLBEntry { arrays.payload(hit) }

    /// Fills a translation into one level (`ArrayList.fill`).
    @discardableResult
    public static func fill(_ arrays: ArrayList, va: UInt64, asid: UInt16, size: PageSize, entry: TLBEntry) -> Hit? {
        arrays.fill(va: va, asid: asid, size: size, entry: entry)
    }

    /// Fills a translation into one level (the owning form, for tests and tools).
    @discardableResult
    public static func fill(_ arrays: ContiguousArray<TLBArray>, va: UInt64, asid: UInt16, size: PageSize, entry: TLBEntry) -> Hit? {
        let list = ArrayList(arrays)
        defer { list.free() }
        return list.fill(va: va, asid: asid, size: size, entry: entry)
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
    /// The entry a walk caches for the present leaf `leaf` and an access that writes or not (a
    /// write sets the dirty bit, `PageTableWalk.walk`): `init(frame:writable:dirty:executable:user:)`
    /// with each bit moved from the leaf by a shift, no branch.
    @inline(__always)
    public init(leaf: PageTableEntry, write: Bool) {
        let raw = leaf.rawValue
        // The frame by a mask and a shift (`leaf.pfn`, which the optimizer left a call in `CPU.accessMiss4K`).
        rawValue = UInt64(UInt32(truncatingIfNeeded: (raw & PageTableEntry.pfnMask) &>> 12))
            | (raw & PageTableEntry.writableBit) << 31                                   // bit 1 → 32
            | (raw & PageTableEntry.dirtyBit) << 27 | (write ? Self.dirtyBit : 0)        // bit 6 → 33
            | (~raw >> 63) << 34                                                         // NX clear → 34
            | (raw & PageTableEntry.userBit) << 33                                       // bit 2 → 35
    }
    @inline(__always) public var frame: UInt32 { UInt32(truncatingIfNeeded: rawValue) }
    @inline(__always) public var isWritable: Bool { rawValue & Self.writableBit != 0 }
    @inline(__always) public var isDirty: Bool { rawValue & Self.dirtyBit != 0 }
    @inline(__always) public var isExecutable: Bool { rawValue & Self.executableBit != 0 }

    /// The entry for the piece of size `piece` that contains `va`, of a page of size `size`.
    @inline(__always)
    public func piece(containing va: UInt64, of size: PageSize, as piece: PageSize) -> TLBEntry {
        if piece == size { return self }
        let offsetPages = (va & (size.bytes &- 1) & ~(piece.bytes &- 1)) >> 12
        return TLBEntry(rawValue: (rawValue & ~0xFFFF_FFFF) | UInt64(frame &+ UInt32(truncatingIfNeeded: offsetPages)))
    }
}
