import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

/// A 2 MiB-aligned address where tests map huge-page regions.
let hugeBase = VirtualAddress(0x7f00_0000_0000)

extension UInt64 { static let huge: UInt64 = 2 << 20 }

/// Maps `length` bytes of private anonymous memory at `hugeBase + offset` (MAP_FIXED).
func hugeRegion(_ mm: AddressSpace, _ length: UInt64, offset: UInt64 = 0, prot: Protection = .readWrite,
                advise: Bool = false) throws -> VirtualAddress {
    let a = try anon(mm, length, prot: prot, at: hugeBase + offset)
    if advise { try mm.madvise(a, length: length, advice: .hugepage) }
    return a
}

/// Whether `va` is mapped by a huge PMD.
func isHuge(_ mm: AddressSpace, _ va: VirtualAddress) -> Bool { mm.translate(va)?.level == .pmd }

/// Leaves no free block of order 9 or more but most memory free: takes every free page, then gives
/// back all but every 64th. Returns the pages still held.
func fragmentMemory(_ kernel: Kernel) -> [PFN] {
    var all = [PFN]()
    while let pfn = kernel.memory.allocateFolio(order: .base, kind: .kernel, reserve: .none) { all.append(pfn) }
    var held = [PFN]()
    for pfn in all {
        if pfn.index % 64 == 0 { held.append(pfn) } else { kernel.memory.frames.setRefcount(pfn, 0); kernel.memory.freeFolio(pfn) }
    }
    return held
}

/// Gives back pages `fragmentMemory` held.
func release(_ kernel: Kernel, _ held: [PFN]) {
    for pfn in held { kernel.memory.frames.setRefcount(pfn, 0); kernel.memory.freeFolio(pfn) }
}
