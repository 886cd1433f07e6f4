import Testing
import VMCore
import Kernel

/// A hugepage policy written outside the Kernel module through its public API: huge PMDs at a fault
/// only at addresses from 1 GiB up, 4 KiB pages below, and no promotion later.
struct HugeAboveOneGiB: HugepagePolicy {
    static let threshold = VirtualAddress(1 << 30)

    func faultOrders(in vma: VMA, at address: VirtualAddress, among candidates: FolioOrders,
                     settings: TransparentHugepageSettings) -> FolioOrders {
        address >= Self.threshold ? candidates.intersection(.pmd) : []
    }
    func khugepagedMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool { false }
    func madviseMayCollapse(_ vma: VMA, settings: TransparentHugepageSettings) -> Bool { false }
    func defersSplit(partiallyMapped: Bool) -> Bool { partiallyMapped }
    func splitsUnderused(settings: TransparentHugepageSettings) -> Bool { false }
}

@Suite("A policy defined outside the Kernel module")
struct HugeAboveOneGiBTests {
    func kernel(_ design: KernelDesign) -> (Kernel, AddressSpace) {
        var configuration = KernelConfiguration(memoryBytes: 64 << 20, watermarks: .zero, design: design)
        configuration.policy = HugeAboveOneGiB()
        let kernel = Kernel(configuration)
        return (kernel, kernel.createAddressSpace()!)
    }

    @Test("faults below 1 GiB map 4 KiB pages, faults above map 2 MiB, whatever enabled says",
          arguments: KernelDesign.all)
    func faults(_ design: KernelDesign) throws {
        let (kernel, mm) = kernel(design)
        #expect(kernel.hugepagePolicy is HugeAboveOneGiB)
        let low = try mm.mmap(address: VirtualAddress(512 << 20), length: 4 << 20, protection: .readWrite,
                              flags: [.private, .fixed])
        let high = try mm.mmap(address: VirtualAddress(2 << 30), length: 4 << 20, protection: .readWrite,
                               flags: [.private, .fixed])
        try mm.write(low + 4096, [1]).get()
        try mm.write(high + 4096, [2]).get()
        #expect(mm.translate(low + 4096)?.level == .pte)
        #expect(mm.translate(high + 4096)?.level == .pmd)
        #expect(mm.smaps(startingAt: low)?.thpEligible == 0 && mm.smaps(startingAt: high)?.thpEligible == 1)
        #expect(kernel.vmstat[.thpFaultAlloc] == 1)
        #expect(try mm.read(high + 4095, count: 2).get() == [0, 2])
        // No promotion: khugepaged never registers the process, MADV_COLLAPSE refuses.
        #expect(!mm.isRegisteredWithKhugepaged)
        #expect(throws: Errno.EINVAL) { try mm.madvise(low, length: 4 << 20, advice: .collapse) }
        #expect(kernel.checkInvariants().isEmpty)
    }
}
