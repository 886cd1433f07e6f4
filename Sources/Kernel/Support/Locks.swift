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
/// `percpu_rw_semaphore`, which uprobes and cgroups use; the mmap lock itself is one count). A
/// waiting writer holds new readers back, as Linux's `rw_semaphore` does, but only for a while
/// (`writeLock`): the model takes read locks in places Linux does not (a fault that compacts takes
/// every mm's, its own again), which a writer that blocked readers for good could deadlock.
///
/// Correctness is the store-then-load handshake: a reader adds itself and then reads the word; a
/// writer sets the word (its claim, then its hold) and then reads the counts; both sequentially
/// consistent, so at least one of the two sees the other.
///
/// `unlock()` releases either mode: the word holds the writing thread's identity and, once it holds
/// the lock, the `held` bit.
public final class ReadWriteLock: @unchecked Sendable {
    /// The writing thread's identity, with `held` once it holds the lock, or 0; on a cache line of
    /// its own.
    @usableFromInline let word: UnsafeMutablePointer<Atomic<UInt>>
    /// Reader counts, each on a cache line of its own; the executing CPU counts in
    /// `SimulatedCPU.current & (stripes - 1)`.
    @usableFromInline let readers: UnsafeMutablePointer<Atomic<Int>>
    @usableFromInline static let lineWords = 8
    /// How many reader counts a lock has: a power of two, fixed whatever the kernel's CPU count, since
    /// a lock is built without one (CPUs beyond it share a count, which costs only contention).
    @usableFromInline static let stripes = 8

    public init() {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64 * (1 + Self.stripes), alignment: 64)
        word = raw.bindMemory(to: Atomic<UInt>.self, capacity: 1)
        word.initialize(to: Atomic(0))
        readers = (raw + 64).bindMemory(to: Atomic<Int>.self, capacity: Self.stripes * Self.lineWords)
        for i in 0..<Self.stripes * Self.lineWords { (readers + i).initialize(to: Atomic(0)) }
    }
    deinit {
        readers.deinitialize(count: Self.stripes * Self.lineWords)
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

    @inlinable func readerCount(_ cpu: Int) -> UnsafeMutablePointer<Atomic<Int>> {
        readers + (cpu & (Self.stripes &- 1)) &* Self.lineWords
    }

    /// Whether some reader holds the lock (a sum over the stripes).
    @usableFromInline var hasReaders: Bool {
        for cpu in 0..<Self.stripes where readerCount(cpu).pointee.load(ordering: .sequentiallyConsistent) != 0 {
            return true
        }
        return false
    }

    /// How many waits a writer holds the word for while readers it found finish (see `writeLock`).
    @usableFromInline static let claimWaits = 256
    /// The word's low bit: the writer holds the lock (the rest is its thread, which is word-aligned);
    /// without it, the writer has only claimed the word and waits for readers.
    @usableFromInline static let held: UInt = 1

    /// Linux: `mmap_read_lock()`. Waits while a writer holds or claims the lock.
    @inlinable public func readLock() {
        Scheduling.point()
        let count = readerCount(SimulatedCPU.current)
        while true {
            count.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if word.pointee.load(ordering: .sequentiallyConsistent) == 0 { return }
            count.pointee.wrappingSubtract(1, ordering: .releasing)
            var backoff = SpinBackoff()
            while word.pointee.load(ordering: .relaxed) != 0 { Scheduling.pause(&backoff) }
        }
    }

    /// Linux: `mmap_write_lock()`.
    ///
    /// A writer claims the word, which stops new readers that would wait (`readLock`), and waits for
    /// the readers it found; then it marks the word held and looks once more, since a trylock may have
    /// come in meanwhile. If the readers have not finished after `claimWaits` waits, one of them may
    /// be waiting for a read lock the claim holds up (a fault that compacts takes every mm's read lock,
    /// its own again included), so the writer gives the word back for as long again and then claims
    /// it anew. Without the claim, a writer waits until it happens to find no reader at all: a fault's
    /// first touch of a new VMA (which takes the lock for writing, to give the VMA its anon_vma) could
    /// wait out all of another CPU's faults (docs/performance.md).
    public func writeLock() {
        Scheduling.point()
        let me = Self.thread
        precondition(me & Self.held == 0, "thread identity is not word-aligned")
        while true {
            var backoff = SpinBackoff()
            guard word.pointee.compareExchange(expected: 0, desired: me, ordering: .sequentiallyConsistent).exchanged else {
                while word.pointee.load(ordering: .relaxed) != 0 { Scheduling.pause(&backoff) }
                continue
            }
            var waits = 0
            while waits < Self.claimWaits {
                if !hasReaders {
                    word.pointee.store(me | Self.held, ordering: .sequentiallyConsistent)
                    if !hasReaders { return }
                    word.pointee.store(me, ordering: .sequentiallyConsistent)
                }
                Scheduling.pause(&backoff)
                waits += 1
            }
            word.pointee.store(0, ordering: .releasing)
            waits = 0
            while hasReaders && waits < Self.claimWaits {
                Scheduling.pause(&backoff)
                waits += 1
            }
        }
    }
    /// Takes the lock for reading unless a writer holds it (Linux: `mmap_read_trylock()`, which
    /// reclaim's reverse map and migration use so as never to wait on a writer that waits on them). A
    /// writer that has only claimed the lock does not stop it, as a waiting writer did not stop
    /// glibc's rwlock, which the model used before.
    @inlinable public func tryReadLock() -> Bool {
        let count = readerCount(SimulatedCPU.current)
        count.pointee.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if word.pointee.load(ordering: .sequentiallyConsistent) & Self.held == 0 { return true }
        count.pointee.wrappingSubtract(1, ordering: .releasing)
        return false
    }
    /// Linux: `mmap_read_unlock()` / `mmap_write_unlock()`. A word without `held` (no writer holds
    /// the lock) is a reader's unlock without asking the thread's identity (`pthread_self()`, a call
    /// into the C library at every fault's and lookup's unlock).
    @inlinable public func unlock() {
        let w = word.pointee.load(ordering: .relaxed)
        if w & Self.held != 0 && w == Self.thread | Self.held {
            word.pointee.store(0, ordering: .releasing)
        } else {
            readerCount(SimulatedCPU.current).pointee.wrappingSubtract(1, ordering: .releasing)
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
