#if canImport(Glibc)
import Glibc

/// The THP tunables in sysfs: set for a run and restored afterwards, and khugepaged's progress.
final class NativeTunables {
    static let root = "/sys/kernel/mm/transparent_hugepage"

    /// Original values, in the order first changed; restored in reverse.
    private var saved: [(name: String, value: String)] = []

    /// The value in force: the bracketed choice of `always [madvise] never`, or the file's content.
    static func read(_ name: String) -> String? {
        guard let text = NativeSyscalls.readFile("\(root)/\(name)") else { return nil }
        if let open = text.firstIndex(of: "["), let close = text[open...].firstIndex(of: "]") {
            return String(text[text.index(after: open) ..< close])
        }
        return text.split(whereSeparator: \.isWhitespace).first.map(String.init) ?? ""
    }

    /// Called with a tunable's name and value before it is first changed (the host lock's journal).
    var willChange: ((String, String) -> Void)?

    /// Writes `knob`, first saving the value it replaces. Linux: the `transparent_hugepage` sysfs store handlers.
    func set(_ knob: Knob) throws(ScenarioError) {
        guard let old = Self.read(knob.name) else {
            throw .unsupported("this kernel has no tunable \(Self.root)/\(knob.name)")
        }
        if !saved.contains(where: { $0.name == knob.name }) {
            willChange?(knob.name, old)
            saved.append((knob.name, old))
        }
        let error = NativeSyscalls.writeFile("\(Self.root)/\(knob.name)", knob.value)
        if error != 0 {
            throw .run("could not set \(knob.name)=\(knob.value): \(ScenarioErrno(code: error))")
        }
    }

    /// Puts every changed tunable back; returns the ones restored and the ones that could not be, as `name=value`.
    func restore() -> (restored: [String], failed: [String]) {
        var restored: [String] = [], failed: [String] = []
        for (name, value) in saved.reversed() {
            if NativeSyscalls.writeFile("\(Self.root)/\(name)", value) == 0 {
                restored.append("\(name)=\(value)")
            } else {
                failed.append("\(name)=\(value)")
            }
        }
        saved.removeAll()
        return (restored, failed)
    }

    /// Waits, bounded, until khugepaged's `full_scans` has grown by `count`, calling `poll` every 20 ms.
    /// Linux: `khugepaged_full_scans`.
    func waitForKhugepaged(fullScans count: Int, polling poll: () -> Void) throws(ScenarioError) {
        guard let first = Self.read("khugepaged/full_scans").flatMap({ Int($0) }) else {
            throw .unsupported("no khugepaged/full_scans in sysfs")
        }
        let sleep = Double(Self.read("khugepaged/scan_sleep_millisecs").flatMap { Int($0) } ?? 10_000) / 1000
        let budget = max(30, 3 * Double(count) * (sleep + 1))
        let deadline = NativeChannel.monotonicSeconds() + budget
        var now = first
        while now < first + count {
            guard NativeChannel.monotonicSeconds() < deadline else {
                throw .unsupported("khugepaged finished \(now - first) of \(count) full scans within \(Int(budget)) s")
            }
            usleep(20_000)
            poll()
            now = Self.read("khugepaged/full_scans").flatMap { Int($0) } ?? now
        }
    }
}
#endif
