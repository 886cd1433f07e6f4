import VMCore
import PhysicalMemory
import Kernel

/// `max_ptes_none` and memory a runtime returns (Go 1.21.1, golang/go#64332): the Go scavenger
/// returns freed heap with scattered MADV_DONTNEED, and under `enabled=always` khugepaged, which may
/// collapse a 2 MiB range with up to `max_ptes_none` empty entries (Linux: `hpage_collapse_scan_pmd()`
/// → SCAN_EXCEED_NONE_PTE), refills the holes with a new THP (docs/history.md).
public enum ReturnedMemoryLandmark {
    /// RSS over simulated time after the runtime returned half its heap.
    public struct Outcome: Sendable, Hashable {
        /// (seconds since the scavenger ran, `AnonPages` bytes), one point per khugepaged wake-up.
        public var rssOverTime: [(seconds: Double, bytes: UInt64)]
        public var collapsed: Int
        public var rssAfterScavenge: UInt64 { rssOverTime.first?.bytes ?? 0 }
        public var rssAtEnd: UInt64 { rssOverTime.last?.bytes ?? 0 }

        public static func == (a: Outcome, b: Outcome) -> Bool {
            a.collapsed == b.collapsed && a.rssOverTime.elementsEqual(b.rssOverTime) { $0.seconds == $1.seconds && $0.bytes == $1.bytes }
        }
        public func hash(into hasher: inout Hasher) { hasher.combine(collapsed); hasher.combine(rssAtEnd) }
    }

    /// A heap of `heap` bytes written whole under `enabled=always` (THPs), then every other 64 KiB of
    /// it returned with MADV_DONTNEED; then khugepaged runs `fullScans` full scans of it.
    public static func run(maxPtesNone: Int, heap: UInt64, fullScans: Int = 3) throws(HistoryError) -> Outcome {
        let kernel = try HistoryRun.kernel(.linux6_18, memory: (2 * heap + (64 << 20)).roundedUp(to: 64 << 20),
                                           tunables: [("enabled", "always"), ("khugepaged/max_ptes_none", "\(maxPtesNone)")])
        let mm = try HistoryRun.process(kernel)
        let start = try HistoryRun.mmap(mm, heap)
        var offset: UInt64 = 0
        while offset < heap {
            if case .failure(let fault) = mm.access(start + offset, .write) { throw HistoryError("heap write failed: \(fault.outcome)") }
            offset += PageGeometry.pageSize
        }
        let chunk: UInt64 = 64 << 10
        offset = chunk
        while offset < heap {
            do throws(Errno) { try mm.madvise(start + offset, length: chunk, advice: .dontNeed) } catch {
                throw HistoryError("MADV_DONTNEED failed: \(error)")
            }
            offset += 2 * chunk
        }
        let t0 = kernel.clock.now
        var points = [(seconds: 0.0, bytes: HistoryRun.meminfo(kernel, "AnonPages"))]
        let collapsedBefore = kernel.vmstatValues()["thp_collapse_alloc"] ?? 0
        let target = kernel.khugepaged.fullScans + fullScans
        var wakeups = 0
        while kernel.khugepaged.fullScans < target {
            guard kernel.runNextKernelThreadWakeup() else { throw HistoryError("khugepaged has nothing to scan") }
            wakeups += 1
            if wakeups > 100_000 { throw HistoryError("khugepaged did not finish \(fullScans) full scans") }
            points.append((Double(kernel.clock.now - t0) / 1e9, HistoryRun.meminfo(kernel, "AnonPages")))
        }
        return Outcome(rssOverTime: points, collapsed: (kernel.vmstatValues()["thp_collapse_alloc"] ?? 0) - collapsedBefore)
    }

    static let landmark = HistoryLandmark(name: "returned-memory", title: "max_ptes_none and memory a runtime returns (Go 1.21.1)") { () throws(HistoryError) in
        let heap: UInt64 = 256 << 20
        let refill = try run(maxPtesNone: 511, heap: heap)
        let kept = try run(maxPtesNone: 0, heap: heap)
        func describe(_ o: Outcome) -> String {
            "RSS \(ByteCount.human(o.rssAfterScavenge)) after the scavenger, \(ByteCount.human(o.rssAtEnd)) after \(Format.fixed(o.rssOverTime.last?.seconds ?? 0, 0)) s of khugepaged (\(o.collapsed) collapses)"
        }
        let unit = "MiB RSS at the end"
        let figures = [
            HistoryFigure("max_ptes_none=511 (the default)", reported: "khugepaged refills the returned holes: RSS grows back toward the whole heap",
                          modelled: describe(refill), unit: unit, modelledValue: HistoryRun.mib(refill.rssAtEnd)),
            HistoryFigure("max_ptes_none=0", reported: "the returned memory stays returned", modelled: describe(kept),
                          unit: unit, modelledValue: HistoryRun.mib(kept.rssAtEnd)),
        ]
        let agrees = refill.rssAtEnd > refill.rssAfterScavenge + heap / 4 && kept.rssAtEnd == kept.rssAfterScavenge
        var result = HistoryResult(
            name: "returned-memory", title: "max_ptes_none and memory a runtime returns (Go 1.21.1)",
            source: "golang/go#64332 (github.com/golang/go/issues/64332), \"runtime: excessive memory use between 1.21.0 -> 1.21.1 due to hugepages and the linux/amd64 max_ptes_none default\"; the scavenger returns memory in 64 KiB chunks (golang/go#55328)",
            setup: "linux-6.18, enabled=always, metadata mode; a \(ByteCount.human(heap)) heap written whole, every other 64 KiB returned with MADV_DONTNEED, then 3 full khugepaged scans (pages_to_scan 4096, scan_sleep_millisecs 10000)",
            figures: figures,
            direction: "with max_ptes_none=511 RSS climbs back after the runtime returned memory; with 0 it stays down",
            agrees: agrees,
            notes: ["The reports give no single figure to compare; the model's is RSS (AnonPages) over simulated time. In 6.18 a THP partly returned with MADV_DONTNEED keeps its memory until the deferred-split shrinker runs (no memory pressure here), so what Go saw as RSS is the mapped pages the model counts."])
        result.series = [HistorySeries(name: "max_ptes_none=511", points: refill.rssOverTime.map { ($0.seconds, HistoryRun.mib($0.bytes)) }),
                         HistorySeries(name: "max_ptes_none=0", points: kept.rssOverTime.map { ($0.seconds, HistoryRun.mib($0.bytes)) })]
        result.seriesAxes = ("seconds since the scavenger ran", "MiB RSS (AnonPages)")
        return result
    }
}
