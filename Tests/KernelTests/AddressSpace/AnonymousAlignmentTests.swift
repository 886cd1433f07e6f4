import Testing
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// Where large anonymous mmaps are placed (6.7's alignment, 6.12's rule) and what MAP_STACK does
/// (6.7+: VM_NOHUGEPAGE).
@Suite("mmap: THP alignment of anonymous mappings and MAP_STACK")
struct AnonymousAlignmentTests {
    func process(_ design: KernelDesign) -> (Kernel, AddressSpace) {
        let kernel = TestMachine.kernel(memory: 32 << 20, mode: .metadata, design: design, enabled: .always)
        return (kernel, kernel.createAddressSpace()!)
    }

    /// Maps 12 KiB (so the next gap's top is not 2 MiB-aligned), then `length`; returns its start.
    func mapAfterSmall(_ mm: AddressSpace, _ length: UInt64) throws -> VirtualAddress {
        _ = try mm.mmap(length: 12 * .KiB, protection: .readWrite, flags: .private)
        return try mm.mmap(length: length, protection: .readWrite, flags: .private)
    }

    @Test("6.12+: a 4,632 KiB mapping is not aligned, a 4 MiB one is; with 6.7's rule both are", arguments: [false, true])
    func pmdMultiplesOnly(sixSevenRule: Bool) throws {
        var design = KernelDesign.linux6_18
        design.alignsOnlyPMDMultiples = !sixSevenRule
        let (_, mm) = process(design)
        #expect(try mapAfterSmall(mm, 4632 * .KiB).isAligned(2 * .MiB) == sixSevenRule)
        #expect(try mapAfterSmall(mm, 4 * .MiB).isAligned(2 * .MiB))
        #expect(try mapAfterSmall(mm, 1 * .MiB).isAligned(2 * .MiB) == false, "below 2 MiB never")
    }

    @Test("6.18: MAP_STACK makes the mapping VM_NOHUGEPAGE, so a write faults 4 KiB even under always")
    func mapStackNoHugepage() throws {
        let (kernel, mm) = process(.linux6_18)
        let stack = try mm.mmap(length: 2 * .MiB, protection: .readWrite, flags: [.private, .stack])
        #expect(stack.isAligned(2 * .MiB))
        #expect(mm.vmas.vma(containing: stack)!.flags.contains(.noHugepage))
        try mm.write(stack + 2 * .MiB - 8, [1]).get()
        #expect(kernel.vmstat[.thpFaultAlloc] == 0 && kernel.vmstat[.nrAnonPages] == 1)
    }

    @Test("without the MAP_STACK rule (and in the 2010 design) a stack gets a THP at its first write",
          arguments: ["linux-6.18 without the rule", "linux-2.6.38"])
    func mapStackIgnored(variant: String) throws {
        var design = variant == "linux-2.6.38" ? KernelDesign.linux2_6_38 : KernelDesign.linux6_18
        design.mapStackDisablesHugepages = false
        let (kernel, mm) = process(design)
        _ = try mm.mmap(length: 2 * .MiB, protection: .readWrite, flags: [.private, .stack])
        let stack = try mm.mmap(length: 4 * .MiB, protection: .readWrite, flags: [.private, .stack])
        #expect(!mm.vmas.vma(containing: stack)!.flags.contains(.noHugepage))
        try mm.write(stack + 4 * .MiB - 8, [1]).get()
        #expect(kernel.vmstat[.thpFaultAlloc] == 1)
    }

    @Test("the designs: MAP_STACK's rule comes with 6.7's alignment")
    func designs() {
        #expect(KernelDesign.linux6_18.mapStackDisablesHugepages && KernelDesign.linux6_18.alignsOnlyPMDMultiples)
        #expect(!KernelDesign.linux2_6_38.mapStackDisablesHugepages)
    }
}
