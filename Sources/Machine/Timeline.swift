/// When a lock or a shared line is busy: the intervals reserved on it, in time order, each with the
/// CPU that reserved it. CPUs reach it in simulated-time order only up to a scheduling quantum, so a
/// request may fall before reservations already made: it takes the first gap long enough from its
/// time. Past `capacity` intervals, those that end at or before the horizon (the lowest clock of the
/// CPUs that still have work: no request can be made for an earlier time) are dropped, when at least
/// half a timeline's worth can go; past `hardCapacity` the oldest half goes whatever the horizon, so
/// that memory stays bounded. Either way the timeline remembers where what it dropped ended (`floor`)
/// and serves a request for an earlier time from there: it may then wait longer than it would have,
/// but a lock is never granted to two CPUs at once.
///
/// ```
///   storage: [ free … free | oldest … newest ]
///              0 ..< head    head ..< storage.count
/// ```
/// Dropping the oldest moves `head`; an insertion nearer the front than the back moves the front
/// part down into a free slot, one nearer the back moves the back part up, so neither moves much of
/// a timeline whose requests are mostly late. A class over buffers of its own: a request on a busy
/// line makes one insertion, and arrays would check each time that they are not shared.
final class Timeline {
    private struct Interval: TimelineSpan { var start: Double; var end: Double; var holder: Int32 }
    /// The intervals, `count` of them (`capacity` allocated), the kept ones from `head`.
    private var intervals: UnsafeMutablePointer<Interval>
    /// Beside each interval, what a request needs to pass the gap before it quickly: its length
    /// (`start` − the end of the interval before, rounded to a `Float`; infinite if none) and who
    /// held the interval before (-1 if none). Both are as of when the two became neighbours; the kept
    /// intervals' order never changes, so they stay true for all but the oldest kept. Kept apart from
    /// `intervals` so that `passShort` reads eight at a time.
    private var gapsBefore: UnsafeMutablePointer<Float>
    private var holdersBefore: UnsafeMutablePointer<Int32>
    private var count = 0
    private var capacity: Int
    /// Where the kept intervals start.
    private var head = 0
    /// The end of the latest interval dropped: nothing is granted before it.
    private var floor = -Double.infinity
    /// Where the back-to-back run at the end starts: from here on each interval starts where the one
    /// before ends, so a request that reaches the run can only go after it. A busy lock's or line's
    /// reservations queue up so; a request need not walk them one by one.
    private var runStart = 0
    /// Kept intervals past which those that end by the horizon are dropped.
    static let keptCapacity = 256
    static let hardCapacity = 16 * keptCapacity

    /// An empty timeline.
    init() {
        capacity = 2
        intervals = .allocate(capacity: capacity)
        gapsBefore = .allocate(capacity: capacity)
        holdersBefore = .allocate(capacity: capacity)
    }

    deinit {
        intervals.deallocate()
        gapsBefore.deallocate()
        holdersBefore.deallocate()
    }

    /// Reserves the first gap at or after `t` (and after what was dropped) long enough for
    /// `duration(previous holder)`; returns its start and the CPU that held it before (-1 if none).
    /// `horizon` is a time no later request will be made for: intervals that end by then may go.
    /// `duration` is given the previous holder and how many reservations the request waits behind;
    /// it is never less than `shortest`, nor less than `shortestAfterOther` when the previous holder
    /// is another CPU (a transfer of the line comes first), so a gap shorter than that is passed
    /// without asking it (on a busy line nearly every gap is: docs/concurrency.md, "Cost of
    /// simulating").
    func reserve(at requested: Double, horizon: Double = -.infinity, cpu: Int, shortest: Double = 0,
                 shortestAfterOther: Double? = nil,
                 duration: (_ previous: Int32, _ ahead: Int) -> Double) -> (start: Double, previous: Int32) {
        let afterOther = shortestAfterOther ?? shortest
        let me = Int32(truncatingIfNeeded: cpu)
        // The gaps `passShort` may pass: under the least duration by a margin that covers the
        // rounding of a gap to a `Float` and of `end + least` in `Double` (`passable`).
        let lowest = Float(Self.passable(shortest)), lowestAfterOther = Float(Self.passable(afterOther))
        let t = max(requested, floor)
        let first = head, n = count
        let b = intervals
        // The first interval that ends after `t`.
        var i = firstEnding(after: t, in: b, from: first, to: n)
        var start = t
        let firstAfter = i
        while true {
            if i > firstAfter && i < runStart {
                // Past the first gap, each gap is whole (`start` is the end of the interval before):
                // pass the short ones together.
                i = Self.passShort(gapsBefore, holdersBefore, from: i, to: runStart, me: me,
                                   lowest: lowest, lowestAfterOther: lowestAfterOther)
                start = b[i - 1].end
            }
            // A gap shorter than the least duration after its holder is too short for any (`start +
            // d` is at least `start + least`, rounding being monotonic): the request is not weighed there.
            let previous: Int32 = i > first ? b[i - 1].holder : -1
            let least = previous < 0 || previous == me ? shortest : afterOther
            if i == n || start + least <= b[i].start {
                let d = duration(previous, i - firstAfter)
                if i == n || start + d <= b[i].start {
                    insert(Interval(start: start, end: start + d, holder: me), at: i, horizon: horizon)
                    return (start, previous)
                }
            }
            if i >= runStart {
                // No gap from here to the end.
                start = max(start, b[n - 1].end)
                i = n
            } else {
                start = max(start, b[i].end)
                i += 1
            }
        }
    }

    /// The first index from `i` (before `limit`) whose gap (in `gaps`, with who held the interval
    /// before it in `holders`) a request of `me` might fit: at least `lowest` long, and at least
    /// `lowestAfterOther` unless `me` held the interval before. Eight gaps at a time; the last few
    /// one by one.
    @inline(__always)
    static func passShort(_ gaps: UnsafeMutablePointer<Float>, _ holders: UnsafeMutablePointer<Int32>,
                          from i: Int, to limit: Int, me: Int32, lowest: Float, lowestAfterOther: Float) -> Int {
        let g = UnsafeRawPointer(gaps), h = UnsafeRawPointer(holders)
        let lo = SIMD8<Float>(repeating: lowest), hi = SIMD8<Float>(repeating: lowestAfterOther)
        let mine = SIMD8<Int32>(repeating: me)
        var j = i
        while j &+ 8 <= limit {
            let gap = g.loadUnaligned(fromByteOffset: j &* 4, as: SIMD8<Float>.self)
            let holder = h.loadUnaligned(fromByteOffset: j &* 4, as: SIMD8<Int32>.self)
            let fits = (gap .>= hi) .| ((gap .>= lo) .& (holder .== mine))
            if any(fits) {
                for lane in 0..<8 where fits[lane] { return j &+ lane }
            }
            j &+= 8
        }
        while j < limit {
            let gap = gaps[j]
            if gap >= lowest && (gap >= lowestAfterOther || holders[j] == me) { break }
            j &+= 1
        }
        return j
    }

    /// A length a gap may be passed below, for a request of at least `least`: gaps shorter than it
    /// by 2 cycles and a millionth. A gap `g = s − e` (within half an ulp of `s`, at most 0.5 for
    /// times below 2⁵², 52 days at 1 GHz) that is, as a `Float`, under `least − 2 − least·10⁻⁶` is
    /// under `least − 1.5` exactly, so `e + least` rounds above `s`: the walk would not weigh it.
    static func passable(_ least: Double) -> Double { least - 2 - least * 1e-6 }

    /// When every reservation ends by `horizon` (no later request can fall before or into any of
    /// them), drops all but the last into `floor` and gives back the storage: the last stays for the
    /// CPU that held the lock last, whom the next holder's transfer is from. Answers are those the
    /// whole timeline would give for requests at or after `horizon`. Returns whether it did so (or
    /// the timeline was empty).
    func compact(horizon: Double) -> Bool {
        let n = count
        guard n > head else { return true }
        guard intervals[n - 1].end <= horizon else { return false }
        if n - head > 1 { floor = max(floor, intervals[n - 2].end) }
        if n > 1 || capacity > 2 {
            let last = intervals[n - 1]
            resize(to: 2, keeping: 0 ..< 0)
            intervals[0] = last
            gapsBefore[0] = .infinity
            holdersBefore[0] = -1
            count = 1
            head = 0
            runStart = 0
        }
        return true
    }

    /// Host bytes this timeline's storage holds.
    var storageBytes: Int { capacity * (MemoryLayout<Interval>.stride + 4 + 4) }

    /// Gives the buffers room for `newCapacity` intervals, keeping those in `kept` (moved to the front).
    private func resize(to newCapacity: Int, keeping kept: Range<Int>) {
        func moved<T>(_ old: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<T> {
            let new = UnsafeMutablePointer<T>.allocate(capacity: newCapacity)
            new.moveInitialize(from: old + kept.lowerBound, count: kept.count)
            old.deallocate()
            return new
        }
        intervals = moved(intervals)
        gapsBefore = moved(gapsBefore)
        holdersBefore = moved(holdersBefore)
        capacity = newCapacity
    }

    /// Inserts `interval` before the one at `i`, then drops what it may past `keptCapacity`.
    @inline(__always)
    private func insert(_ interval: Interval, at i: Int, horizon: Double) {
        let n = count
        let gap: Float = i > head ? Float(interval.start - intervals[i - 1].end) : .infinity
        let holderBefore: Int32 = i > head ? intervals[i - 1].holder : -1
        // An insertion nearer the front than the back moves the front part down into a free slot;
        // any other moves the back part up.
        let movesFront = i < n && head > 0 && i - head < n - i
        if i == n {
            // Joins the run at the end if it starts where the last one ends; else starts a run.
            if n == head || intervals[n - 1].end != interval.start { runStart = n }
        } else if movesFront {
            // What lay before `i` moves one place down: the run too, if it started before `i` (a
            // zero-length interval put inside it).
            if runStart < i { runStart -= 1 }
        } else if runStart >= i {
            runStart += 1
        }
        if !movesFront && n == capacity {
            // Full: twice the room, keeping the free slots in front.
            resize(to: 2 * capacity, keeping: 0 ..< n)
        }
        let s = intervals, g = gapsBefore, h = holdersBefore
        if i < n {
            // The interval after it now follows it.
            g[i] = Float(s[i].start - interval.end)
            h[i] = interval.holder
        }
        // Plain values: each part moves by a memmove, unless it is empty (an insertion at the end,
        // the usual one: three calls of `memmove` for nothing were a third of its cost).
        if movesFront {
            let from = head
            if i > from {
                (s + from - 1).moveInitialize(from: s + from, count: i - from)
                (g + from - 1).moveInitialize(from: g + from, count: i - from)
                (h + from - 1).moveInitialize(from: h + from, count: i - from)
            }
            s[i - 1] = interval; g[i - 1] = gap; h[i - 1] = holderBefore
            head -= 1
        } else {
            if i < n {
                (s + i + 1).moveInitialize(from: s + i, count: n - i)
                (g + i + 1).moveInitialize(from: g + i, count: n - i)
                (h + i + 1).moveInitialize(from: h + i, count: n - i)
            }
            s[i] = interval; g[i] = gap; h[i] = holderBefore
            count = n + 1
        }
        // Inline, the test that nothing can go, as it is after nearly every insertion.
        let kept = count - head
        if kept > Self.keptCapacity
            && (kept > Self.hardCapacity || intervals[head + Self.keptCapacity / 2 - 1].end <= horizon) {
            dropPast(horizon: horizon)
        }
    }

    /// Past `keptCapacity` kept intervals, drops those that end by `horizon` when at least half a
    /// timeline's worth can go, or past `hardCapacity` the oldest half.
    private func dropPast(horizon: Double) {
        let kept = count - head
        guard kept > Self.keptCapacity else { return }
        // Fewer than half a timeline's worth end by the horizon when the one that would make it half
        // does not (ends are in order: intervals do not overlap).
        if kept <= Self.hardCapacity && intervals[head + Self.keptCapacity / 2 - 1].end > horizon { return }
        // The intervals that end by the horizon.
        var lo = head, hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            if intervals[mid].end > horizon { hi = mid } else { lo = mid + 1 }
        }
        let past = lo - head
        let drop = past >= Self.keptCapacity / 2 ? past : kept > Self.hardCapacity ? kept / 2 : 0
        guard drop > 0 else { return }
        floor = max(floor, intervals[head + drop - 1].end)
        head += drop
        runStart = max(runStart, head)
        // Keep half a timeline of free slots in front; move the rest down once the free slots are
        // as many as those kept (so that each kept interval moves once per as many dropped).
        if head >= max(Self.keptCapacity, count - head) {
            let removed = head - Self.keptCapacity / 2
            let keptRange = removed ..< count
            intervals.moveInitialize(from: intervals + keptRange.lowerBound, count: keptRange.count)
            gapsBefore.moveInitialize(from: gapsBefore + keptRange.lowerBound, count: keptRange.count)
            holdersBefore.moveInitialize(from: holdersBefore + keptRange.lowerBound, count: keptRange.count)
            count -= removed
            head = Self.keptCapacity / 2
            runStart -= removed
        }
    }
}

/// A reservation kept in time order by a timeline (`Timeline`'s intervals, `LineTimeline`'s runs): what
/// `firstEnding(after:in:from:to:)` reads.
protocol TimelineSpan {
    var end: Double { get }
}

/// The index of the first of `spans[first ..< n]` that ends after `t`, or `n` when none does. Spans do
/// not overlap, so their ends are in order: a binary search whose answer is in `lo ..< lo + left`, each
/// step keeping the half that holds it — `lo += half` when that span ends by `t` — as arithmetic (a
/// mask), not a branch to mispredict.
@inline(__always)
func firstEnding<S: TimelineSpan>(after t: Double, in spans: UnsafeMutablePointer<S>, from first: Int, to n: Int) -> Int {
    guard n > first && spans[n - 1].end > t else { return n }
    var lo = first, left = n - first
    while left > 1 {
        let half = left >> 1
        let endsBy = Int(unsafeBitCast(spans[lo &+ half &- 1].end <= t, to: UInt8.self))
        lo &+= half & (0 &- endsBy)
        left &-= half
    }
    return lo
}
