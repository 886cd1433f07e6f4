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
    @usableFromInline struct Level {
        @usableFromInline let ways: UnsafeMutablePointer<UInt32>
        @usableFromInline let setMask: UInt64
        @usableFromInline let setBits: UInt64
        @usableFromInline let wayCount: Int
        @usableFromInline let latency: Double
        var count: Int { Int(setMask + 1) * wayCount }
    }
    @usableFromInline let levels: UnsafeMutablePointer<Level>
    @usableFromInline let levelCount: Int
    public let memoryLatency: Double
    @usableFromInline let hitCounts: UnsafeMutablePointer<Int>

    /// Levels need at least this many sets: a set then never holds two lines of one 4 KiB page, so a
    /// way records the line's page only (`Way`). L1 data caches, virtually indexed, have exactly 64.
    public static let minimumSets = 64
    /// Pages (physical frames) below this number can be cached: a way has 31 bits for the page + 1
    /// (8 TiB of physical memory).
    public static let pageLimit: UInt64 = (1 << 31) - 1

    /// - Precondition: every level has no `CacheLevelSpec.problem` (a power-of-two number of at least
    ///   `minimumSets` sets).
    public init(levels specs: [CacheLevelSpec], memoryLatency: Double) {
        precondition(specs.count <= Self.maximumLevels, "at most \(Self.maximumLevels) cache levels")
        levelCount = specs.count
        levels = .allocate(capacity: specs.count)
        for (i, spec) in specs.enumerated() {
            precondition(spec.problem == nil, "cache level \(i + 1): \(spec.problem ?? "")")
            let count = spec.bytes / 64
            (levels + i).initialize(to: Level(ways: HostMemory.allocate(UInt32.self, count: count),
                                              setMask: UInt64(count / spec.ways - 1),
                                              setBits: UInt64((count / spec.ways).trailingZeroBitCount),
                                              wayCount: spec.ways, latency: spec.latency))
        }
        self.memoryLatency = memoryLatency
        hitCounts = .allocate(capacity: specs.count + 1)
        hitCounts.initialize(repeating: 0, count: specs.count + 1)
    }

    deinit {
        for i in 0..<levelCount { HostMemory.release(levels[i].ways, count: levels[i].count) }
        levels.deallocate()
        hitCounts.deallocate()
    }

    /// Hits per level (index = level; the last = memory).
    public var hits: [Int] { Array(UnsafeBufferPointer(start: hitCounts, count: levelCount + 1)) }

    /// The hashed part of a page's set index.
    @inlinable @inline(__always)
    static func pageHash(_ level: Level, _ page: UInt64) -> UInt64 {
        ((page &+ 1) &* 0x9E37_79B9_7F4A_7C15) >> (64 &- level.setBits)
    }

    /// The set of a line: a multiplicative hash of its 4 KiB page plus the line's place in the page.
    /// Last-level caches hash addresses over slices; here hashing every level also keeps the model's
    /// allocator, which places page tables at regular frame strides, from crowding them into a few sets
    /// (plain or XOR-folded indices did, and pushed hot page-table lines out far more often than
    /// capacity explains). Lines of one page stay in consecutive sets, as with plain indexing — and,
    /// with at least 64 sets, in 64 different ones, which is what lets a way hold the page alone.
    @inlinable @inline(__always)
    static func setIndex(_ level: Level, _ line: UInt64) -> UInt64 {
        (pageHash(level, line >> 6) &+ line) & level.setMask
    }

    /// One way of a set, 32 bits, so that a 16-way set is one 64-byte host line:
    /// ```
    ///  bit 31: dirty | bits 0-30: page + 1 (0: empty)
    /// ```
    /// A set holds at most one line of a page, so the page and the set give the line back
    /// (`line(in:set:way:)`).
    @usableFromInline static let dirtyBit: UInt32 = 1 << 31

    @inlinable @inline(__always)
    static func key(_ line: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: (line >> 6) &+ 1) }

    /// The line a non-empty way of `set` in `level` holds.
    @inline(__always)
    static func line(in level: Level, set: UInt64, way: UInt32) -> UInt64 {
        let page = UInt64(way & ~dirtyBit) &- 1
        return page << 6 | ((set &- pageHash(level, page) &- (page << 6)) & 63)
    }

    /// Looks a line up in one level, moving it to the front (with its dirty bit, plus `dirty`); on a
    /// miss inserts it at the front with `dirty`. Returns whether it hit, and on a miss the line pushed
    /// out of the set with its dirty bit (`nil`: none).
    @inline(__always)
    private static func touch(_ level: Level, _ line: UInt64, dirty: UInt32) -> (hit: Bool, victim: (line: UInt64, dirty: UInt32)?) {
        let key = key(line)
        let setNumber = setIndex(level, line)
        let set = level.ways + Int(truncatingIfNeeded: setNumber) &* level.wayCount
        var i = 0
        while i < level.wayCount {
            if set[i] & ~dirtyBit == key { break }
            i &+= 1
        }
        let hit = i < level.wayCount
        let last = set[level.wayCount &- 1]
        let carried = hit ? set[i] & dirtyBit : 0
        let j = hit ? i : level.wayCount &- 1
        // Ways 0..<j move down one (a memmove, overlap-safe, faster than a loop over 16 ways).
        if j > 0 { (set + 1).update(from: set, count: j) }
        set[0] = key | carried | dirty
        if hit || last == 0 { return (hit, nil) }
        return (false, (Self.line(in: level, set: setNumber, way: last), last & dirtyBit))
    }

    /// Reads (or, with `write`, writes) the 64-byte line at physical address `address`; returns the
    /// latency of the level that held it (memory if none). The line is filled into every level it
    /// missed; a line pushed out of one level moves to the front of the next (the outer levels act as
    /// victim caches, as AMD's L3 does for L2), so a line that stays hot in an inner level is not lost
    /// behind its back. A write marks the first level's copy dirty; the mark travels outwards with
    /// the line, and a dirty line pushed out of the last level is written back to memory
    /// (`writebacks`), which costs memory bandwidth as a read does.
    ///
    /// - Precondition: `address >> 12` is below `pageLimit` (checked in debug builds; `Machine`
    ///   checks its kernel's memory once).
    @inlinable @inline(__always) @discardableResult
    public func access(physicalAddress address: UInt64, write: Bool = false) -> Double {
        assert(address >> 12 < Self.pageLimit, "physical address \(address) beyond the cache model's 8 TiB")
        let line = address >> 6
        // A line already most recent in its first-level set: a hit that changes no order.
        if levelCount > 0 {
            let first = levels[0]
            let way0 = first.ways + Int(truncatingIfNeeded: Self.setIndex(first, line)) &* first.wayCount
            let entry = way0.pointee
            if entry & ~Self.dirtyBit == Self.key(line) {
                if write { way0.pointee = entry | Self.dirtyBit }
                hitCounts[0] &+= 1
                return first.latency
            }
        }
        return lookUp(line: line, dirty: write ? Self.dirtyBit : 0)
    }

    /// `access(physicalAddress:write:)` past the most-recent check: every level, with fills and victims.
    @usableFromInline @inline(never)
    func lookUp(line: UInt64, dirty: UInt32) -> Double {
        prefetchSets(line)
        var i = 0
        while i < levelCount {
            let (hit, victim) = Self.touch(levels[i], line, dirty: i == 0 ? dirty : 0)
            if let victim { demote(victim.line, victim.dirty, into: i &+ 1) }
            if hit {
                hitCounts[i] &+= 1
                return levels[i].latency
            }
            i &+= 1
        }
        hitCounts[levelCount] &+= 1
        return memoryLatency
    }

    /// Asks the host for every set a miss of `line` is likely to read, before reading any: the line's
    /// set in each level, and the sets its victims go to — the LRU way of each set the line or a
    /// victim enters, assuming no hits (a guess: a wrong one costs a wasted host fetch, never a
    /// different result). The model's state is megabytes read at random, so a lookup is a chain of
    /// host cache misses; this turns the chain of up to six into about two rounds.
    @inline(__always)
    func prefetchSets(_ line: UInt64) {
        guard levelCount > 1 else { return }
        var l = 1
        while l < levelCount {
            hostPrefetch(Self.set(levels[l], line))
            l &+= 1
        }
        // Lines entering level k: the line and the victims of the lines entering level k - 1.
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: 2 &* Self.maximumLevels) { buffer in
            var entering = buffer.baseAddress!, next = entering + Self.maximumLevels
            entering[0] = line
            var n = 1
            var k = 1
            while k < levelCount {
                let inner = levels[k &- 1], outer = levels[k]
                next[0] = line
                var m = 1
                var c = 0
                while c < n {
                    let candidate = entering[c]
                    let setNumber = Self.setIndex(inner, candidate)
                    let last = (inner.ways + Int(truncatingIfNeeded: setNumber) &* inner.wayCount)[inner.wayCount &- 1]
                    if last != 0 && last & ~Self.dirtyBit != Self.key(candidate) {
                        let victim = Self.line(in: inner, set: setNumber, way: last)
                        hostPrefetch(Self.set(outer, victim))
                        next[m] = victim
                        m &+= 1
                    }
                    c &+= 1
                }
                swap(&entering, &next)
                n = m
                k &+= 1
            }
        }
    }

    /// The first way of `line`'s set in `level`.
    @inline(__always)
    static func set(_ level: Level, _ line: UInt64) -> UnsafeMutablePointer<UInt32> {
        level.ways + Int(truncatingIfNeeded: setIndex(level, line)) &* level.wayCount
    }

    /// Levels a description may have (`MachineConfigFile` takes l1 to l4).
    static let maximumLevels = 4

    /// Marks the line at `address` written where the first level holds it (a write to the line the
    /// previous access used, which the CPU does not look up again).
    public func markDirty(physicalAddress address: UInt64) {
        guard levelCount > 0 else { return }
        let line = address >> 6
        let key = Self.key(line)
        let level = levels[0]
        let set = level.ways + Int(truncatingIfNeeded: Self.setIndex(level, line)) &* level.wayCount
        for w in 0..<level.wayCount where set[w] & ~Self.dirtyBit == key { set[w] |= Self.dirtyBit; return }
    }

    /// Lines written back to memory: dirty lines pushed out of the last level.
    public private(set) var writebacks = 0

    /// Puts a line pushed out of one level (with its dirty bit) at the front of the next, and so on
    /// outwards; a dirty line pushed out of the last level is written back.
    @inline(__always)
    private func demote(_ line: UInt64, _ dirty: UInt32, into level: Int) {
        var line = line, dirty = dirty, l = level
        while l < levelCount {
            let (hit, victim) = Self.touch(levels[l], line, dirty: dirty)
            guard !hit, let victim else { return }
            (line, dirty) = victim
            l &+= 1
        }
        if dirty != 0 { writebacks &+= 1 }
    }

    /// The level that holds the line, without changing anything (nil: memory).
    public func level(holding address: UInt64) -> Int? {
        let line = address >> 6
        let key = Self.key(line)
        for i in 0..<levelCount {
            let level = levels[i]
            let set = level.ways + Int(truncatingIfNeeded: Self.setIndex(level, line)) * level.wayCount
            for w in 0..<level.wayCount where set[w] & ~Self.dirtyBit == key { return i }
        }
        return nil
    }

    /// Empties every level.
    public func clear() {
        for i in 0..<levelCount { levels[i].ways.update(repeating: 0, count: levels[i].count) }
        hitCounts.update(repeating: 0, count: levelCount + 1)
        writebacks = 0
    }
}
