import Foundation
import VMCore
import Kernel

/// The named synthetic workloads of `thpsim workload NAME` (issue 8). Each maps and first-touches its
/// memory as the real program would (so faults and huge-page allocation happen during set-up), sleeps
/// `settleMilliseconds` if asked, emits `beginMeasurement`, then exactly `accesses` accesses.
public enum SyntheticWorkload: String, Sendable, CaseIterable {
    /// Sequential 8-byte loads over each thread's slice, wrapping (STREAM-like).
    case seq
    /// One 8-byte load every `stride` bytes over each thread's slice, wrapping; set-up writes one byte
    /// every `stride` bytes too (every page when `stride` is 4 KiB or less), so a sparse stride leaves
    /// most pages untouched (the memory-bloat test: `--stride 64K` touches one page in 16).
    case stride
    /// Random 8-byte read-modify-write updates uniform over the whole size (HPCC RandomAccess). One
    /// store per update: the load of the update translates through the same TLB entry.
    case gups
    /// Dependent loads following a random cyclic permutation of the 64-byte lines of the size.
    case chase
    /// Zipf-distributed (s = 0.99) 8-byte loads and stores (one in four) over scattered pages: a few
    /// hot pages, a long cold tail.
    case zipf
    /// A malloc-like heap that grows with `mprotect`, frees and reuses, and returns big free chunks
    /// with `MADV_DONTNEED`: sparse touching inside huge-page-sized ranges.
    case heap
    /// Redis BGSAVE: fill the data set, fork; the child reads it all while the parent keeps writing.
    case forkserver
    /// Many thread stacks (the JVM case): 8 MiB-aligned stacks touched from the top, then guard pages
    /// `mprotect`ed at their bottom, splitting a huge page where the stack reached it.
    case stacks
    /// Sparse first touch, an idle phase (for khugepaged), then uniform loads over the size.
    case idle
    /// A key-value store fragmenting its memory: 4 KiB values to 90 % of the size, 80 % deleted, 2 MiB
    /// values back up to the size; then GETs.
    case kvstore
    /// A key-value store forking a snapshot child (Redis BGSAVE) while Zipf-skewed SETs continue.
    case kvfork
    /// `thp_memscale` (Linux 3.13's split PMD lock benchmark): each thread mallocs `--size` bytes of
    /// its own and writes one byte per 4 KiB page (`--size` is per thread); then `--accesses` writes.
    case memscale

    /// Runs the generator into `sink`.
    /// - Precondition: `parameters.problem == nil`.
    public func generate(_ parameters: SyntheticParameters, into sink: inout some WorkloadSink) {
        precondition(parameters.problem == nil, parameters.problem ?? "")
        switch self {
        case .seq, .stride, .gups, .chase, .zipf: ArrayPattern(kind: self, p: parameters).generate(into: &sink)
        case .heap: HeapWorkload(p: parameters).generate(into: &sink)
        case .forkserver: ForkServerWorkload(p: parameters).generate(into: &sink)
        case .stacks: StacksWorkload(p: parameters).generate(into: &sink)
        case .idle: IdleWorkload(p: parameters).generate(into: &sink)
        case .kvstore: KeyValueStoreWorkload(p: parameters).generate(into: &sink)
        case .kvfork: KeyValueForkWorkload(p: parameters).generate(into: &sink)
        case .memscale: MemscaleWorkload(p: parameters).generate(into: &sink)
        }
    }
}

/// Set-up shared by the array workloads: map one region (advised with MADV_HUGEPAGE under
/// `--advise`), spawn the threads — after the mapping, as a program that shares it does (in
/// simulated time a thread may run before its parent's later calls) — and let each thread write one
/// word in every `pageStep`-th page of its slice (every page: OpenMP-style first touch).
func mapAndFirstTouch(_ p: SyntheticParameters, base: UInt64, pageStep: UInt64 = 1, into sink: inout some WorkloadSink) {
    sink.event(thread: 0, .mmap(address: base, length: p.size, protection: .readWrite, shared: false))
    if p.adviseHugepage { sink.event(thread: 0, .madvise(address: base, length: p.size, advice: .hugepage)) }
    for t in 1..<p.threads { sink.event(thread: 0, .spawn(thread: t)) }
    for t in 0..<p.threads {
        let (start, length) = p.slice(t)
        var offset: UInt64 = 0
        while offset < length {
            sink.access(thread: t, address: base &+ start &+ offset, kind: .store, count: 1)
            offset &+= pageStep &* PageGeometry.pageSize
        }
    }
}

/// Ends set-up: the threads sleep `settleMilliseconds` when asked (`--settle`), then the measured
/// phase begins.
func beginMeasurement(_ p: SyntheticParameters, into sink: inout some WorkloadSink) {
    if p.settleMilliseconds > 0 { sink.event(thread: 0, .idle(milliseconds: p.settleMilliseconds)) }
    sink.event(thread: 0, .beginMeasurement)
}

/// How many accesses each thread issues before the next thread runs: threads interleave in quanta,
/// as a scheduler's time slices would on fewer CPUs, and stay deterministic.
let threadQuantum = 256

/// seq, stride, gups, chase and zipf over one anonymous region.
struct ArrayPattern {
    let kind: SyntheticWorkload
    let p: SyntheticParameters

    func generate(into sink: inout some WorkloadSink) {
        let base = SyntheticLayout.base
        let pageStep = kind == .stride ? max(1, p.stride / PageGeometry.pageSize) : 1
        mapAndFirstTouch(p, base: base, pageStep: pageStep, into: &sink)
        beginMeasurement(p, into: &sink)
        var rng = SplitMix64(seed: p.seed)
        let pages = p.size / PageGeometry.pageSize
        // Per-thread cursors for seq/stride; one permutation for chase.
        var cursors = [UInt64](repeating: 0, count: p.threads)
        var chase = CyclicPermutation(count: p.size / 64, rng: &rng)
        let zipf = ZipfSampler(count: pages, exponent: 0.99)
        var pagePermutation = CyclicPermutation(count: pages, rng: &rng)
        let scrambleKey = pagePermutation.next()
        var remaining = p.accesses
        var thread = 0
        let quantum = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: threadQuantum)
        defer { quantum.deallocate() }
        while remaining > 0 {
            let n = min(threadQuantum, remaining)
            if kind == .seq || kind == .stride {
                // The quantum as page runs: the accesses in one 4 KiB page before the cursor wraps,
                // one `accessRun` each (the same accesses, in the same order, as one call each).
                let step = kind == .seq ? 8 : p.stride
                let (start, length) = p.slice(thread)
                var left = n
                while left > 0 {
                    let cursor = cursors[thread]
                    let address = base &+ start &+ cursor
                    let inPage = (PageGeometry.pageSize &- (address & (PageGeometry.pageSize &- 1)) &+ step &- 1) / step
                    let beforeWrap = (length &- cursor &+ step &- 1) / step
                    let k = Int(min(UInt64(left), inPage, beforeWrap))
                    sink.accessRun(thread: thread, address: address, stride: step, count: k, kind: .load)
                    cursors[thread] = (cursor &+ UInt64(k) &* step) % length
                    left -= k
                }
                remaining -= n
                thread = (thread + 1) % p.threads
                continue
            }
            if kind == .gups || kind == .chase {
                // The quantum's addresses, then one `accesses` call (the same accesses, in the same
                // order, as one call each: the sink draws nothing from the generators).
                let op: AccessKind = kind == .gups ? .store : .load
                if kind == .gups {
                    let words = p.size / 8
                    for j in 0..<n { quantum[j] = base &+ rng.below(words) &* 8 }
                } else {
                    for j in 0..<n { quantum[j] = base &+ chase.next() &* 64 }
                }
                sink.accesses(thread: thread, addresses: UnsafeBufferPointer(rebasing: quantum[0..<n]), kind: op)
                remaining -= n
                thread = (thread + 1) % p.threads
                continue
            }
            for _ in 0..<n {
                let address: UInt64
                var op = AccessKind.load
                switch kind {
                case .gups:
                    address = base &+ rng.below(p.size / 8) &* 8
                    op = .store
                case .chase:
                    address = base &+ chase.next() &* 64
                case .zipf:
                    let rank = zipf.sample(rng.unit())
                    let page = pagePermutation.scramble((rank &+ scrambleKey) & pagePermutation.mask)
                    address = base &+ (page % pages) &* PageGeometry.pageSize &+ rng.below(512) &* 8
                    if rng.next() & 3 == 0 { op = .store }
                default: preconditionFailure("not an array pattern")
                }
                sink.access(thread: thread, address: address, kind: op, count: 1)
            }
            remaining -= n
            thread = (thread + 1) % p.threads
        }
    }
}

/// Zipf ranks 0..<n with P(k) ∝ 1/(k+1)^s, drawn by inverting the continuous approximation of the
/// CDF (exact enough for access patterns, O(1) per draw and no table).
struct ZipfSampler {
    let n: Double, oneMinusS: Double, scale: Double
    init(count: UInt64, exponent s: Double) {
        n = Double(count); oneMinusS = 1 - s
        scale = pow(n + 1, oneMinusS) - 1
    }
    @inline(__always) func sample(_ u: Double) -> UInt64 {
        let x = pow(u * scale + 1, 1 / oneMinusS) - 1
        return min(UInt64(x), UInt64(n) - 1)
    }
}
