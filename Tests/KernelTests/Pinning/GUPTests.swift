import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("GUP, gup-fast and an O_DIRECT-like device (linux-2.6.38)")
struct GUPTests {
    @Test("GUP of part of a huge page pins the tails without splitting it")
    func gupHugeTail() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a, [1]).get()
        let head = mm.translate(a)!.frame
        let pages = try mm.getUserPages(a + 20 * .KiB, count: 3, write: true).get()
        #expect(pages == [head + 5, head + 6, head + 7])
        let frames = kernel.memory.frames
        #expect(frames.refcount(head) == 4 && frames.refcount(head + 5) == 1 && frames.refcount(head + 8) == 0)
        #expect(isHuge(mm, a) && kernel.vmstat[.thpSplitPage] == 0)
        kernel.putUserPages(pages)
        expectClean(kernel)
    }

    @Test("GUP for writing breaks COW first, so the pin holds the page this process writes")
    func gupBreaksCOW() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 16 * .KiB)
        try mm.write(a, [7]).get()
        let child = try mm.fork()
        let pages = try mm.getUserPages(a, count: 1, write: true).get()
        #expect(pages == [mm.translate(a)!.frame] && pages[0] != child.translate(a)!.frame)
        kernel.putUserPages(pages)
        expectClean(kernel)
    }

    @Test("gup-fast pins what is mapped without locks and leaves the rest to the slow path, which faults it in")
    func gupFast() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let a = try hugeRegion(mm, 4 * .MiB)
        try mm.write(a, [1]).get()  // the first 2 MiB is a huge page; the second is empty
        let pages = try mm.getUserPagesFast(a + 2 * .MiB - 8 * .KiB, count: 4, write: true, cpu: 0).get()
        #expect(pages.count == 4)
        #expect(pages[0] == mm.translate(a + 2 * .MiB - 8 * .KiB)!.frame)
        #expect(pages[2] == mm.translate(a + 2 * .MiB)!.frame)
        kernel.putUserPages(pages)
        #expect(mm.getUserPages(a + 8 * .MiB, count: 1, write: false) == .failure(.EFAULT))
        #expect(mm.getUserPagesFast(hugeBase + 64 * .MiB, count: 1, write: false, cpu: 1) == .failure(.EFAULT))
        expectClean(kernel)
    }

    @Test("a split while a read DMA is in flight: the pin moves to the subpage and the data lands where the program reads")
    func dmaAcrossSplit() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        try mm.write(a, [UInt8](repeating: 1, count: 100)).get()
        let device = DirectIODevice(kernel: kernel)
        let request = try device.submit(.read, in: mm, buffer: a + 1 * .MiB + 100, length: 6000, cpu: 0).get()
        try mm.munmap(a + 4 * .KiB, length: 4 * .KiB)  // splits the huge page under the pins
        #expect(kernel.vmstat[.thpSplitPage] == 1)
        let data = (0..<6000).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
        device.completeRead(request, data: data)
        #expect(try mm.read(a + 1 * .MiB + 100, count: 6000).get() == data)
        expectClean(kernel)
    }

    @Test("munmap while DMA is in flight: the pinned frames are not reused, and go back when unpinned")
    func dmaAfterMunmap() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 64 * .KiB)
        try mm.write(a, [UInt8](repeating: 5, count: Int(64 * .KiB))).get()
        let device = DirectIODevice(kernel: kernel)
        let request = try device.submit(.read, in: mm, buffer: a, length: Int(64 * .KiB), cpu: 0).get()
        try mm.munmap(a, length: 64 * .KiB)
        let b = try anon(mm, 1 * .MiB)
        try mm.write(b, [UInt8](repeating: 9, count: Int(1 * .MiB))).get()
        let reused = (0..<256).compactMap { mm.translate(b + UInt64($0) * 4096)?.frame }.filter { request.pages.contains($0) }
        #expect(reused.isEmpty, "a pinned frame was given to a new mapping")
        let free = kernel.memory.freePages
        device.completeRead(request, data: [UInt8](repeating: 0xDD, count: Int(64 * .KiB)))
        #expect(kernel.memory.freePages == free + 16)
        #expect(try mm.read(b, count: Int(1 * .MiB)).get().allSatisfy { $0 == 9 })
        expectClean(kernel)
    }

    @Test("fork vs O_DIRECT (2010): a read DMA into a private page is lost to the parent after fork and a COW write")
    func forkVersusDirectIO() throws {
        let (kernel, mm) = TestMachine.process()
        let a = try anon(mm, 4 * .KiB)
        try mm.write(a, [UInt8](repeating: 0, count: 4096)).get()
        let device = DirectIODevice(kernel: kernel)
        // The program reads 512 bytes from the device into the first half of its buffer page …
        let request = try device.submit(.read, in: mm, buffer: a, length: 512, cpu: 0).get()
        // … while another thread forks and then writes the other half of the same page.
        let child = try mm.fork()
        try mm.write(a + 2048, [1]).get()
        device.completeRead(request, data: [UInt8](repeating: 0xAA, count: 512))
        // The parent's write copied the page before the DMA finished: the parent never sees the data,
        // and the child — which never asked for it — does. Linux fixed this much later (PG_anon_exclusive,
        // FOLL_PIN); the 2010 design has the race, as the seed thread says.
        #expect(try mm.read(a, count: 512).get().allSatisfy { $0 == 0 })
        #expect(try child.read(a, count: 512).get().allSatisfy { $0 == 0xAA })
        expectClean(kernel)
    }

    @Test("a write DMA reads the bytes the program wrote, through a huge page's tails")
    func dmaWrite() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let a = try hugeRegion(mm, 2 * .MiB)
        let bytes = pattern(4, 9000)
        try mm.write(a + 300, bytes).get()
        let device = DirectIODevice(kernel: kernel)
        let request = try device.submit(.write, in: mm, buffer: a + 300, length: 9000, cpu: 2).get()
        #expect(device.completeWrite(request) == bytes)
        expectClean(kernel)
    }
}

@Suite("A KVM-like secondary MMU kept coherent by MMU notifiers")
struct SecondaryMMUTests {
    /// Every secondary mapping must match what the primary maps now.
    func coherent(_ s: SecondaryMMU, _ mm: AddressSpace) -> Bool {
        s.mappings.allSatisfy { m in
            guard let t = mm.translate(m.address) else { return false }
            return m.huge ? (t.level == .pmd && t.entry.pfn == m.frame) : (t.level == .pte && t.frame == m.frame)
        }
    }

    @Test("it maps 2 MiB where the primary does, takes no references, and drops what munmap, COW and splits change")
    func coherence() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let s = SecondaryMMU(mirroring: mm)
        let a = try hugeRegion(mm, 4 * .MiB)
        let m = try #require(s.fault(at: a + 5000, write: true))
        #expect(m.huge && m.address == a)
        let head = mm.translate(a)!.frame
        #expect(kernel.memory.frames.refcount(head) == 1, "the secondary MMU took a reference")
        s.fault(at: a + 2 * .MiB, write: false)
        #expect(s.mappings.count == 2 && coherent(s, mm))
        let child = try mm.fork()           // write-protects: the writable secondary mapping goes
        #expect(!s.mappings.contains { $0.address == a } && coherent(s, mm))
        s.fault(at: a, write: true)         // COW into a new huge page
        #expect(coherent(s, mm) && s.mappings.first { $0.address == a }?.frame != head)
        try mm.munmap(a + 8 * .KiB, length: 4 * .KiB)  // splits
        #expect(coherent(s, mm))
        s.fault(at: a + 16 * .KiB, write: true)
        #expect(s.mappings.contains { $0.address == a + 16 * .KiB && !$0.huge } && coherent(s, mm))
        child.exit()
        mm.exit()
        #expect(s.mappings.isEmpty)
        expectClean(kernel)
    }
}
