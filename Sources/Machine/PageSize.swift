import VMCore

/// The page sizes an x86-64 TLB entry can map: 4 KiB (PTE), 2 MiB (PMD with PS), 1 GiB (PUD with PS).
public enum PageSize: Int, Sendable, CaseIterable, Comparable, CustomStringConvertible {
    case size4K = 0, size2M = 1, size1G = 2

    /// log2 of the size in bytes.
    @inline(__always) public var shift: UInt64 { 12 &+ 9 &* UInt64(rawValue) }
    @inline(__always) public var bytes: UInt64 { 1 &<< shift }
    /// Base (4 KiB) pages in one page of this size.
    @inline(__always) public var basePages: UInt64 { 1 &<< (shift &- 12) }
    /// The page size a leaf entry at `level` maps.
    public init(leafLevel level: PageTableLevel) {
        switch level {
        case .pte: self = .size4K
        case .pmd: self = .size2M
        default: self = .size1G
        }
    }

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { ["4K", "2M", "1G"][rawValue] }

    /// Parses `4k`, `2m`, `1g` (any case), as the machine config file spells them.
    public init?(spelling: Substring) {
        switch spelling.lowercased() {
        case "4k": self = .size4K
        case "2m": self = .size2M
        case "1g": self = .size1G
        default: return nil
        }
    }
}

/// A set of page sizes, as one TLB array supports them.
public struct PageSizeSet: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public init(_ size: PageSize) { rawValue = 1 << UInt8(size.rawValue) }
    public static let size4K = PageSizeSet(.size4K)
    public static let size2M = PageSizeSet(.size2M)
    public static let size1G = PageSizeSet(.size1G)
    public static let all: PageSizeSet = [.size4K, .size2M, .size1G]

    public func contains(_ size: PageSize) -> Bool { rawValue & (1 << UInt8(size.rawValue)) != 0 }
    /// The largest size in the set that is not larger than `size`: where a page of `size` is kept
    /// when the array cannot hold it whole (AMD "smashes" 1 GiB pages into 2 MiB entries).
    public func largest(atMost size: PageSize) -> PageSize? {
        var s = size.rawValue
        while s >= 0 {
            if rawValue & (1 << UInt8(s)) != 0 { return PageSize(rawValue: s) }
            s -= 1
        }
        return nil
    }
    public var sizes: [PageSize] { PageSize.allCases.filter { contains($0) } }
    public var description: String { sizes.map { $0.description.lowercased() }.joined(separator: ",") }
}
