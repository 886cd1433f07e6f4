import VMCore

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
    struct Level {
        let lines: UnsafeMutablePointer<UInt64>
        let setMask: UInt64
        let setBits: UInt64
        let ways: Int
        let latency: Double
        var count: Int { Int(setMask + 1) * ways }
    }
    let levels: UnsafeMutablePointer<Level>
    let levelCount: Int
    public let memoryLatency: Double
    let hitCounts: UnsafeMutablePointer<Int>

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
    @inline(__always)
    static func setIndex(_ level: Level, _ line: UInt64) -> UInt64 {
        let page = (line >> 6) &+ 1
        return ((page &* 0x9E37_79B9_7F4A_7C15) >> (64 &- level.setBits) &+ line) & level.setMask
    }

    /// Bit 63 of a way's entry: the line was written since it came into this level (line numbers
    /// stay far below it).
    static let dirtyBit: UInt64 = 1 << 63

    /// Looks a line up in one level, moving it to the front (with its dirty bit, plus `dirty`); on a
    /// miss inserts it at the front with `dirty`. Returns whether it hit, and on a miss the entry
    /// pushed out of the set (0: none; with its dirty bit).
    @inline(__always)
    private static func touch(_ level: Level, _ line: UInt64, dirty: UInt64) -> (hit: Bool, victim: UInt64) {
        let key = line &+ 1
        let set = level.lines + Int(truncatingIfNeeded: setIndex(level, line)) &* level.ways
        var i = 0
        while i < level.ways {
            if set[i] & ~dirtyBit == key { break }
            i &+= 1
        }
        let hit = i < level.ways
        let victim = hit ? 0 : set[level.ways &- 1]
        let carried = hit ? set[i] & dirtyBit : 0
        let j = hit ? i : level.ways &- 1
        // Ways 0..<j move down one (a memmove, overlap-safe, faster than a loop over 16 ways).
        if j > 0 { (set + 1).update(from: set, count: j) }
        set[0] = key | carried | dirty
        return (hit, victim)
    }

    /// Reads (or, with `write`, writes) the 64-byte line at physical address `address`; returns the
    /// latency of the level that held it (memory if none). The line is filled into every level it
    /// missed; a line pushed out of one level moves to the front of the next (the outer levels act as
    /// victim caches, as AMD's L3 does for L2), so a line that stays hot in an inner level is not lost
    /// behind its back. A write marks the first level's copy dirty; the mark travels outwards with
    /// the line, and a dirty line pushed out of the last level is written back to memory
    /// (`writebacks`), which costs memory bandwidth as a read does.
    @inline(__always) @discardableResult
    public func access(physicalAddress address: UInt64, write: Bool = false) -> Double {
        // A line already most recent in its first-level set: a hit that changes no order.
        if levelCount > 0 {
            let first = levels[0]
            let line = address >> 6
            let way0 = first.lines + Int(truncatingIfNeeded: Self.setIndex(first, line)) &* first.ways
            let entry = way0.pointee
            if entry & ~Self.dirtyBit == line &+ 1 {
                if write { way0.pointee = entry | Self.dirtyBit }
                hitCounts[0] &+= 1
                return first.latency
            }
        }
        return lookUp(line: address >> 6, dirty: write ? Self.dirtyBit : 0)
    }

    /// `access(physicalAddress:write:)` past the most-recent check: every level, with fills and victims.
    @inline(never)
    func lookUp(line: UInt64, dirty: UInt64) -> Double {
        var i = 0
        while i < levelCount {
            let (hit, victim) = Self.touch(levels[i], line, dirty: i == 0 ? dirty : 0)
            if victim != 0 { demote(victim, into: i &+ 1) }
            if hit {
                hitCounts[i] &+= 1
                return levels[i].latency
            }
            i &+= 1
        }
        hitCounts[levelCount] &+= 1
        return memoryLatency
    }

    /// Marks the line at `address` written where the first level holds it (a write to the line the
    /// previous access used, which the CPU does not look up again).
    public func markDirty(physicalAddress address: UInt64) {
        guard levelCount > 0 else { return }
        let key = (address >> 6) &+ 1
        let level = levels[0]
        let set = level.lines + Int(truncatingIfNeeded: Self.setIndex(level, address >> 6)) &* level.ways
        for w in 0..<level.ways where set[w] & ~Self.dirtyBit == key { set[w] |= Self.dirtyBit; return }
    }

    /// Lines written back to memory: dirty lines pushed out of the last level.
    @exclusivity(unchecked) public private(set) var writebacks = 0

    /// Puts an entry pushed out of one level (a line with its dirty bit) at the front of the next,
    /// and so on outwards; a dirty line pushed out of the last level is written back.
    @inline(__always)
    private func demote(_ entry: UInt64, into level: Int) {
        var entry = entry, l = level
        while l < levelCount {
            let (hit, victim) = Self.touch(levels[l], (entry & ~Self.dirtyBit) &- 1, dirty: entry & Self.dirtyBit)
            if hit || victim == 0 { return }
            entry = victim
            l &+= 1
        }
        if entry & Self.dirtyBit != 0 { writebacks &+= 1 }
    }

    /// The level that holds the line, without changing anything (nil: memory).
    public func level(holding address: UInt64) -> Int? {
        let key = (address >> 6) &+ 1
        for i in 0..<levelCount {
            let level = levels[i]
            let set = level.lines + Int(truncatingIfNeeded: Self.setIndex(level, address >> 6)) * level.ways
            for w in 0..<level.ways where set[w] & ~Self.dirtyBit == key { return i }
        }
        return nil
    }

    /// Empties every level.
    public func clear() {
        for i in 0..<levelCount { levels[i].lines.update(repeating: 0, count: levels[i].count) }
        hitCounts.update(repeating: 0, count: levelCount + 1)
        writebacks = 0
    }
}
