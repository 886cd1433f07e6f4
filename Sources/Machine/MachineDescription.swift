/// The geometry of one TLB array: which page sizes it holds, how many entries, how many ways.
public struct TLBArraySpec: Sendable, Hashable, CustomStringConvertible {
    public var pageSizes: PageSizeSet
    public var entries: Int
    /// Ways per set; equal to `entries` for a fully associative array.
    public var ways: Int

    public init(_ pageSizes: PageSizeSet, entries: Int, ways: Int) {
        self.pageSizes = pageSizes; self.entries = entries; self.ways = ways
    }
    /// A fully associative array.
    public static func full(_ pageSizes: PageSizeSet, entries: Int) -> Self { Self(pageSizes, entries: entries, ways: entries) }

    /// Why this geometry cannot be built, or nil.
    public var problem: String? {
        if entries <= 0 || ways <= 0 { return "entries and ways must be positive" }
        if pageSizes.rawValue == 0 { return "no page size" }
        if entries % ways != 0 { return "\(entries) entries are not a multiple of \(ways) ways" }
        let sets = entries / ways
        if sets & (sets - 1) != 0 { return "\(entries) entries / \(ways) ways = \(sets) sets, not a power of two" }
        return nil
    }

    public var description: String {
        "\(pageSizes) \(entries) entries, " + (ways == entries ? "fully associative" : "\(ways)-way")
    }
}

/// One level of the data-cache model that page-table lines (and, optionally, data lines) go through.
public struct CacheLevelSpec: Sendable, Hashable {
    public var bytes: Int
    public var ways: Int
    /// Load-to-use latency in cycles.
    public var latency: Double
    public init(bytes: Int, ways: Int, latency: Double) { self.bytes = bytes; self.ways = ways; self.latency = latency }

    public var problem: String? {
        if bytes <= 0 || ways <= 0 || latency < 0 { return "size, ways and latency must be positive" }
        let lines = bytes / 64
        if lines % ways != 0 { return "\(lines) lines are not a multiple of \(ways) ways" }
        let sets = lines / ways
        if sets & (sets - 1) != 0 { return "\(lines) lines / \(ways) ways = \(sets) sets, not a power of two" }
        return nil
    }
}

/// What a simulated core costs, in cycles unless named otherwise.
public struct TimingParameters: Sendable, Hashable {
    /// Every access, before translation and data (the pipeline's share).
    public var baseCycles: Double = 1
    /// Extra latency of an access that misses the L1 TLB and hits the second level.
    public var l2TLBHitCycles: Double = 7
    /// Fixed cost of starting a page walk, beyond its memory references.
    public var walkStartCycles: Double = 5
    /// DRAM latency in nanoseconds.
    public var memoryLatencyNs: Double = 90
    /// Independent accesses (GUPS-like streams) overlap this many misses on average; dependent ones
    /// (pointer chasing) do not overlap.
    public var memoryLevelParallelism: Double = 8
    /// A 4 KiB anonymous fault including zeroing (`do_anonymous_page()`).
    public var baseFaultCycles: Double = 2_500
    /// A 2 MiB anonymous fault including zeroing 2 MiB (`do_huge_pmd_anonymous_page()`).
    public var hugeFaultCycles: Double = 120_000
    /// A fault that allocates nothing: the zero page mapped, an exclusive page reused on a write,
    /// an accessed or dirty bit set by software (`do_anonymous_page()`'s zero-page branch, `wp_page_reuse()`).
    public var minorFaultCycles: Double = 1_000
    /// Copying one 4 KiB page on copy-on-write (`copy_user_highpage()`); zeroing a page costs
    /// `(fault-2m − fault-4k) / 511`, copying reads a page as well as writing one.
    public var copyPageCycles: Double = 500
    /// Entering direct compaction once, before any page is scanned (`__alloc_pages_direct_compact()`:
    /// draining the per-CPU lists, setting up the scanners).
    public var compactStallCycles: Double = 5_000
    /// Each page compaction's scanners look at (`compact_migrate_scanned`, `compact_free_scanned`).
    public var compactScanCycles: Double = 10
    /// Migrating one 4 KiB page: unmap, flush, copy, remap (`migrate_pages()` for one folio).
    public var migratePageCycles: Double = 4_000
    /// Reclaiming one page directly, beyond writing it out: isolation, the reverse-map walk and unmap (`shrink_folio_list()`).
    public var reclaimPageCycles: Double = 1_000
    /// Writing one 4 KiB page to swap (an in-memory device, zram-like: compress and store; `pswpout`).
    public var swapOutPageCycles: Double = 10_000
    /// Reading one 4 KiB page back from swap on a major fault (zram-like decompress; `pswpin`).
    public var swapInPageCycles: Double = 8_000
    /// One `INVLPG` on the local CPU.
    public var invlpgCycles: Double = 150
    /// A full local flush (CR3 write).
    public var fullFlushCycles: Double = 300
    /// The initiator's cost of an IPI round (send and wait for the acknowledgements).
    public var ipiSendCycles: Double = 3_000
    /// A remote CPU's cost of receiving the IPI and running the flush function.
    public var ipiReceiveCycles: Double = 1_500
    public init() {}
}

/// A simulated core's translation hardware and costs: what a preset or a config file describes.
public struct MachineDescription: Sendable, Hashable {
    public var name: String
    /// Where the numbers come from (manual and table).
    public var source: String
    public var frequencyGHz: Double
    public var l1Data: [TLBArraySpec]
    public var l1Instruction: [TLBArraySpec]
    public var l2: [TLBArraySpec]
    /// Paging-structure caches: PML4E, PDPTE and PDE caches (Intel SDM vol. 3A, 4.10.3).
    public var pml4Cache: TLBArraySpec
    public var pdptCache: TLBArraySpec
    public var pdCache: TLBArraySpec
    /// Guest-physical → host-physical translations under nested paging (AMD's "nested TLB").
    public var nestedTLB: TLBArraySpec
    /// L1D, L2, L3 of the cache model, innermost first.
    public var caches: [CacheLevelSpec]
    public var timing: TimingParameters
    /// What sharing costs between CPUs (`SimulatedTime`, machines of more than one CPU); a preset's
    /// defaults (`ContentionParameters.preset(named:)`) unless set.
    public var contention: ContentionParameters

    public init(name: String, source: String, frequencyGHz: Double, l1Data: [TLBArraySpec],
                l1Instruction: [TLBArraySpec], l2: [TLBArraySpec], pml4Cache: TLBArraySpec,
                pdptCache: TLBArraySpec, pdCache: TLBArraySpec, nestedTLB: TLBArraySpec,
                caches: [CacheLevelSpec], timing: TimingParameters) {
        self.name = name; self.source = source; self.frequencyGHz = frequencyGHz
        self.l1Data = l1Data; self.l1Instruction = l1Instruction; self.l2 = l2
        self.pml4Cache = pml4Cache; self.pdptCache = pdptCache; self.pdCache = pdCache
        self.nestedTLB = nestedTLB; self.caches = caches; self.timing = timing
        contention = .preset(named: name)
    }

    /// The same core without paging-structure caches or nested TLB: every walk reads every level
    /// (an ablation, and the textbook 24-reference 2-D walk).
    public var withoutWalkCaches: MachineDescription {
        var d = self
        d.name += " without walk caches"
        let none = TLBArraySpec(.size4K, entries: 0, ways: 0)
        d.pml4Cache = none; d.pdptCache = none; d.pdCache = none; d.nestedTLB = none
        return d
    }

    /// DRAM latency in cycles at this core's frequency.
    public var memoryLatencyCycles: Double { timing.memoryLatencyNs * frequencyGHz }

    /// Every problem that would stop this description from being built, with the part it concerns.
    public var problems: [String] {
        var out: [String] = []
        if !(frequencyGHz > 0) { out.append("frequency must be positive") }
        if l1Data.isEmpty { out.append("no l1d array") }
        if l1Instruction.isEmpty { out.append("no l1i array") }
        if l2.isEmpty { out.append("no l2 array") }
        for (label, specs) in [("l1d", l1Data), ("l1i", l1Instruction), ("l2", l2)] {
            for s in specs { if let p = s.problem { out.append("\(label): \(p)") } }
        }
        // A paging-structure cache or nested TLB of 0 entries models a core without one.
        for (label, s) in [("pwc pml4", pml4Cache), ("pwc pdpt", pdptCache), ("pwc pd", pdCache), ("nested-tlb", nestedTLB)]
        where s.entries != 0 {
            if let p = s.problem { out.append("\(label): \(p)") }
        }
        for (label, specs) in [("l1d", l1Data), ("l1i", l1Instruction)] {
            var seen: PageSizeSet = []
            for s in specs {
                if !seen.isDisjoint(with: s.pageSizes) { out.append("\(label): two arrays hold \(seen.intersection(s.pageSizes))") }
                seen.formUnion(s.pageSizes)
            }
        }
        if caches.isEmpty { out.append("no cache level") }
        if let p = contention.problem { out.append("contention: \(p)") }
        for (i, c) in caches.enumerated() { if let p = c.problem { out.append("cache l\(i + 1): \(p)") } }
        return out
    }
}
