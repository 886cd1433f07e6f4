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

    public init(_ d: MachineDescription) {
        func build(_ specs: [TLBArraySpec]) -> ContiguousArray<TLBArray> {
            ContiguousArray(specs.map { TLBArray(entries: $0.entries, ways: $0.ways, pageSizes: $0.pageSizes) })
        }
        l1Data = build(d.l1Data)
        l1Instruction = build(d.l1Instruction)
        l2 = build(d.l2)
    }

    /// A hit: which array of the level, which slot, at which page size.
    public struct Hit: Sendable, Hashable {
        public var array: Int
        public var slot: Int
        public var size: PageSize
    }

    /// Looks `va` up in one level's arrays, refreshing LRU on a hit.
    @inline(__always)
    public static func lookup(_ arrays: ContiguousArray<TLBArray>, va: UInt64, asid: UInt16) -> Hit? {
        var i = 0
        while i < arrays.count {
            let a = arrays[i]
            if a.holds(.size4K) {
                let s = a.lookup(page: va >> 12, size: .size4K, asid: asid)
                if s >= 0 { return Hit(array: i, slot: s, size: .size4K) }
            }
            if a.holds(.size2M) {
                let s = a.lookup(page: va >> 21, size: .size2M, asid: asid)
                if s >= 0 { return Hit(array: i, slot: s, size: .size2M) }
            }
            if a.holds(.size1G) {
                let s = a.lookup(page: va >> 30, size: .size1G, asid: asid)
                if s >= 0 { return Hit(array: i, slot: s, size: .size1G) }
            }
            i &+= 1
        }
        return nil
    }

    /// Fills a translation of a page of `size` into the level: into the array that holds `size`, or
    /// the largest smaller size some array holds (the piece containing `va`). Returns where it went.
    @discardableResult
    public static func fill(_ arrays: ContiguousArray<TLBArray>, va: UInt64, asid: UInt16, size: PageSize,
                            entry: TLBEntry) -> Hit? {
        var best: (Int, PageSize)? = nil
        for (i, a) in arrays.enumerated() {
            guard let s = a.pageSizes.largest(atMost: size) else { continue }
            if best == nil || s > best!.1 { best = (i, s) }
        }
        guard let (i, s) = best else { return nil }
        let piece = entry.piece(containing: va, of: size, as: s)
        let slot = arrays[i].insert(page: va >> s.shift, size: s, asid: asid, payload: piece.rawValue)
        return Hit(array: i, slot: slot, size: s)
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
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let writableBit: UInt64 = 1 << 32
    public static let dirtyBit: UInt64 = 1 << 33
    public static let executableBit: UInt64 = 1 << 34
    public static let userBit: UInt64 = 1 << 35

    @inlinable public init(frame: UInt32, writable: Bool, dirty: Bool, executable: Bool, user: Bool) {
        rawValue = UInt64(frame) | (writable ? Self.writableBit : 0) | (dirty ? Self.dirtyBit : 0)
            | (executable ? Self.executableBit : 0) | (user ? Self.userBit : 0)
    }
    @inlinable public var frame: UInt32 { UInt32(truncatingIfNeeded: rawValue) }
    @inlinable public var isWritable: Bool { rawValue & Self.writableBit != 0 }
    @inlinable public var isDirty: Bool { rawValue & Self.dirtyBit != 0 }
    @inlinable public var isExecutable: Bool { rawValue & Self.executableBit != 0 }

    /// The entry for the piece of size `piece` that contains `va`, of a page of size `size`.
    @inlinable public func piece(containing va: UInt64, of size: PageSize, as piece: PageSize) -> TLBEntry {
        if piece == size { return self }
        let offsetPages = (va & (size.bytes &- 1) & ~(piece.bytes &- 1)) >> 12
        return TLBEntry(rawValue: (rawValue & ~0xFFFF_FFFF) | UInt64(frame &+ UInt32(truncatingIfNeeded: offsetPages)))
    }
}
