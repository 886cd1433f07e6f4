import Synchronization

/// Per-CPU stacks of 32-bit values (free block PFNs, free page-table slots) with a lock each, for
/// caches that each CPU fills and drains on its own (Linux: `struct per_cpu_pages`, whose lock is
/// per CPU too).
///
/// There are as many sets of stacks as the kernel has CPUs (`KernelConfiguration.cpus`); a CPU
/// finds its own by `SimulatedCPU.current`.
///
/// Each CPU's stacks live in one block of host memory of their own, starting on a cache line: the
/// lock, the counts, then the stacks' values. CPUs working at once then write different lines. A
/// value of this type is a view, copied freely with no reference count for CPUs to fight over; its
/// owner calls `release()` once, when it goes (docs/performance.md, concurrent huge faults).
///
/// ```
///  stripe i:  | lock | count 0 | count 1 | … | tuned | values of stack 0 … | values of stack 1 … |
///             '------------- 64 B ------------------'  
/// ```
public struct PerCPUStacks: @unchecked Sendable {
    /// Each stack's capacity, then each one's offset in a stripe: read on every push and pop, so in
    /// plain memory rather than arrays (whose buffers CPUs would retain and release at once).
    @usableFromInline let layout: UnsafeMutablePointer<Int>
    @usableFromInline let stride: Int
    @usableFromInline let base: UnsafeMutableRawPointer
    /// CPUs with stacks of their own.
    public let cpus: Int

    /// Stacks of the given capacities, for each of `cpus` CPUs.
    /// - Precondition: at most 14 stacks; 1 ≤ `cpus` ≤ `SimulatedCPU.maxCount`.
    public init(capacities: [Int], cpus: Int = SimulatedCPU.defaultCount) {
        precondition(capacities.count <= 14)
        precondition(cpus >= 1 && cpus <= SimulatedCPU.maxCount, "\(cpus) CPUs")
        self.cpus = cpus
        layout = .allocate(capacity: 32)
        layout.initialize(repeating: 0, count: 32)
        var offset = 64
        for (i, c) in capacities.enumerated() {
            layout[i] = c
            layout[16 + i] = offset
            offset += c * 4
        }
        stride = (offset + 63) / 64 * 64
        base = .allocate(byteCount: stride * cpus, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: stride * cpus)
    }

    /// Frees the stacks; no copy of this view may be used afterwards.
    public func release() {
        base.deallocate()
        layout.deallocate()
    }

    /// One CPU's stacks, as `withStripe` hands them out under their lock.
    public struct Stripe {
        @usableFromInline let base: UnsafeMutableRawPointer
        @usableFromInline let layout: UnsafeMutablePointer<Int>

        @inlinable init(base: UnsafeMutableRawPointer, layout: UnsafeMutablePointer<Int>) {
            self.base = base
            self.layout = layout
        }

        @inlinable var lock: UnsafeMutablePointer<Atomic<UInt32>> {
            base.assumingMemoryBound(to: Atomic<UInt32>.self)
        }
        /// Values on stack `i`; written under the lock, read without it by `count(_:)`.
        @inlinable func countWord(_ i: Int) -> UnsafeMutablePointer<Atomic<UInt32>> {
            (base + 4 + 4 * i).assumingMemoryBound(to: Atomic<UInt32>.self)
        }
        @inlinable func values(_ i: Int) -> UnsafeMutablePointer<UInt32> {
            (base + layout[16 + i]).assumingMemoryBound(to: UInt32.self)
        }

        @inlinable public func count(_ i: Int) -> Int { Int(countWord(i).pointee.load(ordering: .relaxed)) }

        /// A word of the stripe's own for its user (the per-CPU page lists keep their tuned `high`
        /// in it), zero at first; written under the lock. It is the header's last word.
        @inlinable public var tuned: Int {
            Int((base + 60).assumingMemoryBound(to: Atomic<UInt32>.self).pointee.load(ordering: .relaxed))
        }
        @inlinable public func setTuned(_ value: Int) {
            (base + 60).assumingMemoryBound(to: Atomic<UInt32>.self).pointee.store(UInt32(value), ordering: .relaxed)
        }
        @inlinable func setCount(_ i: Int, _ n: Int) {
            countWord(i).pointee.store(UInt32(n), ordering: .relaxed)
        }

        /// Takes the value pushed last.
        @inlinable public func pop(_ i: Int) -> UInt32? {
            let n = count(i)
            guard n > 0 else { return nil }
            setCount(i, n - 1)
            return values(i)[n - 1]
        }

        /// Pushes `value`; false when the stack is full.
        @inlinable @discardableResult public func push(_ i: Int, _ value: UInt32) -> Bool {
            let n = count(i)
            guard n < layout[i] else { return false }
            values(i)[n] = value
            setCount(i, n + 1)
            return true
        }

        /// Moves the `n` oldest values of stack `i` to `out`.
        public func removeOldest(_ i: Int, _ n: Int, into out: UnsafeMutablePointer<UInt32>) {
            let total = count(i)
            let v = values(i)
            out.update(from: v, count: n)
            v.update(from: v + n, count: total - n)
            setCount(i, total - n)
        }

        /// Empties stack `i`, calling `body` with each value, oldest first.
        @inlinable public func drain(_ i: Int, _ body: (UInt32) -> Void) {
            let n = count(i)
            let v = values(i)
            for k in 0..<n { body(v[k]) }
            setCount(i, 0)
        }

        /// Empties stack `i`; returns its values, oldest first.
        public func removeAll(_ i: Int) -> [UInt32] {
            let out = contents(i)
            setCount(i, 0)
            return out
        }

        /// The values of stack `i`, oldest first.
        public func contents(_ i: Int) -> [UInt32] { Array(UnsafeBufferPointer(start: values(i), count: count(i))) }
    }

    /// The stacks of CPU `cpu`, for lockless reads of their counts.
    @inlinable public func stripe(_ cpu: Int) -> Stripe {
        Stripe(base: base + SimulatedCPU.slot(cpu, of: cpus) &* stride, layout: layout)
    }

    /// Calls `body` with the stacks of CPU `cpu` locked.
    @inlinable public func withStripe<R>(_ cpu: Int, _ body: (Stripe) -> R) -> R {
        let s = stripe(cpu)
        s.lock.acquireLeafLock()
        defer { s.lock.releaseLeafLock() }
        return body(s)
    }
}
