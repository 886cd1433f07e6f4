import Testing
import VMCore
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
