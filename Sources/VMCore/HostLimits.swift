#if canImport(Glibc)
import Glibc
#endif

/// A run the host cannot hold: the host memory it would need and the limit it would pass. Front ends
/// refuse such a run up front instead of letting the host fail it halfway (an allocation trap, or
/// the OOM killer).
public struct HostMemoryShortfall: Error, Sendable, Equatable, CustomStringConvertible {
    /// What asks for the memory, as the user wrote it (`--size 1T`, `memory 1024G`).
    public var request: String
    /// Bytes needed: of host memory, or with `addressSpace` of host address space (reserved, not filled).
    public var needed: UInt64
    public var addressSpace: Bool
    /// Bytes the limit leaves.
    public var limit: UInt64
    /// The limit, named as the user would change it.
    public var limitName: String

    public init(request: String, needed: UInt64, addressSpace: Bool = false, limit: UInt64, limitName: String) {
        self.request = request; self.needed = needed; self.addressSpace = addressSpace
        self.limit = limit; self.limitName = limitName
    }

    public var description: String {
        "\(request) needs about \(ByteCount.human(needed)) of host \(addressSpace ? "address space" : "memory"), "
            + "more than the \(ByteCount.human(limit)) that \(limitName) leaves"
    }
}

/// What the host lets this process have: address space it may still reserve (`ulimit -v`, `ulimit -d`)
/// and memory it may still fill (`MemAvailable`, a cgroup's `memory.max`).
public enum HostLimits {
    /// A limit in bytes left, and its name.
    public struct Limit: Sendable, Equatable {
        public var bytes: UInt64
        public var name: String
        public init(bytes: UInt64, name: String) { self.bytes = bytes; self.name = name }
    }

    /// The tightest limit on new address space, or nil if there is none: `RLIMIT_AS` less `VmSize`, and
    /// `RLIMIT_DATA` less `VmData` (private writable mappings count there, `MAP_NORESERVE` or not).
    public static func addressSpace() -> Limit? {
        #if canImport(Glibc)
        let status = read("/proc/self/status")
        var tightest: Limit?
        for (resource, field, name) in [(RLIMIT_AS, "VmSize:", "ulimit -v (RLIMIT_AS)"), (RLIMIT_DATA, "VmData:", "ulimit -d (RLIMIT_DATA)")] {
            var r = rlimit()
            guard getrlimit(__rlimit_resource_t(resource.rawValue), &r) == 0, r.rlim_cur != rlim_t.max else { continue }   // RLIM_INFINITY
            let used = status.flatMap { kilobytes($0, field) } ?? 0
            let left = UInt64(r.rlim_cur) > used ? UInt64(r.rlim_cur) - used : 0
            if tightest == nil || left < tightest!.bytes { tightest = Limit(bytes: left, name: name) }
        }
        return tightest
        #else
        return nil
        #endif
    }

    /// Memory the host can still give this process, or nil if unknown: `MemAvailable` of
    /// `/proc/meminfo`, or the cgroup's `memory.max` less `memory.current` when that is less.
    public static func available() -> Limit? {
        var tightest = read("/proc/meminfo").flatMap { kilobytes($0, "MemAvailable:") }
            .map { Limit(bytes: $0, name: "MemAvailable in /proc/meminfo") }
        if let max = read("/sys/fs/cgroup/memory.max").flatMap({ UInt64($0.split(separator: "\n").first ?? "") }),
           let current = read("/sys/fs/cgroup/memory.current").flatMap({ UInt64($0.split(separator: "\n").first ?? "") }) {
            let left = max > current ? max - current : 0
            if tightest == nil || left < tightest!.bytes { tightest = Limit(bytes: left, name: "the cgroup's memory.max") }
        }
        return tightest
    }

    /// The shortfall of a run that reserves `reserved` bytes of address space and fills `resident`
    /// bytes of host memory, or nil when both fit (the limits are this host's unless given).
    public static func shortfall(_ request: String, reserved: UInt64, resident: UInt64,
                                 addressSpace: Limit? = addressSpace(), available: Limit? = available()) -> HostMemoryShortfall? {
        if let limit = addressSpace, reserved > limit.bytes {
            return HostMemoryShortfall(request: request, needed: reserved, addressSpace: true, limit: limit.bytes, limitName: limit.name)
        }
        if let limit = available, resident > limit.bytes {
            return HostMemoryShortfall(request: request, needed: resident, limit: limit.bytes, limitName: limit.name)
        }
        return nil
    }

    /// The value in bytes of a `Name:  123 kB` line.
    static func kilobytes(_ text: String, _ field: String) -> UInt64? {
        for line in text.split(separator: "\n") where line.hasPrefix(field) {
            return line.dropFirst(field.count).split(separator: " ").first.flatMap { UInt64($0) }.map { $0 << 10 }
        }
        return nil
    }

    /// A small text file's contents, or nil.
    static func read(_ path: String) -> String? {
        #if canImport(Glibc)
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            bytes.append(contentsOf: buffer[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
        #else
        return nil
        #endif
    }
}
