/// Parsing and printing of sizes with binary suffixes, as users write them (`4K`, `2M`, `1G`, `64G`).
public enum ByteCount {
    /// Parses a decimal count with an optional `K`, `M`, `G` or `T` suffix (powers of 1024; `KB`,
    /// `kB`, `KiB` are accepted too). Returns nil for anything else, including overflow.
    public static func parse(_ text: String) -> UInt64? {
        var digits = Substring(text)
        var multiplier: UInt64 = 1
        for suffix in ["KiB", "MiB", "GiB", "TiB", "KB", "MB", "GB", "TB", "kB", "K", "M", "G", "T", "k", "B"]
        where digits.hasSuffix(suffix) {
            digits = digits.dropLast(suffix.count)
            switch suffix.first! {
            case "K", "k": multiplier = 1 << 10
            case "M": multiplier = 1 << 20
            case "G": multiplier = 1 << 30
            case "T": multiplier = 1 << 40
            default: multiplier = 1
            }
            break
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let n = UInt64(digits) else { return nil }
        let (product, overflow) = n.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }

    /// `2048 kB`-style text as in `/proc/meminfo` and smaps.
    public static func kB(_ bytes: UInt64) -> String { "\(bytes >> 10) kB" }

    /// A short human form: `4K`, `2M`, `1.5G`.
    public static func human(_ bytes: UInt64) -> String {
        let units: [(UInt64, String)] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")]
        for (size, unit) in units where bytes >= size {
            if bytes % size == 0 { return "\(bytes / size)\(unit)" }
            let tenths = (bytes * 10 + size / 2) / size
            return "\(tenths / 10).\(tenths % 10)\(unit)"
        }
        return "\(bytes)B"
    }
}
