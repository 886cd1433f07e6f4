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
        // Two levels of one set each: L1 2 ways, L2 4 ways. Lines 64 bytes apart share the set.
        let cache = CacheModel(levels: [CacheLevelSpec(bytes: 128, ways: 2, latency: 4),
                                        CacheLevelSpec(bytes: 256, ways: 4, latency: 12)], memoryLatency: 300)
        cache.access(physicalAddress: 0, write: true)
        for line in 1...3 { cache.access(physicalAddress: UInt64(line) << 6) }
        #expect(cache.writebacks == 0, "line 0 still sits in L2, dirty since L1 pushed it out")
        cache.access(physicalAddress: 4 << 6)
        #expect(cache.writebacks == 1, "line 0 left L2 dirty")
        for line in 5...20 { cache.access(physicalAddress: UInt64(line) << 6) }
        #expect(cache.writebacks == 1, "lines only read leave without a write-back")
        // A write that hits the line most recent in L1 marks it too.
        cache.access(physicalAddress: 30 << 6)
        cache.access(physicalAddress: 30 << 6, write: true)
        for line in 31...40 { cache.access(physicalAddress: UInt64(line) << 6) }
        #expect(cache.writebacks == 2)
    }
}

@Suite("Sampled cache model")
struct SampledCacheModelUnitTests {
    @Test("the outer levels keep one set in 16, or every set when a level is too small to divide")
    func sampleShift() {
        #expect(CacheModel.sampleShift(for: MachineDescription.skylakeSP.caches) == 4)
        #expect(CacheModel.sampleShift(for: [CacheLevelSpec(bytes: 128, ways: 2, latency: 4),
                                             CacheLevelSpec(bytes: 256, ways: 4, latency: 12)]) == 0)
        let cache = CacheModel(levels: MachineDescription.skylakeSP.caches, memoryLatency: 300, kind: .sampled)
        #expect(cache.kind == .sampled)
    }

    @Test("sampled: a hot working set that fits the last level keeps hitting, estimated for unsampled lines too")
    func hotLinesSurviveStreaming() {
        let cache = CacheModel(levels: MachineDescription.zen5.caches, memoryLatency: 300, kind: .sampled)
        var rng = SplitMix64(seed: 7)
        let hot = (0..<32768).map { _ in UInt64.random(in: 0..<(1 << 30), using: &rng) << 6 }   // 2 MiB of lines
        var hotMisses = 0
        for round in 0..<400_000 {
            cache.access(physicalAddress: UInt64.random(in: 0..<(1 << 36), using: &rng) << 6)
            if cache.access(physicalAddress: hot[Int.random(in: 0..<hot.count, using: &rng)], source: 1) == 300 && round > 200_000 { hotMisses += 1 }
        }
        #expect(hotMisses < 2_000, "\(hotMisses) misses of 200,000")
        // The streaming data, by contrast, misses: its estimate is its own source's, not the hot lines'.
        #expect(cache.hits.last! > 390_000, "\(cache.hits)")
    }

    @Test("sampled: dirty lines are written back at the rate sampled ones are")
    func writebacks() {
        let full = CacheModel(levels: MachineDescription.skylakeSP.caches, memoryLatency: 300)
        let sampled = CacheModel(levels: MachineDescription.skylakeSP.caches, memoryLatency: 300, kind: .sampled)
        var rng = SplitMix64(seed: 3)
        // 1 GiB of lines, every one written; the caches hold 283,000 lines, so most of the run is
        // steady state (the sampled estimate starts at the first sampled write-back, the full model's
        // write-backs of lines dirtied while the caches filled come later: a transient of either sign).
        for _ in 0..<1_000_000 {
            let a = UInt64.random(in: 0..<(1 << 24), using: &rng) << 6
            full.access(physicalAddress: a, write: true)
            sampled.access(physicalAddress: a, write: true)
        }
        let ratio = Double(sampled.writebacks) / Double(full.writebacks)
        #expect(full.writebacks > 500_000 && abs(ratio - 1) < 0.02, "full \(full.writebacks), sampled \(sampled.writebacks)")
    }
}
