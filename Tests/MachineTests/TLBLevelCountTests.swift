import Testing
import TestSupport
@testable import Machine
import VMCore

@Suite("TLB level counts")
struct TLBLevelCountTests {
    /// What `holdsOnlyFirst4K` must say, from the arrays' own counts: no entry but 4 KiB ones of
    /// the first array.
    func onlyFirst4K(_ arrays: ContiguousArray<TLBArray>) -> Bool {
        arrays[0].validEntries(of: .size2M) + arrays[0].validEntries(of: .size1G) == 0
            && arrays.dropFirst().allSatisfy { $0.validEntries == 0 }
    }

    @Test("a level's count of entries beyond its first array's 4 KiB ones follows fills, hits and every kind of invalidation",
          arguments: MachineDescription.presetNames)
    func levelCountFollowsOccupancy(preset: String) throws {
        let description = try #require(MachineDescription.presets[preset])
        let tlb = TLBHierarchy(description)
        let lists = [(tlb.dataLevels.l1, tlb.l1Data), (tlb.dataLevels.l2, tlb.l2),
                     (tlb.instructionLevels.l1, tlb.l1Instruction), (tlb.instructionLevels.l2, tlb.l2)]
        var rng = SplitMix64(seed: 23)
        var sawBoth = (false, false)
        for step in 0..<20_000 {
            let (list, arrays) = lists[Int(rng.next() % 4)]
            let asid = UInt16(1 + rng.next() % 2)
            let size: PageSize = [.size4K, .size4K, .size4K, .size2M, .size1G][Int(rng.next() % 5)]
            let va = UInt64.random(in: 0..<(1 << 34), using: &rng)
            switch rng.next() % 100 {
            case 0..<60:
                list.fill(va: va, asid: asid, size: size, entry: TLBEntry(rawValue: va >> 12))
            case 60..<85:
                _ = list.lookup(va: va, asid: asid)
            case 85..<95:
                tlb.invalidate(asid: asid, start: va, end: va + (UInt64.random(in: 1...64, using: &rng) << 21))
            case 95..<98:
                tlb.invalidateAll(asid: asid)
            default:
                arrays[Int(rng.next() % UInt64(arrays.count))].invalidateEverything()
            }
            for (list, arrays) in lists {
                let expected = onlyFirst4K(arrays)
                #expect(list.holdsOnlyFirst4K == expected, "step \(step)")
                if expected { sawBoth.0 = true } else { sawBoth.1 = true }
            }
        }
        #expect(sawBoth.0 && sawBoth.1, "the walk reached both answers")
    }
}
