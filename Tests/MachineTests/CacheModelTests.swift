import Testing
import Machine
import TestSupport

@Suite("Cache model")
struct CacheModelTests {
    @Test("a working set that fits the last level keeps hitting while a data stream much larger than the cache flows by")
    func hotLinesSurviveStreaming() {
        let cache = CacheModel(levels: MachineDescription.zen5.caches, memoryLatency: 300)
        var rng = SplitMix64(seed: 7)
        let hot = (0..<32768).map { _ in UInt64.random(in: 0..<(1 << 30), using: &rng) << 6 }   // 2 MiB of lines
        var hotMisses = 0
        for round in 0..<400_000 {
            cache.access(physicalAddress: UInt64.random(in: 0..<(1 << 36), using: &rng) << 6)   // streaming data
            if cache.access(physicalAddress: hot[Int.random(in: 0..<hot.count, using: &rng)]) == 300 && round > 200_000 { hotMisses += 1 }
        }
        #expect(hotMisses < 2_000, "\(hotMisses) misses of 200,000")
    }

    @Test("a written line is written back once when it leaves the last level; lines only read are not")
    func dirtyLinesAreWrittenBack() {
        // L1 8 KiB (64 sets × 2 ways), L2 16 KiB (64 sets × 4 ways): lines read after a write push it
        // from L1 into L2, then out of L2.
        let cache = CacheModel(levels: [CacheLevelSpec(bytes: 8 << 10, ways: 2, latency: 4),
                                        CacheLevelSpec(bytes: 16 << 10, ways: 4, latency: 12)], memoryLatency: 300)
        let written: UInt64 = 1 << 20
        cache.access(physicalAddress: written, write: true)
        var next: UInt64 = 0
        func readNew() { cache.access(physicalAddress: next << 6); next += 1 }
        while cache.level(holding: written) == 0 { readNew() }
        #expect(cache.level(holding: written) == 1, "L1 pushed the line into L2")
        #expect(cache.writebacks == 0, "the line sits in L2, dirty")
        while cache.level(holding: written) != nil { readNew() }
        #expect(cache.writebacks == 1, "the line left L2 dirty")
        for _ in 0..<10_000 { readNew() }
        #expect(cache.writebacks == 1, "lines only read leave without a write-back")
        // A write that hits the line most recent in L1 marks it too.
        let second: UInt64 = 1 << 21
        cache.access(physicalAddress: second)
        cache.access(physicalAddress: second, write: true)
        while cache.level(holding: second) != nil { readNew() }
        #expect(cache.writebacks == 2)
    }

    @Test("ways hold pages, not lines: every line of many pages comes back as itself")
    func linesSurviveAsPages() {
        // 64 sets × 4 ways: the 64 lines of a page fill 64 different sets, and lines pushed out of L1
        // travel to L2 by the line number read back from the page and the set.
        let cache = CacheModel(levels: [CacheLevelSpec(bytes: 16 << 10, ways: 4, latency: 4),
                                        CacheLevelSpec(bytes: 64 << 10, ways: 16, latency: 12)], memoryLatency: 300)
        let pages: [UInt64] = [0, 1, 7, 4096, (1 << 31) - 2]
        for page in pages { for line in 0..<UInt64(64) { cache.access(physicalAddress: page << 12 | line << 6) } }
        // 320 lines: 256 fit in L1 and L2 holds the rest; each must be found exactly where it was put.
        var found = 0
        for page in pages {
            for line in 0..<UInt64(64) where cache.level(holding: page << 12 | line << 6) != nil { found += 1 }
        }
        #expect(found == 320)
        // A page's neighbour line at the same set never answers for it.
        #expect(cache.level(holding: 2 << 12) == nil)
        #expect(CacheLevelSpec(bytes: 128, ways: 2, latency: 4).problem != nil, "fewer than 64 sets is refused")
    }
}
