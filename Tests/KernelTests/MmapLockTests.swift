import Testing
import Foundation
import Synchronization
import VMCore
@testable import Kernel

/// The mmap lock (`ReadWriteLock`): readers counted per CPU, a writer claiming the word and waiting
/// for them; reader-preferring, like the glibc rwlock it replaced.
@Suite("mmap lock: per-CPU readers, one writer")
struct MmapLockTests {
    @Test("readers share; a thread may take the read lock again while it holds it")
    func readersShare() {
        let lock = ReadWriteLock()
        lock.readLock()
        #expect(lock.tryReadLock())
        lock.unlock()
        lock.readLock()
        lock.unlock()
        lock.unlock()
        // Free again: a writer gets it at once, and unlock() releases the write mode.
        lock.writeLock()
        lock.unlock()
        #expect(lock.tryReadLock())
        lock.unlock()
    }

    @Test("a writer excludes readers on other threads, and waits for the readers it finds")
    func writerExcludes() {
        let lock = ReadWriteLock()
        let step = Atomic<Int>(0)
        lock.writeLock()
        let reader = Thread {
            #expect(!lock.tryReadLock())
            step.store(1, ordering: .releasing)
            lock.readLock()                      // waits for the writer
            #expect(step.load(ordering: .acquiring) == 2)
            step.store(3, ordering: .releasing)
            Thread.sleep(forTimeInterval: 0.05)  // a writer now waits for this reader
            step.store(4, ordering: .releasing)
            lock.unlock()
        }
        reader.start()
        while step.load(ordering: .acquiring) != 1 { sched_yield() }
        Thread.sleep(forTimeInterval: 0.02)
        step.store(2, ordering: .releasing)
        lock.unlock()
        while step.load(ordering: .acquiring) != 3 { sched_yield() }
        lock.writeLock()
        #expect(step.load(ordering: .acquiring) == 4)
        lock.unlock()
    }

    @Test("readers and writers on several threads: writers see no reader, readers see whole writes")
    func mixed() {
        final class Shared: @unchecked Sendable {   // guarded by `lock`
            let lock = ReadWriteLock()
            var a = 0, b = 0
            let torn = Atomic<Int>(0)
        }
        let shared = Shared()
        let threads = 4, rounds = 2_000
        let done = DispatchGroup()
        for t in 0..<threads {
            done.enter()
            Thread {
                for i in 0..<rounds {
                    if (i + t) % 5 == 0 {
                        shared.lock.writeLock()
                        shared.a += 1
                        shared.b += 1
                        shared.lock.unlock()
                    } else {
                        shared.lock.readLock()
                        if shared.a != shared.b { shared.torn.wrappingAdd(1, ordering: .relaxed) }
                        shared.lock.unlock()
                    }
                }
                done.leave()
            }.start()
        }
        done.wait()
        #expect(shared.torn.load(ordering: .relaxed) == 0)
        #expect(shared.a == threads * rounds / 5 && shared.b == shared.a)
    }

    @Test("a trylock succeeds while a writer only waits, and fails while it holds the lock")
    func trylockAndWaitingWriter() {
        let lock = ReadWriteLock()
        let wrote = Atomic<Bool>(false), release = Atomic<Bool>(false)
        lock.readLock()
        Thread {
            lock.writeLock()
            wrote.store(true, ordering: .releasing)
            while !release.load(ordering: .acquiring) { sched_yield() }
            lock.unlock()
        }.start()
        while lock.word.pointee.load(ordering: .acquiring) == 0 { sched_yield() }
        // The writer waits for this thread's read lock: a trylock does not wait for it.
        let whileWaiting = lock.tryReadLock()
        #expect(whileWaiting)
        lock.unlock()
        lock.unlock()
        while !wrote.load(ordering: .acquiring) { sched_yield() }
        let whileHeld = lock.tryReadLock()
        #expect(!whileHeld)
        release.store(true, ordering: .releasing)
        lock.readLock()
        lock.unlock()
    }

    @Test("a thread may take the read lock again while a writer waits: the writer steps back for a while")
    func recursiveReadUnderWaitingWriter() {
        let lock = ReadWriteLock()
        let wrote = Atomic<Bool>(false)
        lock.readLock()
        Thread {
            lock.writeLock()
            wrote.store(true, ordering: .releasing)
            lock.unlock()
        }.start()
        while lock.word.pointee.load(ordering: .acquiring) == 0 { sched_yield() }
        lock.readLock()      // would wait for the writer for good if its claim never ended
        let writerIn = wrote.load(ordering: .acquiring)
        #expect(!writerIn)
        lock.unlock()
        lock.unlock()
        while !wrote.load(ordering: .acquiring) { sched_yield() }
    }

    @Test("a writer gets the lock while another thread takes the read lock back to back")
    func writerNotStarved() {
        let lock = ReadWriteLock()
        let wrote = Atomic<Bool>(false)
        let readsAfterWrite = Atomic<Int>(0)
        let done = DispatchSemaphore(value: 0)
        Thread {
            // Back-to-back readers for at most 5 s, as a CPU's faults take the lock one after another.
            // Each holds the lock a fraction of a microsecond, as a metadata-mode fault does.
            let deadline = Date().addingTimeInterval(5)
            let busy = Atomic<Int>(0)
            outer: while Date() < deadline {
                for _ in 0..<10_000 {
                    lock.readLock()
                    for _ in 0..<50 { busy.wrappingAdd(1, ordering: .relaxed) }
                    lock.unlock()
                    if wrote.load(ordering: .acquiring) && readsAfterWrite.wrappingAdd(1, ordering: .relaxed).newValue >= 1000 { break outer }
                }
            }
            done.signal()
        }.start()
        Thread.sleep(forTimeInterval: 0.01)
        lock.writeLock()
        wrote.store(true, ordering: .releasing)
        lock.unlock()
        done.wait()
        // The writer got in while the readers were still coming.
        let after = readsAfterWrite.load(ordering: .relaxed)
        #expect(after >= 1000)
    }
}
