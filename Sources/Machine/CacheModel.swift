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
/// entry: bit 63 dirty | bit 62 sampled (first level, `sampled` only) | line number + 1
/// ```
/// Hardware: the L1D/L2/L3 the page-miss handler reads through (Intel SDM vol. 3A, 4.10: walks are
/// cached like other loads).
public final class CacheModel: @unchecked Sendable {
    /// How much of the outer levels (L2, L3, …) is simulated; the first level is always exact.
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        /// Every set of every level: the exact model.
        case full
        /// One line in `sampleFraction` (chosen by a hash of the line) goes through the outer levels,
        /// which keep that fraction of their sets; the other lines' first-level misses are answered
        /// from where the sampled lines of the same kind (data, or a walk's table level) were found
        /// recently (set sampling: Kessler, Hill and Wood, "A comparison of trace-sampling
        /// techniques for multi-megabyte caches", IEEE ToC 1994). Deterministic; docs/machines.md
        /// says how far it can differ from `full`.
        case sampled
    }

    /// What an access's line is, for the sampled model's estimates: data, or a walk's entry at a
    /// table level (`1 + PageTableLevel.rawValue`).
    public typealias Source = Int
    public static let dataSource: Source = 0
    static let sourceCount = 5

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
    /// The last level's storage when other CPUs' models share it (a socket's L3); nil when it is this
    /// model's own. A shared level is an ordinary `Level` whose `lines` point into it, so an access
    /// reads it exactly as it reads an own level.
    public let sharedLastLevel: SharedCacheLevel?
    public let memoryLatency: Double
    let hitCounts: UnsafeMutablePointer<Int>
    /// The latency of each level and, last, of memory (indexed as `hitCounts`).
    let latencies: UnsafeMutablePointer<Double>
    let specs: [CacheLevelSpec]
    /// The model in use (`use(_:)` changes it).
    public private(set) var kind = Kind.full
    /// log2 of the sampling divisor in use: 0 for `full` (every line through every level).
    @exclusivity(unchecked) private(set) var sampleShift: UInt64 = 0
    /// The sampled model's last `history` outcomes of sampled lines' first-level misses per source
    /// (0: hit in level 1, …, `levelCount - 1`: memory) in a ring (`outcomeRing`, `ringPositions`),
    /// counted per outcome (`outcomeCounts`: `sourceCount` rows of `levelCount`) with the rows'
    /// totals, and each row's position in its low-discrepancy sequence (`estimate(_:)`).
    let outcomeRing: UnsafeMutablePointer<UInt8>
    let ringPositions: UnsafeMutablePointer<Int>
    let outcomeCounts: UnsafeMutablePointer<UInt32>
    let outcomeTotals: UnsafeMutablePointer<UInt32>
    let outcomePhases: UnsafeMutablePointer<UInt32>
    /// How many recent sampled outcomes of a source its estimates use: a window, not a running total,
    /// so estimates follow phase changes (faulting in, then random access) within about 64 sampled
    /// misses (some 1,000 first-level misses of the source) and carry no rounding bias.
    static let history = 128
    /// Sampled dirty lines the first level pushed out, and how many sampled dirty lines the last level
    /// wrote back, over the same window; `writebackCarry` diffuses the ratio's remainder.
    @exclusivity(unchecked) var sampledDirtyDemotions: UInt32 = 0
    @exclusivity(unchecked) var sampledWritebacks: UInt32 = 0
    @exclusivity(unchecked) var writebackCarry: UInt32 = 0
    /// The write-back ratio's counts are halved when the demotions reach this.
    static let window: UInt32 = 512

    /// The sampled model simulates one line in 2^`preferredSampleShift` (16) in its outer levels, and
    /// fewer divisions when an outer level would keep fewer than 2^`minimumSampledSetBits` sets.
    static let preferredSampleShift: UInt64 = 4
    static let minimumSampledSetBits: UInt64 = 4

    /// - Parameter sharedLastLevel: storage for the last level that this model shares with others
    ///   (every sharer's last level is the same cache); nil for a last level of its own.
    /// - Precondition: `sharedLastLevel`, when given, was made for `specs.last` and there are at least
    ///   two levels.
    public init(levels specs: [CacheLevelSpec], memoryLatency: Double, kind: Kind = .full,
                sharedLastLevel: SharedCacheLevel? = nil) {
        precondition(sharedLastLevel == nil || (specs.count > 1 && sharedLastLevel!.spec == specs.last),
                     "a shared last level must be made for the last of two or more levels")
        levelCount = specs.count
        self.specs = specs
        self.sharedLastLevel = sharedLastLevel
        levels = .allocate(capacity: specs.count)
        for (i, spec) in specs.enumerated() {
            (levels + i).initialize(to: Self.makeLevel(spec, shift: 0, storage: i == specs.count - 1 ? sharedLastLevel : nil))
        }
        self.memoryLatency = memoryLatency
        hitCounts = .allocate(capacity: specs.count + 1)
        latencies = .allocate(capacity: specs.count + 1)
        for (i, spec) in specs.enumerated() { (latencies + i).initialize(to: spec.latency) }
        (latencies + specs.count).initialize(to: memoryLatency)
        hitCounts.initialize(repeating: 0, count: specs.count + 1)
        let outcomes = max(1, specs.count)
        outcomeCounts = .allocate(capacity: Self.sourceCount * outcomes)
        outcomeCounts.initialize(repeating: 0, count: Self.sourceCount * outcomes)
        outcomeTotals = .allocate(capacity: Self.sourceCount)
        outcomeTotals.initialize(repeating: 0, count: Self.sourceCount)
        outcomePhases = .allocate(capacity: Self.sourceCount)
        outcomePhases.initialize(repeating: 0, count: Self.sourceCount)
        outcomeRing = .allocate(capacity: Self.sourceCount * Self.history)
        outcomeRing.initialize(repeating: 0, count: Self.sourceCount * Self.history)
        ringPositions = .allocate(capacity: Self.sourceCount)
        ringPositions.initialize(repeating: 0, count: Self.sourceCount)
        if kind != .full { use(kind) }
    }

    /// A level of `spec` divided by 2^`shift`, in new storage or in the first entries of `storage`.
    static func makeLevel(_ spec: CacheLevelSpec, shift: UInt64, storage: SharedCacheLevel? = nil) -> Level {
        let count = (spec.bytes / 64) >> shift
        return Level(lines: storage?.lines ?? HostMemory.allocate(UInt64.self, count: count), setMask: UInt64(count / spec.ways - 1),
                     setBits: UInt64((count / spec.ways).trailingZeroBitCount), ways: spec.ways, latency: spec.latency)
    }

    /// Whether level `i`'s storage is this model's own (not a shared last level).
    @inline(__always) private func ownsLevel(_ i: Int) -> Bool { sharedLastLevel == nil || i != levelCount - 1 }

    deinit {
        for i in 0..<levelCount where ownsLevel(i) { HostMemory.release(levels[i].lines, count: levels[i].count) }
        levels.deallocate()
        hitCounts.deallocate()
        latencies.deallocate()
        outcomeCounts.deallocate()
        outcomeTotals.deallocate()
        outcomePhases.deallocate()
        outcomeRing.deallocate()
        ringPositions.deallocate()
    }

    /// The sampling divisor's log2 that `sampled` uses for these levels: 0 (exact) with fewer than two
    /// levels or an outer level too small to divide.
    public static func sampleShift(for specs: [CacheLevelSpec]) -> UInt64 {
        guard specs.count > 1 else { return 0 }
        let fewestSetBits = specs.dropFirst().map { UInt64((($0.bytes / 64) / $0.ways).trailingZeroBitCount) }.min()!
        return min(preferredSampleShift, fewestSetBits > minimumSampledSetBits ? fewestSetBits - minimumSampledSetBits : 0)
    }

    /// Switches to `kind`, emptying every level and zeroing the counts. With a shared last level,
    /// every model sharing it must switch too (`Machine.cacheModel` switches every CPU), so that all
    /// read it with the same geometry; this one empties it.
    public func use(_ kind: Kind) {
        let shift = kind == .sampled ? Self.sampleShift(for: specs) : 0
        self.kind = kind
        if shift != sampleShift {
            for i in 1..<max(1, levelCount) {
                if ownsLevel(i) {
                    HostMemory.release(levels[i].lines, count: levels[i].count)
                    levels[i] = Self.makeLevel(specs[i], shift: shift)
                } else {
                    levels[i] = Self.makeLevel(specs[i], shift: shift, storage: sharedLastLevel)
                }
            }
            sampleShift = shift
        }
        clear()
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
        // A masking shift (no test for a count of 64): with one set (`setBits` 0) the mask is 0 anyway.
        return ((page &* 0x9E37_79B9_7F4A_7C15) &>> (64 &- level.setBits) &+ line) & level.setMask
    }

    /// Bit 63 of a way's entry: the line was written since it came into this level (line numbers
    /// stay far below it).
    static let dirtyBit: UInt64 = 1 << 63
    /// Bit 62 of a first-level entry under `sampled`: the line is one the outer levels simulate
    /// (`isSampled`), noted when it is filled so that pushing it out needs no second hash. Outer
    /// levels' entries never carry it.
    static let sampledBit: UInt64 = 1 << 62
    /// The bits of an entry that are not its key.
    static let flagBits: UInt64 = 0xC000_0000_0000_0000

    /// Looks a line up in one level, moving it to the front (with its flags, plus `dirty`); on a
    /// miss inserts it at the front with `dirty`. Returns whether it hit, and on a miss the entry
    /// pushed out of the set (0: none; with its dirty bit).
    @inline(__always)
    private static func touch(_ level: Level, _ line: UInt64, dirty: UInt64) -> (hit: Bool, victim: UInt64) {
        touch(set: level.lines + Int(truncatingIfNeeded: setIndex(level, line)) &* level.ways, ways: level.ways,
              key: line &+ 1, dirty: dirty)
    }

    @inline(__always)
    private static func touch(set: UnsafeMutablePointer<UInt64>, ways: Int, key: UInt64, dirty: UInt64) -> (hit: Bool, victim: UInt64) {
        // The common associativities with a constant trip count and move size, which the compiler
        // unrolls and expands inline.
        ways == 8 ? touch(set: set, fixedWays: 8, key: key, dirty: dirty)
            : ways == 16 ? touch(set: set, fixedWays: 16, key: key, dirty: dirty)
            : touch(set: set, fixedWays: ways, key: key, dirty: dirty)
    }

    @inline(__always)
    private static func touch(set: UnsafeMutablePointer<UInt64>, fixedWays ways: Int, key: UInt64, dirty: UInt64) -> (hit: Bool, victim: UInt64) {
        let i = find(key, in: set, ways: ways)
        if i == ways {
            // A miss: every way moves down one and the last one leaves. With a constant way count the
            // move is a fixed-size copy done in registers, not a call to `memmove`.
            let victim = set[ways &- 1]
            (set + 1).update(from: set, count: ways &- 1)
            set[0] = key | dirty
            return (false, victim)
        }
        let carried = set[i] & flagBits
        // A hit in way i: ways 0..<i move down one (overlap-safe, from the back).
        var k = i
        while k > 0 { set[k] = set[k &- 1]; k &-= 1 }
        set[0] = key | carried | dirty
        return (true, 0)
    }

    /// The way of `set` that holds `key` (with any flags), or `ways`.
    @inline(__always)
    private static func find(_ key: UInt64, in set: UnsafeMutablePointer<UInt64>, ways: Int) -> Int {
        var i = 0
        while i < ways {
            if set[i] & ~flagBits == key { return i }
            i &+= 1
        }
        return ways
    }

    /// Reads (or, with `write`, writes) the 64-byte line at physical address `address`; returns the
    /// latency of the level that held it (memory if none). The line is filled into every level it
    /// missed; a line pushed out of one level moves to the front of the next (the outer levels act as
    /// victim caches, as AMD's L3 does for L2), so a line that stays hot in an inner level is not lost
    /// behind its back. A write marks the first level's copy dirty; the mark travels outwards with
    /// the line, and a dirty line pushed out of the last level is written back to memory
    /// (`writebacks`), which costs memory bandwidth as a read does.
    @inline(__always) @discardableResult
    public func access(physicalAddress address: UInt64, write: Bool = false, source: Source = dataSource) -> Double {
        // A line already most recent in its first-level set: a hit that changes no order.
        if levelCount > 0 {
            let first = levels[0]
            let line = address >> 6
            let way0 = first.lines + Int(truncatingIfNeeded: Self.setIndex(first, line)) &* first.ways
            let entry = way0.pointee
            if entry & ~Self.flagBits == line &+ 1 {
                if write { way0.pointee = entry | Self.dirtyBit }
                hitCounts[0] &+= 1
                return first.latency
            }
            // The sampled model takes the set just found (no second index computation).
            if sampleShift != 0 { return lookUpSampled(set: way0, line: line, dirty: write ? Self.dirtyBit : 0, source: source) }
        }
        return lookUp(line: address >> 6, dirty: write ? Self.dirtyBit : 0)
    }

    /// The first level and the model's kind as `access(physicalAddress:write:source:)` reads them, for
    /// a caller that makes many accesses while nothing changes them (the cache thread's ops loop:
    /// `use(_:)` runs only while it is idle), so that it keeps them in registers.
    struct FirstLevel {
        let lines: UnsafeMutablePointer<UInt64>
        let setMask: UInt64
        /// `64 - setBits`, as `setIndex` shifts.
        let setShift: UInt64
        let ways: Int
        let latency: Double
        let sampled: Bool
    }

    /// nil for a model of no levels.
    var firstLevel: FirstLevel? {
        guard levelCount > 0 else { return nil }
        let first = levels[0]
        return FirstLevel(lines: first.lines, setMask: first.setMask, setShift: 64 &- first.setBits,
                          ways: first.ways, latency: first.latency, sampled: sampleShift != 0)
    }

    /// `access(physicalAddress:write:source:)` of the line `line`, `dirty` `dirtyBit` for a write,
    /// with the first level given (`firstLevel`, read since the last `use(_:)`).
    @inline(__always)
    func access(_ first: FirstLevel, line: UInt64, dirty: UInt64, source: Source) -> Double {
        let page = (line >> 6) &+ 1
        let set = ((page &* 0x9E37_79B9_7F4A_7C15) &>> first.setShift &+ line) & first.setMask
        let way0 = first.lines + Int(truncatingIfNeeded: set) &* first.ways
        let entry = way0.pointee
        if entry &<< 2 == (line &+ 1) &<< 2 {
            way0.pointee = entry | dirty
            hitCounts[0] &+= 1
            return first.latency
        }
        if first.sampled { return lookUpSampled(set: way0, line: line, dirty: dirty, source: source) }
        return lookUp(line: line, dirty: dirty)
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

    /// `touch` of the first level under `sampled`: a line filled on a miss carries its sampled mark,
    /// from its hash, which is returned (0 on a hit, where it is not computed).
    @inline(__always)
    private func touchFirst(set: UnsafeMutablePointer<UInt64>, fixedWays ways: Int, line: UInt64,
                            dirty: UInt64) -> (hit: Bool, victim: UInt64, hash: UInt64) {
        let key = line &+ 1
        let i = Self.find(key, in: set, ways: ways)
        if i != ways {
            // Ways 0..<i move down one, the entry keeps its flags. The value moving down is carried in a
            // register (written this way, the compiler does not turn the few moves into a `memmove` call).
            let entry = set[i]
            var carried = set[0], k = 1
            while k <= i {
                let next = set[k]
                set[k] = carried
                carried = next
                k &+= 1
            }
            set[0] = entry | dirty
            return (true, 0, 0)
        }
        let h = Self.mix(line)
        let victim = set[ways &- 1]
        (set + 1).update(from: set, count: ways &- 1)
        set[0] = key | dirty | (isSampled(h) ? Self.sampledBit : 0)
        return (false, victim, h)
    }

    /// `touchFirst` for a first level of other than 8 ways, out of line so that the common 8-way path
    /// keeps few registers to save.
    @inline(never)
    private func touchFirst(set: UnsafeMutablePointer<UInt64>, otherWays ways: Int, line: UInt64,
                            dirty: UInt64) -> (hit: Bool, victim: UInt64, hash: UInt64) {
        ways == 16 ? touchFirst(set: set, fixedWays: 16, line: line, dirty: dirty)
            : touchFirst(set: set, fixedWays: ways, line: line, dirty: dirty)
    }

    /// A line's hash for the sampled model: its top `sampleShift` bits zero selects the line for the
    /// outer levels, its low bits pick the line's set there (a full 64-bit mix, so strided addresses
    /// such as page tables at 2 MiB strides spread over samples and sets alike).
    @inline(__always)
    static func mix(_ line: UInt64) -> UInt64 {
        var h = line &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 29
        h &*= 0xBF58_476D_1CE4_E5B9
        h ^= h >> 32
        return h
    }

    /// Only while `sampleShift` is not 0 (the masking shift needs a count below 64).
    @inline(__always)
    func isSampled(_ hash: UInt64) -> Bool { hash &>> (64 &- sampleShift) == 0 }

    /// `lookUp` for `sampled`: the first level exactly; past it, a sampled line goes through the
    /// outer levels' sampled sets and its outcome is recorded for its source; any other line's outcome
    /// is drawn from its source's recent sampled outcomes (`estimate(_:)`).
    /// `set` is the line's first-level set.
    @inline(never)
    func lookUpSampled(set: UnsafeMutablePointer<UInt64>, line: UInt64, dirty: UInt64, source: Source) -> Double {
        let ways = levels[0].ways
        let (hit, victim, h) = ways == 8 ? touchFirst(set: set, fixedWays: 8, line: line, dirty: dirty)
            : touchFirst(set: set, otherWays: ways, line: line, dirty: dirty)
        if hit {
            hitCounts[0] &+= 1
            return levels[0].latency
        }
        if victim != 0 { demoteFromFirst(victim) }
        let outcome = isSampled(h) ? sampledOutcome(line: line, hash: h, source: source) : estimate(source)
        hitCounts[outcome &+ 1] &+= 1
        return latencies[outcome &+ 1]
    }

    /// A sampled line's first-level miss through the outer levels' sampled sets: where it was found
    /// (0: level 1, …, last: memory), recorded for its source. Out of line (one miss in 16), so that
    /// the common path keeps few registers to save.
    @inline(never)
    func sampledOutcome(line: UInt64, hash h: UInt64, source: Source) -> Int {
        var i = 1
        while i < levelCount {
            let level = levels[i]
            let (hit, victim) = Self.touch(set: level.lines + Int(truncatingIfNeeded: h & level.setMask) &* level.ways,
                                           ways: level.ways, key: line &+ 1, dirty: 0)
            if victim != 0 { demoteSampled(victim, into: i &+ 1) }
            if hit { break }
            i &+= 1
        }
        record(source, i &- 1)
        return i &- 1
    }

    /// An entry the first level pushed out, under `sampled`: a sampled line moves outwards as in
    /// `demote`; a dirty unsampled line is written back at the rate sampled dirty lines were.
    @inline(__always)
    private func demoteFromFirst(_ entry: UInt64) {
        let dirty = entry & Self.dirtyBit != 0
        if entry & Self.sampledBit != 0 {
            if dirty {
                sampledDirtyDemotions &+= 1
                if sampledDirtyDemotions >= Self.window {
                    sampledDirtyDemotions >>= 1
                    sampledWritebacks >>= 1
                    writebackCarry >>= 1
                }
            }
            demoteSampled(entry, into: 1)
        } else if dirty && sampledDirtyDemotions > 0 {
            // Error diffusion: over n such lines, n × writebacks / demotions of them are written back.
            writebackCarry &+= sampledWritebacks
            if writebackCarry >= sampledDirtyDemotions {
                writebackCarry &-= sampledDirtyDemotions
                writebacks &+= 1
            }
        }
    }

    /// `demote` through the outer levels' sampled sets.
    private func demoteSampled(_ entry: UInt64, into level: Int) {
        var entry = entry, l = level
        while l < levelCount {
            let line = (entry & ~Self.flagBits) &- 1
            let lv = levels[l]
            let (hit, victim) = Self.touch(set: lv.lines + Int(truncatingIfNeeded: Self.mix(line) & lv.setMask) &* lv.ways,
                                           ways: lv.ways, key: line &+ 1, dirty: entry & Self.dirtyBit)
            if hit || victim == 0 { return }
            entry = victim
            l &+= 1
        }
        if entry & Self.dirtyBit != 0 {
            writebacks &+= 1
            sampledWritebacks &+= 1
        }
    }

    /// Records where a sampled line's first-level miss was answered (0: level 1, …, last: memory).
    @inline(__always)
    private func record(_ source: Source, _ outcome: Int) {
        let row = outcomeCounts + source &* levelCount
        let ring = outcomeRing + source &* Self.history
        let position = ringPositions[source]
        if outcomeTotals[source] == UInt32(Self.history) {
            row[Int(ring[position])] &-= 1
        } else {
            outcomeTotals[source] &+= 1
        }
        ring[position] = UInt8(truncatingIfNeeded: outcome)
        row[outcome] &+= 1
        ringPositions[source] = position &+ 1 == Self.history ? 0 : position &+ 1
    }

    /// An outcome for an unsampled line's first-level miss: the next point of a golden-ratio sequence
    /// (deterministic, evenly spread) placed in the cumulative distribution of the source's recent
    /// sampled outcomes; memory before any was sampled.
    @inline(__always)
    private func estimate(_ source: Source) -> Int {
        let total = outcomeTotals[source]
        guard total > 0 else { return levelCount &- 1 }
        outcomePhases[source] &+= 0x9E37_79B9
        let target = UInt32(truncatingIfNeeded: (UInt64(outcomePhases[source]) &* UInt64(total)) >> 32)
        let row = outcomeCounts + source &* levelCount
        if levelCount == 3 {
            // Three levels (the presets'): outcomes L2, L3 and memory, the same answer as the loop below.
            return row[0] > target ? 0 : row[0] &+ row[1] > target ? 1 : 2
        }
        var o = 0, cumulative = row[0]
        while cumulative <= target && o < levelCount &- 1 {
            o &+= 1
            cumulative &+= row[o]
        }
        return o
    }

    /// Marks the line at `address` written where the first level holds it (a write to the line the
    /// previous access used, which the CPU does not look up again).
    public func markDirty(physicalAddress address: UInt64) {
        guard levelCount > 0 else { return }
        let key = (address >> 6) &+ 1
        let level = levels[0]
        let set = level.lines + Int(truncatingIfNeeded: Self.setIndex(level, address >> 6)) &* level.ways
        for w in 0..<level.ways where set[w] & ~Self.flagBits == key { set[w] |= Self.dirtyBit; return }
    }

    /// Lines written back to memory: dirty lines pushed out of the last level.
    @exclusivity(unchecked) public private(set) var writebacks = 0

    /// Puts an entry pushed out of one level (a line with its dirty bit) at the front of the next,
    /// and so on outwards; a dirty line pushed out of the last level is written back.
    @inline(__always)
    private func demote(_ entry: UInt64, into level: Int) {
        var entry = entry, l = level
        while l < levelCount {
            let (hit, victim) = Self.touch(levels[l], (entry & ~Self.flagBits) &- 1, dirty: entry & Self.dirtyBit)
            if hit || victim == 0 { return }
            entry = victim
            l &+= 1
        }
        if entry & Self.dirtyBit != 0 { writebacks &+= 1 }
    }

    /// The level that holds the line, without changing anything (nil: memory; under `sampled`, also
    /// an unsampled line the first level does not hold).
    public func level(holding address: UInt64) -> Int? {
        let key = (address >> 6) &+ 1
        let h = Self.mix(address >> 6)
        for i in 0..<levelCount {
            let level = levels[i]
            let index: UInt64
            if i == 0 || sampleShift == 0 {
                index = Self.setIndex(level, address >> 6)
            } else if isSampled(h) {
                index = h & level.setMask
            } else {
                return nil
            }
            let set = level.lines + Int(truncatingIfNeeded: index) * level.ways
            for w in 0..<level.ways where set[w] & ~Self.flagBits == key { return i }
        }
        return nil
    }

    /// Empties every level (a shared last level for every model sharing it).
    public func clear() {
        for i in 0..<levelCount { levels[i].lines.update(repeating: 0, count: levels[i].count) }
        hitCounts.update(repeating: 0, count: levelCount + 1)
        writebacks = 0
        outcomeCounts.update(repeating: 0, count: Self.sourceCount * max(1, levelCount))
        outcomeTotals.update(repeating: 0, count: Self.sourceCount)
        outcomePhases.update(repeating: 0, count: Self.sourceCount)
        ringPositions.update(repeating: 0, count: Self.sourceCount)
        sampledDirtyDemotions = 0
        sampledWritebacks = 0
        writebackCarry = 0
    }
}


/// The storage of a cache level that several CPUs' cache models share: a socket's last-level cache,
/// which hardware shares among the cores of a package (Intel's Xeon Scalable L3, distributed over the
/// cores' slices and hashed by address; AMD shares an L3 per core complex, which the model does not
/// distinguish from the socket). Sized for the full model; a model using `sampled` indexes its first
/// 1/2^`sampleShift` of it. Sharing needs one host thread to drive every sharer (a machine in
/// simulated-time order), as nothing here is locked.
public final class SharedCacheLevel: @unchecked Sendable {
    /// The level it holds.
    public let spec: CacheLevelSpec
    let lines: UnsafeMutablePointer<UInt64>
    let capacity: Int

    public init(_ spec: CacheLevelSpec) {
        self.spec = spec
        capacity = spec.bytes / 64
        lines = HostMemory.allocate(UInt64.self, count: capacity)
    }

    deinit { HostMemory.release(lines, count: capacity) }
}
