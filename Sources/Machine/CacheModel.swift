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
    @usableFromInline struct Level {
        let lines: UnsafeMutablePointer<UInt64>
        let setMask: UInt64
        let ways: Int
        let latency: Double
    }
    @usableFromInline let levels: [Level]
    public let memoryLatency: Double
    /// Hits per level (index = level; `levels.count` = memory).
    public private(set) var hits: [Int]

    public init(levels specs: [CacheLevelSpec], memoryLatency: Double) {
        levels = specs.map { spec in
            let count = spec.bytes / 64
            let lines = UnsafeMutablePointer<UInt64>.allocate(capacity: count)
            lines.initialize(repeating: 0, count: count)
            return Level(lines: lines, setMask: UInt64(count / spec.ways - 1), ways: spec.ways, latency: spec.latency)
        }
        self.memoryLatency = memoryLatency
        hits = Array(repeating: 0, count: specs.count + 1)
    }

    deinit { for l in levels { l.lines.deallocate() } }

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
        for (i, level) in levels.enumerated() where Self.touch(level, line) {
            hits[i] &+= 1
            return level.latency
        }
        hits[levels.count] &+= 1
        return memoryLatency
    }

    /// The level that holds the line, without changing anything (nil: memory).
    public func level(holding address: UInt64) -> Int? {
        let key = (address >> 6) &+ 1
        for (i, level) in levels.enumerated() {
            let set = level.lines + Int(truncatingIfNeeded: (address >> 6) & level.setMask) * level.ways
            for w in 0..<level.ways where set[w] == key { return i }
        }
        return nil
    }

    /// Empties every level.
    public func clear() {
        for l in levels { l.lines.update(repeating: 0, count: Int(l.setMask + 1) * l.ways) }
        hits = Array(repeating: 0, count: levels.count + 1)
    }
}
