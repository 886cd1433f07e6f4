/// The threads that have work queued, ordered by their CPUs' clocks (the lowest thread number first at
/// a tie): a binary min-heap of `(clock, thread)` as each was last seen.
///
/// A clock only moves forward, but a thread's can move while it waits (another thread of its CPU ran,
/// or another CPU's shootdown or a kernel thread charged it), so a key may be stale — never later than
/// the clock it stands for. `MachineExecutor.drainQueues` reads the true clock of the thread it pops:
/// when it matches the key, no thread's true clock is lower (each is at least its key, and every key
/// is at least the popped one), so this is the thread a scan of every clock would pick; when it does
/// not, the thread goes back in with its true clock.
struct ClockOrder {
    private var keys = ContiguousArray<Double>()
    private var threads = ContiguousArray<Int>()

    var isEmpty: Bool { keys.isEmpty }

    /// Whether entry `a` comes before entry `b`.
    @inline(__always) private func before(_ a: Int, _ b: Int) -> Bool {
        keys[a] < keys[b] || (keys[a] == keys[b] && threads[a] < threads[b])
    }

    @inline(__always) private mutating func swapAt(_ a: Int, _ b: Int) {
        keys.swapAt(a, b)
        threads.swapAt(a, b)
    }

    mutating func removeAll() {
        keys.removeAll(keepingCapacity: true)
        threads.removeAll(keepingCapacity: true)
    }

    mutating func push(clock: Double, thread: Int) {
        keys.append(clock)
        threads.append(thread)
        var i = keys.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard before(i, parent) else { break }
            swapAt(i, parent)
            i = parent
        }
    }

    /// The entry that comes first, removed.
    mutating func popFirst() -> (clock: Double, thread: Int)? {
        guard let lastKey = keys.last, let lastThread = threads.last else { return nil }
        let top = (keys[0], threads[0])
        keys.removeLast()
        threads.removeLast()
        guard !keys.isEmpty else { return top }
        keys[0] = lastKey
        threads[0] = lastThread
        var i = 0
        let n = keys.count
        while true {
            let left = 2 * i + 1, right = left + 1
            var first = i
            if left < n && before(left, first) { first = left }
            if right < n && before(right, first) { first = right }
            guard first != i else { break }
            swapAt(i, first)
            i = first
        }
        return top
    }
}
