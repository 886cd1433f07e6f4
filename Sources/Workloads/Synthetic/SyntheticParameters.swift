import VMCore

/// Knobs every synthetic workload takes (`--size 4G --accesses 20M --threads 1 --seed 1`).
public struct SyntheticParameters: Sendable, Hashable {
    /// Bytes the workload maps and touches (its footprint), a multiple of 4 KiB.
    public var size: UInt64
    /// Accesses of the measured phase (after set-up), over all threads.
    public var accesses: Int
    public var threads: Int
    public var seed: UInt64
    /// Bytes between accesses of `stride`.
    public var stride: UInt64 = 4096
    /// Whether the program asks for huge pages with `MADV_HUGEPAGE` on the memory it maps, as JVMs
    /// with `-XX:+UseTransparentHugePages`, many databases and glibc with `glibc.malloc.hugetlb=1` do;
    /// this is what `enabled=madvise` acts on (`--advise`).
    public var adviseHugepage = false
    /// Simulated milliseconds every thread sleeps after set-up, before the measured accesses
    /// (`--settle`): time in which khugepaged and the policies' threads act, so that the measurement
    /// sees what they made of the memory. 0 (the default) goes straight on.
    public var settleMilliseconds: UInt64 = 0

    /// The longest `--settle`: a day of simulated time.
    public static let maxSettleMilliseconds: UInt64 = 86_400_000

    /// The most threads a synthetic workload may have (each runs on a simulated CPU of its own).
    public static let maxThreads = 256

    public init(size: UInt64, accesses: Int, threads: Int = 1, seed: UInt64 = 1) {
        self.size = size; self.accesses = accesses; self.threads = threads; self.seed = seed
    }

    /// What is wrong with the parameters, naming the option; nil when they are usable.
    public var problem: String? {
        if size < PageGeometry.pageSize || size % PageGeometry.pageSize != 0 {
            return "--size must be a positive multiple of 4K, not \(size) bytes"
        }
        if size > 1 << 40 { return "--size must be at most 1T" }
        if accesses < 0 { return "--accesses must not be negative" }
        if !(1...Self.maxThreads).contains(threads) { return "--threads must be 1 to \(Self.maxThreads), not \(threads)" }
        if stride == 0 || stride % 8 != 0 { return "--stride must be a positive multiple of 8" }
        if settleMilliseconds > Self.maxSettleMilliseconds { return "--settle must be at most 24h, not \(settleMilliseconds) ms" }
        return nil
    }

    /// Bytes of one thread's slice (the last thread also takes the remainder pages).
    func slice(_ thread: Int) -> (start: UInt64, length: UInt64) {
        let pages = size / PageGeometry.pageSize
        let per = pages / UInt64(threads)
        let first = per * UInt64(thread)
        let count = thread == threads - 1 ? pages - first : per
        return (first * PageGeometry.pageSize, count * PageGeometry.pageSize)
    }
}

/// Where synthetic workloads place their mappings: 2 MiB-aligned, far from where a kernel's own
/// `mmap` would put things, so replay with `MAP_FIXED` never collides with the model's choices.
public enum SyntheticLayout {
    public static let base: UInt64 = 0x7e00_0000_0000
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for access patterns, and the
/// sequence depends only on the seed.
public struct SplitMix64: Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    @inlinable public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in 0..<bound (Lemire's multiply-shift; bias below 2⁻³² for our bounds).
    @inlinable public mutating func below(_ bound: UInt64) -> UInt64 {
        bound.multipliedFullWidth(by: next()).high
    }
    @inlinable public mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }
}

/// A random cyclic permutation of 0..<n without a table: a full-period LCG over the next power of
/// two, scrambled by a bijection, walking past values ≥ n (cycle walking keeps it one cycle).
struct CyclicPermutation {
    let n: UInt64, mask: UInt64, multiplier: UInt64, increment: UInt64, key: UInt64
    var state: UInt64

    init(count n: UInt64, rng: inout SplitMix64) {
        precondition(n > 0)
        self.n = n
        var m: UInt64 = 1
        while m < n { m <<= 1 }
        mask = m - 1
        multiplier = (rng.next() & ~3) | 1 | 4     // ≡ 1 (mod 4): full period (Hull–Dobell)
        increment = rng.next() | 1
        key = rng.next()
        state = rng.next() & mask
    }

    /// An invertible mix of `bits`-bit values (xor-shift and odd multiply, both bijections mod 2^k).
    @inline(__always) func scramble(_ x: UInt64) -> UInt64 {
        var v = (x ^ key) & mask
        let shift = UInt64((mask.nonzeroBitCount + 1) / 2)
        v ^= v >> shift
        v = (v &* 0x9E37_79B9_7F4A_7C15) & mask
        v ^= v >> shift
        v = (v &* 0xD6E8_FEB8_6659_FD93) & mask
        v ^= v >> shift
        return v
    }

    @inline(__always) mutating func next() -> UInt64 {
        while true {
            state = (state &* multiplier &+ increment) & mask
            let v = scramble(state)
            if v < n { return v }
        }
    }
}
