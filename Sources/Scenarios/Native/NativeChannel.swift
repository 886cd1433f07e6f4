#if canImport(Glibc)
import Glibc

/// The two pipes between the host and one native scenario process: requests down, responses up.
///
/// A request is eight 64-bit words (`NativeRequest`); a response is three words (status, value,
/// payload length) followed by the payload. Pipes, not shared memory: a worker that dies shows up
/// as a host read that times out while the worker's `/proc` entry is gone or a zombie.
struct NativeChannel {
    var requestRead: Int32
    var requestWrite: Int32
    var responseRead: Int32
    var responseWrite: Int32

    /// Two new pipes, or nil with `errno` set.
    static func make() -> NativeChannel? {
        var request: [Int32] = [0, 0], response: [Int32] = [0, 0]
        guard pipe(&request) == 0 else { return nil }
        guard pipe(&response) == 0 else {
            close(request[0]); close(request[1])
            return nil
        }
        return NativeChannel(requestRead: request[0], requestWrite: request[1],
                             responseRead: response[0], responseWrite: response[1])
    }

    /// Closes the host's ends (in a worker).
    func closeHostEnds() {
        close(requestWrite)
        close(responseRead)
    }

    /// Closes the worker's ends (in the host, once the first worker holds them).
    func closeWorkerEnds() {
        close(requestRead)
        close(responseWrite)
    }

    func closeAll() {
        closeHostEnds()
        closeWorkerEnds()
    }

    /// Writes all of `buffer`; false if the pipe broke.
    static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < buffer.count {
            let n = write(fd, buffer.baseAddress! + done, buffer.count - done)
            if n < 0 { if errno == EINTR { continue } else { return false } }
            done += n
        }
        return true
    }

    /// Reads exactly `buffer.count` bytes; false on end of file or error.
    /// With `alive`, waits in one-second polls and gives up when `alive()` turns false or at `deadline`.
    static func readAll(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer,
                        deadline: Double = .infinity, alive: (() -> Bool)? = nil) -> Bool {
        var done = 0
        while done < buffer.count {
            if let alive {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&poller, 1, 1000)
                if ready < 0 { if errno == EINTR { continue } else { return false } }
                if ready == 0 {
                    if !alive() || monotonicSeconds() > deadline { return false }
                    continue
                }
            }
            let n = read(fd, buffer.baseAddress! + done, buffer.count - done)
            if n < 0 { if errno == EINTR { continue } else { return false } }
            if n == 0 { return false }
            done += n
        }
        return true
    }

    static func monotonicSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}

/// What the host asks a native scenario process to do.
enum NativeOperation: UInt64 {
    case mmap = 1, munmap, mprotect, mremap, madvise, touchRead, touchWrite, readData, fork, exit, pin, unpin
}

/// One request: an operation and up to seven arguments.
struct NativeRequest {
    var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    init(_ operation: NativeOperation, _ a: UInt64 = 0, _ b: UInt64 = 0, _ c: UInt64 = 0, _ d: UInt64 = 0,
         _ e: UInt64 = 0, _ f: UInt64 = 0) {
        words = (operation.rawValue, a, b, c, d, e, f, 0)
    }

    init() { words = (0, 0, 0, 0, 0, 0, 0, 0) }

    var operation: NativeOperation? { NativeOperation(rawValue: words.0) }
    var arguments: [UInt64] { [words.1, words.2, words.3, words.4, words.5, words.6] }
}

/// One response: `status` 0 for success, a positive errno for a failed call, `-1` for a fault.
struct NativeResponse {
    static let faulted: Int64 = -1

    var status: Int64
    var value: UInt64
    var payload: [UInt8] = []
}
#endif
