import Foundation
import Testing
import TestSupport
import VMCore
import Kernel
@testable import Workloads
import Simulation

/// Seeded fuzzing of the trace reader beyond TraceFormatTests' byte corruption: whole-file mutations
/// (insertions, deletions, truncations, duplicated ranges), and records mutated inside blocks whose
/// framing and checksum are rebuilt, so the record decoder and the decompressor see the garbage.
@Suite("Trace reader: seeded fuzzing")
struct TraceFuzzTests {
    /// A whole trace file around one block of `raw` record bytes claiming `records` records.
    static func frame(raw: [UInt8], records: Int, compress: Bool) -> [UInt8] {
        var out = TraceFormat.magic
        out.appendLE(TraceFormat.version); out.appendLE(UInt16(0)); out.appendLE(UInt32(0))
        let stored = compress ? BlockCompression.compress(raw) : raw
        out.append(TraceFormat.blockTag)
        out.appendVarint(UInt64(raw.count)); out.appendVarint(UInt64(stored.count)); out.appendVarint(UInt64(records))
        out.append(compress ? 1 : 0)
        out.appendLE(raw.withUnsafeBufferPointer { TraceFormat.checksum($0) })
        out += stored
        out.append(TraceFormat.endTag)
        out.appendVarint(UInt64(records))
        return out
    }

    /// The raw records of a small trace's blocks, and how many records each holds.
    static let blocks: [(raw: [UInt8], records: Int)] = {
        var result: [([UInt8], Int)] = []
        for w in [SyntheticWorkload.forkserver, .stacks, .heap] {
            let bytes = try! traceBytes(w, size: 2 << 20, accesses: 2000, threads: 2, compress: false)
            var p = TraceFormat.headerBytes
            func varint() -> Int { var v = 0, s = 0; while true { let x = bytes[p]; p += 1; v |= Int(x & 0x7F) << s; if x < 0x80 { return v }; s += 7 } }
            while bytes[p] == TraceFormat.blockTag {
                p += 1
                let raw = varint(); _ = varint(); let records = varint()
                p += 5
                result.append((Array(bytes[p..<(p + raw)]), records))
                p += raw
            }
        }
        return result
    }()

    @Test("whole-file mutations of compressed and stored traces are refused with an offset inside the file, or read")
    func fileMutations() throws {
        let files = [try traceBytes(.forkserver, size: 2 << 20, accesses: 3000, threads: 2, compress: true),
                     try traceBytes(.chase, size: 2 << 20, accesses: 3000, threads: 1, compress: false)]
        var mutator = InputMutator(seed: InputMutator.seed)
        let iterations = InputMutator.iterations(default: 3000)
        var rejected = 0
        for i in 0..<iterations {
            let bytes = mutator.mutate(files[i % 2], maximum: 4)
            do { _ = try read(bytes) } catch {
                rejected += 1
                #expect(error.offset >= 0 && error.offset <= bytes.count, "iteration \(i): \(error)")
                #expect(error.kind != .io, "iteration \(i): \(error)")
            }
        }
        #expect(rejected > iterations * 9 / 10, "checksums and framing catch nearly every change (\(rejected) of \(iterations))")
    }

    @Test("mutated records in correctly framed blocks never crash the decoder; what decodes replays on a machine")
    func recordMutations() throws {
        try #require(!Self.blocks.isEmpty)
        var mutator = InputMutator(seed: InputMutator.seed &+ 7)
        let iterations = InputMutator.iterations(default: 3000)
        var accepted = 0
        for i in 0..<iterations {
            let block = Self.blocks[i % Self.blocks.count]
            var raw = block.raw
            for _ in 0...mutator.below(3) {
                let kinds: [InputMutator.Mutation] = [.flipBit, .setByte, .insertBinary, .deleteRange, .truncate]
                mutator.apply(kinds[mutator.below(kinds.count)], to: &raw)
            }
            let bytes = Self.frame(raw: raw, records: block.records, compress: i % 2 == 0)
            let replay = i % 25 == 0
            var setup = SystemBuilder(); setup.memoryBytes = 64 << 20; setup.cpus = 2
            do {
                if replay {
                    var executor = try setup.makeExecutor()
                    var reader = try TraceReader(input: TraceBytes(bytes))
                    defer { _ = executor.finish() }
                    _ = try reader.replay(into: &executor)
                } else {
                    _ = try read(bytes)
                }
                accepted += 1
            } catch let error as TraceError {
                #expect(error.kind == .corrupted || error.kind == .truncated, "iteration \(i): \(error)")
                #expect(error.offset >= TraceFormat.headerBytes && error.offset <= bytes.count, "iteration \(i): \(error)")
            }
        }
        #expect(accepted < iterations, "some mutated blocks are refused")
    }

    @Test("the framing helper builds a trace the reader accepts, compressed or stored", arguments: [false, true])
    func framing(compress: Bool) throws {
        let block = try #require(Self.blocks.first)
        let (_, n) = try read(Self.frame(raw: block.raw, records: block.records, compress: compress))
        #expect(n == block.records)
    }
}
