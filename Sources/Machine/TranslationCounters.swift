/// What one simulated CPU's translations did and cost.
///
/// Linux/hardware counterparts: `dtlb_load_misses.*`, `dtlb_store_misses.walk_completed`,
/// `page_walker_loads.*` (Intel PMU), `ls_l1_d_tlb_miss.*`, `ls_tablewalker.*` (AMD PMU).
public struct TranslationCounters: Sendable, Hashable {
    public var accesses = 0
    /// Translations found in an L1 TLB array.
    public var l1Hits = 0
    /// Translations found in the second-level TLB.
    public var l2Hits = 0
    /// Completed page walks (misses in every TLB level, plus dirty-bit assists).
    public var walks = 0
    /// Memory references made by walks (page-table entries read, host entries included when nested).
    public var walkReferences = 0
    /// Of those, references that missed every level of the cache model.
    public var walkReferencesFromMemory = 0
    /// Walks that started below the root thanks to a paging-structure cache hit.
    public var pageWalkCacheHits = 0
    /// Writes through a clean TLB entry: the MMU re-walks to set the dirty bit.
    public var dirtyAssists = 0
    /// Page faults raised into the kernel.
    public var faults = 0
    /// Dirty data lines the cache model wrote back to memory (charged in `dataCycles`).
    public var writebacks = 0

    /// Cycles by cause; `cycles` is their sum.
    public var baseCycles = 0.0
    public var tlbCycles = 0.0
    public var walkCycles = 0.0
    public var dataCycles = 0.0
    public var faultCycles = 0.0
    public var flushCycles = 0.0
    public var cycles: Double { baseCycles + tlbCycles + walkCycles + dataCycles + faultCycles + flushCycles }

    /// Misses in the L1 TLB per access.
    public var l1MissRate: Double { accesses == 0 ? 0 : Double(accesses - l1Hits) / Double(accesses) }
    public init() {}
}
