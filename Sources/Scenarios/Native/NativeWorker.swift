#if canImport(Glibc)
import Glibc

/// The side of a native scenario process that runs in the process itself: it serves the host's
/// requests with real system calls and real loads and stores on its own address space.
///
/// Workers are forked from a single-threaded host (checked by `NativeScenarioBackend.start`) and
/// are single-threaded themselves, so the Swift runtime and malloc are safe to use after `fork()`.
/// Each worker ignores `SIGCHLD`, so the kernel reaps its children when they exit.
enum NativeWorker {
    /// Serves requests on `channels[own]` until `exit` or until the host goes away; never returns.
    static func serve(own: Int, channels: [NativeChannel]) -> Never {
        let channel = channels[own]
        while true {
            var request = NativeRequest()
            let received = withUnsafeMutableBytes(of: &request.words) { NativeChannel.readAll(channel.requestRead, $0) }
            guard received, let operation = request.operation else { _exit(0) }
            let a = request.arguments
            var response = NativeResponse(status: 0, value: 0)
            switch operation {
            case .mmap:
                let flags = (a[3] != 0 ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS | (a[4] != 0 ? MAP_FIXED : 0)
                    | (a[5] != 0 ? MAP_STACK : 0)
                let p = Glibc.mmap(pointer(a[0]), size(a[1]), Int32(truncatingIfNeeded: a[2]), flags, -1, 0)
                if Int(bitPattern: p) == -1 { response.status = Int64(errno) } else { response.value = UInt64(UInt(bitPattern: p)) }
            case .munmap:
                if Glibc.munmap(pointer(a[0]), size(a[1])) != 0 { response.status = Int64(errno) }
            case .mprotect:
                if Glibc.mprotect(pointer(a[0]), size(a[1]), Int32(truncatingIfNeeded: a[2])) != 0 { response.status = Int64(errno) }
            case .mremap:
                switch NativeSyscalls.mremap(a[0], a[1], a[2], destination: a[3] != 0 ? a[4] : nil) {
                case .success(let address): response.value = address
                case .failure(let e): response.status = Int64(e.code)
                }
            case .madvise:
                if Glibc.madvise(pointer(a[0]), size(a[1]), Int32(truncatingIfNeeded: a[2])) != 0 { response.status = Int64(errno) }
            case .touchRead:
                response = touch(start: a[0], length: a[1], pattern: nil)
            case .touchWrite:
                response = touch(start: a[0], length: a[1], pattern: DataPattern(sequence: a[2], firstOffset: a[3]))
            case .readData:
                if sendReadable(start: a[0], length: a[1], on: channel) { continue }
                response = readData(start: a[0], length: a[1])
            case .pin:
                response.status = Int64(NativePins.pin(address: a[0], length: a[1]))
            case .unpin:
                response.status = Int64(NativePins.unpin(address: a[0], length: a[1]))
            case .fork:
                let child = Int(a[0])
                let pid = Glibc.fork()
                if pid == 0 {
                    // The pins are the parent's (a driver's, for its process): the child does not hold them.
                    NativePins.forget()
                    serve(own: child, channels: channels)
                }
                if pid < 0 { response.status = Int64(errno) } else { response.value = UInt64(pid) }
            case .exit:
                reply(response, on: channel)
                _exit(0)
            }
            reply(response, on: channel)
        }
    }

    /// A length as C's `size_t`, passed through unchanged so the kernel judges it.
    private static func size(_ length: UInt64) -> Int { Int(bitPattern: UInt(length)) }

    private static func pointer(_ address: UInt64) -> UnsafeMutableRawPointer? {
        UnsafeMutableRawPointer(bitPattern: UInt(address))
    }

    private static func reply(_ response: NativeResponse, on channel: NativeChannel) {
        var header = (UInt64(bitPattern: response.status), response.value, UInt64(response.payload.count))
        let ok = withUnsafeBytes(of: &header) { NativeChannel.writeAll(channel.responseWrite, $0) }
            && response.payload.withUnsafeBytes { NativeChannel.writeAll(channel.responseWrite, $0) }
        if !ok { _exit(0) }
    }

    /// Reads one byte per page, or stores the pattern to every byte, up to the first page the
    /// process may not access (`status` −1, `value` = that address).
    private static func touch(start: UInt64, length: UInt64, pattern: DataPattern?) -> NativeResponse {
        guard let maps = NativeMaps.current() else { return NativeResponse(status: Int64(errno), value: 0) }
        let fault = maps.firstFault(start: start, length: length) { pattern == nil ? $0.readable : $0.writable }
        let end = fault ?? start &+ length
        var checksum: UInt64 = 0
        if end > start, let base = pointer(start) {
            if let pattern {
                pattern.fill(UnsafeMutableRawBufferPointer(start: base, count: Int(end - start)))
            } else {
                var offset: UInt64 = 0
                while offset < end - start {
                    checksum &+= UInt64(base.load(fromByteOffset: Int(offset), as: UInt8.self))
                    offset = (start &+ offset + 4096) & ~4095 &- start
                }
            }
        }
        if let fault { return NativeResponse(status: NativeResponse.faulted, value: fault) }
        return NativeResponse(status: 0, value: checksum)
    }

    /// Sends the bytes of a range that is mapped and readable throughout straight from memory, with
    /// no copy: a copy would be charged to the process's memory cgroup, and a scenario that reads
    /// back more than its cgroup's limit would be OOM-killed for it. False (nothing sent) otherwise.
    private static func sendReadable(start: UInt64, length: UInt64, on channel: NativeChannel) -> Bool {
        guard let maps = NativeMaps.current(), maps.firstFault(start: start, length: length) == nil else { return false }
        var address = start
        let end = start &+ length
        while address < end {
            guard let area = maps.areas.first(where: { $0.start <= address && address < $0.end }), area.readable else { return false }
            address = min(end, area.end)
        }
        var header = (UInt64(0), UInt64(0), length)
        let ok = withUnsafeBytes(of: &header) { NativeChannel.writeAll(channel.responseWrite, $0) }
            && (length == 0 || NativeChannel.writeAll(channel.responseWrite, UnsafeRawBufferPointer(start: pointer(start), count: Int(length))))
        if !ok { _exit(0) }
        return true
    }

    /// The bytes of the range: loads where readable, `/proc/self/mem` where not (`PROT_NONE`).
    private static func readData(start: UInt64, length: UInt64) -> NativeResponse {
        guard let maps = NativeMaps.current() else { return NativeResponse(status: Int64(errno), value: 0) }
        if let hole = maps.firstFault(start: start, length: length) {
            return NativeResponse(status: NativeResponse.faulted, value: hole)
        }
        var bytes = [UInt8](repeating: 0, count: Int(length))
        var address = start
        let end = start &+ length
        while address < end, let area = maps.areas.first(where: { $0.start <= address && address < $0.end }) {
            let chunkEnd = min(end, area.end)
            let count = Int(chunkEnd - address)
            let offset = Int(address - start)
            if area.readable {
                bytes.withUnsafeMutableBytes { _ = memcpy($0.baseAddress! + offset, pointer(address)!, count) }
            } else {
                let fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC)
                let n = bytes.withUnsafeMutableBytes { fd < 0 ? -1 : pread($0.baseAddress! + offset, count, address, fd) }
                if fd >= 0 { close(fd) }
                if n != count { return NativeResponse(status: Int64(n < 0 ? errno : EIO), value: address) }
            }
            address = chunkEnd
        }
        return NativeResponse(status: 0, value: 0, payload: bytes)
    }

    private static func pread(_ buffer: UnsafeMutableRawPointer, _ count: Int, _ address: UInt64, _ fd: Int32) -> Int {
        Glibc.pread(fd, buffer, count, off_t(Int64(bitPattern: address)))
    }
}
#endif
