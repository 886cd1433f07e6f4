import Foundation

/// Number formats shared by the text table, CSV and HTML report.
enum Format {
    /// Bytes with a binary suffix: `4G`, `1.5G`, `512M`, `12K`, `0`; negative values keep their sign.
    static func bytes(_ n: UInt64) -> String { signedBytes(Int64(clamping: n)) }

    static func signedBytes(_ n: Int64) -> String {
        let sign = n < 0 ? "-" : ""
        let m = n.magnitude
        for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] as [(String, UInt64)] where m >= 1 << shift {
            let v = Double(m) / Double(UInt64(1) << shift)
            return sign + (v == v.rounded() || v >= 100 ? String(format: "%.0f", v) : String(format: "%.1f", v)) + suffix
        }
        return sign + "\(m)"
    }

    /// Counts with a decimal suffix: `20M`, `1.05M`, `950K`, `12`.
    static func count(_ n: Int) -> String {
        for (suffix, scale) in [("G", 1e9), ("M", 1e6), ("K", 1e3)] where Double(n) >= scale {
            let v = Double(n) / scale
            if v == v.rounded() { return String(format: "%.0f", v) + suffix }
            return (v >= 100 ? String(format: "%.0f", v) : v >= 10 ? String(format: "%.1f", v) : String(format: "%.2f", v)) + suffix
        }
        return "\(n)"
    }

    /// A duration in milliseconds as `--settle` takes it: `30s`, `2m`, `1500ms`.
    static func milliseconds(_ ms: UInt64) -> String {
        if ms % 60_000 == 0 { return "\(ms / 60_000)m" }
        if ms % 1_000 == 0 { return "\(ms / 1_000)s" }
        return "\(ms)ms"
    }

    static func fixed(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }

    /// Cycles as microseconds at `ghz`.
    static func micros(_ cycles: UInt64, _ ghz: Double) -> String {
        let us = Double(cycles) / ghz / 1000
        return us >= 100 ? String(format: "%.0f", us) : us >= 10 ? String(format: "%.1f", us) : String(format: "%.2f", us)
    }

    /// `text` in lines of at most `width` characters, broken at spaces; later lines start with `indent`.
    static func wrap(_ text: String, width: Int, indent: String) -> [String] {
        var lines: [String] = [], line = ""
        for word in text.split(separator: " ", omittingEmptySubsequences: false) {
            if !line.isEmpty && line.count + 1 + word.count > width {
                lines.append(line)
                line = indent + word
            } else {
                line += (line.isEmpty ? "" : " ") + word
            }
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }

    static func pad(_ s: String, _ width: Int, left: Bool = false) -> String {
        let n = s.count
        if n >= width { return s }
        let fill = String(repeating: " ", count: width - n)
        return left ? s + fill : fill + s
    }
}
