#if canImport(Glibc)
/// A process's VMAs as `/proc/PID/maps` lists them, to decide whether a touch would fault.
///
/// Swift cannot catch `SIGSEGV` and resume (no `sigsetjmp`), so a native touch first checks the
/// range against the maps and stops before the first page it may not access — where the CPU's
/// access would raise the fault. Linux: `show_map_vma()`.
struct NativeMaps {
    struct Area {
        var start: UInt64
        var end: UInt64
        var readable: Bool
        var writable: Bool
    }

    var areas: [Area]

    /// Parses lines like `7f0000000000-7f0000400000 rw-p 00000000 00:00 0`.
    init(text: String) {
        areas = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 2)
            guard fields.count >= 2 else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16) else { continue }
            let perms = Array(fields[1])
            areas.append(Area(start: start, end: end, readable: perms.first == "r", writable: perms.count > 1 && perms[1] == "w"))
        }
    }

    /// The current process's maps.
    static func current() -> NativeMaps? {
        NativeSyscalls.readFile("/proc/self/maps").map(NativeMaps.init(text:))
    }

    /// The first address of `[start, start + length)` that `allowed` rejects or no VMA covers; nil if none.
    func firstFault(start: UInt64, length: UInt64, allowed: (Area) -> Bool = { _ in true }) -> UInt64? {
        var address = start
        let end = start &+ length
        while address < end {
            guard let area = areas.first(where: { $0.start <= address && address < $0.end }), allowed(area) else {
                return address
            }
            address = area.end
        }
        return nil
    }
}
#endif
