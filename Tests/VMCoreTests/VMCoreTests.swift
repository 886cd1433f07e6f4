import Testing
import VMCore

@Suite("VMCore: addresses, entries, sizes")
struct VMCoreTests {
    @Test("table indices split a virtual address into 9-bit fields")
    func tableIndices() {
        let va = VirtualAddress((3 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0x123)
        #expect(va.tableIndex(.pgd) == 3)
        #expect(va.tableIndex(.pud) == 5)
        #expect(va.tableIndex(.pmd) == 7)
        #expect(va.tableIndex(.pte) == 9)
        #expect(va.pageOffset == 0x123)
    }

    @Test("alignment helpers round to powers of two")
    func alignment() {
        let va = VirtualAddress(0x20_1001)
        #expect(va.alignedDown(PageGeometry.pmdSize) == VirtualAddress(0x20_0000))
        #expect(va.alignedUp(PageGeometry.pageSize) == VirtualAddress(0x20_2000))
        #expect(VirtualAddress(0x40_0000).isAligned(PageGeometry.pmdSize))
    }

    @Test("the buddy of a block flips the order bit")
    func buddy() {
        #expect(PFN(8).buddy(order: PageOrder(3)) == PFN(0))
        #expect(PFN(0).buddy(order: PageOrder(9)) == PFN(512))
        #expect(PFN(1536).buddy(order: PageOrder(9)) == PFN(1024))
    }

    @Test("entry modifiers return new values and keep the PFN")
    func entryBits() {
        let e = PageTableEntry(pfn: PFN(1234), bits: PageTableEntry.userBits(.readWrite))
        #expect(e.isPresent && !e.isWritable && !e.isDirty && e.pfn == PFN(1234) && !e.isExecutable)
        let w = e.makingWritable().makingDirty().makingYoung()
        #expect(w.isWritable && w.isDirty && w.isAccessed && w.pfn == PFN(1234))
        #expect(!w.writeProtected().isWritable)
        let none = w.withProtection(.none, writable: false)
        #expect(!none.isPresent && none.isMapped && none.pfn == PFN(1234) && none.isDirty)
        let back = none.withProtection([.read, .execute], writable: false)
        #expect(back.isPresent && back.isExecutable && !back.isWritable)
    }

    @Test("sizes parse with binary suffixes and reject junk", arguments: [
        ("4K", UInt64(4096)), ("2M", 2 << 20), ("1G", 1 << 30), ("64G", 64 << 30), ("12", 12), ("8kB", 8192), ("3MiB", 3 << 20),
    ])
    func sizes(text: String, bytes: UInt64) {
        #expect(ByteCount.parse(text) == bytes)
    }

    @Test("malformed sizes are rejected", arguments: ["", "K", "4Q", "-4K", "4.5M", "99999999999999999999G", "0x10"])
    func badSizes(text: String) {
        #expect(ByteCount.parse(text) == nil)
    }

    @Test("protections parse from letters")
    func protections() {
        #expect(Protection(letters: "rw") == .readWrite)
        #expect(Protection(letters: "none") == Protection.none)
        #expect(Protection(letters: "rwx") == [.read, .write, .execute])
        #expect(Protection(letters: "q") == nil)
        #expect(Errno(name: "EINVAL") == .EINVAL && Errno.EINVAL.rawValue == 22)
    }
}
