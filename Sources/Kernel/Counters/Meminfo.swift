import VMCore
import PhysicalMemory

/// The lines of `/proc/meminfo` the model knows, in Linux's order (Linux: `meminfo_proc_show()`).
public struct Meminfo: Sendable, Equatable {
    /// Name → bytes, in print order.
    public var fields: [(name: String, bytes: UInt64)]

    public static func == (a: Meminfo, b: Meminfo) -> Bool {
        a.fields.map(\.name) == b.fields.map(\.name) && a.fields.map(\.bytes) == b.fields.map(\.bytes)
    }

    public subscript(name: String) -> UInt64? { fields.first { $0.name == name }?.bytes }

    /// The text `/proc/meminfo` would show.
    public var text: String {
        fields.map { ProcFormat.line($0.name, $0.bytes >> 10) }.joined(separator: "\n") + "\n"
    }
}

extension Kernel {
    /// Whether `nr_anon_pages` counts the pages of PMD-mapped huge pages too (Linux 4.8+:
    /// `NR_ANON_MAPPED`), or only small pages (2.6.38). The one place the design's
    /// `anonPagesCountHugePages` is read.
    @inline(__always) var anonPagesCountHugePages: Bool { design.anonPagesCountHugePages }

    /// Bytes of mapped anonymous memory, huge pages included whichever way the design counts them
    /// (Linux 2.6.38's `meminfo_proc_show()` adds `NR_ANON_TRANSPARENT_HUGEPAGES` back in).
    var anonPagesBytes: UInt64 {
        var pages = vmstat[.nrAnonPages]
        if !anonPagesCountHugePages { pages += vmstat[.nrAnonTransparentHugepages] * PageGeometry.pmdOrder.pages }
        return UInt64(pages) * PageGeometry.pageSize
    }

    /// A snapshot of `/proc/meminfo`.
    public func meminfo() -> Meminfo {
        let page = PageGeometry.pageSize
        let free = UInt64(memory.freePages) * page
        let shmem = UInt64(vmstat[.nrShmem]) * page
        // The file lists are empty: the model has no page cache (shmem pages are on no list).
        let lists = lru.pages
        return Meminfo(fields: [
            ("MemTotal", UInt64(memory.totalPages) * page),
            ("MemFree", free),
            ("MemAvailable", free),
            ("Buffers", 0),
            ("Cached", shmem),
            ("SwapCached", UInt64(swapDevice.cachedPages) * page),
            ("Active", UInt64(lists.active) * page),
            ("Inactive", UInt64(lists.inactive) * page),
            ("Active(anon)", UInt64(lists.active) * page),
            ("Inactive(anon)", UInt64(lists.inactive) * page),
            ("Active(file)", 0),
            ("Inactive(file)", 0),
            ("SwapTotal", UInt64(swapDevice.capacity) * page),
            ("SwapFree", UInt64(swapDevice.capacity - swapDevice.usedSlots) * page),
            ("AnonPages", anonPagesBytes),
            ("Mapped", 0),
            ("Shmem", shmem),
            ("PageTables", UInt64(vmstat[.nrPageTablePages]) * page),
            ("AnonHugePages", UInt64(vmstat[.nrAnonTransparentHugepages]) * PageGeometry.pmdSize),
            ("ShmemHugePages", 0),
            ("ShmemPmdMapped", 0),
            ("Hugepagesize", PageGeometry.pmdSize),
        ])
    }

    /// A page-state counter of `/proc/vmstat`: free pages and the LRU lists' sizes are read from their
    /// owners (the allocator, the lists), the others from the per-CPU counters.
    public func vmstatState(_ state: VMState) -> Int {
        switch state {
        case .nrFreePages: memory.freePages
        case .nrInactiveAnon: lru.pages.inactive
        case .nrActiveAnon: lru.pages.active
        default: vmstat[state]
        }
    }

    /// The text of `/proc/vmstat`: page states first, then events, in Linux's order.
    public func vmstatText() -> String {
        var lines = [String]()
        for state in VMState.allCases {
            let value = vmstatState(state)
            lines.append("\(state.name) \(value)")
        }
        for event in VMEvent.allCases { lines.append("\(event.name) \(vmstat[event])") }
        for (name, value) in policyCounters { lines.append("\(name) \(value)") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Every vmstat counter by name (states and events), for programs.
    public func vmstatValues() -> [String: Int] {
        var values = [String: Int]()
        for state in VMState.allCases { values[state.name] = vmstatState(state) }
        for event in VMEvent.allCases { values[event.name] = vmstat[event] }
        for (name, value) in policyCounters { values[name] = value }
        return values
    }
}
