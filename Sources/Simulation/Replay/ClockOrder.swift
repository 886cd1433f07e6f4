/// The threads that have work queued, ordered by their CPUs' clocks (the lowest thread number first at
/// a tie): a binary min-heap of `(clock, thread)` as each was last seen.
///
/// A clock only moves forward, but a thread's can move while it waits (another thread of its CPU ran,
/// or another CPU's shootdown or a kernel thread charged it), so a key may be stale — never later than
/// the clock it stands for. `MachineExecutor.drainQueues` reads the true clock of the first thread:
/// when it matches the key, no thread's true clock is lower (each is at least its key, and every key
/// is at least the first one), so this is the thread a scan of every clock would pick; when it does
/// not, the thread moves to its place by its true clock (`replaceFirst`).
///
/// The entries are a buffer of its own rather than an `Array`: a turn moves the first entry, and an
/// `Array` checks that its storage is unique before each write.
final class ClockOrder {
    private struct Entry { var clock: Double; var thread: Int }
    @exclusivity(unchecked) private var entries = UnsafeMutablePointer<Entry>.allocate(capacity: 0)
    @exclusivity(unchecked) private var count = 0
    @exclusivity(unchecked) private var capacity = 0

    deinit { entries.deallocate() }

    /// Whether `a` comes before `b`.
    @inline(__always) private static func before(_ a: Entry, _ b: Entry) -> Bool {
        a.clock < b.clock || (a.clock == b.clock && a.thread < b.thread)
    }

    func removeAll() { count = 0 }

    func push(clock: Double, thread: Int) {
        if count == capacity {
            let grown = UnsafeMutablePointer<Entry>.allocate(capacity: max(16, 2 * capacity))
            grown.moveInitialize(from: entries, count: count)
            entries.deallocate()
            entries = grown
            capacity = max(16, 2 * capacity)
        }
        let new = Entry(clock: clock, thread: thread)
        let e = entries
        // Parents that come after it move down into the hole until its place is found.
        var i = count
        count &+= 1
        while i > 0 {
            let parent = (i &- 1) >> 1
            guard Self.before(new, e[parent]) else { break }
            e[i] = e[parent]
            i = parent
        }
        e[i] = new
    }

    /// The entry that comes first.
    @inline(__always)
    var first: (clock: Double, thread: Int)? { count > 0 ? (entries[0].clock, entries[0].thread) : nil }

    /// The thread of the entry that comes second (the first one's earlier child), if any.
    @inline(__always)
    var second: Int? {
        switch count {
        case 0, 1: nil
        case 2: entries[1].thread
        default: Self.before(entries[2], entries[1]) ? entries[2].thread : entries[1].thread
        }
    }

    /// Gives the first entry's thread the key `clock` and moves it to its place.
    func replaceFirst(clock: Double) {
        precondition(count > 0)
        var top = entries[0]
        top.clock = clock
        siftDown(top)
    }

    /// Removes the first entry.
    func removeFirst() {
        precondition(count > 0)
        count &-= 1
        guard count > 0 else { return }
        siftDown(entries[count])
    }

    /// Puts `entry` in the first place and moves it down to its place: children that come before it
    /// move up into the hole.
    private func siftDown(_ entry: Entry) {
        let e = entries, n = count
        var i = 0
        while true {
            let left = 2 &* i &+ 1
            guard left < n else { break }
            let right = left &+ 1
            let child = right < n && Self.before(e[right], e[left]) ? right : left
            guard Self.before(e[child], entry) else { break }
            e[i] = e[child]
            i = child
        }
        e[i] = entry
    }
}
