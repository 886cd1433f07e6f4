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
}
