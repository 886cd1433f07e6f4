/// One 64-bit page-table entry at any level, with the bits of the Intel SDM (vol. 3A, 4.5).
///
/// ```
///  63  62..52  51 ............ 12  11..9  8   7   6   5   4   3   2   1   0
/// +--+--------+------------------+------+---+---+---+---+---+---+---+---+---+
/// |NX| softw. |       PFN        |softw.| G |PS | D | A |PCD|PWT|U/S|R/W| P |
/// +--+--------+------------------+------+---+---+---+---+---+---+---+---+---+
/// ```
/// Modifiers return new values, like Linux's `pte_mkdirty()`. An entry that is zero is empty
/// (Linux: `pte_none()`).
public struct PageTableEntry: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let presentBit: UInt64 = 1 << 0
    public static let writableBit: UInt64 = 1 << 1
    public static let userBit: UInt64 = 1 << 2
    public static let accessedBit: UInt64 = 1 << 5
    public static let dirtyBit: UInt64 = 1 << 6
    /// Page size: at PMD level, the entry maps 2 MiB directly (Linux: `_PAGE_PSE`).
    public static let hugeBit: UInt64 = 1 << 7
    public static let noExecuteBit: UInt64 = 1 << 63
    /// Software bit 9: the entry maps the shared zero page, or at PMD level the huge zero page (Linux:
    /// `pte_special()`, `pmd_special()`); no normal page stands behind it.
    public static let specialBit: UInt64 = 1 << 9
    /// Software bit 10, huge PMDs only: `split_huge_page()` is converting the page it maps; walkers
    /// that would change or pin it wait (Linux 2.6.38: `_PAGE_SPLITTING`, `pmd_trans_splitting()`).
    public static let splittingBit: UInt64 = 1 << 10
    public static let pfnMask: UInt64 = 0x000F_FFFF_FFFF_F000

    @inlinable public static var none: PageTableEntry { PageTableEntry(rawValue: 0) }

    /// An entry pointing at `pfn` with the given bits.
    @inlinable public init(pfn: PFN, bits: UInt64) {
        rawValue = (UInt64(pfn.rawValue) << PageGeometry.pageShift) | bits
    }

    /// Entry bits for a user mapping with the given protection (Linux: `vm_get_page_prot()`).
    /// Writability is granted separately, since private mappings start write-protected until COW.
    @inlinable public static func userBits(_ prot: Protection) -> UInt64 {
        var bits = presentBit | userBit
        if !prot.contains(.execute) { bits |= noExecuteBit }
        return bits
    }

    @inlinable public var isNone: Bool { rawValue == 0 }
    @inlinable public var isPresent: Bool { rawValue & Self.presentBit != 0 }
    @inlinable public var isWritable: Bool { rawValue & Self.writableBit != 0 }
    @inlinable public var isUser: Bool { rawValue & Self.userBit != 0 }
    @inlinable public var isAccessed: Bool { rawValue & Self.accessedBit != 0 }
    @inlinable public var isDirty: Bool { rawValue & Self.dirtyBit != 0 }
    /// At PMD level: maps a 2 MiB page (Linux: `pmd_trans_huge()`).
    @inlinable public var isHuge: Bool { rawValue & Self.hugeBit != 0 }
    @inlinable public var isSpecial: Bool { rawValue & Self.specialBit != 0 }
    /// Linux 2.6.38: `pmd_trans_splitting()`.
    @inlinable public var isSplitting: Bool { rawValue & Self.splittingBit != 0 }
    @inlinable public var isExecutable: Bool { rawValue & Self.noExecuteBit == 0 }
    @inlinable public var pfn: PFN { PFN(UInt32(truncatingIfNeeded: (rawValue & Self.pfnMask) >> PageGeometry.pageShift)) }

    @inlinable public func with(_ bit: UInt64) -> Self { Self(rawValue: rawValue | bit) }
    @inlinable public func without(_ bit: UInt64) -> Self { Self(rawValue: rawValue & ~bit) }
    /// Linux: `pte_mkwrite()`.
    @inlinable public func makingWritable() -> Self { with(Self.writableBit) }
    /// Linux: `pte_wrprotect()`.
    @inlinable public func writeProtected() -> Self { without(Self.writableBit) }
    /// Linux: `pte_mkdirty()`.
    @inlinable public func makingDirty() -> Self { with(Self.dirtyBit) }
    /// Linux: `pte_mkyoung()`.
    @inlinable public func makingYoung() -> Self { with(Self.accessedBit) }
    /// Linux: `pte_mkold()`.
    @inlinable public func makingOld() -> Self { without(Self.accessedBit) }
    /// The same entry with the protection bits of `prot` (Linux: `pte_modify()`); keeps PFN, A, D, PS.
    /// PROT_NONE keeps the entry for the kernel but hides it from the MMU (Linux: `_PAGE_PROTNONE`).
    @inlinable public func withProtection(_ prot: Protection, writable: Bool) -> Self {
        var raw = rawValue & ~(Self.writableBit | Self.noExecuteBit | Self.userBit | Self.presentBit | Self.protNoneBit)
        if prot.isEmpty {
            raw |= Self.protNoneBit | Self.userBit | Self.noExecuteBit
        } else {
            raw |= Self.userBits(prot)
            if writable { raw |= Self.writableBit }
        }
        return Self(rawValue: raw)
    }
    /// Software bit 8 (global is unused for user pages): present to the kernel, not to the MMU
    /// (Linux: `_PAGE_PROTNONE`, which reuses the global bit).
    public static let protNoneBit: UInt64 = 1 << 8
    /// Whether the entry maps a page the kernel owns, accessible or PROT_NONE (Linux: `pte_present()`).
    @inlinable public var isMapped: Bool { rawValue & (Self.presentBit | Self.protNoneBit) != 0 }

    public var description: String {
        if isNone { return "none" }
        var s = "pfn=\(pfn.rawValue)"
        if isPresent { s += " P" }
        if rawValue & Self.protNoneBit != 0 { s += " PROTNONE" }
        if isWritable { s += " W" }
        if isAccessed { s += " A" }
        if isDirty { s += " D" }
        if isHuge { s += " PS" }
        if isSpecial { s += " special" }
        if isSplitting { s += " splitting" }
        if !isExecutable { s += " NX" }
        return s
    }
}

/// Access rights of a mapping (Linux: `PROT_READ | PROT_WRITE | PROT_EXEC`).
public struct Protection: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    @inlinable public static var read: Protection { Protection(rawValue: 1) }
    @inlinable public static var write: Protection { Protection(rawValue: 2) }
    @inlinable public static var execute: Protection { Protection(rawValue: 4) }
    @inlinable public static var none: Protection { [] }
    @inlinable public static var readWrite: Protection { Protection(rawValue: 3) }

    /// Parses `r`, `rw`, `rx`, `rwx`, `w`, `none` (the scenario language's spelling).
    public init?(letters: String) {
        if letters == "none" { self = []; return }
        var p: Protection = []
        for c in letters {
            switch c {
            case "r": p.insert(.read)
            case "w": p.insert(.write)
            case "x": p.insert(.execute)
            default: return nil
            }
        }
        if p.isEmpty { return nil }
        self = p
    }

    /// `rw-p`-style letters as in `/proc/PID/maps`.
    public var description: String {
        (contains(.read) ? "r" : "-") + (contains(.write) ? "w" : "-") + (contains(.execute) ? "x" : "-")
    }
}
