#if canImport(Glibc)
import Glibc
import Testing
@testable import Scenarios

/// Native runs change host-wide THP settings; `NativeHostLock` lets one run at a time, and its
/// journal lets the next run undo what a killed one changed.
@Suite("Native runs hold a host-wide lock")
struct NativeHostLockTests {
    @Test("a second holder waits, then fails naming the file and the holder; after a release it gets the lock")
    func oneAtATime() throws {
        let path = "/tmp/thpsim-native-lock-test-\(getpid())"
        defer { unlink(path) }
        let (first, _) = try NativeHostLock.acquire(path: path, timeout: 1).get()
        switch NativeHostLock.acquire(path: path, timeout: 0.2) {
        case .success(let (second, _)):
            second.release()
            Issue.record("a second run got the lock while the first held it")
        case .failure(let error):
            #expect(error.kind == .run)
            #expect(error.message.contains(path))
            #expect(error.message.contains("pid \(getpid())"))
        }
        first.release()
        let (again, leftover) = try NativeHostLock.acquire(path: path, timeout: 1).get()
        #expect(leftover == nil, "a run that released the lock leaves nothing to undo")
        again.release()
    }

    @Test("the journal lists each change before it is made; a run that never released it leaves it to the next, which keeps it until undone")
    func journal() throws {
        let path = "/tmp/thpsim-native-journal-test-\(getpid())"
        defer { unlink(path) }
        func contents() -> String { NativeSyscalls.readFile(path) ?? "" }
        let changes: [NativeHostLock.Change] = [.tunable(name: "khugepaged/scan_sleep_millisecs", original: "10000"),
                                                .cgroup(path: "/sys/fs/cgroup/memory/thpsim-1-pod"), .swap(path: "/var/tmp/thpsim-swap-1"),
                                                .loop(device: "/dev/loop0"),
                                                .debugfs, .tunable(name: "enabled", original: "madvise")]
        let (lock, none) = try NativeHostLock.acquire(path: path, timeout: 1).get()
        #expect(none == nil)
        for change in changes { lock.record(change) }
        #expect(contents() == "pid \(getpid())\n" + changes.map { $0.line + "\n" }.joined())
        lock.release()
        #expect(contents().isEmpty)

        // What a run killed outright leaves: its pid, its changes (and a line no version writes).
        let dead = "pid 424242\n" + changes.map { $0.line + "\n" }.joined() + "something else\n"
        _ = dead.withCString { text in
            let fd = open(path, O_WRONLY | O_TRUNC)
            defer { close(fd) }
            return write(fd, text, strlen(text))
        }
        // A holder that does not undo it leaves it for the next, under the dead run's pid.
        let (passing, seen) = try NativeHostLock.acquire(path: path, timeout: 1).get()
        #expect(seen?.changes == changes)
        passing.release()
        #expect(contents() == "pid 424242\n" + changes.map { $0.line + "\n" }.joined())
        let (next, leftover) = try NativeHostLock.acquire(path: path, timeout: 1).get()
        #expect(leftover?.pid == "424242")
        #expect(leftover?.changes == changes)
        // Kept under the new holder's pid until undone: a run killed while undoing leaves it again.
        #expect(contents() == "pid \(getpid())\n" + changes.map { $0.line + "\n" }.joined())
        next.clearJournal()
        #expect(contents() == "pid \(getpid())\n")
        next.release()
    }

    @Test("journal lines read back as the changes they were written from")
    func lines() {
        for change: NativeHostLock.Change in [.tunable(name: "hugepages-64kB/enabled", original: "never"),
                                               .tunable(name: "khugepaged/max_ptes_none", original: "511"),
                                               .cgroup(path: "/sys/fs/cgroup/thpsim-7-pod/app"), .swap(path: "/var/tmp/thpsim-swap-7"),
                                               .loop(device: "/dev/loop3"), .debugfs] {
            #expect(NativeHostLock.Change(line: Substring(change.line)) == change)
        }
        for bad in ["", "tunable", "tunable enabled", "cgroup", "debugfs now", "pid 3"] {
            #expect(NativeHostLock.Change(line: Substring(bad)) == nil, "\(bad)")
        }
    }
}
#endif
