import Foundation
import Testing
import VMCore
@testable import Workloads

/// `replayPipelined` (blocks read and decompressed on a second thread) must give the sink exactly
/// what `replay(into:)` gives it, and the same first error, on good and damaged traces alike.
@Suite("Pipelined trace replay")
struct PipelinedTraceReaderTests {
    enum Outcome: Equatable { case records(Int), error(String) }

    static func serial(_ bytes: [UInt8]) -> (Recorder, Outcome) {
        var r = Recorder()
        do throws(TraceError) {
            var reader = try TraceReader(input: TraceBytes(bytes))
            let n = try reader.replay(into: &r)
            return (r, .records(n))
        } catch { return (r, .error("\(error)")) }
    }

    static func pipelined(_ bytes: [UInt8], depth: Int) -> (Recorder, Outcome) {
        var r = Recorder()
        do throws(TraceError) {
            var reader = try TraceReader(input: TraceBytes(bytes))
            let n = try reader.replayPipelined(into: &r, depth: depth)
            return (r, .records(n))
        } catch { return (r, .error("\(error)")) }
    }

    @Test("a trace of many blocks, whole, truncated and with damaged bytes: same records, same error")
    func sameAsSerial() throws {
        let good = try traceBytes(.gups, size: 64 << 20, accesses: 200_000, threads: 3)
        var variants: [[UInt8]] = [good, Array(good.prefix(good.count / 2)), Array(good.dropLast())]
        for position in [20, good.count / 3, good.count / 2, good.count - 3] {
            var damaged = good
            damaged[position] ^= 0x5A
            variants.append(damaged)
        }
        var errors = 0
        for (i, bytes) in variants.enumerated() {
            let (expected, outcome) = Self.serial(bytes)
            if case .error = outcome { errors += 1 }
            for depth in [1, 4] {
                let (got, gotOutcome) = Self.pipelined(bytes, depth: depth)
                #expect(gotOutcome == outcome, "variant \(i), depth \(depth)")
                #expect(got.items.count == expected.items.count && got == expected,
                        "variant \(i), depth \(depth): \(got.items.count) items, expected \(expected.items.count)")
            }
        }
        #expect(errors >= variants.count - 2, "the damaged variants fail")
        let (whole, outcome) = Self.serial(good)
        if case .records(let n) = outcome { #expect(n > 100_000 && whole.items.count > 100_000) } else { Issue.record("the good trace failed") }
        // A truncated trace replays its whole blocks before the error: the sink saw records.
        #expect(Self.serial(variants[1]).0.items.count > 10_000)
    }

    @Test("a trace file replays the same through the pipelined reader")
    func file() throws {
        let bytes = try traceBytes(.heap, size: 16 << 20, accesses: 100_000, threads: 2)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pipelined-\(getpid()).trace").path
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        defer { try? FileManager.default.removeItem(atPath: path) }
        var reader = try TraceReader(input: try TraceFile(path: path, mode: .read))
        var got = Recorder()
        let n = try reader.replayPipelined(into: &got)
        let (expected, outcome) = Self.serial(bytes)
        #expect(outcome == .records(n))
        #expect(expected.items.count > 10_000 && got.items.count == expected.items.count && got == expected)
        #expect(reader.offset == bytes.count, "the reader ends where the serial one does")
    }
}
