import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

func expectClean(_ kernel: Kernel, sourceLocation: SourceLocation = #_sourceLocation) {
    let problems = kernel.checkInvariants()
    #expect(problems.isEmpty, "\(problems.prefix(5))", sourceLocation: sourceLocation)
}

func anon(_ mm: AddressSpace, _ length: UInt64, prot: Protection = .readWrite, at: VirtualAddress? = nil) throws -> VirtualAddress {
    try mm.mmap(address: at, length: length, protection: prot, flags: at == nil ? .private : [.private, .fixed])
}

func pattern(_ seed: UInt8, _ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) } }

/// A 16 MiB data-mode 2.6.38 kernel without THP whose watermarks (64/256/512 pages) reclaim early,
/// and one process that has written the first bytes (`bytes`, each page's index first) of all but
/// 200 of its free pages: kswapd is woken and has not run yet.
func kernelUnderPressure(bytes: (Int) -> [UInt8] = { [UInt8(truncatingIfNeeded: $0)] }) throws
    -> (kernel: Kernel, mm: AddressSpace, start: VirtualAddress, pages: Int) {
    let kernel = Kernel(KernelConfiguration(memoryBytes: 16 << 20, mode: .data,
                                            watermarks: Watermarks(min: 64, low: 256, high: 512), design: .linux2_6_38,
                                            hugepageSettings: TransparentHugepageSettings(enabled: .never, defrag: .never, useZeroPage: false)))
    let mm = try #require(kernel.createAddressSpace())
    let pages = kernel.memory.freePages - 200
    let start = try anon(mm, UInt64(pages) * 4096)
    for i in 0..<pages { try mm.write(start + UInt64(i) * 4096, bytes(i)).get() }
    return (kernel, mm, start, pages)
}
