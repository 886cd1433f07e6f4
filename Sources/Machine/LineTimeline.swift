/// When a shared line is busy, for a line that every request holds for at least `shortest` cycles
/// (the mmap lock's count line: an atomic, plus a transfer after another CPU): `Timeline`'s answers,
/// with the reservations that a gap too short for any request separates kept as one busy run.
///
/// A request never starts in such a gap, so it needs of a run only where it starts and ends and who
/// held it last (whom the next holder's transfer is from); on a busy line most gaps are that short
/// (docs/concurrency.md, "Cost of simulating"), and a request passes, and an insertion moves, runs
/// rather than reservations. What a timeline forgets is counted in reservations, as `Timeline` counts
/// it, so that both forget the same ones at the same time: the reservations are also linked in time
/// order, one node each, which an insertion links without moving any.
///
/// ```
///   runs:          [ free … | run … run ]           each run: start, end, last holder, first…last node
///                    0 ..< head   head ..< count
///   reservations:  oldest ⇄ … ⇄ mark ⇄ … ⇄ newest  `keptCapacity / 2`-th from the oldest: `mark`
/// ```
/// Like `Timeline`, it notes each CPU's latest end, so that a request of a CPU with nothing reserved
/// past its time compares only the gaps' lengths with the least after another CPU. CPUs may come in
/// groups (sockets, numbered group by group), a request after a CPU of another group lasting longer
/// (a remote transfer): a gap that only a request after a CPU of the same group could fill is passed
/// too, without weighing it.
final class LineTimeline {
    private struct Run: TimelineSpan {
        var start: Double
        var end: Double
        /// Who held the run's last reservation.
        var holder: Int32
        /// The nodes of its first and last reservations that are kept.
        var first: Int32
        var last: Int32
    }

    /// The least any request holds the line, and the least after another CPU held it.
    let shortest: Double, shortestAfterOther: Double
    /// The gaps `Timeline.passShort` may pass for those (`Timeline.passable`).
    private let lowest: Float, lowestAfterOther: Float
    /// CPUs per group (0: one group), the least a request holds the line after a CPU of another
    /// group, and the gaps it may pass then (`Timeline.passable`).
    private let groupSize: Int
    let shortestAfterOtherGroup: Double
    private let lowestAfterOtherGroup: Float

    /// The runs, from `head` to `count` (`capacity` allocated).
    private var runs: UnsafeMutablePointer<Run>
    /// Beside each run, the gap before it (rounded to a `Float`) and who held the run before, as
    /// `Timeline` keeps them; the first kept run's are not read.
    private var gapsBefore: UnsafeMutablePointer<Float>
    private var holdersBefore: UnsafeMutablePointer<Int32>
    private var count = 0, head = 0, capacity = 4

    /// The kept reservations, one node each, linked in time order: each one's end and its neighbours
    /// (-1 for none). Free nodes are linked through `nexts` from `freeNode`.
    private var ends: UnsafeMutablePointer<Double>
    private var nexts: UnsafeMutablePointer<Int32>
    private var prevs: UnsafeMutablePointer<Int32>
    private var nodeCapacity = 4, nodesMade = 0
    private var freeNode: Int32 = -1
    private var oldest: Int32 = -1
    /// How many reservations are kept, and the node of the `keptCapacity / 2`-th from the oldest
    /// (-1 while there are fewer): when it ends by the horizon, at least half a timeline can go.
    private var kept = 0
    private var mark: Int32 = -1
    /// The end of the latest reservation dropped: nothing is granted before it.
    private var floor = -Double.infinity

    /// Per CPU, by number, the latest end it reserved (−∞ past `latestEndsCount`).
    private var latestEnds: UnsafeMutablePointer<Double>
    private var latestEndsCount = 0

    /// A line whose requests hold it at least `shortest` cycles, at least `shortestAfterOther` after
    /// another CPU held it, and, with CPUs in groups of `groupSize` (numbered group by group; 0 for
    /// one group), at least `shortestAfterOtherGroup` after a CPU of another group.
    /// - Precondition: `0 <= shortest <= shortestAfterOther <= shortestAfterOtherGroup` (with 0, no
    ///   two reservations are one run), `groupSize >= 0`.
    init(shortest: Double, shortestAfterOther: Double, groupSize: Int = 0, shortestAfterOtherGroup: Double? = nil) {
        let afterOtherGroup = shortestAfterOtherGroup ?? shortestAfterOther
        precondition(shortest >= 0 && shortestAfterOther >= shortest && afterOtherGroup >= shortestAfterOther && groupSize >= 0)
        self.shortest = shortest
        self.shortestAfterOther = shortestAfterOther
        self.groupSize = groupSize
        self.shortestAfterOtherGroup = afterOtherGroup
        lowest = Float(Timeline.passable(shortest))
        lowestAfterOther = Float(Timeline.passable(shortestAfterOther))
        lowestAfterOtherGroup = Float(Timeline.passable(afterOtherGroup))
        runs = .allocate(capacity: capacity)
        gapsBefore = Self.padded(capacity: capacity)
        holdersBefore = Self.padded(capacity: capacity)
        ends = .allocate(capacity: nodeCapacity)
        nexts = .allocate(capacity: nodeCapacity)
        prevs = .allocate(capacity: nodeCapacity)
        latestEnds = .allocate(capacity: 0)
    }

    deinit {
        runs.deallocate()
        gapsBefore.deallocate()
        holdersBefore.deallocate()
        ends.deallocate()
        nexts.deallocate()
        prevs.deallocate()
        latestEnds.deallocate()
    }

    /// How many reservations are kept, and in how many runs.
    var counts: (reservations: Int, runs: Int) { (kept, count - head) }

    /// `Timeline.reserve(at:horizon:cpu:shortest:shortestAfterOther:duration:)` with this line's
    /// least durations: reserves the first gap at or after `t` (and after what was dropped) long
    /// enough for `duration(previous holder)`; returns its start and the CPU that held the line before
    /// (-1 if none).
    /// - Precondition: `duration` is at least `shortest`, at least `shortestAfterOther` when the
    ///   previous holder is another CPU, and at least `shortestAfterOtherGroup` when it is a CPU of
    ///   another group.
    func reserve(at requested: Double, horizon: Double = -.infinity, cpu: Int,
                 duration: (_ previous: Int32) -> Double) -> (start: Double, previous: Int32) {
        let me = Int32(truncatingIfNeeded: cpu)
        let t = max(requested, floor)
        // Nothing `me` reserved ends after `t`: no gap past the first follows one of its own.
        let onlyOthers = me >= 0 && (Int(me) >= latestEndsCount || latestEnds[Int(me)] <= t)
        let first = head, n = count
        let b = runs
        // The first run that ends after `t`.
        var i = firstEnding(after: t, in: b, from: first, to: n)
        var start = t
        let firstAfter = i
        if i < n && t + shortest > b[i].start {
            // `t` is inside that run (whose gaps are too short for any request), or too close
            // before it for any: the first gap that may serve is after it.
            start = b[i].end
            i &+= 1
        }
        while true {
            if i > firstAfter && i < n {
                // Past the first gap, each gap is whole: pass the short ones together.
                i = onlyOthers ? passShort(from: i, to: n, me: me)
                               : Timeline.passShort(gapsBefore, holdersBefore, from: i, to: n, me: me,
                                                    lowest: lowest, lowestAfterOther: lowestAfterOther)
                start = b[i - 1].end
            }
            let previous: Int32 = i > first ? b[i - 1].holder : -1
            let least = previous < 0 || previous == me ? shortest : shortestAfterOther
            if i == n || start + least <= b[i].start {
                let d = duration(previous)
                assert(d >= least, "a request shorter than the line's least")
                assert(!isOtherGroup(previous, me) || d >= shortestAfterOtherGroup - 1e-9 * d,
                       "a request after another group shorter than the line's least")
                if i == n || start + d <= b[i].start {
                    insert(start: start, end: start + d, holder: me, before: i, horizon: horizon)
                    return (start, previous)
                }
            }
            start = max(start, b[i].end)
            i &+= 1
        }
    }

    /// The first index from `i` (before `limit`) whose gap a request of `me` might fit, for a request
    /// none of whose own reservations lies past its time (so no gap it passes follows one of its
    /// own): at least `lowestAfterOther`, and at least `lowestAfterOtherGroup` after a CPU of another
    /// group. Sixteen gaps at a time by length alone; a gap long enough for a request after a CPU of
    /// the same group but not of another is then looked at alone, and passed if its holder is of
    /// another group. The buffers reach 16 entries past `capacity` (`padded`), so the last gaps are
    /// read sixteen at a time too, and what lies past `limit` is not taken.
    @inline(__always)
    private func passShort(from i: Int, to limit: Int, me: Int32) -> Int {
        let gaps = gapsBefore, holders = holdersBefore
        let g = UnsafeRawPointer(gaps)
        let bound = SIMD8<Float>(repeating: lowestAfterOther)
        let lowestAfterOtherGroup = lowestAfterOtherGroup
        let group = groupOf(me)
        var j = i
        while j < limit {
            let a = g.loadUnaligned(fromByteOffset: j &* 4, as: SIMD8<Float>.self) .>= bound
            let b = g.loadUnaligned(fromByteOffset: j &* 4 &+ 32, as: SIMD8<Float>.self) .>= bound
            guard any(a .| b) else {
                j &+= 16
                continue
            }
            let first = Self.firstLane(a)
            let k = j &+ (first < 8 ? first : 8 &+ Self.firstLane(b))
            if k >= limit { return limit }
            let holder = holders[k]
            if gaps[k] < lowestAfterOtherGroup && holder >= 0 && !group.contains(holder) {
                j = k &+ 1
                continue
            }
            return k
        }
        return limit
    }

    /// The CPUs of `cpu`'s group (all, with one group).
    @inline(__always) private func groupOf(_ cpu: Int32) -> Range<Int32> {
        guard groupSize > 0 else { return .min ..< .max }
        let size = Int32(truncatingIfNeeded: groupSize)
        let first = cpu / size * size
        return first ..< first &+ size
    }

    /// Whether `holder` is a CPU of another group than `me`'s.
    private func isOtherGroup(_ holder: Int32, _ me: Int32) -> Bool {
        holder >= 0 && !groupOf(me).contains(holder)
    }

    /// The first lane of `mask` that is set, or 8: its lanes narrowed to bytes (all ones or zero),
    /// read as a 64-bit word.
    @inline(__always) private static func firstLane(_ mask: SIMDMask<SIMD8<Int32>>) -> Int {
        let bytes = SIMD8<Int8>(truncatingIfNeeded: unsafeBitCast(mask, to: SIMD8<Int32>.self))
        return unsafeBitCast(bytes, to: UInt64.self).trailingZeroBitCount >> 3
    }

    /// Entries past the capacity that `gapsBefore` and `holdersBefore` keep, for `passShort`'s reads.
    private static let padding = 16

    /// A buffer for `capacity` entries and `padding` more, every one initialized (to zero).
    private static func padded<T: FixedWidthInteger>(capacity: Int) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: capacity + padding)
        p.initialize(repeating: 0, count: capacity + padding)
        return p
    }

    private static func padded(capacity: Int) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: capacity + padding)
        p.initialize(repeating: 0, count: capacity + padding)
        return p
    }

    /// Whether no request can start in the gap from `end` to `start`: one that starts at `end` or
    /// later ends after `start` (`end + d` rounds to at least `end + shortest`).
    @inline(__always) private func tooShort(from end: Double, to start: Double) -> Bool { end + shortest > start }

    /// Reserves `start ..< end` for `holder` before the run at `i` (after the one before it), then
    /// drops what it may past `Timeline.keptCapacity` reservations.
    @inline(__always)
    private func insert(start: Double, end: Double, holder: Int32, before i: Int, horizon: Double) {
        let n = count
        let hasBefore = i > head, hasAfter = i < n
        let joinsBefore = hasBefore && tooShort(from: runs[i - 1].end, to: start)
        let joinsAfter = hasAfter && tooShort(from: end, to: runs[i].start)
        // The node, linked after the last kept reservation before it.
        let node = newNode()
        ends[Int(node)] = end
        let after: Int32 = hasBefore ? runs[i - 1].last : -1
        let next: Int32 = after >= 0 ? nexts[Int(after)] : oldest
        nexts[Int(node)] = next
        prevs[Int(node)] = after
        if after >= 0 { nexts[Int(after)] = node } else { oldest = node }
        if next >= 0 { prevs[Int(next)] = node }
        switch (joinsBefore, joinsAfter) {
        case (true, true):
            // Bridges two runs: they become one.
            runs[i - 1].end = runs[i].end
            runs[i - 1].holder = runs[i].holder
            runs[i - 1].last = runs[i].last
            removeRun(at: i)
        case (true, false):
            runs[i - 1].end = end
            runs[i - 1].holder = holder
            runs[i - 1].last = node
            if hasAfter {
                gapsBefore[i] = Float(runs[i].start - end)
                holdersBefore[i] = holder
            }
        case (false, true):
            runs[i].start = start
            runs[i].first = node
            gapsBefore[i] = hasBefore ? Float(start - runs[i - 1].end) : .infinity
        case (false, false):
            if hasAfter {
                gapsBefore[i] = Float(runs[i].start - end)
                holdersBefore[i] = holder
            }
            let j = openRun(before: i)
            runs[j] = Run(start: start, end: end, holder: holder, first: node, last: node)
            gapsBefore[j] = hasBefore ? Float(start - runs[j - 1].end) : .infinity
            holdersBefore[j] = hasBefore ? runs[j - 1].holder : -1
        }
        noteEnd(end, cpu: holder)
        // The reservation `keptCapacity / 2`-th from the oldest: one before it if this one came
        // before it, the newest if there are that many now.
        kept += 1
        let half = Timeline.keptCapacity / 2
        if kept > half {
            if end < ends[Int(mark)] || (end == ends[Int(mark)] && precedes(node, mark)) { mark = prevs[Int(mark)] }
        } else if kept == half {
            mark = nodeAt(half - 1)
        }
        if kept > Timeline.keptCapacity
            && (kept > Timeline.hardCapacity || ends[Int(mark)] <= horizon) {
            dropPast(horizon: horizon)
        }
    }

    /// Whether node `a` comes before node `b` that ends when it does (reservations of no length).
    private func precedes(_ a: Int32, _ b: Int32) -> Bool {
        var n = nexts[Int(a)]
        while n >= 0 && ends[Int(n)] == ends[Int(a)] {
            if n == b { return true }
            n = nexts[Int(n)]
        }
        return false
    }

    /// The node of the `k`-th kept reservation from the oldest (from 0).
    private func nodeAt(_ k: Int) -> Int32 {
        var n = oldest
        for _ in 0..<k { n = nexts[Int(n)] }
        return n
    }

    /// A free node.
    @inline(__always) private func newNode() -> Int32 {
        if freeNode >= 0 {
            let n = freeNode
            freeNode = nexts[Int(n)]
            return n
        }
        if nodesMade == nodeCapacity {
            let newCapacity = 2 * nodeCapacity
            ends = Self.moved(ends, 0 ..< nodesMade, to: 0, capacity: newCapacity)
            nexts = Self.moved(nexts, 0 ..< nodesMade, to: 0, capacity: newCapacity)
            prevs = Self.moved(prevs, 0 ..< nodesMade, to: 0, capacity: newCapacity)
            nodeCapacity = newCapacity
        }
        nodesMade += 1
        return Int32(nodesMade - 1)
    }

    /// Opens a slot for a run before the one at `i`, moving the shorter side; returns its index.
    private func openRun(before i: Int) -> Int {
        let n = count
        if i < n && head > 0 && i - head < n - i {
            moveRuns(head ..< i, by: -1)
            head -= 1
            return i - 1
        }
        if n == capacity {
            // Twice the room, keeping the free slots in front.
            resize(to: 2 * capacity, keeping: 0 ..< n, at: 0)
        }
        moveRuns(i ..< n, by: 1)
        count = n + 1
        return i
    }

    /// Removes the run at `i`, moving the shorter side.
    private func removeRun(at i: Int) {
        if i - head < count - 1 - i {
            moveRuns(head ..< i, by: 1)
            head += 1
        } else {
            moveRuns(i + 1 ..< count, by: -1)
            count -= 1
        }
    }

    /// Moves the runs in `range`, with their gaps and holders before, by `offset` places.
    @inline(__always) private func moveRuns(_ range: Range<Int>, by offset: Int) {
        guard !range.isEmpty else { return }
        let from = range.lowerBound, to = from + offset
        (runs + to).moveInitialize(from: runs + from, count: range.count)
        (gapsBefore + to).moveInitialize(from: gapsBefore + from, count: range.count)
        (holdersBefore + to).moveInitialize(from: holdersBefore + from, count: range.count)
    }

    /// Gives the runs room for `newCapacity`, the ones in `kept` moved to start at `at`.
    private func resize(to newCapacity: Int, keeping kept: Range<Int>, at: Int) {
        runs = Self.moved(runs, kept, to: at, capacity: newCapacity)
        let gaps: UnsafeMutablePointer<Float> = Self.padded(capacity: newCapacity)
        let holders: UnsafeMutablePointer<Int32> = Self.padded(capacity: newCapacity)
        (gaps + at).update(from: gapsBefore + kept.lowerBound, count: kept.count)
        (holders + at).update(from: holdersBefore + kept.lowerBound, count: kept.count)
        gapsBefore.deallocate()
        holdersBefore.deallocate()
        gapsBefore = gaps
        holdersBefore = holders
        capacity = newCapacity
    }

    /// A new buffer of `capacity` holding `old[kept]` from index `at`; `old` is freed.
    private static func moved<T>(_ old: UnsafeMutablePointer<T>, _ kept: Range<Int>, to at: Int,
                                 capacity: Int) -> UnsafeMutablePointer<T> {
        let new = UnsafeMutablePointer<T>.allocate(capacity: capacity)
        (new + at).moveInitialize(from: old + kept.lowerBound, count: kept.count)
        old.deallocate()
        return new
    }

    /// Notes that `cpu` reserved the line until `end`.
    @inline(__always)
    private func noteEnd(_ end: Double, cpu: Int32) {
        guard cpu >= 0 else { return }
        let c = Int(cpu)
        if c < latestEndsCount {
            if end > latestEnds[c] { latestEnds[c] = end }
            return
        }
        let newCount = max(c + 1, 2 * latestEndsCount)
        let new = UnsafeMutablePointer<Double>.allocate(capacity: newCount)
        new.moveInitialize(from: latestEnds, count: latestEndsCount)
        (new + latestEndsCount).initialize(repeating: -.infinity, count: newCount - latestEndsCount)
        new[c] = end
        latestEnds.deallocate()
        latestEnds = new
        latestEndsCount = newCount
    }

    /// `Timeline`'s rule, in reservations: past `keptCapacity` kept, drops those that end by
    /// `horizon` when at least half a timeline's worth can go, or past `hardCapacity` the oldest
    /// half; then the runs all of whose reservations went.
    private func dropPast(horizon: Double) {
        guard kept > Timeline.keptCapacity else { return }
        if kept <= Timeline.hardCapacity && ends[Int(mark)] > horizon { return }
        var past = 0
        var n = oldest
        while n >= 0 && ends[Int(n)] <= horizon {
            past += 1
            n = nexts[Int(n)]
        }
        let drop = past >= Timeline.keptCapacity / 2 ? past : kept > Timeline.hardCapacity ? kept / 2 : 0
        guard drop > 0 else { return }
        n = oldest
        var lastEnd = floor
        for _ in 0..<drop {
            let next = nexts[Int(n)]
            lastEnd = ends[Int(n)]
            nexts[Int(n)] = freeNode
            freeNode = n
            n = next
        }
        oldest = n
        if n >= 0 { prevs[Int(n)] = -1 }
        kept -= drop
        floor = max(floor, lastEnd)
        mark = kept >= Timeline.keptCapacity / 2 ? nodeAt(Timeline.keptCapacity / 2 - 1) : -1
        // A run went if its last reservation did; the first one kept starts at the oldest node.
        while head < count && runs[head].end <= floor { head += 1 }
        if head < count { runs[head].first = oldest }
        // Keep a few free slots in front; move the rest down once the free slots are as many as the
        // runs kept (so that each kept run moves once per as many dropped).
        let slack = 16
        if head >= max(2 * slack, count - head) {
            moveRuns(head ..< count, by: slack - head)
            count -= head - slack
            head = slack
        }
    }
}
