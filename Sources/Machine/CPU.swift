import VMCore
import PhysicalMemory
import Kernel

/// What a CPU puts through its cache model.
public enum CacheModelling: Sendable, Hashable {
    /// Nothing: every walk reference costs the second cache level's latency and data costs nothing
    /// beyond the base cost (translation counts stay exact; the fastest mode).
    case none
    /// Walk references only; data accesses cost nothing beyond the base cost.
    case pageTables
    /// Walk references and data lines: data takes cache room from page-table lines, as on hardware.
    case pageTablesAndData
}

/// One simulated CPU: its TLBs, paging-structure caches, cache model, the address space it runs, and
/// what its accesses cost. Every program access goes through `access(_:_:)`, which translates through
/// the TLBs, walks the kernel's page tables on a miss, raises page faults into the kernel, and retries.
///
/// One host thread drives a CPU at a time; CPUs of one `Machine` share that thread (shootdowns reach
/// into other CPUs' TLBs directly), which keeps runs deterministic.
///
/// Hardware: a logical processor's MMU (Intel SDM vol. 3A, ch. 4); Linux: the CPU `switch_mm()` loads.
public final class CPU: @unchecked Sendable {
    public let id: Int
    public let machineDescription: MachineDescription
    public let tlb: TLBHierarchy
    public let pageWalkCache: PageWalkCache
    /// The cache model; the access path uses `cacheModel`, which the cache thread owns while
    /// `pipelined`: this waits for it first.
    public var cache: CacheModel {
        settle()
        return cacheModel
    }
    let cacheModel: CacheModel
    /// What this CPU's translations did and cost.
    public var counters: TranslationCounters {
        get {
            settle()
            var c = tally
            c.baseCycles += Double(c.accesses) * baseCycles
            return c
        }
        set {
            settle()
            tally = newValue
            tally.baseCycles = newValue.baseCycles - Double(newValue.accesses) * baseCycles
        }
    }
    /// The counters as the access path keeps them. Every access costs `baseCycles`, so its base cycles
    /// are counted by `accesses` alone (`counters` multiplies), which keeps a floating-point addition
    /// out of the path of each access; `tally.baseCycles` holds only a difference a caller set.
    @exclusivity(unchecked) var tally = TranslationCounters()
    /// The latest faults' latency (as `FaultLatencyHistogram.value(cycles:)` gives it) and how many
    /// faults in a row took it, not yet in `recordedFaultLatency`. Faults that do the same work take the
    /// same cycles, so most faults only count here, beside `tally`, and the histogram — whose counts a
    /// machine of many CPUs otherwise finds cold in the host's caches at every fault — is written
    /// when the latency changes.
    @exclusivity(unchecked) var faultRunValue: UInt64 = 0
    @exclusivity(unchecked) var faultRunCount: UInt64 = 0
    @exclusivity(unchecked) var recordedFaultLatency = FaultLatencyHistogram()
    /// Each fault's latency in cycles (`TimingParameters.faultCycles(_:)`); its sum is `counters.faultCycles`.
    public var faultLatency: FaultLatencyHistogram {
        get {
            guard faultRunCount > 0 else { return recordedFaultLatency }
            var h = recordedFaultLatency
            h.record(value: faultRunValue, count: faultRunCount)
            return h
        }
        set {
            recordedFaultLatency = newValue
            faultRunCount = 0
        }
    }
    /// The last fault this CPU raised into its kernel, with what the kernel recorded doing.
    public var lastFault: FaultContext? { raisedFault ? lastFaultContext : nil }
    /// `lastFault`, kept as a context and a flag rather than an optional, which a fault writes with
    /// one copy instead of three (memscale 80 CPUs: about 30 instructions each).
    @exclusivity(unchecked) private var lastFaultContext = FaultContext(address: VirtualAddress(rawValue: 0), access: .read, present: false)
    @exclusivity(unchecked) private var raisedFault = false
    /// What goes through the cache model; less is faster to simulate and less accurate.
    public var cacheModelling = CacheModelling.pageTablesAndData {
        willSet { settle() }
        didSet { modelsDataCache = cacheModelling == .pageTablesAndData; modelsWalkCache = cacheModelling != .none }
    }
    @exclusivity(unchecked) var modelsDataCache = true
    @exclusivity(unchecked) var modelsWalkCache = true
    /// The stream's accesses are independent (GUPS-like), so misses overlap: walk and data cycles are
    /// divided by the core's memory-level parallelism. Off for dependent streams (pointer chasing).
    @exclusivity(unchecked) public var independentAccesses = false {
        willSet { settle() }
    }

    /// Whether this CPU may run its cache model on a second host thread (`Machine.cacheThread`:
    /// set only on a machine of one CPU not in simulated-time order); `run(_:)` uses it while the
    /// CPU is not a guest's and caches page tables and data.
    @exclusivity(unchecked) var cacheThreadAllowed = false {
        didSet {
            guard !cacheThreadAllowed, let pipeline else { return }
            settle()
            pipeline.stop()
            self.pipeline = nil
        }
    }
    /// The cache thread, made by the first batch that uses it.
    var pipeline: CachePipeline?
    /// Whether the cache thread owns the cache model and the tally's cache fields (data and walk
    /// cycles, walk references from memory, write-backs): the access path then writes its cache
    /// operations to `ops` (`emit`), and readers `settle()` first.
    @exclusivity(unchecked) var pipelined = false
    @exclusivity(unchecked) var ops = CachePipeline.Producer(ring: nil)

    weak var machine: Machine?
    /// The machine's contention timeline (`Machine.simulatedTime`), held here so that a fault's
    /// charge does not load the weak `machine`.
    @exclusivity(unchecked) var simulatedTime: SimulatedTime? {
        didSet { unmanagedTime = simulatedTime.map { .passUnretained($0) } }
    }
    /// `simulatedTime` unretained (`machine` keeps it alive), for each fault's charge.
    @exclusivity(unchecked) var unmanagedTime: Unmanaged<SimulatedTime>?
    /// Set for a guest CPU of a `VirtualMachine`: walks become two-dimensional.
    @exclusivity(unchecked) public internal(set) var nested: NestedPaging?
    /// The address space loaded (Linux: `cpu_tlbstate.loaded_mm`).
    @exclusivity(unchecked) public private(set) var mm: AddressSpace?
    /// `mm` unretained (`mm` keeps it alive), for the fault path: an address space is weakly referenced
    /// by its kernel, so its reference count lives in a side table and each retain and release of it
    /// takes the runtime's slow path.
    @exclusivity(unchecked) var loadedMM: Unmanaged<AddressSpace>?
    /// The loaded mm's kernel; unowned because `mm` keeps it alive while loaded.
    unowned(unsafe) var kernel: Kernel?
    /// `kernel` as `Unmanaged`, which a fault's charge reads without the retain and release that a
    /// load of the `unowned(unsafe)` optional still makes.
    @exclusivity(unchecked) var loadedKernel: Unmanaged<Kernel>?
    @exclusivity(unchecked) var root: PageTable?
    /// The ASID (PCID) of the loaded address space.
    @exclusivity(unchecked) public private(set) var asid: UInt16 = 0

    // The last data translation that hit, as a page range; a repeat hit leaves LRU order unchanged
    // (the entry is already most recent in its set), so it can skip the array lookup.
    @exclusivity(unchecked) var filterStart: UInt64 = 0
    @exclusivity(unchecked) var filterPages: UInt64 = 0
    @exclusivity(unchecked) var filterFrame: UInt32 = 0
    @exclusivity(unchecked) var filterDirty = false
    @exclusivity(unchecked) var lastDataLine: UInt64 = .max
    /// The cache model's write-backs already charged.
    @exclusivity(unchecked) var chargedWritebacks = 0
    /// The first L1 data array when it holds 4 KiB pages, unretained (`tlb` owns it), while an
    /// address space is loaded: its 4 KiB probe is the first one `TLBHierarchy.ArrayList.lookup`
    /// makes, so a hit there is answered inline without the level walk.
    @exclusivity(unchecked) var firstL1Data: Unmanaged<TLBArray>?
    /// Whether a miss of `firstL1Data` may take the specialized path (`accessMiss4K`), and the STLB's
    /// first array and the PDE and PDPTE caches for it, unretained (`tlb` and `pageWalkCache` own them).
    /// (`var` so that tests can compare the specialized path with the general one.)
    @exclusivity(unchecked) var missPathShape: MissPathShape
    let missPathSTLB: Unmanaged<TLBArray>?
    let missPathPD: Unmanaged<TLBArray>?
    let missPathPDPT: Unmanaged<TLBArray>?
    /// The L1 data level's and the STLB's `TLBLevelCount`, unretained (`tlb` owns them): both levels
    /// hold only 4 KiB entries of their first arrays while both are 0 (`ArrayList.holdsOnlyFirst4K`).
    let missPathCounts: (l1: Unmanaged<TLBLevelCount>, l2: Unmanaged<TLBLevelCount>)
    /// The lines of last-level page-table entries `run(_:)` prefetched recently (direct-mapped by
    /// the 32 KiB of address space a line of entries maps, plus one; 0: empty).
    let prefetchedLines: UnsafeMutablePointer<UInt64>
    /// Whether `run(_:)` looks ahead in its next batch (the last one walked often enough).
    @exclusivity(unchecked) var lookAhead = true
    static var prefetchFilterSize: Int { 64 }
    /// The tables of PMD entries (`Kernel.pmdTable`) that the look-ahead of the batch running found,
    /// direct-mapped by gigabyte of address space (`key`: the gigabyte plus one; 0: empty), while
    /// no fault has been counted since `pmdTablesFaults` (a fault runs kernel code, which may free or
    /// move tables). Look-downs in a gigabyte found before start there, and a walk that starts at a
    /// PDPTE-cache hit on the table's frame takes it without reading the frame's record
    /// (`accessMiss4K`). Emptied at the batch's end: kernel code runs between batches.
    let pmdTables: UnsafeMutablePointer<(key: UInt64, table: PageTable?)>
    @exclusivity(unchecked) var pmdTablesFaults = 0
    static var pmdTableSlots: Int { 8 }

    /// `machineDescription.timing`, a constant of the CPU's own: a fault's charge reads it in place,
    /// where a call on the description's copied its 152 bytes.
    let timing: TimingParameters
    let baseCycles: Double
    let l1Latency: Double
    let l2TLBLatency: Double
    let walkStartCycles: Double
    /// A walk reference's cost when the cache model is off.
    let fixedReferenceCost: Double
    let mlp: Double

    /// - Parameter sharedLastLevel: the last-level cache this CPU shares with the others of its
    ///   socket, or nil for one of its own.
    init(id: Int, description: MachineDescription, sharedLastLevel: SharedCacheLevel? = nil) {
        self.id = id
        machineDescription = description
        tlb = TLBHierarchy(description)
        pageWalkCache = PageWalkCache(pml4: description.pml4Cache, pdpt: description.pdptCache, pd: description.pdCache)
        cacheModel = CacheModel(levels: description.caches, memoryLatency: description.memoryLatencyCycles,
                           sharedLastLevel: sharedLastLevel)
        baseCycles = description.timing.baseCycles
        l1Latency = description.caches.first?.latency ?? 0
        l2TLBLatency = description.timing.l2TLBHitCycles
        walkStartCycles = description.timing.walkStartCycles
        fixedReferenceCost = description.caches.count > 1 ? description.caches[1].latency : l1Latency
        mlp = max(1, description.timing.memoryLevelParallelism)
        prefetchedLines = .allocate(capacity: Self.prefetchFilterSize)
        prefetchedLines.initialize(repeating: 0, count: Self.prefetchFilterSize)
        pmdTables = .allocate(capacity: Self.pmdTableSlots)
        pmdTables.initialize(repeating: (0, nil), count: Self.pmdTableSlots)
        timing = description.timing
        missPathShape = MissPathShape(tlb, pageWalkCache)
        missPathSTLB = tlb.l2.first.map { .passUnretained($0) }
        missPathPD = .passUnretained(pageWalkCache.pd)
        missPathPDPT = .passUnretained(pageWalkCache.pdpt)
        missPathCounts = (.passUnretained(tlb.levelCounts.0), .passUnretained(tlb.levelCounts.2))
    }

    deinit {
        pipeline?.stop()
        prefetchedLines.deallocate()
        pmdTables.deinitialize(count: Self.pmdTableSlots)
        pmdTables.deallocate()
    }

    /// Loads `mm` (Linux: `switch_mm_irqs_off()`: CR3 with the mm's PCID, the CPU joins
    /// `mm_cpumask()`). Translations of other address spaces stay, tagged by their ASID.
    public func switchTo(_ mm: AddressSpace?) {
        self.mm = mm
        loadedMM = mm.map { .passUnretained($0) }
        kernel = mm?.kernel
        loadedKernel = mm.map { .passUnretained($0.kernel) }
        root = mm?.pageTableRoot
        asid = mm.map { Self.asid(of: $0) } ?? 0
        firstL1Data = mm != nil && tlb.l1Data.first?.pageSizes.contains(.size4K) == true
            ? .passUnretained(tlb.l1Data[0]) : nil
        dropFilter()
        if let mm { machine?.noteRunning(self, mm) }
    }

    static func asid(of mm: AddressSpace) -> UInt16 { UInt16(truncatingIfNeeded: mm.pid & 0xFFF) }

    /// Reads one page-table entry of a table at `level` at a physical address: its latency.
    @inline(__always) func readEntry(at address: UInt64, level: PageTableLevel) -> Double {
        guard modelsWalkCache else { return fixedReferenceCost }
        let source = Self.walkSource(level)
        if pipelined {
            // The cache thread adds the latency to the walk's cost (`CachePipeline.Kind.walkEntry`).
            emit(CachePipeline.walkEntry(address: address, source: source))
            return 0
        }
        let latency = cacheModel.access(physicalAddress: address, source: source)
        if latency == cacheModel.memoryLatency { tally.walkReferencesFromMemory &+= 1 }
        if cacheModel.writebacks != chargedWritebacks { chargeWritebacks() }
        return latency
    }

    /// The cache model's source of a walk's read at `level`: 1 + the level's raw value, by cases,
    /// which fold for a known level where a call to `PageTableLevel.rawValue` (another module's
    /// getter) did not always.
    @inline(__always) static func walkSource(_ level: PageTableLevel) -> Int {
        switch level {
        case .pte: 1
        case .pmd: 2
        case .pud: 3
        case .pgd: 4
        }
    }

    @inline(__always) func dropFilter() { filterPages = 0; lastDataLine = .max }

    /// One access by the program running here: translate, fault and retry as needed, and account
    /// its cycles. Returns the frame (on a guest CPU of a `VirtualMachine`, the host frame), or the
    /// fault the kernel could not resolve. Hardware: a load/store's address translation.
    @inline(__always)
    public func access(_ va: VirtualAddress, _ kind: MemoryAccess) -> Result<PFN, AccessFault> {
        // One call to the full path for all the ways there (three calls cost 8 instructions more).
        accessHit(va, kind) { accessMiss(va, kind, probed: $0) }
    }

    /// An access answered by the last-translation filter or the first L1 data array's probe, as
    /// `access` and the batch loop's `accessFused` make it; `miss` takes the rest (`probed`: the
    /// first array was probed for the 4 KiB page and missed).
    @inline(__always)
    func accessHit(_ va: VirtualAddress, _ kind: MemoryAccess,
                   miss: (_ probed: Bool) -> Result<PFN, AccessFault>) -> Result<PFN, AccessFault> {
        let page = va.rawValue >> 12
        let offset = page &- filterStart
        let frame: UInt32
        if offset < filterPages && kind != .execute && (kind == .read || filterDirty) {
            frame = filterFrame &+ UInt32(truncatingIfNeeded: offset)
        } else {
            let found = firstL1Hit(page, kind)
            guard found >= 0 else { return miss(found == -1) }
            frame = UInt32(truncatingIfNeeded: found)
        }
        // A hit in the filter or in the first L1 data array.
        tally.accesses &+= 1
        tally.l1Hits &+= 1
        if modelsDataCache { touchData(frame: frame, va: va.rawValue, write: kind == .write) }
        return .success(PFN(frame))
    }

    /// The first probe of the L1 lookup, for a data access of `page`: on a hit that permits the
    /// access, the frame, with the page left in the filter (`complete(_:_:_:_:)` for a 4 KiB data
    /// page); -1 when the probe missed (a miss changes nothing, so the full path starts after it);
    /// -2 when there was no probe to make or the entry forbids the access.
    @inline(__always)
    func firstL1Hit(_ page: UInt64, _ kind: MemoryAccess) -> Int64 {
        guard kind != .execute, let l1 = firstL1Data else { return -2 }
        // The 4-way array of the specialized miss path probed unrolled; any other, out of line.
        let slot = missPathShape != .none
            ? l1.lookup(tag: TLBArray.tag(page: page, size: .size4K, asid: asid), base: l1.setBase(page, FourWays.self), FourWays.self)
            : firstL1Slot(l1, page)
        guard slot >= 0 else { return -1 }
        let entry = TLBEntry(rawValue: l1._withUnsafeGuaranteedRef { $0.payload(slot) })
        guard Self.permits(entry, kind) else { return -2 }
        filterStart = page
        filterPages = 1
        filterFrame = entry.frame
        filterDirty = entry.isWritable && entry.isDirty
        return Int64(entry.frame)
    }

    /// The first L1 data array's 4 KiB probe for `page` (`TLBArray.lookup`): its slot, or -1.
    @inline(never)
    func firstL1Slot(_ l1: Unmanaged<TLBArray>, _ page: UInt64) -> Int {
        l1._withUnsafeGuaranteedRef { $0.lookup(page: page, size: .size4K, asid: asid) }
    }

    /// Charges the data line of an access to the cache model, and the write-backs it caused.
    @inline(__always)
    func touchData(frame: UInt32, va: UInt64, write: Bool) {
        let line = (UInt64(frame) << 6) | ((va & 0xFFF) >> 6)
        if line == lastDataLine {
            if pipelined { emit(CachePipeline.repeatLine(line, write: write, count: 1)); return }
            if write { cacheModel.markDirty(physicalAddress: line << 6) }
            chargeData(l1Latency)
            return
        }
        let streaming = line == lastDataLine &+ 1 && line & 63 != 0
        lastDataLine = line
        if pipelined { emit(CachePipeline.data(line: line, write: write, streaming: streaming)); return }
        let latency = cacheModel.access(physicalAddress: line << 6, write: write)
        // A stream prefetcher has fetched the next line of the same 4 KiB page ahead of use (hardware
        // prefetchers stop at 4 KiB boundaries).
        chargeData(streaming ? l1Latency : latency)
        if cacheModel.writebacks != chargedWritebacks { chargeWritebacks() }
    }

    func chargeData(_ latency: Double) {
        tally.dataCycles += independentAccesses ? latency / mlp : latency
    }

    /// Charges the dirty lines the cache model wrote back since the last charge. The core never waits
    /// for a write-back, which only takes a share of memory bandwidth: each costs the memory latency
    /// divided by `mlp`, in dependent streams too.
    func chargeWritebacks() {
        let n = cacheModel.writebacks &- chargedWritebacks
        chargedWritebacks = cacheModel.writebacks
        tally.writebacks &+= n
        tally.dataCycles += Double(n) * cacheModel.memoryLatency / mlp
    }

    /// The access when the last-translation filter missed: L1, L2, walk, fault.
    /// `probedFirst4K`: `access` already probed the first L1 data array for the 4 KiB page and missed.
    @inline(never)
    func accessThroughTLBs(_ va: VirtualAddress, _ kind: MemoryAccess, probedFirst4K: Bool = false) -> Result<PFN, AccessFault> {
        precondition(mm != nil, "CPU \(id) runs no address space")
        tally.accesses &+= 1
        let v = va.rawValue
        let levels = kind == .execute ? tlb.instructionLevels : tlb.dataLevels
        // Whether a level's lookup missed: its fill then needs no search for the page (unless a
        // fault ran in between).
        var missedL1 = false, missedL2 = false
        // The second level's hit, looked up after a first-level miss.
        var l2Hit: TLBHierarchy.Hit? = nil
        if probedFirst4K && levels.l1.holdsOnlyFirst4K && levels.l2.holdsOnlyFirst4K {
            // The common case of 4 KiB pages: `access` probed the only first-level entries there are,
            // so the first level misses, and the second level's lookup is its first array's 4 KiB
            // probe (`ArrayList.lookup` makes the same probes, with no others to make).
            missedL1 = true
            l2Hit = levels.l2.lookupFirst4K(va: v, asid: asid)
        } else if let hit = levels.l1.lookup(va: v, asid: asid, skippingFirst4K: probedFirst4K) {
            let entry = levels.l1.payload(hit)
            if Self.permits(entry, kind) {
                tally.l1Hits &+= 1
                return complete(v, kind, entry, hit.size)
            }
            if kind == .write && entry.isWritable { tally.dirtyAssists &+= 1 }
        } else {
            missedL1 = true
            l2Hit = levels.l2.lookup(va: v, asid: asid)
        }
        if missedL1 {
            tally.tlbCycles += independentAccesses ? l2TLBLatency / mlp : l2TLBLatency
            if let hit = l2Hit {
                let entry = levels.l2.payload(hit)
                if Self.permits(entry, kind) {
                    tally.l2Hits &+= 1
                    levels.l1.fill(va: v, asid: asid, size: hit.size, entry: entry, absent: true)
                    return complete(v, kind, entry, hit.size)
                }
                if kind == .write && entry.isWritable { tally.dirtyAssists &+= 1 }
            } else {
                missedL2 = true
            }
        }
        // The walk; a fault and the walks after it go out of line (`accessAfterFault`), which keeps
        // this function small enough for the optimizer to inline the levels' fills and `complete`.
        let walked = if let nested { walk2D(nested, v, kind) } else { walk(v, kind) }
        switch walked {
        case .mapped(let entry, let size):
            levels.l2.fill(va: v, asid: asid, size: size, entry: entry, absent: missedL2)
            let inL1 = levels.l1.fill(va: v, asid: asid, size: size, entry: entry, absent: missedL1)
            return complete(v, kind, entry.piece(containing: v, of: size, as: inL1?.size ?? size), inL1?.size ?? size)
        case .notPresent:
            return accessAfterFault(va, kind, levels, present: false)
        case .protection:
            return accessAfterFault(va, kind, levels, present: true)
        }
    }

    /// The rest of an access whose first walk faulted (`present`: the walk's P bit): the fault, and
    /// the walk and its retry after each handled fault (`PageTableWalk.resolve`, the rule every walker
    /// follows). Kernel code ran, shootdowns with it, so the fills search the levels for the page.
    @inline(never)
    func accessAfterFault(_ va: VirtualAddress, _ kind: MemoryAccess, _ levels: TLBHierarchy.Levels,
                          present: Bool) -> Result<PFN, AccessFault> {
        let v = va.rawValue
        tally.faults &+= 1
        let outcome = raiseFault(va, kind, present: present)
        guard outcome == .handled else { return .failure(AccessFault(at: va, outcome: outcome)) }
        let walked = PageTableWalk.resolve(va, walk: { () -> ((TLBEntry, PageSize)?, present: Bool) in
            switch nested.map({ walk2D($0, v, kind) }) ?? walk(v, kind) {
            case .mapped(let entry, let size): ((entry, size), false)
            case .notPresent: (nil, false)
            case .protection: (nil, true)
            }
        }, fault: { present in
            tally.faults &+= 1
            return raiseFault(va, kind, present: present)
        })
        switch walked {
        case .success(let (entry, size)):
            levels.l2.fill(va: v, asid: asid, size: size, entry: entry)
            let inL1 = levels.l1.fill(va: v, asid: asid, size: size, entry: entry)
            return complete(v, kind, entry.piece(containing: v, of: size, as: inL1?.size ?? size), inL1?.size ?? size)
        case .failure(let fault):
            return .failure(fault)
        }
    }

    @inline(__always)
    static func permits(_ e: TLBEntry, _ kind: MemoryAccess) -> Bool {
        switch kind {
        case .read: true
        case .write: e.isWritable && e.isDirty
        case .execute: e.isExecutable
        }
    }

    /// Finishes a translated access: remembers it for the filter and charges the data line.
    @inline(__always)
    func complete(_ v: UInt64, _ kind: MemoryAccess, _ entry: TLBEntry, _ size: PageSize) -> Result<PFN, AccessFault> {
        let frame = entry.frame &+ UInt32(truncatingIfNeeded: (v & (size.bytes &- 1)) >> 12)
        if kind != .execute {
            filterStart = (v &>> size.shift) &<< (size.shift &- 12)
            filterPages = size.basePages
            filterFrame = entry.frame
            filterDirty = entry.isWritable && entry.isDirty
        }
        if modelsDataCache { touchData(frame: frame, va: v, write: kind == .write) }
        return .success(PFN(frame))
    }

    /// Raises a page fault into the kernel with the error code the walk found (`present`: a present
    /// leaf forbade the access) and charges its latency, which depends on what the kernel recorded in
    /// the fault's context (`FaultWork`: huge or small pages zeroed or copied, direct compaction,
    /// direct reclaim, swap-in), and records it in `faultLatency` (Linux: `exc_page_fault()` →
    /// `do_user_addr_fault()` → `handle_mm_fault()`).
    func raiseFault(_ va: VirtualAddress, _ kind: MemoryAccess, present: Bool) -> FaultOutcome {
        guard let loadedMM else { return .segv(.mapErr) }
        return loadedMM._withUnsafeGuaranteedRef { mm in raiseFault(va, kind, present: present, in: mm) }
    }

    private func raiseFault(_ va: VirtualAddress, _ kind: MemoryAccess, present: Bool, in mm: AddressSpace) -> FaultOutcome {
        SimulatedCPU.switchTo(id)
        var fault = FaultContext(cpu: id, address: va, access: kind, present: present)
        let outcome = mm.handleFault(&fault)
        if outcome == .handled { charge(fault, pid: mm.pid) }
        lastFaultContext = fault
        raisedFault = true
        dropFilter()
        return outcome
    }

    /// Charges a handled fault's latency, records it, and, on a machine in simulated time, charges
    /// its locks and shared lines. The timing parameters are read in place (`timing`), the timeline
    /// and the kernel unretained, and the timeline gets the fault's few figures rather than a copy
    /// of its context: memscale 80 CPUs made 5 copies of the context or the parameters (memcpy) and
    /// 2 retains per fault here.
    @inline(__always)
    private func charge(_ fault: borrowing FaultContext, pid: Int) {
        let cycles = timing.faultCycles(FaultWork(fault))
        tally.faultCycles += cycles
        let value = FaultLatencyHistogram.value(cycles: cycles)
        if value == faultRunValue {
            faultRunCount &+= 1
        } else {
            if faultRunCount > 0 { recordedFaultLatency.record(value: faultRunValue, count: faultRunCount) }
            faultRunValue = value
            faultRunCount = 1
        }
        guard let time = unmanagedTime, let kernel = loadedKernel else { return }
        // Many CPUs: the fault's locks and shared lines, on the machine's timeline.
        let design = kernel._withUnsafeGuaranteedRef { $0.lockDesign }
        let address = fault.address.rawValue, hugePages = fault.hugePages, basePages = fault.basePages
        let streamBytes = fault.bytesZeroed + 2 * fault.bytesCopied, mapped = fault.mapped != nil
        time._withUnsafeGuaranteedRef { time in
            time.chargeFault(address: address, hugePages: hugePages, basePages: basePages,
                             streamBytes: streamBytes, mapped: mapped, cpu: id, pid: pid, design: design,
                             start: counters.cycles - cycles + time.extraCycles[id], cycles: cycles)
        }
    }

    /// The translation the TLBs hold for `va` in the loaded address space, without changing LRU
    /// order or counters: the level that holds it, or nil (gem5's `translateFunctional` view).
    public func cachedTranslation(_ va: VirtualAddress, _ kind: MemoryAccess = .read) -> (level: Int, size: PageSize, frame: PFN)? {
        let v = va.rawValue
        let levels = [kind == .execute ? tlb.l1Instruction : tlb.l1Data, tlb.l2]
        for (n, arrays) in levels.enumerated() {
            for a in arrays {
                for size in a.pageSizes.sizes {
                    let slot = a.peek(page: v >> size.shift, size: size, asid: asid)
                    if slot >= 0 {
                        let e = TLBEntry(rawValue: a.payload(slot))
                        return (n + 1, size, PFN(e.frame &+ UInt32(truncatingIfNeeded: (v & (size.bytes - 1)) >> 12)))
                    }
                }
            }
        }
        return nil
    }

    /// Empties this CPU's TLBs and paging-structure caches (every ASID), keeping the cache model.
    public func flushTranslations() {
        for a in tlb.l1Data { a.invalidateEverything() }
        for a in tlb.l1Instruction { a.invalidateEverything() }
        for a in tlb.l2 { a.invalidateEverything() }
        pageWalkCache.pml4.invalidateEverything(); pageWalkCache.pdpt.invalidateEverything(); pageWalkCache.pd.invalidateEverything()
        dropFilter()
    }

    /// Empties this CPU's TLBs, paging-structure caches and cache model, and zeroes its tally.
    public func reset() {
        settle()
        flushTranslations()
        cacheModel.clear()
        chargedWritebacks = 0
        nested?.reset()
        counters = TranslationCounters()
        faultLatency = FaultLatencyHistogram()
        dropFilter()
    }

    /// Drops this CPU's translations of `asid` in `[start, end)`, or all of them when `end` is nil.
    func invalidate(asid: UInt16, start: UInt64, end: UInt64?) {
        if let end {
            tlb.invalidate(asid: asid, start: start, end: end)
            pageWalkCache.invalidate(asid: asid, start: start, end: end)
        } else {
            tlb.invalidateAll(asid: asid)
            pageWalkCache.invalidateAll(asid: asid)
        }
        dropFilter()
    }
}
