import Synchronization
import VMCore
import PhysicalMemory

/// Reservation-based superpages (Navarro et al., OSDI 2002; FreeBSD's `sys/vm/vm_reserv.c`), for a
/// policy whose `HugepagePolicy.reservation(in:at:settings:)` answers. The first touch of a 4 KiB page
/// in a 2 MiB-aligned range that fits the anonymous VMA, with nothing else mapped there yet, reserves a
/// physically contiguous order-9 block; each later first touch in the range maps the page at the
/// matching offset of that block, zeroed then (untouched pages are never zeroed); once all 512 are
/// mapped, the range is remapped by one PMD in place, without a copy.
///
/// ```
///  PTE table  [ p0  ∅  p2  ∅  …  p511 ]        one order-9 folio = the reservation
///               │       │          │          head  +1   +2   …  +511
///               └───────┼──────────┼────────► [p0 ][  ][p2 ] … [p511]   population = pages mapped
///                       └──────────┴────────►  (page i of the range is always frame head + i)
/// ```
///
/// A reservation is an anonymous order-9 folio mapped by PTEs at matching offsets: the frame table
/// holds all its state, under the locks that already guard a folio. Its population count is the
/// folio's count of pages mapped (`FrameTable.FolioField.pagesMapped`), which rises at each first touch
/// and falls at munmap and MADV_DONTNEED; a reservation is found from the PTE table, under its lock, by
/// the first entry that maps a page (FreeBSD: `vm_reserv_from_object()` by the neighbouring pages).
/// A partly populated reservation waits on the deferred-split queue, kept in order of last change
/// (FreeBSD: the `partpop` queue); under memory pressure its shrinker breaks the one that changed least
/// recently, freeing its unpopulated pages (FreeBSD: `vm_reserv_reclaim_inactive()` →
/// `vm_reserv_break()`). When the last page of a reservation is unmapped, the folio is freed whole
/// (FreeBSD: `vm_reserv_depopulate()` at population zero).
///
/// Counters: `reserv_alloc` (reservations made), `reserv_broken`, `reserv_promote` (FreeBSD:
/// `vm.reserv.*`, `vm.pmap.pde.promotions`).
extension AddressSpace {
    /// The first touch of the page at `va` served from a reservation, or nil when no reservation can
    /// serve it (the caller maps a page of its own): the range does not fit the VMA, something other
    /// than a reservation is mapped in it, the page at the offset is taken, or no 2 MiB block is free
    /// (FreeBSD: `vm_reserv_alloc_page()`, `vm_reserv_populate()`).
    /// - Precondition: the mmap lock is held for reading; `table` is the PTE table of `va`, whose entry
    ///   `index` was empty; the VMA is private anonymous with an anon_vma.
    func reservationFault(_ vma: VMA, _ va: VirtualAddress, _ table: PageTable, _ index: Int,
                          _ rules: ReservationRules, _ fault: inout FaultContext) -> FaultOutcome? {
        guard vma.anonVMA != 0, hugeRangeFits(vma, va) else { return nil }
        let frames = kernel.memory.frames
        let lock = kernel.splitLock(table)
        let haddr = va.alignedDown(PageGeometry.pmdSize)

        lock.spinLock()
        guard table[index].isNone else { lock.spinUnlock(); return .handled }
        var found = reservation(in: table)
        lock.spinUnlock()
        if case .changing(let at) = found { return waitForChange(table, at, &fault) }

        var created: PFN?
        if case .none = found {
            // A new reservation: one 2 MiB block, nothing zeroed yet (FreeBSD: `vm_phys_alloc_pages()` of
            // `VM_LEVEL_0_ORDER`).
            guard let head = kernel.memory.allocateFolio(order: PageGeometry.pmdOrder, kind: .anonymous, zeroed: false) else {
                return nil
            }
            kernel.countAllocation(pages: PageGeometry.pmdOrder.pages)
            guard charge(head, order: PageGeometry.pmdOrder) else {
                kernel.putPage(head)
                return nil
            }
            created = head
            found = .reserved(head)
        }
        guard case .reserved(let head) = found else { return nil }
        let pfn = head + index

        lock.spinLock()
        // Another CPU may have mapped this page, or made a reservation of its own, meanwhile.
        let now = table[index].isNone ? reservation(in: table) : .occupied
        if case .changing(let at) = now {
            lock.spinUnlock()
            if let created { kernel.putPage(created) }
            return waitForChange(table, at, &fault)
        }
        if let created {
            guard table[index].isNone, case .none = now else {
                lock.spinUnlock()
                kernel.putPage(created)
                return .handled
            }
        } else {
            guard table[index].isNone, case .reserved(head) = now,
                  frames.mapcount(pfn) == 0, frames.tryGetReference(head) else {
                lock.spinUnlock()
                return table[index].isNone ? nil : .handled
            }
        }
        kernel.memory.storage?.zero(pfn)
        frames.insertFlags(pfn, [.anonExclusive, .swapBacked])
        mapPage(pfn)
        if created != nil { addNewAnonFolioToLRU(head, vma, at: haddr) }
        table.set(index, PageTableEntry(pfn: pfn, bits: reservedPageBits(vma)))
        var population = Int(frames.folioField(head, .pagesMapped))
        var filled = 0
        if let fillAt = rules.fillAt, population >= fillAt, population < PageGeometry.entriesPerTable {
            // Sync-N: the fault fills the rest of the reservation, zeroing every page.
            filled = fillReservation(vma, table, head)
            population += filled
        }
        lock.spinUnlock()

        fault.zeroed(pages: 1 + filled)
        fault.mapped = .base
        fault.resolution = .mapped
        if filled > 0 { kernel.vmstat.count(.thpReservFill) }
        if created != nil {
            kernel.vmstat.count(.thpReservAlloc)
            if population < PageGeometry.entriesPerTable { kernel.deferredSplitFolio(head, partiallyMapped: true, counted: false) }
        }
        if population >= PageGeometry.entriesPerTable {
            // Fully populated: off the partially populated queue, and promoted if the policy says so.
            kernel.unqueueDeferredSplit(head)
            if rules.promotes { fault.reservationToPromote = haddr }
        } else if created == nil {
            kernel.requeueDeferredSplit(head)
        }
        return .handled
    }

    /// Waits for the migration entry at `index` to go (a split or a migration of the range's pages is
    /// under way, so its population cannot be read), then lets the access fault again (Linux:
    /// `migration_entry_wait()`; FreeBSD serializes population and `vm_reserv_break()` under the
    /// reservation's lock).
    private func waitForChange(_ table: PageTable, _ index: Int, _ fault: inout FaultContext) -> FaultOutcome {
        fault.waited = .migrationEntry
        waitForMigration(table, index)
        return .handled
    }

    /// The bits of a PTE that maps a reservation's page: writable (and dirty) wherever the VMA is, so
    /// that a read first touch does not keep the range from promotion (FreeBSD's `vm_fault()` maps a
    /// private page of the first object with the entry's full protection).
    @inline(__always) func reservedPageBits(_ vma: VMA) -> UInt64 {
        var bits = PageTableEntry.userBits(vma.flags.protection) | PageTableEntry.accessedBit
        if vma.flags.contains(.write) { bits |= PageTableEntry.writableBit | PageTableEntry.dirtyBit }
        return bits
    }

    /// Maps every page of the reservation `head` whose PTE in `table` is empty, each zeroed and with a
    /// reference of its own; returns how many (Quicksilver: the all-at-once preparation of Sync-N and
    /// `vm_reserv_prepopulate()`).
    /// - Precondition: the table's split lock is held; `table` maps the reservation `head`.
    func fillReservation(_ vma: VMA, _ table: PageTable, _ head: PFN) -> Int {
        let frames = kernel.memory.frames
        let bits = reservedPageBits(vma)
        var filled = 0
        for i in 0..<PageGeometry.entriesPerTable where table[i].isNone {
            let pfn = head + i
            guard frames.mapcount(pfn) == 0, frames.tryGetReference(head) else { continue }
            kernel.memory.storage?.zero(pfn)
            frames.insertFlags(pfn, [.anonExclusive, .swapBacked])
            mapPage(pfn)
            table.set(i, PageTableEntry(pfn: pfn, bits: bits))
            filled += 1
        }
        return filled
    }

    /// Async-N's work on one reservation: fills the reservation `head` mapped at `haddr` and promotes it,
    /// under the mmap lock taken for writing; returns the pages zeroed ahead, or nil when the range no
    /// longer holds that reservation (Quicksilver: `vm_reserv_prepopulate()`).
    /// - Precondition: no lock of this mm is held; the caller holds a reference on `head`.
    func prepopulateReservation(_ haddr: VirtualAddress, _ head: PFN, promotes: Bool) -> Int? {
        mmapLock.withWriteLock { () -> Int? in
            guard !hasExited, let vma = vmas.vma(containing: haddr), !vma.isShared, hugeRangeFits(vma, haddr),
                  let (pmd, pmdIndex) = walk(haddr, to: .pmd, allocate: false) else { return nil }
            let entry = pmd[pmdIndex]
            guard !entry.isNone, !entry.isHuge else { return nil }
            let table = kernel.table(at: entry)
            let lock = kernel.splitLock(table)
            lock.spinLock()
            guard case .reserved(head) = reservation(in: table) else { lock.spinUnlock(); return nil }
            let filled = fillReservation(vma, table, head)
            let population = Int(kernel.memory.frames.folioField(head, .pagesMapped))
            lock.spinUnlock()
            if population >= PageGeometry.entriesPerTable {
                kernel.unqueueDeferredSplit(head)
                if promotes { promoteReservation(haddr) }
            }
            return filled
        }
    }

    /// What a PTE table holds for reservations.
    enum TableReservation: Equatable {
        /// Nothing is mapped in the range: a reservation may be made.
        case none
        /// The reservation whose first frame is this: its pages are mapped at their offsets.
        case reserved(PFN)
        /// Something other than a reservation is mapped there (a page of its own, a swap entry), so
        /// none is made (FreeBSD: `vm_reserv_alloc_page()`'s `leftcap`/`rightcap` test).
        case occupied
        /// A migration entry stands at this index: a split or a migration is under way, so what the
        /// range holds is not known until it ends.
        case changing(Int)
    }

    /// The reservation `table` maps, judged by its first non-empty entry (zero-page entries skipped;
    /// a migration entry first makes it `.changing`).
    /// - Precondition: the table's split lock is held.
    func reservation(in table: PageTable) -> TableReservation {
        let frames = kernel.memory.frames
        for i in 0..<PageGeometry.entriesPerTable {
            let e = table[i]
            if e.isNone || e.isMapped && e.isSpecial { continue }
            if e.isMigrationEntry { return .changing(i) }
            guard e.isMapped else { return .occupied }
            let flags = frames.flags(e.pfn)
            guard !flags.isDisjoint(with: [.head, .tail]) else { return .occupied }
            let head = flags.contains(.head) ? e.pfn : frames.head(of: e.pfn)
            guard frames.order(head) == PageGeometry.pmdOrder, e.pfn.rawValue &- head.rawValue == UInt32(i),
                  frames.kind(head) == .anonymous else { return .occupied }
            return .reserved(head)
        }
        return .none
    }

    /// Promotes the reservation the fault filled, under the mmap lock taken for writing as a collapse
    /// is made (`getUserPages` promotes what its faults filled once it drops the lock).
    /// - Precondition: no lock of this mm is held.
    func promoteReservationAfterFault(_ fault: inout FaultContext) {
        guard let haddr = fault.reservationToPromote else { return }
        fault.reservationToPromote = nil
        mmapLock.withWriteLock { _ = promoteReservation(haddr) }
    }

    /// Remaps the 2 MiB range at `haddr`, whose 512 PTEs map the pages of one order-9 folio in order,
    /// by one huge PMD in place: no page is copied; the emptied PTE table becomes the PMD's deposit.
    /// Every PTE must map its page and agree on write permission; nothing changes otherwise (FreeBSD:
    /// `pmap_promote_pde()` on the last `pmap_enter()` of a fully populated reservation).
    /// Returns whether it promoted.
    /// - Precondition: the mmap lock is held for writing; `haddr` is 2 MiB-aligned.
    @discardableResult
    func promoteReservation(_ haddr: VirtualAddress) -> Bool {
        guard !hasExited, let vma = vmas.vma(containing: haddr), !vma.isShared, hugeRangeFits(vma, haddr),
              let (pmd, pmdIndex) = walk(haddr, to: .pmd, allocate: false) else { return false }
        let old = pmd[pmdIndex]
        guard !old.isNone, !old.isHuge else { return false }
        let frames = kernel.memory.frames
        let end = haddr + PageGeometry.pmdSize
        return invalidatingSecondaryMMUs(haddr, end) { () -> Bool in
            // Unhook the table so that no walker reaches the PTEs while they change (as a collapse does).
            let pmdLock = self.pmdLock(pmd)
            pmdLock.spinLock()
            pmd.set(pmdIndex, .none)
            pmdLock.spinUnlock()
            kernel.flushTLB(self, haddr, end)

            let table = kernel.table(at: old)
            let pteLock = kernel.splitLock(table)
            pteLock.spinLock()
            let first = table[0]
            var head: PFN?
            if first.isMapped && !first.isSpecial, frames.flags(first.pfn).contains(.head),
               frames.order(first.pfn) == PageGeometry.pmdOrder, kernel.entireMapcount(first.pfn) == 0 {
                head = first.pfn
            }
            let writable = first.isWritable
            let agree = head.map { head in
                (0..<PageGeometry.entriesPerTable).allSatisfy { i in
                    let e = table[i]
                    return e.isMapped && !e.isSpecial && e.pfn == head + i && e.isWritable == writable
                }
            } ?? false
            guard let head, agree else {
                pteLock.spinUnlock()
                pmdLock.spinLock()
                pmd.set(pmdIndex, old)
                pmdLock.spinUnlock()
                return false
            }
            // The PMD's mapping first, so that no page counts as unmapped in between; then the PTEs'
            // mappings go, their 512 references becoming the PMD's one.
            pmdLock.spinLock()
            mapHugePage(head, at: haddr)
            pmdLock.spinUnlock()
            var dirty = false
            for i in 0..<PageGeometry.entriesPerTable {
                let e = table.exchange(i, .none)
                dirty = dirty || e.isDirty
                removeMapping(head + i)
            }
            frames.addRefcount(head, -Int32(PageGeometry.entriesPerTable - 1))
            pteLock.spinUnlock()

            var bits = PageTableEntry.userBits(vma.flags.protection) | PageTableEntry.hugeBit | PageTableEntry.accessedBit
            if writable { bits |= PageTableEntry.writableBit }
            if dirty { bits |= PageTableEntry.dirtyBit }
            pmdLock.spinLock()
            depositTable(table, in: pmd)
            pmd.set(pmdIndex, PageTableEntry(pfn: head, bits: bits))
            pmdLock.spinUnlock()
            kernel.vmstat.count(.thpReservPromote)
            return true
        }
    }
}

extension Kernel {
    /// One wake-up of Quicksilver's `asyncpromo` thread (Async-N): from the most recently changed
    /// partly populated reservation back, fills and promotes those with at least `threshold` pages
    /// populated, at most `budget` of them; returns how many (Quicksilver: `vm_reserv_scan_partpopq()`).
    /// Counts `reserv_prepopulate` and the pages zeroed ahead, `reserv_prezero`.
    @discardableResult
    func prepopulateReservations(threshold: Int, budget: Int, promotes: Bool) -> Int {
        let frames = memory.frames
        let candidates: [UInt32] = allDeferredSplitFolios().reversed()
        var done = 0
        for raw in candidates where done < budget {
            let head = PFN(raw)
            guard frames.tryGetReference(head) else { continue }
            defer { putPage(head) }
            let flags = frames.flags(head)
            guard flags.contains(.head), frames.kind(head) == .anonymous, frames.order(head) == PageGeometry.pmdOrder else { continue }
            let population = Int(frames.folioField(head, .pagesMapped))
            guard population >= threshold, population < PageGeometry.entriesPerTable else { continue }
            let origin = lru.origin(of: head)
            for mm in addressSpaces where mm.anonFamily == origin.family {
                let haddr: VirtualAddress? = mm.mmapLock.withReadLock {
                    mm.vmas.areas.lazy.filter { !$0.isShared }.compactMap { vma -> VirtualAddress? in
                        let pages = (vma.end - vma.start) >> PageGeometry.pageShift
                        guard origin.index >= vma.pgoff, origin.index < vma.pgoff + pages else { return nil }
                        let va = vma.start + ((origin.index - vma.pgoff) << PageGeometry.pageShift)
                        return va.isAligned(PageGeometry.pmdSize) ? va : nil
                    }.first
                }
                guard let haddr, let filled = mm.prepopulateReservation(haddr, head, promotes: promotes) else { continue }
                vmstat.count(.thpReservPrepopulate)
                vmstat.count(.thpReservPrezero, filled)
                done += 1
                break
            }
        }
        return done
    }

    /// One pass of Quicksilver's defragmentation of inactive reservations: from the least recently
    /// changed partly populated reservation on, each whose population the thread has seen unchanged for
    /// `inactiveFor` nanoseconds is broken and its populated pages are migrated out, so that its 2 MiB
    /// block is free again, until `budget` pages have been migrated; returns the pages migrated
    /// (Quicksilver: `vm_reserv_evict_inactive()` → `vm_page_reclaim_run()`, under `inactive_thre` and
    /// `migrate_budget`). Counts `reserv_evict` and `reserv_evict_migrated`.
    /// - Precondition: called by the policy's thread (`policyDaemon` exists).
    @discardableResult
    func evictInactiveReservations(inactiveFor: UInt64, budget: Int) -> Int {
        guard let policyDaemon else { return 0 }
        let frames = memory.frames
        let now = clock.now
        let queued: [UInt32] = allDeferredSplitFolios()
        // Which reservations have kept their population since when.
        var inactive: [PFN] = []
        policyDaemon.reservationsSeen.withLock { seen in
            var next: [UInt32: (population: Int32, since: UInt64)] = [:]
            for raw in queued {
                let head = PFN(raw)
                guard frames.flags(head).contains(.head), frames.order(head) == PageGeometry.pmdOrder else { continue }
                let population = frames.folioField(head, .pagesMapped)
                if let old = seen[raw], old.population == population {
                    next[raw] = old
                    if now &- old.since >= inactiveFor { inactive.append(head) }
                } else {
                    next[raw] = (population, now)
                }
            }
            seen = next
        }
        guard !inactive.isEmpty else { return 0 }
        var migrated = 0
        var rmap: [PFN: [(AddressSpace, VirtualAddress)]]?
        for head in inactive where migrated < budget {
            guard frames.tryGetReference(head) else { continue }
            let split = splitFolio(head)
            putPage(head)
            guard split == .split else { continue }
            vmstat.count(.thpReservEvict)
            policyDaemon.reservationsSeen.withLock { _ = $0.removeValue(forKey: head.rawValue) }
            // The block's unpopulated pages are free now; move the populated ones out of it.
            let block = head.rawValue..<(head.rawValue + UInt32(PageGeometry.entriesPerTable))
            if rmap == nil { rmap = smallPageMappings() }
            var inside: [PFN] = []
            defer { for page in inside { putPage(page) } }
            for raw in block where migrated < budget {
                let pfn = PFN(raw)
                guard frames.kind(pfn) == .anonymous, frames.mapcount(pfn) > 0, let mappings = rmap?[pfn] else { continue }
                var target: PFN?
                while let page = memory.allocateFolio(order: .base, kind: .anonymous, zeroed: false) {
                    if block.contains(page.rawValue) { inside.append(page); continue }
                    target = page
                    break
                }
                guard let target else { break }
                countAllocation(pages: 1)
                if case .migrated = migratePage(pfn, to: target, mappings: mappings) {
                    migrated += 1
                } else {
                    putPage(target)
                }
            }
        }
        vmstat.count(.thpReservEvictMigrated, migrated)
        return migrated
    }
}
