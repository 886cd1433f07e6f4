import Synchronization

/// The tunables under `/sys/kernel/mm/transparent_hugepage/` that the fault path reads, with their
/// sysfs names and spellings (Linux: `transparent_hugepage_flags`, `enabled_store()`, `defrag_store()`).
public struct TransparentHugepageSettings: Sendable, Hashable {
    /// `enabled`: where anonymous faults may allocate huge pages.
    public enum Enabled: String, Sendable, CaseIterable {
        /// Every anonymous VMA except those marked `MADV_NOHUGEPAGE`.
        case always
        /// Only VMAs marked `MADV_HUGEPAGE`.
        case madvise
        /// Nowhere.
        case never
    }

    /// `defrag`: how hard a huge-page allocation at fault time tries (direct compaction and reclaim,
    /// or waking kcompactd); see `faultDefrag(madvised:)`.
    public enum Defrag: String, Sendable, CaseIterable {
        case always
        case `defer`
        case deferMadvise = "defer+madvise"
        case madvise
        case never
    }

    /// `hugepages-<size>kB/enabled` (Linux 6.8+, mTHP): per folio size, or `inherit` the top-level
    /// `enabled`.
    public enum SizeEnabled: String, Sendable, CaseIterable {
        case always, inherit, madvise, never
    }

    /// The orders anonymous memory may take as large folios (Linux: `THP_ORDERS_ALL_ANON`, 16 KiB
    /// to 2 MiB); order 9 is the PMD size.
    public static let anonymousOrders: ClosedRange<UInt8> = 2...9

    public var enabled: Enabled
    /// `hugepages-<size>kB/enabled` for each order of `anonymousOrders`, two bits each (an index into
    /// `SizeEnabled.allCases`), lowest order first; a plain value, so reading the settings on the fault
    /// path allocates nothing. Default: `inherit` for 2 MiB, `never` for the others.
    var perSizeBits: UInt16 = 0x7FFF

    /// `hugepages-<size>kB/enabled` of `order`.
    public func sizeEnabled(order: UInt8) -> SizeEnabled {
        SizeEnabled.allCases[Int(perSizeBits >> (2 * (order - Self.anonymousOrders.lowerBound)) & 3)]
    }
    public mutating func setSizeEnabled(order: UInt8, _ value: SizeEnabled) {
        let shift = 2 * (order - Self.anonymousOrders.lowerBound)
        perSizeBits = perSizeBits & ~(3 << shift) | UInt16(SizeEnabled.allCases.firstIndex(of: value)!) << shift
    }
    public var defrag: Defrag
    /// `use_zero_page`: read faults map the huge zero page instead of allocating.
    public var useZeroPage: Bool
    /// `shrink_underused` (Linux 6.12+): the deferred-split shrinker also splits THPs with more than
    /// `khugepaged/max_ptes_none` zero-filled pages. Default 1; only today's design acts on it.
    public var shrinkUnderused: Bool

    public init(enabled: Enabled, defrag: Defrag, useZeroPage: Bool, shrinkUnderused: Bool = true) {
        self.enabled = enabled
        self.defrag = defrag
        self.useZeroPage = useZeroPage
        self.shrinkUnderused = shrinkUnderused
    }

    /// `hpage_pmd_size`: bytes of a PMD-mapped huge page (read-only in sysfs).
    public static let hpagePMDSize: UInt64 = 2 << 20

    /// The sysfs names this type understands.
    public static let knobNames = ["enabled", "defrag", "use_zero_page", "shrink_underused"]
        + anonymousOrders.map { "hugepages-\(4 << $0)kB/enabled" }

    /// The order of a `hugepages-<size>kB` folder name, or nil.
    public static func order(ofSizeFolder name: Substring) -> UInt8? {
        guard name.hasPrefix("hugepages-"), name.hasSuffix("kB"),
              let kB = Int(name.dropFirst("hugepages-".count).dropLast(2)), kB >= 4, kB.nonzeroBitCount == 1 else { return nil }
        let order = UInt8((kB / 4).trailingZeroBitCount)
        return anonymousOrders.contains(order) ? order : nil
    }

    /// How `hugepages-<size>kB/enabled` of `order` resolves: its own setting, or the top-level one
    /// (Linux: `thp_vma_allowable_orders()` with `huge_anon_orders_always`/`_madvise`/`_inherit`).
    public func mode(order: UInt8) -> Enabled {
        switch sizeEnabled(order: order) {
        case .always: .always
        case .madvise: .madvise
        case .never: .never
        case .inherit: enabled
        }
    }

    /// Sets the knob `name` from its sysfs spelling (`[always]` brackets are accepted as `cat` shows
    /// them). Returns a message naming the problem when the name or value is not one Linux accepts.
    public mutating func set(_ name: String, to rawValue: String) -> String? {
        var value = rawValue
        if value.hasPrefix("[") && value.hasSuffix("]") { value = String(value.dropFirst().dropLast()) }
        switch name {
        case "enabled":
            guard let v = Enabled(rawValue: value) else {
                return "enabled must be one of \(Enabled.allCases.map(\.rawValue).joined(separator: ", ")), not '\(rawValue)'"
            }
            enabled = v
        case "defrag":
            guard let v = Defrag(rawValue: value) else {
                return "defrag must be one of \(Defrag.allCases.map(\.rawValue).joined(separator: ", ")), not '\(rawValue)'"
            }
            defrag = v
        case "use_zero_page":
            guard value == "0" || value == "1" else { return "use_zero_page must be 0 or 1, not '\(rawValue)'" }
            useZeroPage = value == "1"
        case "shrink_underused":
            guard value == "0" || value == "1" else { return "shrink_underused must be 0 or 1, not '\(rawValue)'" }
            shrinkUnderused = value == "1"
        case _ where name.hasSuffix("/enabled") && Self.order(ofSizeFolder: name.dropLast("/enabled".count)) != nil:
            let order = Self.order(ofSizeFolder: name.dropLast("/enabled".count))!
            guard let v = SizeEnabled(rawValue: value) else {
                return "\(name) must be one of \(SizeEnabled.allCases.map(\.rawValue).joined(separator: ", ")), not '\(rawValue)'"
            }
            setSizeEnabled(order: order, v)
        default:
            return "unknown transparent_hugepage knob '\(name)' (known: \(Self.knobNames.joined(separator: ", ")))"
        }
        return nil
    }

    /// The value as `cat /sys/kernel/mm/transparent_hugepage/NAME` prints it, or nil for an unknown name.
    public func sysfsText(_ name: String) -> String? {
        switch name {
        case "enabled": Enabled.allCases.map { $0 == enabled ? "[\($0.rawValue)]" : $0.rawValue }.joined(separator: " ")
        case "defrag": Defrag.allCases.map { $0 == defrag ? "[\($0.rawValue)]" : $0.rawValue }.joined(separator: " ")
        case "use_zero_page": useZeroPage ? "1" : "0"
        case "shrink_underused": shrinkUnderused ? "1" : "0"
        case "hpage_pmd_size": String(Self.hpagePMDSize)
        case _ where name.hasSuffix("/enabled") && Self.order(ofSizeFolder: name.dropLast("/enabled".count)) != nil:
            SizeEnabled.allCases.map {
                $0 == sizeEnabled(order: Self.order(ofSizeFolder: name.dropLast("/enabled".count))!) ? "[\($0.rawValue)]" : $0.rawValue
            }.joined(separator: " ")
        default: nil
        }
    }

    // MARK: One atomic word, so the fault path reads the settings with one load

    var packed: UInt32 {
        UInt32(Enabled.allCases.firstIndex(of: enabled)!) | UInt32(Defrag.allCases.firstIndex(of: defrag)!) << 4
            | (useZeroPage ? 1 << 8 : 0) | (shrinkUnderused ? 1 << 9 : 0)
            | UInt32(perSizeBits) << 12
    }

    init(packed: UInt32) {
        enabled = Enabled.allCases[Int(packed & 0xF)]
        defrag = Defrag.allCases[Int(packed >> 4 & 0xF)]
        useZeroPage = packed & (1 << 8) != 0
        shrinkUnderused = packed & (1 << 9) != 0
        perSizeBits = UInt16(truncatingIfNeeded: packed >> 12)
    }
}

extension KernelDesign {
    /// Whether the design has the `transparent_hugepage/` knob `name` (the `hugepages-<size>kB/` ones
    /// only with multi-size THP, Linux 6.8+). The one place the design's `knobs` are read.
    public func hasHugepageKnob(_ name: String) -> Bool {
        guard let group = HugepageKnobs.group(of: name) else { return false }
        return knobs.contains(group)
    }
}

extension Kernel {
    /// Whether this kernel's design has the `transparent_hugepage/` knob `name`.
    public func acceptsHugepageKnob(_ name: String) -> Bool { design.hasHugepageKnob(name) }
}
