import Testing
import VMCore
import PhysicalMemory

/// A PMD-order folio's tail records are not written when it is allocated, and read as tails of its
/// head until one is written (FrameTable, "implicit tails").
@Suite("Physical memory: implicit tail records of PMD-order folios")
struct ImplicitTailTests {
    @Test("every tail of a new PMD-order folio reads as a tail of its head, of its head's kind")
    func tailsRead() {
        let memory = PhysicalMemory(bytes: 8 << 20, mode: .metadata, watermarks: .zero)
        let head = memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous, zeroed: false)!
        #expect(!memory.frames.flags(head).contains(.explicitTails))
        for i in 1..<512 {
            let tail = head + i
            #expect(memory.frames.flags(tail) == .tail)
            #expect(memory.frames.kind(tail) == .anonymous)
            #expect(memory.frames.order(tail) == .base)
            #expect(memory.frames.head(of: tail) == head)
            #expect(memory.frames.refcount(tail) == 0 && memory.frames.mapcount(tail) == 0)
        }
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }

    @Test("a flag set on a tail writes its record out and marks the head; freeing clears every record")
    func materialize() {
        let memory = PhysicalMemory(bytes: 8 << 20, mode: .metadata, watermarks: .zero)
        let head = memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous, zeroed: false)!
        let old = memory.frames.insertFlags(head + 77, .anonExclusive)
        #expect(old == .tail)
        #expect(memory.frames.flags(head + 77) == [.tail, .anonExclusive])
        #expect(memory.frames.head(of: head + 77) == head)
        #expect(memory.frames.flags(head).contains(.explicitTails))
        // The other tails are still implicit and still read right.
        #expect(memory.frames.flags(head + 78) == .tail && memory.frames.head(of: head + 78) == head)
        // Clearing a flag of an implicit tail leaves it a tail.
        #expect(memory.frames.removeFlags(head + 300, .dirty) == .tail)
        #expect(memory.frames.flags(head + 300) == .tail && memory.frames.head(of: head + 300) == head)
        #expect(memory.checkPhysicalInvariants().isEmpty)

        memory.frames.setRefcount(head, 0)
        memory.freeFolio(head)
        // The written-out tails were cleared: the block's frames are free with no link left over
        // (the invariant checker reads each one).
        #expect(memory.frames.kind(head + 77) == .free && memory.frames.kind(head + 300) == .free)
        #expect(memory.checkPhysicalInvariants().isEmpty)
        #expect(memory.freePages == 2048)
    }

    @Test("the frames of a freed folio whose tails stayed implicit are reused as small pages")
    func reuseAfterFree() {
        let memory = PhysicalMemory(bytes: 4 << 20, mode: .metadata, watermarks: .zero)
        let head = memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous, zeroed: false)!
        memory.frames.setRefcount(head, 0)
        memory.freeFolio(head)
        var pages: [PFN] = []
        while let pfn = memory.allocateFolio(order: .base, kind: .kernel, zeroed: false) { pages.append(pfn) }
        #expect(pages.count == 1024)
        for pfn in pages {
            #expect(memory.frames.flags(pfn).isEmpty && memory.frames.kind(pfn) == .kernel)
            #expect(memory.frames.head(of: pfn) == pfn)
        }
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }

    @Test("a split that writes every tail's header before the head's leaves ordinary pages")
    func splitOrder() {
        let memory = PhysicalMemory(bytes: 4 << 20, mode: .metadata, watermarks: .zero)
        let head = memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous, zeroed: false)!
        for i in 1..<512 {
            memory.frames.setLink(head + i, 0)
            memory.frames.setHeader(head + i, kind: .anonymous, order: .base, flags: [])
            memory.frames.setRefcount(head + i, 1)
            // Tails not rewritten yet still belong to the head.
            if i < 511 { #expect(memory.frames.head(of: head + i + 1) == head) }
        }
        memory.frames.setHeader(head, kind: .anonymous, order: .base, flags: [])
        for i in 0..<512 {
            #expect(memory.frames.head(of: head + i) == head + i)
            #expect(!memory.frames.flags(head + i).contains(.tail))
        }
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }

    @Test("folios of other orders write their tails: an order-10 folio's 512-aligned tail is no head")
    func otherOrders() {
        let memory = PhysicalMemory(bytes: 8 << 20, mode: .metadata, watermarks: .zero)
        let big = memory.allocateFolio(order: PageOrder(10), kind: .kernel, zeroed: false)!
        #expect(memory.frames.head(of: big + 512) == big && memory.frames.head(of: big + 700) == big)
        #expect(memory.frames.flags(big + 700) == .tail && memory.frames.kind(big + 700) == .kernel)
        let small = memory.allocateFolio(order: PageOrder(4), kind: .anonymous, zeroed: false)!
        #expect(memory.frames.head(of: small + 15) == small && memory.frames.flags(small + 15) == .tail)
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }
}

/// The huge-page per-CPU list's `high`, tuned per CPU as Linux 6.7+ tunes `pcp->high`.
@Suite("Physical memory: per-CPU huge-page lists tune their high")
struct PerCPUHighTests {
    func perCPUHugeBlocks(_ memory: PhysicalMemory) -> Int {
        var n = 0
        memory.buddy.forEachPerCPUBlock { _, order in if order == PageGeometry.pmdOrder { n += 1 } }
        return n
    }

    @Test("a CPU refilling often keeps up to 1/8 of memory over the CPU slots, then spills half, and a drain gives them back")
    func risesToMax() {
        // 8 GiB: high starts at 2 huge pages and may rise to 2 Mi pages / 8 / 8 (highMaxShares) = 64 huge pages.
        let memory = PhysicalMemory(bytes: 8 << 30, mode: .metadata, watermarks: .zero, perCPULists: true)
        var heads: [PFN] = []
        for _ in 0..<100 { heads.append(memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous, zeroed: false)!) }
        func free(_ head: PFN) {
            memory.frames.setRefcount(head, 0)
            memory.freeFolio(head)
        }
        // The refills for these allocations raised high by a batch each, to its top; empty the list.
        memory.buddy.drainPerCPULists()
        #expect(perCPUHugeBlocks(memory) == 0)
        for head in heads[0..<64] { free(head) }
        #expect(perCPUHugeBlocks(memory) == 64)
        // At the top, a free into a full list spills a batch, half of high.
        free(heads[64])
        #expect(perCPUHugeBlocks(memory) == 33)
        #expect(memory.checkPhysicalInvariants().isEmpty)
        // The list serves allocations first, the most recently freed block first.
        let again = memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous, zeroed: false)!
        #expect(again == heads[64])
        #expect(perCPUHugeBlocks(memory) == 32)
        free(again)
        for head in heads[65...] { free(head) }
        #expect(memory.freePages == 1 << 21)
        memory.buddy.drainPerCPULists()
        #expect(perCPUHugeBlocks(memory) == 0)
        #expect(memory.buddy.freeBlocksPerOrder[10] == 2048)
        #expect(memory.checkPhysicalInvariants().isEmpty)
    }

    @Test("a small machine caches no huge pages per CPU")
    func smallMachine() {
        let memory = PhysicalMemory(bytes: 1 << 30, mode: .metadata, watermarks: .zero, perCPULists: true)
        let head = memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous, zeroed: false)!
        memory.frames.setRefcount(head, 0)
        memory.freeFolio(head)
        #expect(perCPUHugeBlocks(memory) == 0)
    }
}
