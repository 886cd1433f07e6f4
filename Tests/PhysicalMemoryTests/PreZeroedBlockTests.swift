import Testing
import VMCore
import PhysicalMemory

/// Free blocks zeroed ahead (`FrameFlags.preZeroed`): a split keeps the mark on both halves, a merge
/// drops it, and the bytes of a marked block are zero.
@Suite("Physical memory: pre-zeroed free blocks")
struct PreZeroedBlockTests {
    @Test("a marked order-10 block splits into two marked order-9 halves; freeing one merges unmarked")
    func splitKeepsMergeDrops() throws {
        let memory = PhysicalMemory(bytes: 8 << 20, mode: .data, watermarks: .zero)
        #expect(memory.preZeroFreeBlock(order: .max))
        #expect(memory.buddy.preZeroedFreePages == 1024)
        let a = try #require(memory.allocateFolioNotingPreZeroed(order: PageOrder(9), kind: .anonymous))
        #expect(a.preZeroed)
        #expect(memory.buddy.preZeroedFreePages == 512)       // the other half, still marked
        let b = try #require(memory.allocateFolioNotingPreZeroed(order: PageOrder(9), kind: .anonymous))
        #expect(b.preZeroed && b.head != a.head)
        // A block nobody zeroed: not marked, zeroed by the allocation.
        let c = try #require(memory.allocateFolioNotingPreZeroed(order: PageOrder(9), kind: .anonymous))
        #expect(!c.preZeroed)
        for pfn in [a.head, b.head, c.head] { memory.frames.setRefcount(pfn, 0); memory.freeFolio(pfn) }
        #expect(memory.buddy.preZeroedFreePages == 0)
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }

    @Test("zeroing ahead clears the bytes a freed block still held; the mark is found on every free block of the order")
    func bytesAreZero() throws {
        let memory = PhysicalMemory(bytes: 8 << 20, mode: .data, watermarks: .zero)
        let storage = try #require(memory.storage)
        let dirty = try #require(memory.allocateFolio(order: PageOrder(9), kind: .anonymous))
        storage.bytes(of: dirty + 17)[5] = 0xAB
        memory.frames.setRefcount(dirty, 0)
        memory.freeFolio(dirty)
        #expect(!storage.isZero(dirty + 17))
        var zeroed = 0
        while memory.preZeroFreeBlock(order: .max) { zeroed += 1 }
        #expect(zeroed == 2)
        #expect(storage.isZero(dirty + 17))
        #expect(!memory.preZeroFreeBlock(order: .max))
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }
}
