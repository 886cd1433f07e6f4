import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR): the node of a page, found as GUP finds it")
struct MempolicyTests {
    @Test("a page behind a huge PMD is found through it, a 4 KiB page through its PTE; the reference is given back")
    func hugeAndSmall() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let huge = try hugeRegion(mm, 2 * .MiB)
        try mm.write(huge + 12 * .KiB, [1]).get()
        #expect(isHuge(mm, huge))
        let head = mm.translate(huge)!.frame
        let before = kernel.memory.frames.refcount(head)
        #expect(try mm.nodeOfPage(at: huge + 12 * .KiB + 5).get() == PageNodeLookup(node: 0, hugePMD: true))
        #expect(kernel.memory.frames.refcount(head) == before)
        let small = try anon(mm, 16 * .KiB)
        try mm.write(small, [2]).get()
        #expect(!isHuge(mm, small))
        #expect(try mm.nodeOfPage(at: small).get() == PageNodeLookup(node: 0, hugePMD: false))
        #expect(kernel.memory.frames.refcount(mm.translate(small)!.frame) == 1)
        expectClean(kernel)
    }

    @Test("an absent page is faulted in, as GUP does; an address outside every VMA is EFAULT")
    func absentAndOutside() throws {
        let (kernel, mm) = TestMachine.process(enabled: .never)
        let a = try anon(mm, 16 * .KiB)
        #expect(mm.translate(a + 4 * .KiB) == nil)
        #expect(try mm.nodeOfPage(at: a + 4 * .KiB).get() == PageNodeLookup(node: 0, hugePMD: false))
        #expect(mm.translate(a + 4 * .KiB) != nil)
        #expect(throws: Errno.EFAULT) { try mm.nodeOfPage(at: a + 64 * .KiB).get() }
        expectClean(kernel)
    }
}
