import VMCore
import PhysicalMemory

/// Flags of `mmap` the model understands; all mappings are anonymous (Linux: `MAP_*`).
public struct MapFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let shared = MapFlags(rawValue: 1 << 0)
    public static let `private` = MapFlags(rawValue: 1 << 1)
    /// Place exactly at the address, replacing what is there (Linux: `MAP_FIXED`).
    public static let fixed = MapFlags(rawValue: 1 << 2)
    /// Place exactly at the address, failing with EEXIST if it is taken (Linux: `MAP_FIXED_NOREPLACE`).
    public static let fixedNoReplace = MapFlags(rawValue: 1 << 3)
    /// Do not charge the mapping to the overcommit limit (Linux: `MAP_NORESERVE`).
    public static let noReserve = MapFlags(rawValue: 1 << 4)
    /// The mapping is a thread's stack (Linux: `MAP_STACK`); since 6.7 it gets `VM_NOHUGEPAGE` where
    /// the design says so (`KernelDesign.mapStackDisablesHugepages`).
    public static let stack = MapFlags(rawValue: 1 << 5)
}

extension AddressSpace {
    /// Maps anonymous memory (Linux: `do_mmap()` → `mmap_region()`, with `get_unmapped_area()`).
    ///
    /// Errors as Linux: EINVAL for a zero length, neither or both of shared/private, or a misaligned
    /// fixed address; ENOMEM when no room is left, the length overflows, the map count would exceed
    /// `max_map_count`, or overcommit refuses; EPERM below `mmap_min_addr`; EEXIST for a taken
    /// `fixedNoReplace` range.
    public func mmap(address hint: VirtualAddress? = nil, length: UInt64, protection: Protection,
                     flags: MapFlags) throws(Errno) -> VirtualAddress {
        var record = ZapRecord()
        return try mmap(address: hint, length: length, protection: protection, flags: flags, recording: &record)
    }

    /// `mmap`, adding what a `fixed` mapping's unmapping of what was there did to `record` (for
    /// simulated time's charge of the call).
    public func mmap(address hint: VirtualAddress? = nil, length: UInt64, protection: Protection,
                     flags: MapFlags, recording record: inout ZapRecord) throws(Errno) -> VirtualAddress {
        guard length > 0 else { throw .EINVAL }
        guard flags.contains(.shared) != flags.contains(.private) else { throw .EINVAL }
        let rounded = VirtualAddress(length).alignedUp(PageGeometry.pageSize).rawValue
        guard rounded != 0, rounded <= PageGeometry.userAddressLimit else { throw .ENOMEM }
        let isFixed = flags.contains(.fixed) || flags.contains(.fixedNoReplace)
        if isFixed, let hint, !hint.isAligned(PageGeometry.pageSize) { throw .EINVAL }

        return try mmapLock.withWriteLock { () throws(Errno) -> VirtualAddress in
            guard !hasExited else { throw .EINVAL }
            let start: VirtualAddress
            if isFixed {
                let fixedAt = hint ?? VirtualAddress(0)
                guard fixedAt.rawValue <= PageGeometry.userAddressLimit - rounded else { throw .ENOMEM }
                guard fixedAt >= Self.mmapMinAddress else { throw .EPERM }
                if vmas.intersects(fixedAt, fixedAt + rounded) {
                    if flags.contains(.fixedNoReplace) { throw .EEXIST }
                }
                start = fixedAt
            } else {
                // Linux 6.7+ (6.12+: lengths that are multiples of 2 MiB only): private anonymous
                // mappings without a hint start on a 2 MiB boundary, so THPs can map them whole
                // (`__get_unmapped_area()` → `thp_get_unmapped_area_vmflags()`; 6.7 to 6.11:
                // `__thp_get_unmapped_area()` gives up below 2 MiB only).
                let design = kernel.design
                let alignTHP = design.alignsLargeAnonymousMappings && hint == nil && !flags.contains(.shared)
                    && (design.alignsOnlyPMDMultiples ? rounded % PageGeometry.pmdSize == 0 : rounded >= PageGeometry.pmdSize)
                start = try unmappedArea(length: rounded, hint: hint, alignment: alignTHP ? PageGeometry.pmdSize : PageGeometry.pageSize)
            }
            guard vmas.count < Self.maxMapCount else { throw .ENOMEM }
            var vmFlags = VMFlags([.mayRead, .mayWrite, .mayExec]).with(protection: protection)
            // Linux 6.7+: `calc_vm_flag_bits()` turns MAP_STACK into VM_NOHUGEPAGE.
            if flags.contains(.stack) && kernel.design.mapStackDisablesHugepages { vmFlags.insert(.noHugepage) }
            if flags.contains(.shared) {
                vmFlags.formUnion([.shared, .mayShare])
            } else if protection.contains(.write) && !flags.contains(.noReserve) {
                guard overcommitAllows(pages: rounded >> PageGeometry.pageShift) else { throw .ENOMEM }
                vmFlags.insert(.account)
            }
            if isFixed { unmapLocked(start, start + rounded, recording: &record) }
            var vma = VMA(start: start, end: start + rounded, flags: vmFlags,
                          pgoff: start.pageNumber, anonVMA: 0, sharedObject: nil, name: nil)
            if flags.contains(.shared) {
                vma.pgoff = 0
                vma.sharedObject = SharedMemoryObject(pages: Int(rounded >> PageGeometry.pageShift))
            }
            insertVMA(vma)
            let i = vmas.firstIndex(endingAbove: start)
            mergeVMAs(around: i..<(i + 1))
            return start
        }
    }

    /// Finds room for `length` bytes: the hint if it is free, otherwise the highest gap below
    /// `mmapBase`, starting at a multiple of `alignment` (Linux: `arch_get_unmapped_area_topdown()`,
    /// `vm_unmapped_area()` with `align_mask`). Throws ENOMEM when none is left.
    func unmappedArea(length: UInt64, hint: VirtualAddress?, alignment: UInt64 = PageGeometry.pageSize) throws(Errno) -> VirtualAddress {
        if let hint {
            let aligned = hint.alignedUp(PageGeometry.pageSize)
            if aligned >= Self.mmapMinAddress, aligned.rawValue <= PageGeometry.userAddressLimit - length,
               !vmas.intersects(aligned, aligned + length) {
                return aligned
            }
        }
        var ceiling = mmapBase
        var i = vmas.firstIndex(endingAbove: ceiling)
        // Walk the gaps downwards from the base.
        while true {
            let floor = i > 0 ? vmas[i - 1].end : Self.mmapMinAddress
            let gapTop = min(ceiling, i < vmas.count ? vmas[i].start : ceiling)
            if gapTop > floor && gapTop - floor >= length {
                let start = (gapTop - length).alignedDown(alignment)
                if start >= floor { return start }
            }
            if i == 0 { throw .ENOMEM }
            i -= 1
            ceiling = vmas[i].start
        }
    }

    /// The heuristic overcommit check (Linux: `__vm_enough_memory()` with `vm.overcommit_memory = 0`):
    /// refuse a single mapping larger than all of memory.
    func overcommitAllows(pages: UInt64) -> Bool {
        pages <= UInt64(kernel.memory.totalPages)
    }
}
