import VMCore

/// The tunables under `/sys/kernel/mm/transparent_hugepage/khugepaged/`, with Linux's names, defaults
/// and accepted ranges (Linux: `khugepaged_attr_group` in mm/khugepaged.c).
public struct KhugepagedSettings: Sendable, Hashable {
    /// `pages_to_scan`: PTEs (4 KiB pages) one wake-up scans; at least 1. Default 8 × 512.
    public var pagesToScan: Int = 8 * PageGeometry.entriesPerTable
    /// `scan_sleep_millisecs`: the sleep between wake-ups. Default 10 s.
    public var scanSleepMillisecs: UInt64 = 10_000
    /// `alloc_sleep_millisecs`: the sleep after a huge page could not be allocated. Default 60 s.
    public var allocSleepMillisecs: UInt64 = 60_000
    /// `max_ptes_none`: empty or zero-page PTEs a collapse may fill with new memory, 0…511. Default 511.
    public var maxPtesNone: Int = PageGeometry.entriesPerTable - 1
    /// `max_ptes_swap`: swapped-out PTEs a collapse may swap in, 0…511. Default 64.
    public var maxPtesSwap: Int = PageGeometry.entriesPerTable / 8
    /// `max_ptes_shared`: PTEs mapping pages other processes map too, 0…511. Default 256.
    public var maxPtesShared: Int = PageGeometry.entriesPerTable / 2
    /// `defrag`: whether khugepaged's allocations may compact directly (0 or 1). Default 1.
    public var defrag: Bool = true

    public init() {}

    /// The writable knob names, as paths below `transparent_hugepage/`.
    public static let knobNames = [
        "khugepaged/pages_to_scan", "khugepaged/scan_sleep_millisecs", "khugepaged/alloc_sleep_millisecs",
        "khugepaged/max_ptes_none", "khugepaged/max_ptes_swap", "khugepaged/max_ptes_shared", "khugepaged/defrag",
    ]
    /// The read-only counters beside them.
    public static let counterNames = ["khugepaged/pages_collapsed", "khugepaged/full_scans"]

    /// Sets the knob `name` (a path below `transparent_hugepage/`) from its sysfs text. Returns a
    /// message naming the problem when the name is unknown or read-only, or when Linux would refuse the
    /// value with EINVAL (Linux: `pages_to_scan_store()`, `max_ptes_none_store()`, …).
    public mutating func set(_ name: String, to text: String) -> String? {
        let maxPtes = UInt64(PageGeometry.entriesPerTable - 1)
        func number(_ range: ClosedRange<UInt64>) -> UInt64? {
            guard !text.isEmpty, text.allSatisfy(\.isASCII), text.allSatisfy(\.isNumber),
                  let v = UInt64(text), range.contains(v) else { return nil }
            return v
        }
        func problem(_ expected: String) -> String { "\(name) must be \(expected), not '\(text)'" }
        switch name {
        case "khugepaged/pages_to_scan":
            guard let v = number(1...UInt64(UInt32.max)) else { return problem("an integer from 1 to \(UInt32.max)") }
            pagesToScan = Int(v)
        case "khugepaged/scan_sleep_millisecs":
            guard let v = number(0...UInt64(UInt32.max)) else { return problem("an integer from 0 to \(UInt32.max)") }
            scanSleepMillisecs = v
        case "khugepaged/alloc_sleep_millisecs":
            guard let v = number(0...UInt64(UInt32.max)) else { return problem("an integer from 0 to \(UInt32.max)") }
            allocSleepMillisecs = v
        case "khugepaged/max_ptes_none":
            guard let v = number(0...maxPtes) else { return problem("an integer from 0 to \(maxPtes)") }
            maxPtesNone = Int(v)
        case "khugepaged/max_ptes_swap":
            guard let v = number(0...maxPtes) else { return problem("an integer from 0 to \(maxPtes)") }
            maxPtesSwap = Int(v)
        case "khugepaged/max_ptes_shared":
            guard let v = number(0...maxPtes) else { return problem("an integer from 0 to \(maxPtes)") }
            maxPtesShared = Int(v)
        case "khugepaged/defrag":
            guard let v = number(0...1) else { return problem("0 or 1") }
            defrag = v == 1
        case _ where Self.counterNames.contains(name):
            return "\(name) is read-only"
        default:
            return "unknown khugepaged knob '\(name)' (known: \(Self.knobNames.joined(separator: ", ")))"
        }
        return nil
    }

    /// The value as `cat` prints it, or nil for a name this type does not hold.
    public func sysfsText(_ name: String) -> String? {
        switch name {
        case "khugepaged/pages_to_scan": String(pagesToScan)
        case "khugepaged/scan_sleep_millisecs": String(scanSleepMillisecs)
        case "khugepaged/alloc_sleep_millisecs": String(allocSleepMillisecs)
        case "khugepaged/max_ptes_none": String(maxPtesNone)
        case "khugepaged/max_ptes_swap": String(maxPtesSwap)
        case "khugepaged/max_ptes_shared": String(maxPtesShared)
        case "khugepaged/defrag": defrag ? "1" : "0"
        default: nil
        }
    }
}
