import Histogram

/// The latencies of the page faults a CPU (or a machine, or a run) took, in cycles: an HdrHistogram
/// with three significant digits, so p50, p99 and max cost nothing to keep for millions of faults.
///
/// Linux counterpart: none in the kernel; `perf trace --pf=all` or a BPF histogram of
/// `exc_page_fault()` gives the same distribution on a real machine.
public struct FaultLatencyHistogram: Sendable, Equatable {
    public private(set) var histogram = Self.empty

    /// An empty histogram that holds latencies up to 2^20 cycles (0.4 ms at 2.5 GHz) before it grows.
    /// Sized from the start, so that a machine of many CPUs does not grow each CPU's histogram step by
    /// step (the library's growth appends counts through unspecialized code); the recorded values and
    /// every figure from them are the same whatever the starting size.
    private static let empty: Histogram<UInt64> = {
        var h = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 1 << 20, numberOfSignificantValueDigits: .three)
        h.autoResize = true
        return h
    }()

    public init() {}

    /// A histogram holding `buckets` (values and counts as `buckets` returns them).
    public init(buckets: [(value: UInt64, count: UInt64)]) {
        for b in buckets where b.count > 0 { histogram.record(b.value, count: b.count) }
    }

    public mutating func record(cycles: Double) {
        histogram.record(Self.value(cycles: cycles))
    }

    /// Records `count` latencies of `value` (as `value(cycles:)` gives it) at once. Out of line: a
    /// CPU records once per run of equal latencies, from its fault path.
    @inline(never)
    public mutating func record(value: UInt64, count: UInt64) {
        histogram.record(value, count: count)
    }

    /// The value a latency of `cycles` is recorded as: rounded to a whole cycle (halves up, as
    /// `rounded()`), at least 0. Rounded by truncation and the exact fraction rather than with
    /// `rounded()`, which is a call into the C library (`round`) on the baseline x86-64 target.
    @inline(__always)
    public static func value(cycles: Double) -> UInt64 {
        guard cycles > 0 else { return 0 }
        let whole = UInt64(cycles)
        return cycles - Double(whole) >= 0.5 ? whole &+ 1 : whole
    }

    public mutating func add(_ other: FaultLatencyHistogram) { histogram.add(other.histogram) }

    public var count: UInt64 { histogram.totalCount }
    /// The value at `percentile` (0–100), to the histogram's precision; 0 when empty.
    public func percentile(_ percentile: Double) -> UInt64 { count == 0 ? 0 : histogram.valueAtPercentile(percentile) }
    /// The largest value's bucket (its highest equivalent value); 0 when empty.
    public var max: UInt64 { count == 0 ? 0 : histogram.max }
    public var mean: Double { histogram.mean }

    /// Every non-empty bucket: its highest equivalent value and count. Recording these again gives
    /// an equal histogram, so a report can carry the distribution as a short list.
    public var buckets: [(value: UInt64, count: UInt64)] {
        histogram.recordedValues().map { ($0.value, $0.count) }
    }

    public static func == (a: FaultLatencyHistogram, b: FaultLatencyHistogram) -> Bool {
        a.buckets.elementsEqual(b.buckets) { $0.value == $1.value && $0.count == $1.count }
    }
}
