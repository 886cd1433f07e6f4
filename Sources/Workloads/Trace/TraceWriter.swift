import VMCore
import Kernel

/// Writes a workload's events as a trace (docs/trace-format.md): consecutive accesses of one thread
/// and kind to one page become one run record; records are cut into blocks of about 64 KiB, each
/// compressed on its own, so memory stays bounded however long the trace.
public struct TraceWriter<Output: TraceOutput>: WorkloadSink {
    public private(set) var output: Output
    /// The first output error; later events are dropped. `finish()` throws it.
    public private(set) var error: TraceError?
    /// Records written so far.
    public private(set) var records = 0
    /// Whether to compress blocks (method 1) or store them (method 0).
    public var compress = true

    private var raw: [UInt8] = []
    private var blockRecords = 0
    private var thread = 0
    private var lastPage: UInt64 = 0
    private var pendingCount = 0
    private var pendingThread = 0
    private var pendingPage: UInt64 = 0
    private var pendingKind = AccessKind.load

    public init(output: Output) throws(TraceError) {
        self.output = output
        try self.output.write(TraceFormat.header)
        raw.reserveCapacity(TraceFormat.targetBlockBytes + 64)
    }

    @inline(__always)
    public mutating func access(thread t: Int, address: UInt64, kind: AccessKind, count: Int) {
        let page = address >> 12
        if pendingCount > 0 && t == pendingThread && page == pendingPage && kind == pendingKind {
            pendingCount += count
            return
        }
        flushRun()
        precondition(t >= 0 && t < TraceFormat.maxThreads && page < TraceFormat.pageLimit && count >= 1)
        pendingThread = t; pendingPage = page; pendingKind = kind; pendingCount = count
    }

    public mutating func event(thread t: Int, _ event: WorkloadEvent) {
        flushRun()
        precondition(t >= 0 && t < TraceFormat.maxThreads)
        switchThread(t)
        typealias Tag = TraceFormat.Tag
        func tag(_ t: Tag) { raw.append(t.rawValue) }
        switch event {
        case .mmap(let a, let l, let p, let shared):
            tag(.mmap); raw.appendVarint(a); raw.appendVarint(l); raw.append(p.rawValue); raw.append(shared ? 1 : 0)
        case .munmap(let a, let l):
            tag(.munmap); raw.appendVarint(a); raw.appendVarint(l)
        case .mprotect(let a, let l, let p):
            tag(.mprotect); raw.appendVarint(a); raw.appendVarint(l); raw.append(p.rawValue)
        case .madvise(let a, let l, let advice):
            tag(.madvise); raw.appendVarint(a); raw.appendVarint(l); raw.append(advice.traceCode)
        case .mremap(let a, let o, let n, let to):
            tag(.mremap); raw.appendVarint(a); raw.appendVarint(o); raw.appendVarint(n); raw.appendVarint(to)
        case .brk(let a):
            tag(.brk); raw.appendVarint(a)
        case .getMempolicy(let a):
            tag(.getMempolicy); raw.appendVarint(a)
        case .spawn(let c):
            precondition(c >= 0 && c < TraceFormat.maxThreads)
            tag(.spawn); raw.appendVarint(UInt64(c))
        case .fork(let c):
            precondition(c >= 0 && c < TraceFormat.maxThreads)
            tag(.fork); raw.appendVarint(UInt64(c))
        case .exit: tag(.exit)
        case .idle(let ms): tag(.idle); raw.appendVarint(ms)
        case .beginMeasurement: tag(.beginMeasurement)
        }
        endRecord()
    }

    /// Writes what is pending and the end marker; returns the output.
    public mutating func finish() throws(TraceError) -> Output {
        flushRun()
        flushBlock()
        if let error { throw error }
        var end: [UInt8] = [TraceFormat.endTag]
        end.appendVarint(UInt64(records))
        try output.write(end)
        return output
    }

    @inline(__always) private mutating func switchThread(_ t: Int) {
        if t != thread {
            raw.append(TraceFormat.Tag.thread.rawValue); raw.appendVarint(UInt64(t))
            thread = t
            blockRecords += 1; records += 1
        }
    }

    private mutating func flushRun() {
        guard pendingCount > 0 else { return }
        switchThread(pendingThread)
        raw.append(pendingKind.rawValue + 1)
        raw.appendVarint(zigzag(Int64(bitPattern: pendingPage &- lastPage)))
        raw.appendVarint(UInt64(pendingCount - 1))
        lastPage = pendingPage
        pendingCount = 0
        endRecord()
    }

    @inline(__always) private mutating func endRecord() {
        blockRecords += 1; records += 1
        if raw.count >= TraceFormat.targetBlockBytes { flushBlock() }
    }

    private mutating func flushBlock() {
        guard !raw.isEmpty else { return }
        defer { raw.removeAll(keepingCapacity: true); blockRecords = 0; thread = 0; lastPage = 0 }
        guard error == nil else { return }
        let stored = compress ? BlockCompression.compress(raw) : raw
        let method: UInt8 = compress ? 1 : 0
        var header: [UInt8] = [TraceFormat.blockTag]
        header.appendVarint(UInt64(raw.count))
        header.appendVarint(UInt64(stored.count))
        header.appendVarint(UInt64(blockRecords))
        header.append(method)
        header.appendLE(raw.withUnsafeBufferPointer { TraceFormat.checksum($0) })
        do throws(TraceError) {
            try output.write(header)
            try output.write(stored)
        } catch { self.error = error }
    }
}
