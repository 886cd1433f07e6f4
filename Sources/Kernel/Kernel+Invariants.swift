import VMCore
import PhysicalMemory

extension Kernel {
    /// Checks every invariant the model keeps and returns a description of each violation (empty when
    /// all hold). Call it with the system quiescent (Linux: the `VM_BUG_ON` family, made exhaustive).
    ///
    /// - every frame is owned exactly once: free lists, a page table reachable from one mm, an anonymous
    ///   page some PTE maps, a shmem page in one object's cache, or the zero page;
    /// - each page's mapcount equals the PTEs that map it, and its refcount equals the mapcount (plus
    ///   one for the shmem cache);
    /// - a writable private PTE maps a page nobody else maps (COW is never bypassed);
    /// - no PTE maps an address outside a VMA; VMAs are sorted, aligned and disjoint;
    /// - the counters behind meminfo agree with the frames; the allocator's own invariants hold.
    public func checkInvariants() -> [String] {
        var problems = memory.checkPhysicalInvariants()
        let frames = memory.frames
        var mappings = [Int32](repeating: 0, count: memory.totalPages)
        var tableSeen = [Bool](repeating: false, count: memory.totalPages)
        var shmemOwner = [Int](repeating: 0, count: memory.totalPages)
        var objectsSeen = Set<ObjectIdentifier>()

        for mm in addressSpaces {
            mm.mmapLock.readLock()
            defer { mm.mmapLock.unlock() }
            var previousEnd = VirtualAddress(0)
            for vma in mm.vmas.areas {
                if !(vma.start < vma.end) || !vma.start.isAligned(PageGeometry.pageSize) || !vma.end.isAligned(PageGeometry.pageSize) {
                    problems.append("mm \(mm.pid): VMA \(vma.start)-\(vma.end) is empty or misaligned")
                }
                if vma.start < previousEnd { problems.append("mm \(mm.pid): VMA at \(vma.start) overlaps its predecessor") }
                previousEnd = vma.end
                if let object = vma.sharedObject, objectsSeen.insert(ObjectIdentifier(object)).inserted {
                    for pfn in object.cachedFrames {
                        shmemOwner[pfn.index] += 1
                    }
                }
            }
            mm.checkTables(mm.root, level: .pgd, base: VirtualAddress(0), &mappings, &tableSeen, &problems)
        }

        var tables = 0, anonMapped = 0, shmemPages = 0
        for i in 0..<memory.totalPages {
            let pfn = PFN(i)
            let kind = frames.kind(pfn)
            let mapcount = frames.mapcount(pfn), refcount = frames.refcount(pfn)
            switch kind {
            case .free:
                if mappings[i] != 0 { problems.append("\(pfn) is free but mapped \(mappings[i]) times") }
            case .pageTable:
                tables += 1
                if !tableSeen[i] { problems.append("page table \(pfn) is reachable from no mm (leaked)") }
            case .anonymous:
                if mapcount > 0 { anonMapped += 1 }
                if mapcount != mappings[i] { problems.append("\(pfn): mapcount \(mapcount) but \(mappings[i]) PTEs map it") }
                if !frames.flags(pfn).contains(.tail) && refcount != mapcount {
                    problems.append("\(pfn): refcount \(refcount) but mapcount \(mapcount)")
                }
                if mappings[i] == 0 { problems.append("anonymous \(pfn) is mapped nowhere (leaked)") }
            case .shmem:
                shmemPages += 1
                if mapcount != mappings[i] { problems.append("shmem \(pfn): mapcount \(mapcount) but \(mappings[i]) PTEs map it") }
                if refcount != mapcount + 1 { problems.append("shmem \(pfn): refcount \(refcount) but mapcount \(mapcount) + 1 for the cache") }
                if shmemOwner[i] != 1 { problems.append("shmem \(pfn) is cached by \(shmemOwner[i]) objects") }
            case .zeroPage:
                if pfn != zeroPage { problems.append("\(pfn) claims to be the zero page") }
            case .kernel:
                break
            }
        }
        if tables != vmstat[.nrPageTablePages] { problems.append("nr_page_table_pages \(vmstat[.nrPageTablePages]) but \(tables) table frames") }
        if anonMapped != vmstat[.nrAnonPages] { problems.append("nr_anon_pages \(vmstat[.nrAnonPages]) but \(anonMapped) mapped anonymous pages") }
        if shmemPages != vmstat[.nrShmem] { problems.append("nr_shmem \(vmstat[.nrShmem]) but \(shmemPages) shmem pages") }
        return problems
    }
}

extension AddressSpace {
    /// Walks one table for the invariant checker, counting mappings and table ownership.
    func checkTables(_ table: PageTable, level: PageTableLevel, base: VirtualAddress,
                     _ mappings: inout [Int32], _ tableSeen: inout [Bool], _ problems: inout [String]) {
        let frames = kernel.memory.frames
        if frames.kind(table.pfn) != .pageTable { problems.append("mm \(pid): table \(table.pfn) has kind \(frames.kind(table.pfn))") }
        if tableSeen[table.pfn.index] { problems.append("mm \(pid): table \(table.pfn) is linked twice") }
        tableSeen[table.pfn.index] = true
        for i in 0..<PageGeometry.entriesPerTable {
            let entry = table[i]
            if entry.isNone { continue }
            let va = base + UInt64(i) * level.entrySpan
            if let lower = level.lower, !entry.isHuge {
                checkTables(kernel.table(at: entry), level: lower, base: va, &mappings, &tableSeen, &problems)
                continue
            }
            guard let vma = vmas.vma(containing: va) else {
                problems.append("mm \(pid): \(entry) maps \(va), which no VMA covers")
                continue
            }
            if entry.isSpecial {
                if entry.pfn != kernel.zeroPage || entry.isWritable { problems.append("mm \(pid): bad special entry at \(va): \(entry)") }
                continue
            }
            guard entry.pfn.index < mappings.count else { problems.append("mm \(pid): \(va) maps \(entry.pfn) beyond memory"); continue }
            mappings[entry.pfn.index] += 1
            let kind = frames.kind(entry.pfn)
            if vma.isShared ? kind != .shmem : kind != .anonymous {
                problems.append("mm \(pid): \(va) in a \(vma.isShared ? "shared" : "private") VMA maps a \(kind) frame")
            }
            if !vma.isShared && entry.isWritable && frames.mapcount(entry.pfn) != 1 {
                problems.append("mm \(pid): writable PTE at \(va) maps \(entry.pfn), which \(frames.mapcount(entry.pfn)) PTEs map")
            }
        }
    }
}
