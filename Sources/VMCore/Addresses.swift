/// Page geometry of x86-64 with 4-level paging.
///
/// ```
///  63      48 47     39 38     30 29     21 20     12 11        0
/// +----------+---------+---------+---------+---------+-----------+
/// | sign ext |  PGD    |  PUD    |  PMD    |  PTE    |  offset   |
/// +----------+---------+---------+---------+---------+-----------+
///              9 bits    9 bits    9 bits    9 bits    12 bits
/// ```
public enum PageGeometry {
    /// Bytes in a base page (Linux: `PAGE_SIZE`).
    public static let pageShift: UInt64 = 12
    public static let pageSize: UInt64 = 1 << pageShift
    /// Bytes mapped by one PMD entry (Linux: `HPAGE_PMD_SIZE`).
    public static let pmdShift: UInt64 = 21
    public static let pmdSize: UInt64 = 1 << pmdShift
    /// Bytes mapped by one PUD entry.
    public static let pudShift: UInt64 = 30
    public static let pudSize: UInt64 = 1 << pudShift
    public static let pgdShift: UInt64 = 39
    /// Entries in one page table at any level (Linux: `PTRS_PER_PTE`).
    public static let entriesPerTable = 512
    /// Order of a PMD-sized folio (Linux: `HPAGE_PMD_ORDER`).
    @inlinable public static var pmdOrder: PageOrder { PageOrder(rawValue: 9) }
    /// One past the highest user address (Linux: `TASK_SIZE` with 4-level paging, 47 bits).
    public static let userAddressLimit: UInt64 = 1 << 47
}

/// A user virtual address. Arithmetic with raw integers is explicit so that mixing virtual and
/// physical addresses is a compiler error.
public struct VirtualAddress: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inlinable public init(_ value: UInt64) { self.rawValue = value }

    @inlinable public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    @inlinable public static func + (a: Self, b: UInt64) -> Self { Self(a.rawValue &+ b) }
    @inlinable public static func - (a: Self, b: UInt64) -> Self { Self(a.rawValue &- b) }
    @inlinable public static func - (a: Self, b: Self) -> UInt64 { a.rawValue &- b.rawValue }

    /// The address rounded down to a multiple of `alignment` (a power of two).
    @inlinable public func alignedDown(_ alignment: UInt64) -> Self { Self(rawValue & ~(alignment &- 1)) }
    /// The address rounded up to a multiple of `alignment` (a power of two).
    @inlinable public func alignedUp(_ alignment: UInt64) -> Self {
        Self((rawValue &+ alignment &- 1) & ~(alignment &- 1))
    }
    @inlinable public func isAligned(_ alignment: UInt64) -> Bool { rawValue & (alignment &- 1) == 0 }
    /// The base page that holds this address.
    @inlinable public var pageNumber: UInt64 { rawValue >> PageGeometry.pageShift }
    @inlinable public var pageOffset: Int { Int(truncatingIfNeeded: rawValue & (PageGeometry.pageSize - 1)) }

    /// Index into the table at `level` (Linux: `pgd_index()`, `pud_index()`, `pmd_index()`, `pte_index()`).
    @inlinable public func tableIndex(_ level: PageTableLevel) -> Int {
        Int(truncatingIfNeeded: (rawValue >> level.shift) & 511)
    }

    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// A physical address in simulated memory.
public struct PhysicalAddress: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inlinable public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    @inlinable public var pfn: PFN { PFN(UInt32(truncatingIfNeeded: rawValue >> PageGeometry.pageShift)) }
    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// A page frame number: the index of a 4 KiB frame in simulated physical memory (Linux: `unsigned long pfn`).
///
/// 32 bits index 16 TiB of simulated memory, and keep the frame table's links compact.
public struct PFN: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public init(_ value: UInt32) { self.rawValue = value }
    @inlinable public init(_ value: Int) { self.rawValue = UInt32(value) }
    @inlinable public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    @inlinable public static func + (a: Self, b: Int) -> Self { Self(a.rawValue &+ UInt32(truncatingIfNeeded: b)) }
    @inlinable public var index: Int { Int(rawValue) }
    @inlinable public var address: PhysicalAddress { PhysicalAddress(rawValue: UInt64(rawValue) << PageGeometry.pageShift) }
    /// The PFN of the buddy of the block of `order` starting here (Linux: `__find_buddy_pfn()`).
    @inlinable public func buddy(order: PageOrder) -> PFN { PFN(rawValue ^ (1 << UInt32(order.rawValue))) }
    @inlinable public func isAligned(order: PageOrder) -> Bool { rawValue & ((1 << UInt32(order.rawValue)) - 1) == 0 }
    public var description: String { "pfn " + String(rawValue) }
}

/// The order of a block of frames: 2^order base pages (Linux: `unsigned int order`).
public struct PageOrder: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    @inlinable public init(_ value: Int) { precondition(value >= 0 && value < 32); self.rawValue = UInt8(value) }
    @inlinable public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    /// Base pages in a block of this order.
    @inlinable public var pages: Int { 1 << Int(rawValue) }
    @inlinable public var bytes: UInt64 { UInt64(pages) << PageGeometry.pageShift }
    /// The highest order the buddy allocator manages (Linux: `MAX_PAGE_ORDER`, 10).
    @inlinable public static var max: PageOrder { PageOrder(rawValue: 10) }
    @inlinable public static var base: PageOrder { PageOrder(rawValue: 0) }
    public var description: String { "order \(rawValue)" }
}

/// The four levels of an x86-64 page table.
public enum PageTableLevel: Int, Sendable, CaseIterable {
    case pte = 0, pmd = 1, pud = 2, pgd = 3
    @inlinable public var shift: UInt64 { PageGeometry.pageShift + 9 * UInt64(rawValue) }
    /// Bytes one entry at this level maps.
    @inlinable public var entrySpan: UInt64 { 1 << shift }
    @inlinable public var lower: PageTableLevel? { PageTableLevel(rawValue: rawValue - 1) }
    public var name: String { ["PTE", "PMD", "PUD", "PGD"][rawValue] }
}
