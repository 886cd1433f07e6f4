import Testing
import TestSupport
import Machine
import VMCore

@Suite("TLB arrays")
struct TLBArrayTests {
    /// Touches `pages` page numbers in a loop `rounds` times; returns the hits of the last round.
    func lastRoundHits(_ array: TLBArray, pages: [UInt64], rounds: Int) -> Int {
        var hits = 0
        for round in 0..<rounds {
            hits = 0
            for p in pages {
                if array.lookup(page: p, size: .size4K, asid: 1) >= 0 { hits += 1 }
                else { array.insert(page: p, size: .size4K, asid: 1, payload: p) }
            }
            _ = round
        }
        return hits
    }

    @Test("a TLB of N entries hits every access of a loop over N pages", arguments: [(64, 64), (64, 4), (1536, 12), (72, 72)])
    func loopOfNPagesHits(entries: Int, ways: Int) {
        let tlb = TLBArray(entries: entries, ways: ways)
        let pages = (0..<UInt64(entries)).map { 0x7f00_0000 + $0 }
        #expect(lastRoundHits(tlb, pages: pages, rounds: 3) == entries)
    }

    @Test("under LRU, a loop over N+1 pages that share a set misses on every access", arguments: [(64, 64), (64, 4), (1536, 12)])
    func loopOfNPlusOnePagesMisses(entries: Int, ways: Int) {
        let tlb = TLBArray(entries: entries, ways: ways)
        let sets = UInt64(entries / ways)
        // ways + 1 pages in one set (page numbers congruent modulo the set count).
        let pages = (0...UInt64(ways)).map { 0x1000 + $0 * sets }
        #expect(lastRoundHits(tlb, pages: pages, rounds: 3) == 0)
        // With N + 1 pages spread over all sets, only the overfull set thrashes in a set-associative
        // array, but a fully associative one misses on every access.
        let spread = (0...UInt64(entries)).map { 0x9000 + $0 }
        let fresh = TLBArray(entries: entries, ways: ways)
        let hits = lastRoundHits(fresh, pages: spread, rounds: 3)
        if ways == entries { #expect(hits == 0) } else { #expect(hits == entries + 1 - (ways + 1)) }
    }

    @Test("LRU evicts the least recently used way, not the oldest filled")
    func lruEvictsLeastRecentlyUsed() {
        let tlb = TLBArray(entries: 4, ways: 4)
        for p in 0..<4 as Range<UInt64> { tlb.insert(page: p, size: .size4K, asid: 0, payload: p) }
        #expect(tlb.lookup(page: 0, size: .size4K, asid: 0) >= 0)   // 0 becomes most recent; 1 is LRU
        tlb.insert(page: 9, size: .size4K, asid: 0, payload: 9)
        #expect(tlb.peek(page: 1, size: .size4K, asid: 0) < 0)
        #expect(tlb.peek(page: 0, size: .size4K, asid: 0) >= 0)
        #expect(tlb.validEntries == 4)
    }

    @Test("entries of different ASIDs and page sizes do not match each other")
    func asidsAndSizesAreSeparate() {
        let tlb = TLBArray(entries: 16, ways: 16, pageSizes: .all)
        tlb.insert(page: 5, size: .size4K, asid: 1, payload: 1)
        #expect(tlb.lookup(page: 5, size: .size4K, asid: 2) < 0)
        #expect(tlb.lookup(page: 5, size: .size2M, asid: 1) < 0)
        #expect(tlb.holds(.size4K) && !tlb.holds(.size2M))
        #expect(tlb.invalidateAll(asid: 2) == 0)
        #expect(tlb.invalidateAll(asid: 1) == 1)
        #expect(!tlb.holds(.size4K))
    }

    @Test("a fill told the page is absent picks the same way as one that searches, through hits, misses, mixed sizes and invalidations",
          arguments: [(1536, 12), (64, 4), (32, 4), (8, 8)])
    func absentFillMatchesSearchingFill(entries: Int, ways: Int) {
        // `absent` (after a lookup that missed) skips the search for the page; the victim must be
        // the one the searching fill picks, empty ways (stamp 0) among valid ones included.
        let fast = TLBArray(entries: entries, ways: ways, pageSizes: [.size4K, .size2M])
        let reference = TLBArray(entries: entries, ways: ways, pageSizes: [.size4K, .size2M])
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15 &* UInt64(entries &+ ways)
        func next() -> UInt64 {   // SplitMix64
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var evictions = 0
        for step in 0..<20_000 {
            let r = next()
            let page = r % UInt64(entries * 3)   // a pool three times the array: hits and misses
            let size: PageSize = r >> 40 & 7 == 0 ? .size2M : .size4K
            if r >> 48 & 63 == 0 {
                // Empties a few slots, so fills meet invalid ways between valid ones.
                let start = (page << 12), end = start + (UInt64(r >> 56 & 7) + 1) << 12
                #expect(fast.invalidate(asid: 1, start: start, end: end) == reference.invalidate(asid: 1, start: start, end: end))
                continue
            }
            let hit = fast.lookup(page: page, size: size, asid: 1)
            #expect(hit == reference.lookup(page: page, size: size, asid: 1), "step \(step)")
            if hit < 0 {
                if fast.validEntries == entries { evictions += 1 }
                let slot = fast.insert(page: page, size: size, asid: 1, payload: page, absent: true)
                #expect(slot == reference.insert(page: page, size: size, asid: 1, payload: page), "step \(step)")
            }
        }
        #expect(fast.validEntries(of: .size4K) == reference.validEntries(of: .size4K))
        #expect(fast.validEntries(of: .size2M) == reference.validEntries(of: .size2M))
        #expect(evictions > 1000)   // the victim search ran on full sets, not only on empty ways
    }

    @Test("a range invalidation removes exactly the pages that overlap the range", arguments: [32, 4096])
    func rangeInvalidation(entries: Int) {
        let tlb = TLBArray(entries: entries, ways: min(entries, 16), pageSizes: [.size4K, .size2M])
        for p in 0..<16 as Range<UInt64> { tlb.insert(page: 0x100 + p, size: .size4K, asid: 3, payload: p) }
        tlb.insert(page: 0x100 >> 9, size: .size2M, asid: 3, payload: 0)   // the 2 MiB page around them
        // Flush bytes of pages 0x104 ..< 0x108 (partial first and last page count as overlapping).
        let removed = tlb.invalidate(asid: 3, start: (0x104 << 12) + 100, end: (0x107 << 12) + 1)
        #expect(removed == 4 + 1)
        for p in 0..<16 as Range<UInt64> {
            let present = tlb.peek(page: 0x100 + p, size: .size4K, asid: 3) >= 0
            #expect(present == !(4..<8).contains(p), "page \(p)")
        }
    }
}

@Suite("TLB hierarchy")
struct TLBHierarchyTests {
    @Test("a 2 MiB mapping needs 1/512 of the entries 4 KiB pages need", arguments: MachineDescription.presetNames)
    func hugeMappingNeedsFewerEntries(preset: String) {
        let d = MachineDescription.presets[preset]!
        let region: UInt64 = 0x4000_0000, bytes: UInt64 = 16 << 20
        func entriesUsed(_ size: PageSize) -> Int {
            let h = TLBHierarchy(d)
            var va = region
            while va < region + bytes {
                if TLBHierarchy.lookup(h.l2, va: va, asid: 1) == nil {
                    let frame = UInt32(truncatingIfNeeded: (va - region) >> 12) & ~UInt32(size.basePages - 1)
                    TLBHierarchy.fill(h.l2, va: va, asid: 1, size: size,
                                      entry: TLBEntry(frame: frame, writable: true, dirty: true, executable: false, user: true))
                }
                va += 4096
            }
            return h.l2.reduce(0) { $0 + $1.validEntries }
        }
        let small = entriesUsed(.size4K), huge = entriesUsed(.size2M)
        #expect(huge == 8)
        #expect(small == min(4096, d.l2.filter { $0.pageSizes.contains(.size4K) }.reduce(0) { $0 + $1.entries }))
        #expect(4096 / huge == 512)
    }

    @Test("a 1 GiB page is kept as 2 MiB pieces where the second level has no 1 GiB entries")
    func gigabytePagesAreSmashed() {
        let h = TLBHierarchy(.zen4)
        let entry = TLBEntry(frame: 1 << 18, writable: true, dirty: true, executable: false, user: true)
        let va: UInt64 = (3 << 30) + (5 << 21) + 0x1234
        let hit = TLBHierarchy.fill(h.l2, va: va, asid: 7, size: .size1G, entry: entry)
        #expect(hit?.size == .size2M)
        let found = TLBHierarchy.lookup(h.l2, va: va + 0x1000, asid: 7)
        #expect(found?.size == .size2M)
        #expect(TLBEntry(rawValue: h.l2[found!.array].payload(found!.slot)).frame == (1 << 18) + 5 * 512)
        #expect(TLBHierarchy.lookup(h.l2, va: va + (2 << 20), asid: 7) == nil)   // the next 2 MiB piece is not there
        // Zen 4's L1 dTLB holds 1 GiB entries whole.
        #expect(TLBHierarchy.fill(h.l1Data, va: va, asid: 7, size: .size1G, entry: entry)?.size == .size1G)
    }

    @Test("a walk's leaf becomes the TLB entry of its frame, W, D (or a write), X (no NX) and U bits", arguments: [false, true])
    func leafBecomesEntry(write: Bool) {
        let bits = [PageTableEntry.writableBit, PageTableEntry.dirtyBit, PageTableEntry.noExecuteBit, PageTableEntry.userBit,
                    PageTableEntry.accessedBit, PageTableEntry.hugeBit]
        for combination in 0..<(1 << bits.count) {
            var raw = PageTableEntry.presentBit | (0xF_FFFF_F123 << 12)
            for (i, bit) in bits.enumerated() where combination & (1 << i) != 0 { raw |= bit }
            let leaf = PageTableEntry(rawValue: raw)
            let expected = TLBEntry(frame: leaf.pfn.rawValue, writable: leaf.isWritable, dirty: write || leaf.isDirty,
                                    executable: leaf.isExecutable, user: leaf.isUser)
            #expect(TLBEntry(leaf: leaf, write: write) == expected, "leaf \(leaf)")
        }
    }
}

@Suite("Wide fully associative TLB arrays")
struct WideTLBArrayTests {
    @Test("the indexed LRU of a wide array answers exactly as a reference LRU list, through fills, hits and invalidations",
          arguments: [(72, UInt64(1)), (96, 2), (24, 3)])
    func matchesReferenceLRU(entries: Int, seed: UInt64) {
        let tlb = TLBArray(entries: entries, ways: entries, pageSizes: [.size4K, .size2M])
        var reference: [UInt64] = []          // tags, most recent first
        var rng = SplitMix64(seed: seed)
        func key(_ page: UInt64, _ size: PageSize) -> UInt64 { TLBArray.tag(page: page, size: size, asid: 1) }
        for step in 0..<20_000 {
            let page = UInt64.random(in: 0..<UInt64(entries * 2), using: &rng)
            let size: PageSize = rng.next() % 8 == 0 ? .size2M : .size4K
            switch rng.next() % 10 {
            case 0..<5:
                let hit = tlb.lookup(page: page, size: size, asid: 1) >= 0
                let index = reference.firstIndex(of: key(page, size))
                #expect(hit == (index != nil), "step \(step)")
                if let index { reference.insert(reference.remove(at: index), at: 0) }
            case 5..<9:
                tlb.insert(page: page, size: size, asid: 1, payload: page)
                if let index = reference.firstIndex(of: key(page, size)) { reference.remove(at: index) }
                else if reference.count == entries { reference.removeLast() }
                reference.insert(key(page, size), at: 0)
            default:
                let start = page << 12, end = start + (UInt64.random(in: 1...8, using: &rng) << 12)
                tlb.invalidate(asid: 1, start: start, end: end)
                reference.removeAll { t in
                    let s = PageSize(rawValue: Int((t >> 14) & 3))!
                    let first = ((t & ~TLBArray.validBit) >> 16) << s.shift
                    return first < end && first + s.bytes > start
                }
            }
            if tlb.validEntries != reference.count { Issue.record("step \(step): \(tlb.validEntries) entries, reference \(reference.count)"); return }
        }
    }
}

@Suite("Set-associative TLB arrays: exact LRU")
struct SetAssociativeLRUTests {
    /// A fill's way against a reference model of the rule: the first invalid way of the set, else
    /// the way used least recently (last use counted per array, as hits and fills happen).
    @Test("a fill replaces the first invalid way, else the least recently used one, through hits, fills and invalidations",
          arguments: [(4, 16, UInt64(1)), (12, 1536, 2), (8, 64, 3), (2, 8, 4), (6, 48, 5), (16, 64, 6)])
    func matchesReferenceLRU(ways: Int, entries: Int, seed: UInt64) {
        let tlb = TLBArray(entries: entries, ways: ways)
        let sets = entries / ways
        var tags = [UInt64?](repeating: nil, count: entries)   // reference: page per slot
        var lastUse = [Int](repeating: 0, count: entries)
        var now = 0
        var rng = SplitMix64(seed: seed)
        for step in 0..<20_000 {
            // Twice as many pages as ways in each of a few sets: sets fill, overflow and are invalidated.
            let set = UInt64.random(in: 0..<UInt64(min(sets, 3)), using: &rng)
            let page = UInt64.random(in: 0..<UInt64(2 * ways), using: &rng) * UInt64(sets) + set
            let base = Int(page % UInt64(sets)) * ways
            let held = (base..<base + ways).first { tags[$0] == page }
            switch rng.next() % 10 {
            case 0..<4:
                let slot = tlb.lookup(page: page, size: .size4K, asid: 1)
                #expect(slot == (held ?? -1), "step \(step): lookup")
                if let held { now += 1; lastUse[held] = now }
            case 4..<9:
                let absent = held == nil && rng.next() % 2 == 0
                let slot = tlb.insert(page: page, size: .size4K, asid: 1, payload: page, absent: absent)
                let expected = held ?? (base..<base + ways).first { tags[$0] == nil }
                    ?? (base..<base + ways).min { lastUse[$0] < lastUse[$1] }!
                if slot != expected { Issue.record("step \(step): filled slot \(slot), expected \(expected)"); return }
                tags[expected] = page
                now += 1
                lastUse[expected] = now
            default:
                let count = UInt64.random(in: 1...3, using: &rng)
                tlb.invalidate(asid: 1, start: page << 12, end: (page + count) << 12)
                for slot in 0..<entries where tags[slot].map({ $0 >= page && $0 < page + count }) == true {
                    tags[slot] = nil
                    lastUse[slot] = 0
                }
            }
            if tlb.validEntries != tags.compactMap({ $0 }).count { Issue.record("step \(step): valid entries differ"); return }
        }
    }
}
