#if canImport(Glibc)
import Glibc
import Testing
@testable import Scenarios

/// Native runs change host-wide THP settings; `NativeHostLock` lets one run at a time.
@Suite("Native runs hold a host-wide lock")
struct NativeHostLockTests {
    @Test("a second holder waits, then fails naming the file and the holder; after a release it gets the lock")
    func oneAtATime() throws {
        let path = "/tmp/thpsim-native-lock-test-\(getpid())"
        defer { unlink(path) }
        let first = try NativeHostLock.acquire(path: path, timeout: 1).get()
        switch NativeHostLock.acquire(path: path, timeout: 0.2) {
        case .success(let second):
            second.release()
            Issue.record("a second run got the lock while the first held it")
        case .failure(let error):
            #expect(error.kind == .run)
            #expect(error.message.contains(path))
            #expect(error.message.contains("pid \(getpid())"))
        }
        first.release()
        let again = try NativeHostLock.acquire(path: path, timeout: 1).get()
        again.release()
    }
}
#endif
