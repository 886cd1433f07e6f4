import Synchronization
import VMCore
import PhysicalMemory

/// The address space of one process: its VMAs, its page tables and their locks (Linux: `struct mm_struct`).
///
/// Locking, as in Linux:
/// - `mmapLock` (reader-writer) guards the VMA list; faults take it for reading, mmap/munmap/mprotect/
///   mremap/madvise/brk/fork/exit for writing.
/// - `pageTableLock` guards populating upper-level entries (Linux: `mm->page_table_lock`).
/// - each PTE table has its own split lock guarding its entries (Linux: `pte_offset_map_lock()`).
public final class AddressSpace: @unchecked Sendable {
    public let pid: Int
    public let kernel: Kernel
    /// The fork family whose anonymous pages this mm may map: its own pid, or its parent's family
    /// after fork. The LRU's reverse map looks for a page's mappings among the family (Linux: the
    /// root `anon_vma` that `anon_vma_fork()` links a child's VMAs to).
    let anonFamily: Int
    /// The top-level table (Linux: `mm->pgd`).
    let root: PageTable
    public let mmapLock = ReadWriteLock()
    public let pageTableLock = SpinLock()
    /// The VMAs; read and written under `mmapLock`.
    @exclusivity(unchecked) public internal(set) var vmas = VMAList()
    /// The heap's start and current break (Linux: `mm->start_brk`, `mm->brk`). These and the other
    /// `@exclusivity(unchecked)` fields below are written under the mmap lock for writing (or before the
    /// process runs), so the runtime's exclusivity check, which every fault would pay, adds nothing.
    @exclusivity(unchecked) public internal(set) var startBrk: VirtualAddress
    @exclusivity(unchecked) public internal(set) var brk: VirtualAddress
    /// Top-down allocation starts below this address (Linux: `mm->mmap_base`).
    public let mmapBase: VirtualAddress
    /// The process has exited (Linux: `mm_users` reaching zero); set once, under the mmap lock.
    @exclusivity(unchecked) public internal(set) var hasExited = false
    /// Secondary MMUs mirroring this mm (Linux: `mm->notifier_subscriptions`).
    let mmuNotifiers = MMUNotifierList()
    /// khugepaged has a slot for this mm (Linux: `MMF_VM_HUGEPAGE`).
    let khugepagedRegistered = Atomic<Bool>(false)
    /// The memory cgroup the process is in; nil for the root, which is not charged (Linux:
    /// `mm->owner`'s css, `get_mem_cgroup_from_mm()`). Changed under the mmap lock for writing.
    @exclusivity(unchecked) public internal(set) var memcg: MemoryCgroup? {
        didSet { memcgRef = memcg.map { Unmanaged.passUnretained($0) } }
    }
    /// `memcg`, unretained (`memcg` keeps it alive): the fault path's charge reaches the cgroup
    /// through it without a retain and release per fault.
    @exclusivity(unchecked) private(set) var memcgRef: Unmanaged<MemoryCgroup>?
    /// Per VMA start, its swap readahead state on a non-rotational device (`SwapReadahead.swift`;
    /// Linux: `vma->swap_readahead_info`), written under the mmap lock for reading.
    let swapReadahead = SpinLocked<[UInt64: VMASwapReadahead]>([:])
    /// The cgroup's OOM killer chose this process (Linux: `MMF_OOM_SKIP` / `tsk_is_oom_victim()`).
    let oomKilled = Atomic<Bool>(false)
    /// `/proc/PID/oom_score_adj`, -1000…1000 (0 at creation; fork's child inherits it): added to the
    /// OOM killer's badness in thousandths of the memory it weighs against, -1000 never chosen
    /// (Linux: `signal->oom_score_adj`, `oom_badness()`).
    public let oomScoreAdj = Atomic<Int>(0)
    /// Whether an OOM killer killed this process.
    public var wasOOMKilled: Bool { oomKilled.load(ordering: .relaxed) }

    /// The highest number of VMAs (Linux: `sysctl_max_map_count`, default 65530).
    public static let maxMapCount = 65530
    /// Lowest address a mapping may use (Linux: `mmap_min_addr`, default 65536).
    public static let mmapMinAddress = VirtualAddress(0x10000)
    /// Where the heap starts in every process of the model (a fixed, typical x86-64 value).
    public static let defaultStartBrk = VirtualAddress(0x5555_5600_0000)
    /// Where top-down mmap starts (below a 128 MiB stack gap under the 47-bit limit).
    public static let defaultMmapBase = VirtualAddress(0x7fff_f000_0000 - (128 << 20))

    init?(kernel: Kernel, pid: Int, startBrk: VirtualAddress = AddressSpace.defaultStartBrk, family: Int? = nil) {
        guard let root = kernel.allocateTable() else { return nil }
        self.kernel = kernel
        self.pid = pid
        anonFamily = family ?? pid
        self.root = root
        self.startBrk = startBrk
        brk = startBrk
        mmapBase = Self.defaultMmapBase
    }

    /// An address space dropped without `exit()` still gives its memory back.
    deinit { exit() }

    // MARK: VMA bookkeeping shared by the system calls

    /// Inserts a VMA and takes its hold on a shared object.
    func insertVMA(_ vma: VMA) {
        vma.sharedObject?.addUser()
        vmas.insert(vma)
    }

    /// Removes the VMA at `index`, dropping its hold on a shared object.
    @discardableResult func removeVMA(at index: Int) -> VMA {
        let vma = vmas.remove(at: index)
        vma.sharedObject?.removeUser(kernel: kernel)
        return vma
    }

    /// Splits the VMA at `index` at `address`, which must lie strictly inside it; a huge PMD that would
    /// straddle the new boundary is split first (Linux: `split_vma()` → `vma_adjust_trans_huge()`).
    func splitVMA(at index: Int, _ address: VirtualAddress) {
        var low = vmas[index]
        precondition(low.start < address && address < low.end && address.isAligned(PageGeometry.pageSize))
        if !address.isAligned(PageGeometry.pmdSize) { splitHugePMD(covering: address) }
        var high = low
        high.start = address
        high.pgoff = low.pgoff + ((address - low.start) >> PageGeometry.pageShift)
        low.end = address
        vmas[index] = low
        high.sharedObject?.addUser()
        vmas.insert(high)
    }

    /// Splits VMAs so that `start` and `end` fall on VMA boundaries.
    func splitAtBoundaries(_ start: VirtualAddress, _ end: VirtualAddress) {
        if let i = vmas.index(containing: start), vmas[i].start < start { splitVMA(at: i, start) }
        if let i = vmas.index(containing: end), vmas[i].start < end { splitVMA(at: i, end) }
    }

    /// Merges the VMAs from `range` with each other and with their neighbours where compatible
    /// (Linux: `vma_merge()`; here applied after the change rather than before it).
    func mergeVMAs(around range: Range<Int>) {
        var i = max(range.lowerBound - 1, 0)
        var last = min(range.upperBound, vmas.count - 1)
        while i < last {
            if vmas[i].canMerge(with: vmas[i + 1]) {
                var merged = vmas[i]
                merged.end = vmas[i + 1].end
                if merged.anonVMA == 0 { merged.anonVMA = vmas[i + 1].anonVMA }
                vmas[i] = merged
                removeVMA(at: i + 1)
                last -= 1
            } else {
                i += 1
            }
        }
    }

    /// Gives the VMA at `index` an anonymous rmap identity if it has none (Linux: `anon_vma_prepare()`).
    func prepareAnonVMA(_ index: Int) {
        if vmas[index].anonVMA == 0 { vmas[index].anonVMA = kernel.allocateAnonVMAIdentity() }
    }
}
