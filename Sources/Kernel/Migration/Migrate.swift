#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import VMCore
import PhysicalMemory

/// What an attempt to move a page to another frame did (Linux: the return values of
/// `migrate_pages()`'s steps: `MIGRATEPAGE_SUCCESS`, `-EAGAIN`, `-EBUSY`).
public enum MigrationResult: Equatable, Sendable {
    /// The page now lives in this frame; the old one is free.
    case migrated(PFN)
    /// Someone holds a reference beyond the mappings (a GUP pin): the page stays (Linux: the expected
    /// refcount test of `folio_migrate_mapping()` fails with `-EAGAIN`, and compaction backs off).
    case pinned
    /// The mappings changed since they were looked up (a fault, a fork, an munmap); try again later.
    case busy
    /// Not an anonymous page mapped by a process (a page table, the zero page, a shmem or kernel page).
    case notMovable
}

/// Migration moves an anonymous page — a 4 KiB page or a whole huge page — to another frame while
/// processes keep using it: unmap, copy, remap.
///
/// As in Linux, each mapping is replaced by a *migration entry* while the page moves: not present,
/// so the MMU and gup-fast cannot use it, and not empty, so a fault on it waits until the entry is
/// replaced instead of filling it (Linux: `migration_entry_wait()`). The model keeps the old entry's
/// bits in it, with the present bit cleared and the splitting bit set (a huge PMD so marked is waited
/// for like one being split). The mappers' mmap locks are held for reading throughout, so no
/// munmap, mprotect, mremap, madvise or fork changes the entries meanwhile (Linux relies on the rmap
/// locks instead); a huge page also holds off splits. A reference beyond the mappings once the
/// entries are replaced (a pin) makes the migration back off and restore them.
///
/// ```
///  PTE/PMD ──► old frame          → migration entry (waits faults) → check refcount == mapcount
///  PTE/PMD ──► new frame          ← same bits, same counts; bytes copied; old frame freed
/// ```
extension Kernel {
    /// Moves the page `pfn` (a base page, or the head of a huge page) into `target`, a folio of the
    /// same order the caller allocated; `mappings` are the (mm, address) pairs that map it, from a
    /// reverse-map lookup (huge pages use their own list). On failure the caller still owns `target`
    /// (Linux: `migrate_pages()` → `migrate_folio_unmap()`, `move_to_new_folio()`,
    /// `remove_migration_ptes()`).
    /// - Precondition: no page-table lock is held.
    public func migratePage(_ pfn: PFN, to target: PFN, mappings smallMappings: [(AddressSpace, VirtualAddress)] = [])
        -> MigrationResult {
        let frames = memory.frames
        let flags = frames.flags(pfn)
        guard frames.kind(pfn) == .anonymous, !flags.contains(.tail) else { return .notMovable }
        let huge = flags.contains(.head)
        precondition(frames.order(target) == frames.order(pfn) && frames.refcount(target) == 1, "bad migration target \(target)")
        // Lock order as everywhere: the mappers' mmap locks (for reading, in pid order), then for a
        // huge page the split serialization, then page-table locks.
        var mappings = smallMappings
        if huge {
            let listed = hugeMappers(of: pfn)
            // A mapping whose address space is being destroyed is on its way out: try later.
            mappings = listed.compactMap { m in m.mm.map { ($0, m.address) } }
            if mappings.count != listed.count { return .busy }
        }
        if mappings.isEmpty { return .busy }
        // Off the LRU first, with a reference: a folio someone else isolated (reclaim) is busy (Linux:
        // `isolate_migratepages_block()` → `folio_isolate_lru()`). Unless it moves, it goes back.
        guard lru.isolate(pfn) else { return .busy }
        let list: AnonLRU = frames.flags(pfn).contains(.active) ? .active : .inactive
        let result = migrateIsolated(pfn, to: target, mappings, huge: huge, list: list)
        if case .migrated = result { return result }
        lru.putBack(pfn, on: list)
        putPage(pfn)
        return result
    }

    private func migrateIsolated(_ pfn: PFN, to target: PFN, _ mappings: [(AddressSpace, VirtualAddress)],
                                 huge: Bool, list: AnonLRU) -> MigrationResult {
        // Linux's migration takes no mmap lock; the model's holds the mappers' for reading.
        guard let locked = tryReadLockMappers(mappings.map(\.0)) else { return .busy }
        defer { unlockMappers(locked) }
        guard huge else { return migrateLocked(pfn, to: target, mappings, huge: false, list: list) }
        return splitSerialization.withLock { () -> MigrationResult in
            // A fault (COW) may have changed the mappings before the serialization was taken.
            let now = hugeMappers(of: pfn)
            guard now.count == mappings.count, zip(now, mappings).allSatisfy({ $0.mm === $1.0 && $0.address == $1.1 }) else {
                vmstat.count(.thpMigrationFail)
                return .busy
            }
            let r = migrateLocked(pfn, to: target, mappings, huge: true, list: list)
            if case .migrated = r { vmstat.count(.thpMigrationSuccess) } else { vmstat.count(.thpMigrationFail) }
            return r
        }
    }

    /// - Precondition: the caller isolated `pfn` from `list` (one reference).
    private func migrateLocked(_ pfn: PFN, to target: PFN, _ mappings: [(AddressSpace, VirtualAddress)], huge: Bool,
                               list: AnonLRU) -> MigrationResult {
        let frames = memory.frames
        // The caller holds every mapper's mmap lock for reading.

        let size = huge ? PageGeometry.pmdSize : PageGeometry.pageSize
        for (mm, va) in mappings { mm.startInvalidatingSecondaryMMUs(va, va + size) }
        defer { for (mm, va) in mappings { mm.endInvalidatingSecondaryMMUs(va, va + size) } }

        // Unmap: replace each entry that still maps the page by a migration entry.
        var replaced: [(AddressSpace, VirtualAddress, PageTableEntry)] = []
        func restore() {
            for (mm, va, old) in replaced {
                let back = mm.exchangeMigrationEntry(va, huge: huge) { $0 == .migrationEntry(for: old) ? old : nil }
                precondition(back != nil, "a migration entry at \(va) changed under the migration")
            }
        }
        for (mm, va) in mappings {
            let old = mm.exchangeMigrationEntry(va, huge: huge) { current in
                current.isMapped && !current.isSpecial && current.isHuge == huge && current.pfn == pfn
                    && !current.isSplitting ? .migrationEntry(for: current) : nil
            }
            guard let old else { restore(); return .busy }
            replaced.append((mm, va, old))
            flushTLB(mm, va, va + size)
        }
        // A huge page's mappings are its PMDs; today's design also lets PTEs map it, which the
        // model's huge migration does not follow (it backs off, as for a changed mapping).
        let mapcount = huge ? entireMapcount(pfn) : frames.mapcount(pfn)
        guard Int(mapcount) == replaced.count, !huge || folioMapcount(pfn) == mapcount else { restore(); return .busy }
        // A page in the swap cache has the cache's reference too (Linux: `folio_expected_ref_count()`).
        let cached = !huge && frames.flags(pfn).contains(.swapCache)
        // The isolation's reference is expected too.
        var pins = frames.refcount(pfn) - mapcount - (cached ? 1 : 0) - 1
        if huge && pinsCountInTailPages {
            for i in 1..<PageGeometry.pmdOrder.pages { pins += frames.refcount(pfn + i) }
        }
        guard pins == 0 else { restore(); return .pinned }

        // Copy and move the counts, then point every entry at the new frame.
        if let storage = memory.storage { storage.copy(from: pfn, to: target, pages: frames.order(pfn).pages) }
        frames.insertFlags(target, frames.flags(pfn).intersection([.dirty, .swapBacked, .referenced, .active, .anonExclusive]))
        let perPageHuge = huge && mapcountsPerPage
        if perPageHuge {
            frames.setFolioField(target, .entireMapcount, mapcount)
            frames.setFolioField(target, .pagesMapped, FrameTable.entirelyMapped)
        } else {
            frames.setMapcount(target, mapcount)
        }
        frames.setRefcount(target, mapcount)
        // The swap cache's entry moves too, unless a swap-in took a reference meanwhile (Linux:
        // `folio_migrate_mapping()` replacing the folio in the swap cache under its lock).
        if cached && !replaceInSwapCache(pfn, with: target, mapcount: mapcount) {
            frames.setMapcount(target, 0)
            frames.setRefcount(target, 1)
            frames.removeFlags(target, [.dirty, .swapBacked, .referenced, .active, .anonExclusive])
            restore()
            return .pinned
        }
        // The charge moves with the page (Linux: `mem_cgroup_migrate()`).
        memoryCgroups.migrateCharge(from: pfn, to: target, pages: frames.order(pfn).pages)
        // The new page takes the old one's list and reverse-map origin before anything can reach it.
        let origin = lru.origin(of: pfn)
        lru.add(target, to: list, family: origin.family, index: origin.index)
        for (mm, va, old) in replaced {
            let moved = PageTableEntry(pfn: target, bits: old.rawValue & ~PageTableEntry.pfnMask)
            let done = mm.exchangeMigrationEntry(va, huge: huge) { $0 == .migrationEntry(for: old) ? moved : nil }
            precondition(done != nil, "a migration entry at \(va) changed under the migration")
            if huge {
                hugeMappings.remove(pfn, mm, va)
                hugeMappings.add(target, mm, va)
            }
        }
        if perPageHuge {
            frames.setFolioField(pfn, .entireMapcount, 0)
            frames.setFolioField(pfn, .pagesMapped, 0)
            // The queue membership moves with the folio (Linux: the deferred list of the new folio).
            deferredSplitFolio(target, partiallyMapped: false)
        } else {
            frames.setMapcount(pfn, 0)
        }
        // The isolation's reference is the last one: the old page is freed.
        lru.release(pfn)
        frames.setRefcount(pfn, 1)
        putPage(pfn)
        return .migrated(target)
    }
}

extension Kernel {
    /// Takes the mmap locks of the distinct address spaces in `spaces` for reading, in pid order, with
    /// trylocks (a caller may hold one of them, even for writing); nil, with nothing held, when one is
    /// taken or has exited. Release them with `unlockMappers`. (Linux relies on the rmap locks.)
    func tryReadLockMappers(_ spaces: [AddressSpace]) -> [AddressSpace]? {
        var distinct: [AddressSpace] = []
        for mm in spaces where !distinct.contains(where: { $0 === mm }) { distinct.append(mm) }
        distinct.sort { $0.pid < $1.pid }
        var locked: [AddressSpace] = []
        for mm in distinct {
            guard mm.mmapLock.tryReadLock() else { unlockMappers(locked); return nil }
            locked.append(mm)
        }
        if locked.contains(where: \.hasExited) { unlockMappers(locked); return nil }
        return locked
    }

    /// Releases what `tryReadLockMappers` took.
    func unlockMappers(_ locked: [AddressSpace]) {
        for mm in locked.reversed() { mm.mmapLock.unlock() }
    }
}

extension PageTableEntry {
    /// The migration entry that stands for `entry` while its page moves: its bits without present
    /// (and PROT_NONE), with the splitting bit (Linux: `make_readable_migration_entry()` and friends).
    static func migrationEntry(for entry: PageTableEntry) -> PageTableEntry {
        entry.without(PageTableEntry.presentBit | PageTableEntry.protNoneBit).with(PageTableEntry.splittingBit)
    }

    /// Whether a PTE is a migration entry (Linux: `is_migration_entry()`).
    var isMigrationEntry: Bool { !isHuge && isSplitting && !isMapped }
}

extension AddressSpace {
    /// Under the entry's lock, replaces the PTE (or huge PMD) at `va` by what `change` returns for the
    /// current entry, unless it returns nil; returns the entry it replaced, or nil.
    /// - Precondition: the mmap lock is held.
    func exchangeMigrationEntry(_ va: VirtualAddress, huge: Bool,
                                            _ change: (PageTableEntry) -> PageTableEntry?) -> PageTableEntry? {
        guard let (pmd, pmdIndex) = walk(va, to: .pmd, allocate: false) else { return nil }
        let table: PageTable, index: Int, lock: UnsafeMutablePointer<Atomic<UInt32>>
        if huge {
            (table, index, lock) = (pmd, pmdIndex, pmdLock(pmd))
        } else {
            let entry = pmd[pmdIndex]
            guard !entry.isNone, !entry.isHuge else { return nil }
            let pte = kernel.table(at: entry)
            (table, index, lock) = (pte, va.tableIndex(.pte), kernel.splitLock(pte))
        }
        lock.spinLock()
        defer { lock.spinUnlock() }
        let current = table[index]
        guard let new = change(current) else { return nil }
        table.set(index, new)
        return current
    }

    /// Waits until the migration entry at `index` of `table` is replaced (Linux: `migration_entry_wait()`).
    func waitForMigration(_ table: PageTable, _ index: Int) {
        while table[index].isMigrationEntry { Scheduling.pause() }
    }
}
