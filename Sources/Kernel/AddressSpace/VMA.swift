import VMCore

/// Flags of a virtual memory area (Linux: `vm_flags_t`, `VM_*` in `include/linux/mm.h`).
public struct VMFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let read = VMFlags(rawValue: 1 << 0)
    public static let write = VMFlags(rawValue: 1 << 1)
    public static let exec = VMFlags(rawValue: 1 << 2)
    public static let shared = VMFlags(rawValue: 1 << 3)
    public static let mayRead = VMFlags(rawValue: 1 << 4)
    public static let mayWrite = VMFlags(rawValue: 1 << 5)
    public static let mayExec = VMFlags(rawValue: 1 << 6)
    public static let mayShare = VMFlags(rawValue: 1 << 7)
    /// Not copied into a child by fork (Linux: `VM_DONTCOPY`, set by MADV_DONTFORK).
    public static let dontCopy = VMFlags(rawValue: 1 << 8)
    /// Charged to the overcommit limit (Linux: `VM_ACCOUNT`).
    public static let account = VMFlags(rawValue: 1 << 9)
    /// MADV_HUGEPAGE was given (Linux: `VM_HUGEPAGE`).
    public static let hugepage = VMFlags(rawValue: 1 << 10)
    /// MADV_NOHUGEPAGE was given (Linux: `VM_NOHUGEPAGE`).
    public static let noHugepage = VMFlags(rawValue: 1 << 11)
    /// Soft-dirty tracking bit, set on new VMAs (Linux: `VM_SOFTDIRTY`).
    public static let softDirty = VMFlags(rawValue: 1 << 12)

    /// The read/write/exec bits as a protection.
    public var protection: Protection {
        var p: Protection = []
        if contains(.read) { p.insert(.read) }
        if contains(.write) { p.insert(.write) }
        if contains(.exec) { p.insert(.execute) }
        return p
    }

    /// The flags with read/write/exec replaced by `prot`.
    public func with(protection prot: Protection) -> VMFlags {
        var f = subtracting([.read, .write, .exec])
        if prot.contains(.read) { f.insert(.read) }
        if prot.contains(.write) { f.insert(.write) }
        if prot.contains(.execute) { f.insert(.exec) }
        return f
    }

    /// The two-letter mnemonics of smaps' `VmFlags` line, in Linux's order (`show_smap_vma_flags()`).
    public var mnemonics: String {
        let table: [(VMFlags, String)] = [
            (.read, "rd"), (.write, "wr"), (.exec, "ex"), (.shared, "sh"), (.mayRead, "mr"), (.mayWrite, "mw"),
            (.mayExec, "me"), (.mayShare, "ms"), (.dontCopy, "dc"), (.account, "ac"), (.softDirty, "sd"),
            (.hugepage, "hg"), (.noHugepage, "nh"),
        ]
        return table.filter { contains($0.0) }.map(\.1).joined(separator: " ")
    }
}

/// A virtual memory area: a page-aligned range `[start, end)` of one address space with one set of
/// flags (Linux: `struct vm_area_struct`).
public struct VMA: Sendable {
    public var start: VirtualAddress
    public var end: VirtualAddress
    public var flags: VMFlags
    /// Page offset of `start` in the backing object; for private anonymous memory, `start`'s page
    /// number at creation, which mremap keeps (Linux: `vm_pgoff`).
    public var pgoff: UInt64
    /// Identity of the anonymous rmap root, 0 until the first fault (Linux: `vm_area_struct.anon_vma`).
    public var anonVMA: Int
    /// The shmem object behind a shared anonymous mapping (Linux: `vm_file` of `shmem_zero_setup()`).
    public var sharedObject: SharedMemoryObject?
    /// The name `/proc/PID/maps` shows (`[heap]`), if any.
    public var name: String?

    public var length: UInt64 { end - start }
    public var isShared: Bool { flags.contains(.shared) }
    @inlinable public func contains(_ va: VirtualAddress) -> Bool { va >= start && va < end }

    /// Object page index of `va` (Linux: `linear_page_index()`).
    public func pageIndex(of va: VirtualAddress) -> UInt64 { pgoff + ((va - start) >> PageGeometry.pageShift) }

    /// Whether `next`, starting at this VMA's end, may be merged into it (Linux: `is_mergeable_vma()`,
    /// `is_mergeable_anon_vma()`, and the `vm_pgoff` continuity test of `can_vma_merge_after()`).
    func canMerge(with next: VMA) -> Bool {
        guard end == next.start, flags == next.flags, name == next.name,
              sharedObject === next.sharedObject,
              pgoff + (length >> PageGeometry.pageShift) == next.pgoff else { return false }
        return anonVMA == 0 || next.anonVMA == 0 || anonVMA == next.anonVMA
    }
}
