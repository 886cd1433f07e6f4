#if canImport(Glibc)
/// Parsers for the `/proc` files expectations read: smaps, vmstat, meminfo.
///
/// Values are kept as Linux prints them: `… kB` fields in kB, other fields as plain numbers.
enum NativeProcFiles {
    /// The numeric fields of the smaps entry whose VMA starts at `start`, or nil if none does.
    /// Like the selftests' `check_huge_anon()`, which looks for the line beginning `start-`. Linux: `show_smap()`.
    static func smapsEntry(_ text: String, start: UInt64) -> [String: Int64]? {
        var fields: [String: Int64]?
        for line in text.split(separator: "\n") {
            if let vmaStart = headerStart(line) {
                if fields != nil { break }
                if vmaStart == start { fields = [:] }
                continue
            }
            guard fields != nil, let (name, value) = field(line) else { continue }
            fields![name] = value
        }
        return fields
    }

    /// `/proc/vmstat`: `name value` per line. Linux: `vmstat_show()`.
    static func vmstat(_ text: String) -> [String: Int64] {
        var counters: [String: Int64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Int64(parts[1]) { counters[String(parts[0])] = value }
        }
        return counters
    }

    /// `/proc/meminfo`: `Name:   value kB` per line. Linux: `meminfo_proc_show()`.
    static func meminfo(_ text: String) -> [String: Int64] {
        var fields: [String: Int64] = [:]
        for line in text.split(separator: "\n") {
            if let (name, value) = field(line) { fields[name] = value }
        }
        return fields
    }

    /// `Name:   123 kB` or `Name:   1` → (Name, 123); nil for other lines (`VmFlags: rd wr`).
    static func field(_ line: Substring) -> (String, Int64)? {
        guard let colon = line.firstIndex(of: ":") else { return nil }
        let words = line[line.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard let first = words.first, let value = Int64(first), words.count <= 2 else { return nil }
        if words.count == 2, words[1] != "kB" { return nil }
        return (String(line[..<colon]), value)
    }

    /// The start of a smaps header line (`7f…000-7f…000 rw-p …`), or nil for field lines.
    static func headerStart(_ line: Substring) -> UInt64? {
        guard let dash = line.firstIndex(of: "-"), let space = line.firstIndex(of: " "), dash < space else { return nil }
        guard UInt64(line[line.index(after: dash) ..< space], radix: 16) != nil else { return nil }
        return UInt64(line[..<dash], radix: 16)
    }
}
#endif
