import VMCore
import PhysicalMemory

extension Kernel {
    /// The LRU lists agree with the frames: each entry is the head of an anonymous folio (or a small
    /// page) with `PG_lru`, and `PG_active` exactly on the active list; no frame is on two lists or
    /// twice on one, and no other frame has `PG_lru`; every anonymous folio that is mapped or in the
    /// swap cache is on a list unless isolated, the lists of the cgroup it is charged to; the lists'
    /// page counts, summed over the cgroups' lruvecs as vmstat shows them as
    /// `nr_inactive_anon`/`nr_active_anon`, equal their lengths in pages (Linux:
    /// `VM_BUG_ON_FOLIO(!folio_test_lru())`,
    /// `lruvec_lru_size()` against the lists).
    func checkLRUInvariants() -> [String] {
        var problems: [String] = []
        let frames = memory.frames
        let snapshot = lru.snapshot()
        let onList = FrameScratch<Bool>(count: memory.totalPages)
        var totalPages = [0, 0], totalFolios = [0, 0]
        for vec in snapshot.lruvecs {
            for list in AnonLRU.allCases {
                var pages = 0
                for pfn in vec.lists[list.rawValue] {
                    guard pfn.index < memory.totalPages else { problems.append("LRU list names \(pfn) beyond memory"); continue }
                    if onList[pfn.index] { problems.append("\(pfn) is on the LRU lists twice") }
                    onList[pfn.index] = true
                    let flags = frames.flags(pfn)
                    if frames.kind(pfn) != .anonymous || flags.contains(.tail) {
                        problems.append("\(pfn) on the \(list) list is not the head of an anonymous folio")
                    }
                    if !flags.contains(.lru) { problems.append("\(pfn) on the \(list) list lacks PG_lru") }
                    if flags.contains(.active) != (list == .active) {
                        problems.append("\(pfn) on the \(list) list has PG_active \(flags.contains(.active))")
                    }
                    if frames.refcount(pfn) <= 0 { problems.append("\(pfn) on the \(list) list has no reference") }
                    // A folio is on the lists of the cgroup it is charged to (Linux: `folio_lruvec()`).
                    let charged = Int(memoryCgroups.ownerIndex(of: pfn))
                    if charged != vec.lruvec || lru.linkedLruvec(pfn) != vec.lruvec {
                        problems.append("\(pfn) on lruvec \(vec.lruvec) is charged to cgroup index \(charged) (recorded lruvec \(lru.linkedLruvec(pfn)))")
                    }
                    pages += frames.order(pfn).pages
                }
                if pages != vec.pages[list.rawValue] {
                    problems.append("the \(list) list of lruvec \(vec.lruvec) counts \(vec.pages[list.rawValue]) pages but holds \(pages)")
                }
                if vec.folios[list.rawValue] != vec.lists[list.rawValue].count {
                    problems.append("the \(list) list of lruvec \(vec.lruvec) counts \(vec.folios[list.rawValue]) folios but holds \(vec.lists[list.rawValue].count)")
                }
                totalPages[list.rawValue] += pages
                totalFolios[list.rawValue] += vec.lists[list.rawValue].count
            }
        }
        if totalPages != snapshot.totalPages || totalFolios != snapshot.totalFolios {
            problems.append("the LRU lists' totals are \(snapshot.totalPages) pages and \(snapshot.totalFolios) folios, but the lruvecs hold \(totalPages) and \(totalFolios)")
        }
        for i in 0..<memory.totalPages {
            let pfn = PFN(i)
            let flags = frames.flags(pfn)
            if flags.contains(.lru) && !onList[i] { problems.append("\(pfn) has PG_lru but is on no list") }
            if snapshot.isolated.contains(pfn.rawValue) && flags.contains(.lru) {
                problems.append("\(pfn) is isolated but has PG_lru")
            }
            guard frames.kind(pfn) == .anonymous, !flags.contains(.tail), !onList[i],
                  !snapshot.isolated.contains(pfn.rawValue) else { continue }
            if folioMapcount(pfn) > 0 || flags.contains(.swapCache) {
                problems.append("anonymous \(flags.contains(.head) ? "folio" : "page") \(pfn) is mapped or cached but on no LRU list")
            }
        }
        return problems
    }
}
