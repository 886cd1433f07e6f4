#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import VMCore

/// A spinning lock over one atomic word, the model of Linux's `spinlock_t` for page-table locks.
///
/// Simulated CPUs are host threads that the host may preempt, so a waiter spins briefly, then yields
/// its thread rather than burning the other core (`SpinBackoff`).
public struct SpinLockWord: ~Copyable {
    @usableFromInline let word = Atomic<UInt32>(0)
    public init() {}
}

extension UnsafeMutablePointer where Pointee == Atomic<UInt32> {
    /// Takes the spin lock stored in this word (Linux: `spin_lock()`).
    @inlinable func spinLock() {
        Scheduling.point()
        while true {
            if pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { return }
            var backoff = SpinBackoff()
            while pointee.load(ordering: .relaxed) != 0 { Scheduling.pause(&backoff) }
        }
    }
    /// Linux: `spin_trylock()`.
    @inlinable func spinTryLock() -> Bool {
        pointee.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged
    }
    /// Linux: `spin_unlock()`.
    @inlinable func spinUnlock() { pointee.store(0, ordering: .releasing) }
    @inlinable var spinIsLocked: Bool { pointee.load(ordering: .relaxed) != 0 }
}

/// A spin lock owned by a class (the mm's `page_table_lock`).
public final class SpinLock: @unchecked Sendable {
    @usableFromInline let word: UnsafeMutablePointer<Atomic<UInt32>>
    public init() {
        word = .allocate(capacity: 1)
        word.initialize(to: Atomic(0))
    }
    deinit { word.deinitialize(count: 1); word.deallocate() }
    @inlinable public func lock() { word.spinLock() }
    @inlinable public func unlock() { word.spinUnlock() }
    public var isLocked: Bool { word.spinIsLocked }
    @inlinable public func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock(); defer { unlock() }
        return try body()
    }
}

/// A reader-writer lock: the model of Linux's `mmap_lock` (an `rw_semaphore`).
///
/// Readers count themselves on their CPU's own cache line, so that CPUs faulting at once in one mm
/// write nothing they share (a single reader count, as in `rw_semaphore` or `pthread_rwlock_t`, is a
/// line every fault of every CPU writes twice: docs/performance.md, concurrent huge faults). A writer
/// claims the lock word, then waits for the per-CPU counts to sum to zero (the idea of Linux's
/// `percpu_rw_semaphore`, which uprobes and cgroups use; the mmap lock itself is one count). Readers
/// are preferred, as glibc's default `pthread_rwlock_t` prefers them: a writer that finds readers
/// gives the word back and waits, so a reader never waits for a writer that is only waiting, and a
/// thread may take the read lock again while it holds it.
///
/// Correctness is the store-then-load handshake: a reader adds itself and then reads the word; a
/// writer sets the word and then reads the counts; both sequentially consistent, so at least one of
/// the two sees the other.
///
/// `unlock()` releases either mode: the word holds the writing thread's identity.
public final class ReadWriteLock: @unchecked Sendable {
    /// The writer's thread identity, or 0; on a cache line of its own.
    @usableFromInline let word: UnsafeMutablePointer<Atomic<UInt>>
    /// One reader count per CPU stripe, each on a cache line of its own.
    @usableFromInline let readers: UnsafeMutablePointer<Atomic<Int>>
    @usableFromInline static let lineWords = 8

    public init() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64 * (1 + CPUStripe.count), alignment: 64)
        word = raw.bindMemory(to: Atomic<UInt>.self, capacity: 1)
        word.initialize(to: Atomic(0))
        readers = (raw + 64).bindMemory(to: Atomic<Int>.self, capacity: CPUStripe.count * Self.lineWords)
        for i in 0..<CPUStripe.count * Self.lineWords { (readers + i).initialize(to: Atomic(0)) }
    }
    deinit {
        readers.deinitialize(count: CPUStripe.count * Self.lineWords)
        word.deinitialize(count: 1)
        UnsafeMutableRawPointer(word).deallocate()
    }

    /// The calling thread's identity, never 0.
    @usableFromInline static var thread: UInt {
        #if canImport(Glibc)
        UInt(pthread_self())
        #else
        UInt(bitPattern: pthread_self())
        #endif
    }

    @inlinable func readerCount(_ cpu: Int) -> UnsafeMutablePointer<Atomic<Int>> { readers + cpu &* Self.lineWords }

    /// Whether some reader holds the lock (a sum over the stripes).
    @usableFromInline var hasReaders: Bool {
        for cpu in 0..<CPUStripe.count where readerCount(cpu).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            return true
        }
        return false
    }

    /// Linux: `mmap_read_lock()`.
    @inlinable public func readLock() {
        Scheduling.point()
        while !tryReadLock() {
            var backoff = SpinBackoff()
            while word.pointee.load(ordering: .relaxed) != 0 { Scheduling.pause(&backoff) }
        }
    }
    /// Linux: `mmap_write_lock()`.
    public func writeLock() {
        Scheduling.point()
        let me = Self.thread
        while true {
            var backoff = SpinBackoff()
            if word.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged {
                if !hasReaders { return }
                word.pointee.store(0, ordering: .releasing)
                while hasReaders { Scheduling.pause(&backoff) }
            } else {
                while word.pointee.load(ordering: .relaxed) != 0 { Scheduling.pause(&backoff) }
            }
        }
    }
    /// Takes the lock for reading if that needs no waiting (Linux: `mmap_read_trylock()`, which reclaim's
    /// reverse map and migration use so as never to wait on a writer that waits on them).
    @inlinable public func tryReadLock() -> Bool {
        let count = readerCount(CPUStripe.current)
        count.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if word.pointee.load(ordering: .sequentiallyConsistent) == 0 { return true }
        count.pointee.wrappingSubtract(1, ordering: .releasing)
        return false
    }
    /// Linux: `mmap_read_unlock()` / `mmap_write_unlock()`.
    @inlinable public func unlock() {
        if word.pointee.load(ordering: .relaxed) == Self.thread {
            word.pointee.store(0, ordering: .releasing)
        } else {
            readerCount(CPUStripe.current).pointee.wrappingSubtract(1, ordering: .releasing)
        }
    }

    @inlinable public func withReadLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        readLock(); defer { unlock() }
        return try body()
    }
    @inlinable public func withWriteLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        writeLock(); defer { unlock() }
        return try body()
    }
}
