import Testing
import VMCore
import PhysicalMemory

@Suite("Physical memory: frame table, buddy allocator, folios")
struct BuddyAllocatorTests {
    @Test("a fresh allocator holds all memory in max-order blocks")
    func freshState() {
        let memory = PhysicalMemory(bytes: 64 << 20, mode: .metadata, watermarks: .zero)
        #expect(memory.freePages == 16384)
        let blocks = memory.buddy.freeBlocksPerOrder
        #expect(blocks[10] == 16 && blocks[0..<10].allSatisfy { $0 == 0 })
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }

    @Test("metadata is 16 bytes per frame")
    func frameSize() {
        #expect(FrameTable.bytesPerFrame == 16)
        #expect(MemoryLayout<UInt32>.size * 4 == FrameTable.bytesPerFrame)
    }

    @Test("allocating order 0 splits a max block down, and freeing merges it back")
    func splitAndMerge() {
        let memory = PhysicalMemory(bytes: 4 << 20, mode: .metadata, watermarks: .zero)
        let pfn = memory.buddy.allocate(order: .base)!
        #expect(pfn == PFN(0))
        #expect(memory.buddy.freeBlocksPerOrder == [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
        #expect(memory.checkPhysicalInvariants().count == 1) // the allocated frame has no owner kind yet
        memory.buddy.free(pfn, order: .base)
        #expect(memory.buddy.freeBlocksPerOrder == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }

    @Test("freeing in any order coalesces everything", arguments: [1 as UInt64, 2, 3, 4])
    func randomFrees(seed: UInt64) {
        var rng = SplitMixLocal(seed: seed)
        let memory = PhysicalMemory(bytes: 8 << 20, mode: .metadata, watermarks: .zero)
        var held: [PFN] = []
        while let pfn = memory.allocateFolio(order: PageOrder(Int(rng.next() % 4)), kind: .kernel, zeroed: false) {
            held.append(pfn)
        }
        while let pfn = memory.allocateFolio(order: .base, kind: .kernel, zeroed: false) { held.append(pfn) }
        #expect(memory.freePages == 0)
        #expect(memory.checkPhysicalInvariants().isEmpty)
        held.shuffle(using: &rng)
        for pfn in held {
            memory.frames.setRefcount(pfn, 0)
            memory.freeFolio(pfn)
        }
        #expect(memory.freePages == 2048)
        #expect(memory.buddy.freeBlocksPerOrder[10] == 2)
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }

    @Test("a folio has a head and tails that link to it")
    func folios() {
        let memory = PhysicalMemory(bytes: 8 << 20, mode: .data, watermarks: .zero)
        let head = memory.allocateFolio(order: PageOrder(9), kind: .anonymous)!
        #expect(memory.frames.flags(head).contains(.head))
        #expect(memory.frames.order(head) == PageOrder(9))
        #expect(memory.frames.refcount(head) == 1)
        for i in [1, 100, 511] {
            #expect(memory.frames.flags(head + i).contains(.tail))
            #expect(memory.frames.head(of: head + i) == head)
        }
        #expect(memory.storage!.isZero(head + 300))
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }

    @Test("the min watermark holds back ordinary allocations")
    func watermarks() {
        let memory = PhysicalMemory(bytes: 4 << 20, mode: .metadata, watermarks: Watermarks(min: 1000, low: 1000, high: 1000))
        var n = 0
        while memory.buddy.allocate(order: .base) != nil { n += 1 }
        #expect(n == 1024 - 1000)
        #expect(memory.buddy.allocate(order: .base, reserve: .none) != nil)
    }

    @Test("Linux's default watermarks for 1 GiB")
    func defaultWatermarks() {
        // min_free_kbytes = sqrt(1048576 * 16) = 4096 kB = 1024 pages.
        let w = Watermarks.linuxDefaults(pages: 262144)
        #expect(w.min == 1024 && w.low == 1024 + 262 && w.high == 1024 + 524)
    }

    @Test("the unusable free space index grows with fragmentation")
    func fragmentation() {
        let memory = PhysicalMemory(bytes: 4 << 20, mode: .metadata, watermarks: .zero)
        #expect(memory.buddy.unusableFreeIndex(order: PageOrder(9)) == 0)
        var held: [PFN] = []
        while let p = memory.allocateFolio(order: .base, kind: .kernel, zeroed: false) { held.append(p) }
        // Free every other page: 512 free pages, none of them in a block of order >= 1.
        for (i, pfn) in held.enumerated() where i % 2 == 0 { memory.frames.setRefcount(pfn, 0); memory.freeFolio(pfn) }
        #expect(memory.freePages == 512)
        #expect(memory.buddy.unusableFreeIndex(order: PageOrder(1)) == 1)
        #expect(memory.buddy.unusableFreeIndex(order: .base) == 0)
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }

    @Test("sizes from outside are checked")
    func sizeProblems() {
        #expect(PhysicalMemory.problem(withSize: 1 << 30) == nil)
        #expect(PhysicalMemory.problem(withSize: 4097) != nil)
        #expect(PhysicalMemory.problem(withSize: 1 << 20) != nil)
    }

    @Test("64 GiB of metadata fits in 1 GiB of frame table")
    func largeMetadata() {
        let memory = PhysicalMemory(bytes: 64 << 30, mode: .metadata)
        #expect(memory.totalPages == 16 << 20)
        #expect(memory.totalPages * FrameTable.bytesPerFrame == 256 << 20)
        #expect(memory.allocateFolio(order: PageOrder(9), kind: .anonymous) != nil)
    }
}

/// SplitMix64, local to this target (it does not depend on the kernel).
struct SplitMixLocal: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
