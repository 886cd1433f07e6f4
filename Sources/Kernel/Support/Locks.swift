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
public final class ReadWriteLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>
    public init() {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        pthread_rwlock_init(lock, nil)
    }
    deinit {
        pthread_rwlock_destroy(lock)
        lock.deinitialize(count: 1)
        lock.deallocate()
    }
    /// Linux: `mmap_read_lock()`.
    @inlinable public func readLock() { _readLock() }
    /// Linux: `mmap_write_lock()`.
    @inlinable public func writeLock() { _writeLock() }
    /// Takes the lock for reading if that needs no waiting (Linux: `mmap_read_trylock()`, which reclaim's
    /// reverse map and migration use so as never to wait on a writer that waits on them).
    public func tryReadLock() -> Bool { pthread_rwlock_tryrdlock(lock) == 0 }
    /// Linux: `mmap_read_unlock()` / `mmap_write_unlock()`.
    @inlinable public func unlock() { _unlock() }
    // Under the deterministic scheduler a blocked thread would stop every simulated CPU, so waiters
    // poll and hand over instead of sleeping.
    @usableFromInline func _readLock() {
        Scheduling.point()
        if Scheduling.isManagedThread {
            while pthread_rwlock_tryrdlock(lock) != 0 { Scheduling.pause() }
        } else {
            pthread_rwlock_rdlock(lock)
        }
    }
    @usableFromInline func _writeLock() {
        Scheduling.point()
        if Scheduling.isManagedThread {
            while pthread_rwlock_trywrlock(lock) != 0 { Scheduling.pause() }
        } else {
            pthread_rwlock_wrlock(lock)
        }
    }
    @usableFromInline func _unlock() { pthread_rwlock_unlock(lock) }

    @inlinable public func withReadLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        readLock(); defer { unlock() }
        return try body()
    }
    @inlinable public func withWriteLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        writeLock(); defer { unlock() }
        return try body()
    }
}
