import Foundation
import Testing
import VMCore
import Kernel
import Machine
@testable import Workloads
import Simulation

/// Collects runs (merged as the trace merges them) and events, in order.
struct Recorder: WorkloadSink, Equatable {
    struct Run: Equatable { var thread: Int; var page: UInt64; var kind: AccessKind; var count: Int }
    enum Item: Equatable { case run(Run), event(Int, WorkloadEvent) }
    var items: [Item] = []
    mutating func access(thread: Int, address: UInt64, kind: AccessKind, count: Int) {
        if case .run(var r)? = items.last, r.thread == thread, r.page == address >> 12, r.kind == kind {
            r.count += count; items[items.count - 1] = .run(r)
        } else {
            items.append(.run(Run(thread: thread, page: address >> 12, kind: kind, count: count)))
        }
    }
    mutating func event(thread: Int, _ event: WorkloadEvent) { items.append(.event(thread, event)) }
}

func traceBytes(_ w: SyntheticWorkload, size: UInt64 = 4 << 20, accesses: Int = 20_000, threads: Int = 2,
                compress: Bool = true) throws -> [UInt8] {
    var writer = try TraceWriter(output: TraceBytes())
    writer.compress = compress
    w.generate(SyntheticParameters(size: size, accesses: accesses, threads: threads), into: &writer)
    return try writer.finish().bytes
}

func read(_ bytes: [UInt8]) throws(TraceError) -> (Recorder, Int) {
    var reader = try TraceReader(input: TraceBytes(bytes))
    var r = Recorder()
    let n = try reader.replay(into: &r)
    return (r, n)
}

@Suite("Trace format: round trips, compression, bad files")
struct TraceFormatTests {
    @Test("every synthetic workload round-trips through a trace, compressed or stored",
          arguments: SyntheticWorkload.allCases, [true, false])
    func roundTrip(workload: SyntheticWorkload, compress: Bool) throws {
        var direct = Recorder()
        workload.generate(SyntheticParameters(size: 4 << 20, accesses: 20_000, threads: 2), into: &direct)
        let (replayed, records) = try read(try traceBytes(workload, compress: compress))
        #expect(replayed == direct)
        #expect(records >= direct.items.count)
    }

    @Test("every event kind and extreme field values round-trip")
    func allEvents() throws {
        let events: [WorkloadEvent] = [
            .mmap(address: 0x7fff_ffff_f000, length: UInt64.max, protection: [.read, .write, .execute], shared: true),
            .munmap(address: 0, length: 1), .mprotect(address: 1 << 46, length: 4096, protection: .none),
            .madvise(address: 4096, length: 8192, advice: .noHugepage), .mremap(address: 1, oldLength: 2, newLength: 3, newAddress: 4),
            .brk(address: 0x5555_5600_0000), .getMempolicy(address: 0x7fff_ffff_ffff), .spawn(thread: 65535), .fork(child: 7), .exit, .idle(milliseconds: 12345),
            .beginMeasurement,
        ] + MadviseAdvice.allCases.map { .madvise(address: 0, length: 0, advice: $0) }
        var writer = try TraceWriter(output: TraceBytes())
        var direct = Recorder()
        for (i, e) in events.enumerated() {
            writer.event(thread: i * 1000, e); direct.event(thread: i * 1000, e)
            writer.access(thread: 65535, address: (TraceFormat.pageLimit - 1) << 12, kind: .fetch, count: 1 << 30)
            direct.access(thread: 65535, address: (TraceFormat.pageLimit - 1) << 12, kind: .fetch, count: 1 << 30)
            writer.access(thread: 0, address: 0, kind: .store, count: 1)
            direct.access(thread: 0, address: 0, kind: .store, count: 1)
        }
        #expect(try read(try writer.finish().bytes).0 == direct)
    }

    @Test("run-length encoding by page shrinks a sequential trace to well under a byte per access")
    func compression() throws {
        let bytes = try traceBytes(.seq, size: 16 << 20, accesses: 1_000_000, threads: 1)
        #expect(bytes.count < 1_000_000 / 20, "\(bytes.count) bytes")
    }

    @Test("a trace of many blocks round-trips (blocks decode independently)")
    func manyBlocks() throws {
        let bytes = try traceBytes(.gups, size: 64 << 20, accesses: 200_000, threads: 3)
        let blocks = bytes.indices.count
        #expect(blocks > TraceFormat.targetBlockBytes * 2)
        var direct = Recorder()
        SyntheticWorkload.gups.generate(SyntheticParameters(size: 64 << 20, accesses: 200_000, threads: 3), into: &direct)
        #expect(try read(bytes).0 == direct)
    }

    @Test("a wrong version is refused at byte 8, a foreign file at byte 0")
    func version() throws {
        var bytes = try traceBytes(.seq)
        bytes[8] = 2
        #expect(throws: TraceError(.unsupportedVersion, at: 8, expected: "version 1, found 2")) { try read(bytes) }
        bytes[0] = UInt8(ascii: "X")
        let e = #expect(throws: TraceError.self) { try read(bytes) }
        #expect(e?.kind == .corrupted && e?.offset == 0)
        #expect(e?.description.contains("byte 0") == true)
    }

    @Test("every truncation is reported as truncated or corrupted, at an offset inside the file")
    func truncation() throws {
        let bytes = try traceBytes(.heap, size: 2 << 20, accesses: 3000, threads: 1)
        var truncatedSeen = 0
        for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 400)) {
            do {
                _ = try read(Array(bytes[0..<cut]))
                Issue.record("a trace cut at \(cut) of \(bytes.count) bytes was accepted")
            } catch {
                #expect(error.offset <= cut)
                if error.kind == .truncated { truncatedSeen += 1 }
            }
        }
        #expect(truncatedSeen > 0)
        let e = #expect(throws: TraceError.self) { try read(Array(bytes.dropLast())) }
        #expect(e?.kind == .truncated)
    }

    @Test("random corruption never crashes the reader, nor the machine replaying what it accepts")
    func fuzz() throws {
        let original = try traceBytes(.forkserver, size: 2 << 20, accesses: 5000, threads: 2, compress: true)
        let stored = try traceBytes(.stacks, size: 2 << 20, accesses: 5000, threads: 2, compress: false)
        var rng = SplitMix64(seed: 99)
        var rejected = 0, accepted = 0
        for i in 0..<600 {
            var bytes = i % 2 == 0 ? original : stored
            for _ in 0..<(1 + Int(rng.below(4))) {
                let at = Int(rng.below(UInt64(bytes.count)))
                switch rng.below(3) {
                case 0: bytes[at] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
                case 1: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
                default: bytes.insert(UInt8(truncatingIfNeeded: rng.next()), at: at)
                }
            }
            do { _ = try read(bytes); accepted += 1 } catch { rejected += 1; #expect(error.offset <= bytes.count) }
        }
        #expect(rejected > 500, "the checksums catch nearly all corruption (\(accepted) accepted)")
        // Stored blocks whose checksum is fixed up after corrupting records: decoding itself must
        // refuse bad records, and the machine must survive whatever decodes.
        for _ in 0..<200 {
            var bytes = stored
            let (blockStart, headerEnd, rawLength) = firstBlock(bytes)
            let at = headerEnd + Int(rng.below(UInt64(rawLength)))
            bytes[at] = UInt8(truncatingIfNeeded: rng.next())
            let sum = bytes[headerEnd..<(headerEnd + rawLength)].withUnsafeBufferPointer { TraceFormat.checksum($0) }
            for k in 0..<4 { bytes[headerEnd - 4 + k] = UInt8(truncatingIfNeeded: sum >> (8 * UInt32(k))) }
            _ = blockStart
            var setup = SystemBuilder(); setup.memoryBytes = 64 << 20; setup.cpus = 2
            var executor = try setup.makeExecutor()
            do {
                var reader = try TraceReader(input: TraceBytes(bytes))
                _ = try reader.replay(into: &executor)
            } catch {
                #expect(error.kind == .corrupted || error.kind == .truncated)
            }
            _ = executor.finish()
        }
    }

    /// The first block of a trace: where it starts, where its payload starts, its raw length.
    func firstBlock(_ b: [UInt8]) -> (Int, Int, Int) {
        var p = TraceFormat.headerBytes + 1
        func varint() -> Int { var v = 0, s = 0; while true { let x = b[p]; p += 1; v |= Int(x & 0x7F) << s; if x < 0x80 { return v }; s += 7 } }
        let raw = varint(); _ = varint(); _ = varint()
        p += 5
        return (TraceFormat.headerBytes, p, raw)
    }

    @Test("replaying a trace gives the same TLB, walk and fault counts as running the generator",
          arguments: [SyntheticWorkload.gups, .heap, .forkserver, .stacks])
    func replayMatchesDirect(workload: SyntheticWorkload) throws {
        var setup = SystemBuilder(); setup.memoryBytes = 128 << 20; setup.cpus = 2; setup.enabled = .always
        let p = SyntheticParameters(size: 8 << 20, accesses: 20_000, threads: 2)
        var direct = try setup.makeExecutor()
        workload.generate(p, into: &direct)
        let a = direct.finish()
        var replay = try setup.makeExecutor()
        var reader = try TraceReader(input: TraceBytes(try traceBytes(workload, size: 8 << 20, accesses: 20_000, threads: 2)))
        _ = try reader.replay(into: &replay)
        let b = replay.finish()
        #expect(a.accesses == b.accesses)
        #expect(a.total.accesses == b.total.accesses && a.total.l1Hits == b.total.l1Hits)
        #expect(a.total.walks == b.total.walks && a.total.faults == b.total.faults)
        #expect(a.vmstat == b.vmstat)
        // The report's fault latencies and bloat come from the same run.
        #expect(b.faultLatency.count == UInt64(b.total.faults) && a.faultLatency == b.faultLatency)
        #expect(a.touchedBytes == b.touchedBytes && b.touchedBytes > 0 && b.touchedBytes <= b.anonBytes)
        let json = try JSONSerialization.jsonObject(with: Data(b.json.utf8)) as? [String: Any]
        let latency = json?["fault_latency_cycles"] as? [String: Any]
        #expect((latency?["count"] as? Int) == b.total.faults && (latency?["p50"] as? Int ?? 0) > 0)
        let memory = json?["memory"] as? [String: Any]
        #expect((memory?["bloat_bytes"] as? Int) == Int(b.anonBytes) - Int(b.touchedBytes))
        #expect(b.text.contains("fault latency (whole run, \(b.total.faults) faults)") && b.text.contains("bloat at end:"))
    }

    @Test("an access to unmapped memory replays as SIGSEGV of that process, and the run goes on")
    func segfault() throws {
        var writer = try TraceWriter(output: TraceBytes())
        writer.event(thread: 0, .mmap(address: 0x4000_0000, length: 1 << 20, protection: .readWrite, shared: false))
        writer.event(thread: 0, .fork(child: 1))
        writer.access(thread: 1, address: 0x4000_0000, kind: .store, count: 3)
        writer.access(thread: 1, address: 0x9000_0000, kind: .load, count: 1)     // unmapped: child dies
        writer.access(thread: 1, address: 0x4000_0000, kind: .load, count: 1)     // dropped
        writer.access(thread: 0, address: 0x4000_0000, kind: .load, count: 1)     // parent goes on
        writer.event(thread: 0, .mprotect(address: 0x4000_0000, length: 4096, protection: .read))
        writer.access(thread: 0, address: 0x4000_0000, kind: .store, count: 1)    // SEGV_ACCERR
        var setup = SystemBuilder(); setup.memoryBytes = 64 << 20
        var executor = try setup.makeExecutor()
        var reader = try TraceReader(input: TraceBytes(try writer.finish().bytes))
        _ = try reader.replay(into: &executor)
        let r = executor.finish()
        #expect(r.signals.count == 2)
        #expect(r.signals.first?.fault.outcome == .segv(.mapErr) && r.signals.first?.fault.address == VirtualAddress(0x9000_0000))
        #expect(r.signals.last?.fault.outcome == .segv(.accErr) && r.signals.last?.process == 0)
        #expect(r.droppedAccesses == 1)
        #expect(r.text.contains("killed: SIGSEGV (SEGV_MAPERR) at 0x90000000"))
    }
}
