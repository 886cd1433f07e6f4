import VMCore
import PhysicalMemory

/// One VMA's block of `/proc/PID/smaps` (Linux: `show_smap()` → `smaps_pte_entry()`).
public struct SmapsEntry: Sendable, Equatable {
    public var start: VirtualAddress
    public var end: VirtualAddress
    public var flags: VMFlags
    public var name: String?
    /// Field name → bytes, for every `kB` field, in print order.
    public var fields: [String: UInt64]
    /// Linux: `THPeligible` (0 or 1).
    public var thpEligible: Int

    /// The `kB` fields in Linux's order.
    public static let fieldOrder = [
        "Size", "KernelPageSize", "MMUPageSize", "Rss", "Pss", "Pss_Dirty", "Shared_Clean", "Shared_Dirty",
        "Private_Clean", "Private_Dirty", "Referenced", "Anonymous", "KSM", "LazyFree", "AnonHugePages",
        "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb", "Private_Hugetlb", "Swap", "SwapPss", "Locked",
    ]

    public subscript(field: String) -> UInt64? { fields[field] }

    /// The `/proc/PID/maps` line of the VMA.
    public var mapsLine: String {
        let prot = flags.protection
        let perms = prot.description + (flags.contains(.mayShare) ? "s" : "p")
        var line = "\(ProcFormat.hex(start.rawValue, width: 8))-\(ProcFormat.hex(end.rawValue, width: 8)) \(perms) 00000000 00:00 0"
        if let name = name ?? (flags.contains(.shared) ? "/dev/zero (deleted)" : nil) {
            line += String(repeating: " ", count: max(1, 73 - line.count)) + name
        } else {
            line += " "
        }
        return line
    }

    /// The block as smaps prints it.
    public var text: String {
        var lines = [mapsLine]
        for name in Self.fieldOrder { lines.append(ProcFormat.line(name, (fields[name] ?? 0) >> 10)) }
        lines.append(ProcFormat.line("THPeligible", UInt64(thpEligible), unit: nil))
        lines.append("VmFlags: " + flags.mnemonics + " ")
        return lines.joined(separator: "\n") + "\n"
    }
}

extension AddressSpace {
    /// The smaps blocks of every VMA (Linux: `/proc/PID/smaps`). Takes the mmap lock for reading; does
    /// not change accessed bits or counters.
    public func smaps() -> [SmapsEntry] {
        mmapLock.withReadLock { vmas.areas.map { smapsEntry(for: $0) } }
    }

    /// The smaps block of the VMA that starts exactly at `start` (how selftests' `check_huge_anon()`
    /// finds theirs), or nil.
    public func smaps(startingAt start: VirtualAddress) -> SmapsEntry? {
        mmapLock.withReadLock { vmas.vma(containing: start).flatMap { $0.start == start ? smapsEntry(for: $0) : nil } }
    }

    /// The text of `/proc/PID/smaps`.
    public func smapsText() -> String { smaps().map(\.text).joined() }

    /// The text of `/proc/PID/maps`.
    public func mapsText() -> String { smaps().map { $0.mapsLine + "\n" }.joined() }

    func smapsEntry(for vma: VMA) -> SmapsEntry {
        let frames = kernel.memory.frames
        let page = PageGeometry.pageSize
        var rss: UInt64 = 0, pss: UInt64 = 0, pssDirty: UInt64 = 0
        var sharedClean: UInt64 = 0, sharedDirty: UInt64 = 0, privateClean: UInt64 = 0, privateDirty: UInt64 = 0
        var referenced: UInt64 = 0, anonymous: UInt64 = 0, anonHuge: UInt64 = 0
        // One mapped piece: `size` bytes of the folio headed by `pfn`, mapped by `entry`.
        func account(_ pfn: PFN, _ entry: PageTableEntry, _ size: UInt64) {
            // A page's mappings: the PMDs that map its folio whole, and (today) the PTEs that map it.
            var mappings = frames.mapcount(pfn)
            if entry.isHuge {
                mappings = kernel.entireMapcount(pfn)
            } else if kernel.mapcountsPerPage && kernel.isInLargeFolio(pfn) {
                mappings += kernel.entireMapcount(frames.head(of: pfn))
            }
            let mapcount = UInt64(max(mappings, 1))
            let dirty = entry.isDirty || frames.flags(pfn).contains(.dirty)
            rss += size
            pss += size / mapcount
            if dirty { pssDirty += size / mapcount }
            switch (mapcount > 1, dirty) {
            case (true, true): sharedDirty += size
            case (true, false): sharedClean += size
            case (false, true): privateDirty += size
            case (false, false): privateClean += size
            }
            if entry.isAccessed || frames.flags(pfn).contains(.referenced) { referenced += size }
            if frames.kind(pfn) == .anonymous { anonymous += size }
        }
        forEachMappedPage(vma.start, vma.end, huge: { _, entry in
            // The huge zero page is no normal page: it counts nowhere (Linux: `smaps_pmd_entry()`).
            guard !entry.isSpecial else { return }
            account(entry.pfn, entry, PageGeometry.pmdSize)
            if frames.kind(entry.pfn) == .anonymous { anonHuge += PageGeometry.pmdSize }
        }) { _, entry in
            guard !entry.isSpecial else { return }
            account(entry.pfn, entry, page)
        }
        var fields = [String: UInt64]()
        for name in SmapsEntry.fieldOrder { fields[name] = 0 }
        fields["Size"] = vma.length
        fields["KernelPageSize"] = page
        fields["MMUPageSize"] = page
        fields["Rss"] = rss
        fields["Pss"] = pss
        fields["Pss_Dirty"] = pssDirty
        fields["Shared_Clean"] = sharedClean
        fields["Shared_Dirty"] = sharedDirty
        fields["Private_Clean"] = privateClean
        fields["Private_Dirty"] = privateDirty
        fields["Referenced"] = referenced
        fields["Anonymous"] = anonymous
        fields["AnonHugePages"] = anonHuge
        fields["Swap"] = swappedBytes(in: vma)
        return SmapsEntry(start: vma.start, end: vma.end, flags: vma.flags, name: vma.name, fields: fields,
                          thpEligible: isHugepageEligible(vma) ? 1 : 0)
    }

    /// Calls `body(address, entry)` for every mapped PTE in `[start, end)` and `huge(address, entry)`
    /// for every huge PMD, without locks beyond the caller's mmap lock and without splitting (a
    /// reader's walk, Linux: `walk_page_range()` with `pmd_entry`).
    func forEachMappedPage(_ start: VirtualAddress, _ end: VirtualAddress,
                           huge: (VirtualAddress, PageTableEntry) -> Void,
                           _ body: (VirtualAddress, PageTableEntry) -> Void) {
        forEachPTETable(start, end, huge: { pmd, index, haddr, _ in
            let entry = pmd[index]
            if entry.isHuge && entry.isMapped { huge(haddr, entry) }
            return .handled
        }) { table, from, to in
            var va = from
            while va < to {
                let entry = table[va.tableIndex(.pte)]
                if entry.isMapped { body(va, entry) }
                va = va + PageGeometry.pageSize
            }
            return true
        }
    }
}
