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

    public var enabled: Enabled
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
        default: nil
        }
    }

    // MARK: One atomic word, so the fault path reads the settings with one load

    var packed: UInt32 {
        UInt32(Enabled.allCases.firstIndex(of: enabled)!) | UInt32(Defrag.allCases.firstIndex(of: defrag)!) << 4
            | (useZeroPage ? 1 << 8 : 0) | (shrinkUnderused ? 1 << 9 : 0)
    }

    init(packed: UInt32) {
        enabled = Enabled.allCases[Int(packed & 0xF)]
        defrag = Defrag.allCases[Int(packed >> 4 & 0xF)]
        useZeroPage = packed & (1 << 8) != 0
        shrinkUnderused = packed & (1 << 9) != 0
    }
}
