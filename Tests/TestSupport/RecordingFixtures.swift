import Foundation

/// A small C program with known memory behaviour (Fixtures/recordee.c) and thpsim's QEMU capture
/// plugin, both built here with the system's C compiler, for the recording tests.
public enum RecordingFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    public static let directory: URL = {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("thpsim-recording-\(getpid())")
        try? FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }()
    public static let qemu = onPath("qemu-x86_64")
    public static let valgrind = onPath("valgrind")
    static let compiler = onPath("cc")

    /// The plugin, built from `Sources/QEMUCapture/capture.c`.
    public static let plugin: String? = compile(
        root.appendingPathComponent("../../Sources/QEMUCapture/capture.c").standardized.path,
        to: "libcapture.so", flags: ["-shared", "-fPIC", "-O2", "-fvisibility=hidden"])
    /// The program: maps A (8 MiB, MADV_HUGEPAGE, every page written), B (1 MiB, written, then
    /// read-only), C (256 KiB, written by a second thread); forks a child that writes 16 pages of A;
    /// unmaps the first 2 MiB of A; writes "A B C" in hex to the file named by its argument.
    public static let recordee: String? = compile(root.appendingPathComponent("Fixtures/recordee.c").path,
                                                  to: "recordee", flags: ["-O1", "-pthread"])

    public static func onPath(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    private static func compile(_ source: String, to name: String, flags: [String]) -> String? {
        guard let compiler else { return nil }
        let out = directory.appendingPathComponent(name).path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: compiler)
        p.arguments = flags + ["-o", out, source]
        guard (try? p.run()) != nil else { return nil }
        p.waitUntilExit()
        return p.terminationStatus == 0 ? out : nil
    }

    /// A fresh file name in the fixtures' folder.
    public static func file(_ name: String) -> String {
        directory.appendingPathComponent("\(UUID().uuidString.prefix(8))-\(name)").path
    }

    /// The addresses recordee wrote: regions A (8 MiB), B (1 MiB), C (256 KiB).
    public static func addresses(_ file: String) -> (a: UInt64, b: UInt64, c: UInt64)? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        let words = text.split(whereSeparator: \.isWhitespace).compactMap { UInt64($0, radix: 16) }
        return words.count == 3 ? (words[0], words[1], words[2]) : nil
    }
}
