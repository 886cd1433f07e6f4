import VMCore
import Kernel

/// Converts Valgrind lackey's text stream (`--tool=lackey --trace-mem=yes --trace-syscalls=yes`) into
/// workload events as it arrives, chunk by chunk, so the text never has to be stored.
///
/// - `I  addr,size` / ` L addr,size` / ` S addr,size` / ` M addr,size` become a fetch, load, store,
///   or load and store (an access straddling two pages touches both).
/// - `SYSCALL[pid,tid](n) sys_mmap|munmap|mprotect|madvise|mremap|brk ( … ) --> … Success(0x…)` become
///   the matching events with the addresses the program got; file mappings are recorded as private
///   anonymous memory (the model has no page cache), and `brk` as mappings of the heap's growth.
/// - Mappings made before the first traced system call (the executable, the loader, the stack: exec
///   and Valgrind's own loader set them up) are not in the stream; the first access to a page that no
///   traced call mapped or unmapped maps that page (4 KiB, read-write-execute) just before it.
/// - Lackey's records carry no thread id, so every access is attributed to thread 0.
/// - Other lines (Valgrind's `==pid==` messages, failed or other calls) are counted and skipped.
/// - A line that is none of these (not lackey output: garbage, binary, longer than `maximumLineBytes`)
///   is counted as unrecognized and the first is kept; `problem()` refuses a log with no record, or
///   with more unrecognized lines than lackey ones.
public struct LackeyConverter<Sink: WorkloadSink> {
    /// The longest line taken as lackey output; longer ones are unrecognized (and not buffered whole).
    public static var maximumLineBytes: Int { 4096 }

    /// An unrecognized line: its 1-based number, the byte offset where it starts, and its start, printable.
    public struct BadLine: Sendable, Hashable {
        public var line: Int
        public var offset: Int
        public var excerpt: String
    }

    public var sink: Sink
    public private(set) var lines = 0
    public private(set) var accesses = 0
    public private(set) var systemCalls = 0
    /// Pages mapped because they were used before any traced call mapped them.
    public private(set) var implicitPages = 0
    public private(set) var skippedLines = 0
    /// Bytes of text converted.
    public private(set) var bytes = 0
    /// Lines that are lackey's own: access records and `SYSCALL[` lines.
    public private(set) var recordLines = 0
    /// Lines that are neither lackey records nor Valgrind messages (`==pid==`, `--pid--`, `**pid**`).
    public private(set) var unrecognizedLines = 0
    /// The first unrecognized line.
    public private(set) var firstBadLine: BadLine?

    /// File offset where the line being assembled starts.
    private var lineStart = 0
    /// Whether the line being assembled outgrew `maximumLineBytes` (its tail was dropped).
    private var partialTooLong = false

    private var partial: [UInt8] = []
    private var lastPage: UInt64 = .max
    /// Ranges a traced call mapped or unmapped: the program said what is there.
    private var described: [(start: UInt64, end: UInt64)] = []
    private var knownPages = Set<UInt64>()
    private var brk: UInt64?
    /// Asynchronous calls waiting for their result line, by `SYSCALL[pid,tid](num)`.
    private var pendingAsync: [String: String] = [:]

    public init(sink: Sink) { self.sink = sink }

    /// Converts `chunk`; a line cut at the end waits for the next chunk.
    public mutating func feed(_ chunk: UnsafeRawBufferPointer) {
        let base = bytes
        bytes += chunk.count
        let b = chunk.bindMemory(to: UInt8.self)
        var start = 0
        var i = 0
        let n = b.count
        while i < n {
            if b[i] == 0x0A {
                if partial.isEmpty && !partialTooLong {
                    line(UnsafeBufferPointer(rebasing: b[start..<i]))
                } else {
                    appendPartial(UnsafeBufferPointer(rebasing: b[start..<i]))
                    let whole = partial
                    partial.removeAll(keepingCapacity: true)
                    whole.withUnsafeBufferPointer { line($0) }
                    partialTooLong = false
                }
                start = i + 1
                lineStart = base + start
            }
            i += 1
        }
        if start < n { appendPartial(UnsafeBufferPointer(rebasing: b[start..<n])) }
    }

    /// Keeps at most one byte more than `maximumLineBytes` of a line cut at a chunk's end.
    private mutating func appendPartial(_ more: UnsafeBufferPointer<UInt8>) {
        let room = Self.maximumLineBytes + 1 - partial.count
        if more.count > room { partialTooLong = true }
        if room > 0 { partial.append(contentsOf: more.prefix(room)) }
    }

    /// Converts a last line without a newline; returns the sink.
    public mutating func finish() -> Sink {
        if !partial.isEmpty {
            let whole = partial
            partial.removeAll()
            whole.withUnsafeBufferPointer { line($0) }
            partialTooLong = false
        }
        return sink
    }

    /// Why this log should not become a trace, or nil: it has no lackey record, or more unrecognized
    /// lines than lackey ones (another file, a binary, a log cut to pieces).
    public func problem() -> LackeyError? {
        if recordLines == 0 {
            if let bad = firstBadLine {
                return LackeyError(line: bad.line, offset: bad.offset,
                                   message: "no line of \(lines) is a lackey record (not a lackey log?); the first unrecognized line is '\(bad.excerpt)'")
            }
            return LackeyError(line: max(lines, 1), offset: bytes, message: "no lackey records in \(lines) line\(lines == 1 ? "" : "s") (an empty log, or Valgrind messages only)")
        }
        if unrecognizedLines > recordLines, let bad = firstBadLine {
            return LackeyError(line: bad.line, offset: bad.offset,
                               message: "\(unrecognizedLines) of \(lines) lines are not lackey output (only \(recordLines) are records); the first is '\(bad.excerpt)'")
        }
        return nil
    }

    private mutating func unrecognized(_ l: UnsafeBufferPointer<UInt8>) {
        skippedLines += 1
        unrecognizedLines += 1
        if firstBadLine == nil {
            let excerpt = l.prefix(32).map { c -> String in
                c >= 0x20 && c < 0x7F ? String(UnicodeScalar(c)) : "\\x" + String(c, radix: 16, uppercase: true).leftPadded(to: 2)
            }.joined()
            firstBadLine = BadLine(line: lines, offset: lineStart, excerpt: excerpt + (l.count > 32 || partialTooLong ? "…" : ""))
        }
    }

    /// `==123==`, `--123--`, `**123**`: Valgrind's own messages.
    private func isValgrindMessage(_ l: UnsafeBufferPointer<UInt8>) -> Bool {
        guard l.count >= 4, let mark = l.first, mark == 0x3D || mark == 0x2D || mark == 0x2A, l[1] == mark else { return false }
        var p = 2
        while p < l.count, l[p] >= 0x30 && l[p] <= 0x39 { p += 1 }
        return p > 2 && p + 1 < l.count && l[p] == mark && l[p + 1] == mark
    }

    private mutating func line(_ l: UnsafeBufferPointer<UInt8>) {
        lines += 1
        if l.count > Self.maximumLineBytes || partialTooLong { unrecognized(l); return }
        if l.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) || isValgrindMessage(l) { skippedLines += 1; return }
        guard l.count >= 4 else { unrecognized(l); return }
        let kind: AccessKind?, isModify: Bool
        switch (l[0], l[1], l[2]) {
        case (0x49, 0x20, 0x20): kind = .fetch; isModify = false        // "I  "
        case (0x20, 0x4C, 0x20): kind = .load; isModify = false         // " L "
        case (0x20, 0x53, 0x20): kind = .store; isModify = false        // " S "
        case (0x20, 0x4D, 0x20): kind = .load; isModify = true          // " M "
        default: kind = nil; isModify = false
        }
        if let kind {
            var p = 3, address: UInt64 = 0, size: UInt64 = 0
            while p < l.count, let d = hexDigit(l[p]) { address = address &<< 4 | d; p += 1 }
            guard p < l.count, l[p] == 0x2C, p > 3, p <= 3 + 16 else { unrecognized(l); return }
            p += 1
            let sizeStart = p
            while p < l.count, l[p] >= 0x30 && l[p] <= 0x39 { size = size &* 10 &+ UInt64(l[p] - 0x30); p += 1 }
            guard p > sizeStart, p - sizeStart <= 19, l[p...].allSatisfy({ $0 == 0x20 || $0 == 0x0D }) else { unrecognized(l); return }
            recordLines += 1
            guard address < PageGeometry.userAddressLimit else { skippedLines += 1; return }
            let last = address &+ max(size, 1) &- 1
            touch(address, kind)
            if isModify { touch(address, .store) }
            if last >> 12 != address >> 12 && last < PageGeometry.userAddressLimit {
                touch(last & ~0xFFF, kind)
                if isModify { touch(last & ~0xFFF, .store) }
            }
            return
        }
        if l.starts(with: "SYSCALL[".utf8) {
            recordLines += 1
            systemCall(String(decoding: l, as: UTF8.self))
        } else {
            unrecognized(l)
        }
    }

    @inline(__always) private func hexDigit(_ c: UInt8) -> UInt64? {
        switch c {
        case 0x30...0x39: UInt64(c - 0x30)
        case 0x61...0x66: UInt64(c - 0x61 + 10)
        case 0x41...0x46: UInt64(c - 0x41 + 10)
        default: nil
        }
    }

    @inline(__always) private mutating func touch(_ address: UInt64, _ kind: AccessKind) {
        let page = address >> 12
        if page != lastPage {
            if !knownPages.contains(page) {
                if !described.contains(where: { page << 12 >= $0.start && page << 12 < $0.end }) {
                    sink.event(thread: 0, .mmap(address: page << 12, length: 4096, protection: [.read, .write, .execute], shared: false))
                    implicitPages += 1
                }
                knownPages.insert(page)
            }
            lastPage = page
        }
        accesses += 1
        sink.access(thread: 0, address: address, kind: kind, count: 1)
    }

    private mutating func describe(_ start: UInt64, _ length: UInt64) {
        let end = (start &+ length &+ 0xFFF) & ~0xFFF
        guard end > start else { return }
        described.append((start & ~0xFFF, end))
    }

    /// `SYSCALL[pid,tid](num) sys_name ( args ) … --> … Success(0xresult)`. A call Valgrind runs
    /// asynchronously (madvise, for one) prints `sys_name ( args ) --> [async] ...` and later
    /// `SYSCALL[pid,tid](num) ... [async] --> Success(0xresult)`: the two are joined.
    private mutating func systemCall(_ text: String) {
        if let key = text.range(of: ")")?.upperBound {
            let caller = String(text[..<key])
            if text[key...].hasPrefix(" ... [async] --> "), let arrow = text.range(of: " --> "),
               let call = pendingAsync.removeValue(forKey: caller) {
                systemCall(call + text[arrow.lowerBound...])
                return
            }
            if text.hasSuffix("--> [async] ... ") || text.hasSuffix("--> [async] ..."), let arrow = text.range(of: " --> [async]") {
                pendingAsync[caller] = String(text[..<arrow.lowerBound])
                return
            }
        }
        guard let success = text.range(of: "Success(0x", options: .backwards) else { skippedLines += 1; return }
        let resultText = text[success.upperBound...].prefix { $0.isHexDigit }
        guard let result = UInt64(resultText, radix: 16),
              let nameStart = text.range(of: ") sys_"), let open = text.range(of: " ( ", range: nameStart.upperBound..<text.endIndex),
              let close = text.range(of: " )", range: open.upperBound..<text.endIndex) else { skippedLines += 1; return }
        let name = text[nameStart.upperBound..<open.lowerBound]
        let args: [UInt64] = text[open.upperBound..<close.lowerBound].split(separator: ",").map {
            let t = $0.trimmingPrefix(" ").prefix { $0.isHexDigit || $0 == "x" }
            return t.hasPrefix("0x") ? UInt64(t.dropFirst(2), radix: 16) ?? 0 : UInt64(t) ?? 0
        }
        func arg(_ i: Int) -> UInt64 { i < args.count ? args[i] : 0 }
        lastPage = .max
        let event: WorkloadEvent?
        switch name {
        case "mmap":
            let flags = arg(3)
            event = .mmap(address: result, length: arg(1), protection: VMCore.Protection(rawValue: UInt8(arg(2) & 7)),
                          shared: flags & 0x20 != 0 && flags & 1 != 0)
            describe(result, arg(1))
        case "munmap":
            event = .munmap(address: arg(0), length: arg(1)); describe(arg(0), arg(1))
        case "mprotect":
            event = .mprotect(address: arg(0), length: arg(1), protection: VMCore.Protection(rawValue: UInt8(arg(2) & 7)))
        case "madvise":
            let advice: MadviseAdvice? = switch arg(2) {
            case 4: .dontNeed
            case 14: .hugepage
            case 15: .noHugepage
            case 10: .dontFork
            case 11: .doFork
            default: nil
            }
            event = advice.map { .madvise(address: arg(0), length: arg(1), advice: $0) }
        case "mremap":
            event = .mremap(address: arg(0), oldLength: arg(1), newLength: arg(2), newAddress: result)
            describe(arg(0), arg(1)); describe(result, arg(2))
        case "brk" where result < PageGeometry.userAddressLimit:
            let top = (result + 0xFFF) & ~0xFFF
            if let old = brk {
                let oldTop = (old + 0xFFF) & ~0xFFF
                if top > oldTop {
                    event = .mmap(address: oldTop, length: top - oldTop, protection: .readWrite, shared: false)
                } else if top < oldTop {
                    event = .munmap(address: top, length: oldTop - top)
                } else { event = nil }
                describe(min(top, oldTop), max(top, oldTop) - min(top, oldTop))
            } else { event = nil }
            brk = result
        default:
            event = nil
        }
        if let event {
            systemCalls += 1
            sink.event(thread: 0, event)
        } else {
            skippedLines += 1
        }
    }
}

/// Why a lackey log was refused: the line and byte offset where it shows, and what is wrong.
public struct LackeyError: Error, Sendable, Hashable, CustomStringConvertible {
    /// 1-based line number.
    public var line: Int
    /// Byte offset of the line's start in the log.
    public var offset: Int
    public var message: String

    public init(line: Int, offset: Int, message: String) {
        self.line = line; self.offset = offset; self.message = message
    }

    /// `line N (byte B): message`; the caller puts the file name in front.
    public var description: String { "line \(line) (byte \(offset)): \(message)" }
}

extension String {
    /// Zero-padded on the left to `width` characters (as the scenario parser's, which is in Scenarios).
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
