/// A simple model of the data caches that a page walk's references go through: set-associative levels
/// of 64-byte lines with LRU and hashed set indices, filled on every miss, outer levels taking the inner
/// ones' victims. It answers "where
/// did this line hit?", which is what makes walks over tables of small pages expensive: their lines do
/// not stay cached next to the data.
///
/// Each set keeps its line numbers in recency order, most recent first, so a lookup touches one short
/// run of memory:
/// ```
/// set s: [ MRU line | … | LRU line ]      (0 = empty way)
/// ```
/// Hardware: the L1D/L2/L3 the page-miss handler reads through (Intel SDM vol. 3A, 4.10: walks are
/// cached like other loads).
public final class CacheModel: @unchecked Sendable {
    @usableFromInline struct Level {
        @usableFromInline let lines: UnsafeMutablePointer<UInt64>
        @usableFromInline let setMask: UInt64
        @usableFromInline let setBits: UInt64
        @usableFromInline let ways: Int
        @usableFromInline let latency: Double
        var count: Int { Int(setMask + 1) * ways }
    }
    @usableFromInline let levels: UnsafeMutablePointer<Level>
    @usableFromInline let levelCount: Int
    public let memoryLatency: Double
    @usableFromInline let hitCounts: UnsafeMutablePointer<Int>

    public init(levels specs: [CacheLevelSpec], memoryLatency: Double) {
        levelCount = specs.count
        levels = .allocate(capacity: specs.count)
        for (i, spec) in specs.enumerated() {
            let count = spec.bytes / 64
            (levels + i).initialize(to: Level(lines: HostMemory.allocate(UInt64.self, count: count),
                                              setMask: UInt64(count / spec.ways - 1),
                                              setBits: UInt64((count / spec.ways).trailingZeroBitCount),
                                              ways: spec.ways, latency: spec.latency))
        }
        self.memoryLatency = memoryLatency
        hitCounts = .allocate(capacity: specs.count + 1)
        hitCounts.initialize(repeating: 0, count: specs.count + 1)
    }

    deinit {
        for i in 0..<levelCount { HostMemory.release(levels[i].lines, count: levels[i].count) }
        levels.deallocate()
        hitCounts.deallocate()
    }

    /// Hits per level (index = level; the last = memory).
    public var hits: [Int] { Array(UnsafeBufferPointer(start: hitCounts, count: levelCount + 1)) }

    /// The set of a line: a multiplicative hash of its 4 KiB page plus the line's place in the page.
    /// Last-level caches hash addresses over slices; here hashing every level also keeps the model's
    /// allocator, which places page tables at regular frame strides, from crowding them into a few sets
    /// (plain or XOR-folded indices did, and pushed hot page-table lines out far more often than
    /// capacity explains). Lines of one page stay in consecutive sets, as with plain indexing.
    @inlinable @inline(__always)
    static func setIndex(_ level: Level, _ line: UInt64) -> UInt64 {
        let page = (line >> 6) &+ 1
        return ((page &* 0x9E37_79B9_7F4A_7C15) >> (64 &- level.setBits) &+ line) & level.setMask
    }

    /// Looks a line up in one level, moving it to the front; on a miss inserts it at the front.
    /// Returns whether it hit, and on a miss the line pushed out of the set (0: none).
    @inline(__always)
    private static func touch(_ level: Level, _ line: UInt64) -> (hit: Bool, victim: UInt64) {
        let key = line &+ 1
        let set = level.lines + Int(truncatingIfNeeded: setIndex(level, line)) &* level.ways
        var i = 0
        while i < level.ways {
            if set[i] == key { break }
            i &+= 1
        }
        let hit = i < level.ways
        let victim = hit ? 0 : set[level.ways &- 1]
        var j = hit ? i : level.ways &- 1
        while j > 0 { set[j] = set[j &- 1]; j &-= 1 }
        set[0] = key
        return (hit, victim)
    }

    /// Reads the 64-byte line at physical address `address`; returns the latency of the level that
    /// held it (memory if none). The line is filled into every level it missed; a line pushed out of
    /// one level moves to the front of the next (the outer levels act as victim caches, as AMD's L3
    /// does for L2), so a line that stays hot in an inner level is not lost behind its back.
    @inlinable @inline(__always) @discardableResult
    public func access(physicalAddress address: UInt64) -> Double {
        // A line already most recent in its first-level set: a hit that changes no order.
        if levelCount > 0 {
            let first = levels[0]
            let line = address >> 6
            if first.lines[Int(truncatingIfNeeded: Self.setIndex(first, line)) &* first.ways] == line &+ 1 {
                hitCounts[0] &+= 1
                return first.latency
            }
        }
        return lookUp(line: address >> 6)
    }

    /// `access(physicalAddress:)` past the most-recent check: every level, with fills and victims.
    @usableFromInline @inline(never)
    func lookUp(line: UInt64) -> Double {
        var i = 0
        while i < levelCount {
            let (hit, victim) = Self.touch(levels[i], line)
            if victim != 0 { demote(victim &- 1, into: i &+ 1) }
            if hit {
                hitCounts[i] &+= 1
                return levels[i].latency
            }
            i &+= 1
        }
        hitCounts[levelCount] &+= 1
        return memoryLatency
    }

    /// Puts a line pushed out of one level at the front of the next, and so on outwards.
    @inline(__always)
    private func demote(_ line: UInt64, into level: Int) {
        var line = line, l = level
        while l < levelCount {
            let (hit, victim) = Self.touch(levels[l], line)
            if hit || victim == 0 { return }
            line = victim &- 1
            l &+= 1
        }
    }

    /// The level that holds the line, without changing anything (nil: memory).
    public func level(holding address: UInt64) -> Int? {
        let key = (address >> 6) &+ 1
        for i in 0..<levelCount {
            let level = levels[i]
            let set = level.lines + Int(truncatingIfNeeded: Self.setIndex(level, address >> 6)) * level.ways
            for w in 0..<level.ways where set[w] == key { return i }
        }
        return nil
    }

    /// Empties every level.
    public func clear() {
        for i in 0..<levelCount { levels[i].lines.update(repeating: 0, count: levels[i].count) }
        hitCounts.update(repeating: 0, count: levelCount + 1)
    }
}
