/// A simple model of the data caches that a page walk's references go through: set-associative levels
/// of 64-byte lines with LRU, filled on every miss (non-inclusive, no prefetching). It answers "where
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
    struct Level {
        let lines: UnsafeMutablePointer<UInt64>
        let setMask: UInt64
        let ways: Int
        let latency: Double
        var count: Int { Int(setMask + 1) * ways }
    }
    private let levels: UnsafeMutablePointer<Level>
    private let levelCount: Int
    public let memoryLatency: Double
    private let hitCounts: UnsafeMutablePointer<Int>

    public init(levels specs: [CacheLevelSpec], memoryLatency: Double) {
        levelCount = specs.count
        levels = .allocate(capacity: specs.count)
        for (i, spec) in specs.enumerated() {
            let count = spec.bytes / 64
            (levels + i).initialize(to: Level(lines: HostMemory.allocate(UInt64.self, count: count),
                                              setMask: UInt64(count / spec.ways - 1), ways: spec.ways, latency: spec.latency))
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

    /// Looks a physical line up in one level, moving it to the front; on a miss inserts it at the front
    /// and drops the LRU line. Returns whether it hit.
    @inline(__always)
    private static func touch(_ level: Level, _ line: UInt64) -> Bool {
        let key = line &+ 1
        let set = level.lines + Int(truncatingIfNeeded: line & level.setMask) &* level.ways
        var i = 0
        while i < level.ways {
            if set[i] == key { break }
            i &+= 1
        }
        let hit = i < level.ways
        var j = hit ? i : level.ways &- 1
        while j > 0 { set[j] = set[j &- 1]; j &-= 1 }
        set[0] = key
        return hit
    }

    /// Reads the 64-byte line at physical address `address`; returns the latency of the level that
    /// held it (memory if none) and fills it into every level above.
    @discardableResult
    public func access(physicalAddress address: UInt64) -> Double {
        let line = address >> 6
        var i = 0
        while i < levelCount {
            if Self.touch(levels[i], line) {
                hitCounts[i] &+= 1
                return levels[i].latency
            }
            i &+= 1
        }
        hitCounts[levelCount] &+= 1
        return memoryLatency
    }

    /// The level that holds the line, without changing anything (nil: memory).
    public func level(holding address: UInt64) -> Int? {
        let key = (address >> 6) &+ 1
        for i in 0..<levelCount {
            let level = levels[i]
            let set = level.lines + Int(truncatingIfNeeded: (address >> 6) & level.setMask) * level.ways
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
