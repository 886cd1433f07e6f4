import Synchronization
import VMCore
import PhysicalMemory

/// How the kernel model is built.
public struct KernelConfiguration: Sendable {
    /// Bytes of simulated physical memory.
    public var memoryBytes: UInt64
    public var mode: PhysicalMemory.Mode
    /// Watermarks; nil for Linux's defaults for the memory size.
    public var watermarks: Watermarks?
    /// The huge-page design the mechanism follows.
    public var design: KernelDesign
    /// Simulated CPUs, numbered from 0 (Linux: `nr_cpu_ids`): each per-CPU structure (per-CPU page
    /// lists, the LRU's add stages, vmstat's counters, page-table slot caches) has this many slots,
    /// and a `Machine` on this kernel has at most this many CPUs. See `problem(withCPUs:)`.
    public var cpus: Int = 16
    /// The CPU the kernel's own threads (khugepaged, kswapd, kcompactd) run on when simulated time
    /// moves; in 0..<`cpus`.
    public var kernelThreadCPU = 0
    /// Per-CPU lists of free base and huge pages in front of the zone lock (Linux's pcp lists).
    public var perCPUPageLists = true
    /// The THP settings at boot; nil for the design's defaults.
    public var hugepageSettings: TransparentHugepageSettings?
    /// The hugepage policy; nil for the design's own (`KernelDesign.policy`).
    public var policy: (any HugepagePolicy)?
    /// The swap device (by default as many slots as memory has pages, no clusters, in host memory).
    public var swap = SwapConfiguration()

    public init(memoryBytes: UInt64 = 1 << 30, mode: PhysicalMemory.Mode = .data, watermarks: Watermarks? = nil,
                design: KernelDesign = .linux2_6_38, hugepageSettings: TransparentHugepageSettings? = nil) {
        self.memoryBytes = memoryBytes
        self.mode = mode
        self.watermarks = watermarks
        self.design = design
        self.hugepageSettings = hugepageSettings
    }

    /// Why `cpus` CPUs cannot be configured, or nil: a kernel has 1 to `SimulatedCPU.maxCount`.
    public static func problem(withCPUs cpus: Int) -> String? {
        (1...SimulatedCPU.maxCount).contains(cpus) ? nil : "\(cpus) CPUs: a kernel has 1 to \(SimulatedCPU.maxCount)"
    }

    /// Why the CPU settings cannot be used, or nil.
    public var cpuProblem: String? {
        if let problem = Self.problem(withCPUs: cpus) { return problem }
        if !(0..<cpus).contains(kernelThreadCPU) { return "kernel threads on CPU \(kernelThreadCPU): the kernel has CPUs 0 to \(cpus - 1)" }
        return nil
    }
}

/// The hardware side of TLB maintenance, which the Machine layer implements: the kernel calls it
/// whenever a translation that a TLB may hold gets weaker or disappears (Linux: `flush_tlb_range()`,
/// `flush_tlb_mm()`).
public protocol TLBFlushInterface: AnyObject, Sendable {
    func flushRange(_ mm: AddressSpace, start: VirtualAddress, end: VirtualAddress)
    func flushAll(_ mm: AddressSpace)
}

/// The kernel model: physical memory, counters, the zero page, and the address spaces of its
/// processes.
public final class Kernel: @unchecked Sendable {
    public let configuration: KernelConfiguration
    public let memory: PhysicalMemory
    public let vmstat: VMStat
    /// `@usableFromInline` for the hardware walker's table accessors (`PageTable+Hardware.swift`).
    @usableFromInline let tables: PageTableStore
    /// The shared zero page (Linux: `ZERO_PAGE(0)`, `empty_zero_page`).
    public let zeroPage: PFN
    /// Set by the Machine layer; nil means no TLBs to keep coherent.
    @exclusivity(unchecked) public nonisolated(unsafe) var tlb: (any TLBFlushInterface)?
    /// The huge-page design: its mechanism variants, each read in one place (`Policy/KernelDesign.swift`).
    public let design: KernelDesign
    /// Which hugepage policy the kernel asks (`Policy/Kernel+Policy.swift`).
    let policyDispatch: PolicyDispatch
    /// The policy of `KernelConfiguration.policy`, if one was given.
    let customPolicy: (any HugepagePolicy)?
    /// The custom policy's state in this kernel (`HugepagePolicy.makeState()`), if it keeps one.
    public let policyState: (any HugepagePolicyState)?
    /// The THP sysfs settings, packed in one word so the fault path reads them with one load.
    private let hugepageSettingsWord: Atomic<UInt32>
    /// The huge zero page, while it exists (Linux: `huge_zero_folio`).
    let hugeZeroPage = HugeZeroPage()
    /// Which PMDs map each huge page (the rmap walk of a split).
    let hugeMappings: HugeMappings
    /// Large folios waiting for a split (today's design).
    let deferredSplitQueue = DeferredSplitQueue()
    /// Per-size THP counters (`hugepages-<size>kB/stats/`).
    public let mthpStats = MTHPStats()
    /// Held for the whole of a `split_huge_page()`, so two splits of one page do not interleave (Linux
    /// 2.6.38: the anon_vma lock that `__split_huge_page()` holds).
    let splitSerialization = SpinLock()
    /// The CPUs' lockless-walk windows (gup-fast) that flushes wait for.
    let locklessWalkers: LocklessWalkers
    /// Simulated time, which drives the kernel threads.
    public let clock = SimulatedClock()
    /// The collapse thread and its mm slots.
    public let khugepaged = Khugepaged()
    /// The background compaction thread.
    public let kcompactd = Kcompactd()
    /// The swap device and its swap cache.
    public let swapDevice: SwapDevice
    /// Today's swap readahead window (`SwapReadahead.swift`).
    let swapReadaheadState = SwapReadaheadState()
    /// The reclaim thread.
    public let kswapd = Kswapd()
    /// The anonymous LRU lists (Linux: the node's `lruvec`).
    let lru: LRULists
    /// The memory cgroups and the charge of each frame (`Cgroups/`).
    public let memoryCgroups: MemoryCgroups
    /// `memoryCgroups`, unretained (the kernel keeps it alive): the charge and free paths reach the
    /// charge record through it without a retain and release per page.
    let chargeRecords: Unmanaged<MemoryCgroups>
    /// The custom policy's kernel thread, if it has one (`Policy/PolicyDaemon.swift`).
    let policyDaemon: PolicyDaemon?

    private let nextPID = Atomic<Int>(1)
    private let nextAnonVMA = Atomic<Int>(1)
    let liveSpaces = SpinLocked<[Int: WeakAddressSpace]>([:])
    /// khugepaged's collapses, recorded for simulated time (`Hugepages/CollapseRecord.swift`).
    let collapseLog = SpinLocked(CollapseLog())

    public init(_ configuration: KernelConfiguration) {
        precondition(PhysicalMemory.problem(withSize: configuration.memoryBytes) == nil)
        precondition(configuration.cpuProblem == nil, configuration.cpuProblem ?? "")
        self.configuration = configuration
        vmstat = VMStat(cpus: configuration.cpus)
        design = configuration.design
        customPolicy = configuration.policy
        policyDispatch = PolicyDispatch(configuration)
        policyState = configuration.policy?.makeState()
        policyDaemon = configuration.policy?.daemonInterval.map { PolicyDaemon(interval: $0) }
        locklessWalkers = LocklessWalkers()
        hugepageSettingsWord = Atomic(configuration.bootHugepageSettings.packed)
        memory = PhysicalMemory(bytes: configuration.memoryBytes, mode: configuration.mode,
                                watermarks: configuration.watermarks, perCPULists: configuration.perCPUPageLists,
                                cpus: configuration.cpus)
        tables = PageTableStore(maxTables: memory.totalPages, cpus: configuration.cpus)
        hugeMappings = HugeMappings(totalPages: memory.totalPages)
        lru = LRULists(frames: memory.frames, cpus: configuration.cpus)
        swapDevice = SwapDevice(configuration.swap, defaultSlots: memory.totalPages)
        memoryCgroups = MemoryCgroups(frameTable: memory.frames)
        lru.charges = .passUnretained(memoryCgroups)
        chargeRecords = .passUnretained(memoryCgroups)
        swapDevice.cgroups = .passUnretained(memoryCgroups)
        guard let zero = memory.allocateFolio(order: .base, kind: .zeroPage, reserve: .none) else {
            preconditionFailure("no frame for the zero page")
        }
        zeroPage = zero
        // Bytes of every simulated frame were counted as allocated at boot; restart the counters.
    }

    deinit {
        vmstat.release()
        mthpStats.release()
    }

    /// The THP settings (`/sys/kernel/mm/transparent_hugepage/`); changes apply to the next fault.
    public var hugepageSettings: TransparentHugepageSettings {
        get { TransparentHugepageSettings(packed: hugepageSettingsWord.load(ordering: .relaxed)) }
        set {
            hugepageSettingsWord.store(newValue.packed, ordering: .relaxed)
            // Linux: enabled_store() → start_stop_khugepaged() wakes khugepaged when it has work.
            if newValue.mode(order: 9) != .never { khugepaged.wakeIfWaiting(now: clock.now) }
        }
    }

    /// Creates an empty address space for a new process (Linux: `mm_alloc()` for `execve()`).
    public func createAddressSpace() -> AddressSpace? {
        guard let mm = AddressSpace(kernel: self, pid: nextPID.wrappingAdd(1, ordering: .relaxed).oldValue) else { return nil }
        liveSpaces.withLock { $0[mm.pid] = WeakAddressSpace(mm) }
        return mm
    }

    /// The address spaces whose processes have not exited.
    public var addressSpaces: [AddressSpace] {
        liveSpaces.withLock { $0.values.compactMap(\.space).sorted { $0.pid < $1.pid } }
    }

    func forget(_ mm: AddressSpace) { _ = liveSpaces.withLock { $0.removeValue(forKey: mm.pid) } }
    func register(_ mm: AddressSpace) { liveSpaces.withLock { $0[mm.pid] = WeakAddressSpace(mm) } }
    func allocatePID() -> Int { nextPID.wrappingAdd(1, ordering: .relaxed).oldValue }
    func allocateAnonVMAIdentity() -> Int { nextAnonVMA.wrappingAdd(1, ordering: .relaxed).oldValue }

    // MARK: Page accounting shared by every path

    /// Counts pages handed out by the page allocator (Linux: `PGALLOC` in `__count_zid_vm_events()`).
    @inline(__always) func countAllocation(pages: Int) {
        vmstat.count(.pgallocNormal, pages)
        checkWatermarks()
    }

    /// Flushes every CPU's TLB after a range lost or weakened translations, and — as the IPI does on
    /// x86 — waits for lockless walks in progress, so a page or table removed before the flush can be
    /// freed after it (Linux: `flush_tlb_range()` → `native_flush_tlb_multi()`).
    @inline(__always) func flushTLB(_ mm: AddressSpace, _ start: VirtualAddress, _ end: VirtualAddress) {
        tlb?.flushRange(mm, start: start, end: end)
        waitForLocklessWalkers()
    }
}

/// The kernel's list of processes refers to address spaces weakly: a process's owner keeps it alive.
struct WeakAddressSpace {
    weak var space: AddressSpace?
    init(_ space: AddressSpace) { self.space = space }
}
