import Testing
import VMCore
import Kernel
import TestSupport

/// A 2 MiB-aligned address for fixed mappings.
private let base = VirtualAddress(1 << 30)

/// Raises a fault as an MMU would: the P bit from the tables, as a walk finds them.
private func fault(_ mm: AddressSpace, _ va: VirtualAddress, _ access: MemoryAccess) -> (FaultOutcome, FaultContext) {
    var fault = FaultContext(cpu: 0, address: va, access: access, present: mm.translate(va) != nil)
    let outcome = mm.handleFault(&fault)
    return (outcome, fault)
}

@Suite("Fault context: what a fault records")
struct FaultContextTests {
    @Test("a 4 KiB anonymous write fault zeroes 4 KiB and maps 4K")
    func smallWriteFault() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 64 * .KiB)
        let (outcome, f) = fault(mm, a, .write)
        #expect(outcome == .handled)
        #expect(f.errorCode == [.user, .write])
        #expect(f.bytesZeroed == 4096 && f.bytesCopied == 0)
        #expect(f.basePages == 1 && f.hugePages == 0)
        #expect(f.mapped == .base)
        #expect(f.resolution == .mapped)
        #expect(f.reclaim == ReclaimWork() && f.compaction == CompactionWork() && f.pagesSwappedIn == 0)
        // The retry finds it mapped; a second fault there changes nothing.
        let (again, g) = fault(mm, a, .write)
        #expect(again == .handled && g.resolution == .retry && g.mapped == nil && g.bytesZeroed == 0)
        expectClean(kernel)
    }

    @Test("a read fault maps the zero page and zeroes nothing; errors stay outcomes", arguments: [KernelDesign.linux2_6_38, .linux6_18])
    func zeroPageAndErrors(design: KernelDesign) throws {
        let kernel = TestMachine.kernel(design: design)
        let mm = try #require(kernel.createAddressSpace())
        let a = try anon(mm, 64 * .KiB)
        let (outcome, f) = fault(mm, a, .read)
        #expect(outcome == .handled && f.mapped == .base && f.bytesZeroed == 0 && f.basePages == 0)
        let (unmapped, g) = fault(mm, VirtualAddress(0x1000), .read)
        #expect(unmapped == .segv(.mapErr) && g.outcome == .segv(.mapErr) && g.mapped == nil)
        #expect(f.outcome == .handled)
        #expect(fault(mm, a, .execute).0 == .segv(.accErr))
    }

    @Test("a huge fault zeroes 2 MiB and maps a PMD", arguments: [KernelDesign.linux2_6_38, .linux6_18])
    func hugeFault(design: KernelDesign) throws {
        let kernel = TestMachine.kernel(memory: 32 << 20, design: design, enabled: .always)
        let mm = try #require(kernel.createAddressSpace())
        _ = try anon(mm, 4 << 20, at: base)
        let (outcome, f) = fault(mm, base + 12345, .write)
        #expect(outcome == .handled)
        #expect(f.hugePages == 1 && f.basePages == 0)
        #expect(f.bytesZeroed == 2 << 20 && f.bytesCopied == 0)
        #expect(f.mapped == .pmd && f.resolution == .mapped)
        expectClean(kernel)
    }

    @Test("COW after fork of a THP copies 4 KiB on linux-6.18 and 2 MiB on linux-2.6.38; the fault carries the P bit",
          arguments: [(KernelDesign.linux6_18, UInt64(4 << 10)), (.linux2_6_38, UInt64(2 << 20))])
    func copyOnWriteOfTHP(design: KernelDesign, copied: UInt64) throws {
        let kernel = TestMachine.kernel(memory: 32 << 20, design: design, enabled: .always)
        let mm = try #require(kernel.createAddressSpace())
        _ = try anon(mm, 2 << 20, at: base)
        try mm.write(base, [1, 2, 3]).get()
        let child = try mm.fork()
        let (outcome, f) = fault(mm, base + 4096, .write)
        #expect(outcome == .handled)
        #expect(f.errorCode == [.present, .write, .user])
        #expect(f.isWriteProtectFault)
        #expect(f.resolution == .copyOnWrite)
        #expect(f.bytesCopied == copied && f.bytesZeroed == 0)
        #expect(f.mapped == (copied == 4096 ? .base : .pmd))
        #expect(try child.read(base, count: 3).get() == [1, 2, 3])
        expectClean(kernel)
    }

    @Test("a write to a page only this mapping holds reuses it: COW, nothing copied")
    func copyOnWriteReuse() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 16 * .KiB)
        try mm.write(a, [7]).get()
        let child = try mm.fork()
        child.exit()
        #expect(mm.translate(a)?.entry.isWritable == false)
        let (outcome, f) = fault(mm, a, .write)
        #expect(outcome == .handled)
        #expect(f.errorCode.contains(.present))
        #expect(f.resolution == .copyOnWrite && f.bytesCopied == 0 && f.basePages == 0)
        expectClean(kernel)
    }

    @Test("a fault under memory pressure records the direct reclaim it did")
    func reclaimUnderPressure() throws {
        let (kernel, mm, _, _) = try kernelUnderPressure()
        let extra = 512
        let b = try anon(mm, UInt64(extra) * 4096)
        var reclaim = ReclaimWork()
        for i in 0..<extra {
            let (outcome, f) = fault(mm, b + UInt64(i) * 4096, .write)
            #expect(outcome == .handled)
            reclaim.reclaimed += f.reclaim.reclaimed
            reclaim.swappedOut += f.reclaim.swappedOut
            if f.reclaim.reclaimed > 0 {
                #expect(f.bytesZeroed == 4096 && f.mapped == .base)
                break
            }
        }
        #expect(reclaim.reclaimed > 0)
        #expect(reclaim.swappedOut > 0)
        expectClean(kernel)
    }

    @Test("a fault on a swapped-out page records the swap-in")
    func swapIn() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 16 * .KiB)
        try mm.write(a, [42]).get()
        #expect(try pageOutToDevice(kernel, mm, a, length: 16 * .KiB) == 1)
        #expect(mm.translate(a) == nil)
        let (outcome, f) = fault(mm, a, .read)
        #expect(outcome == .handled)
        #expect(!f.errorCode.contains(.present))
        #expect(f.pagesSwappedIn == 1)
        #expect(f.basePages == 0 && f.bytesZeroed == 0)
        #expect(f.mapped == .base && f.resolution == .mapped)
        #expect(try mm.read(a, count: 1).get() == [42])
        expectClean(kernel)
    }

    @Test("the software MMU resolves a protection fault on the zero page with a private page")
    func softwareMMUPresentBit() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 16 * .KiB)
        #expect(try mm.read(a, count: 1).get() == [0])      // the zero page, read-only
        let frame = try mm.access(a, .write).get()           // a protection fault, copied from the zero page
        #expect(frame != kernel.zeroPage)
        #expect(mm.translate(a)?.entry.isWritable == true)
        expectClean(kernel)
    }
}
