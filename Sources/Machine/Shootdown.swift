import VMCore
import Kernel

/// The TLB-flush events Linux counts in `/proc/vmstat` with `CONFIG_DEBUG_TLBFLUSH`
/// (`enum vm_event_item`: `NR_TLB_REMOTE_FLUSH`, `NR_TLB_REMOTE_FLUSH_RECEIVED`,
/// `NR_TLB_LOCAL_FLUSH_ALL`, `NR_TLB_LOCAL_FLUSH_ONE`).
public struct TLBFlushCounters: Sendable, Hashable {
    /// Flushes that had to interrupt other CPUs (one per flush, however many CPUs it reached).
    public var remoteFlush = 0
    /// IPIs handled, one per CPU reached.
    public var remoteFlushReceived = 0
    /// Full flushes on the initiating CPU.
    public var localFlushAll = 0
    /// Single pages flushed on the initiating CPU.
    public var localFlushOne = 0

    public init(remoteFlush: Int = 0, remoteFlushReceived: Int = 0, localFlushAll: Int = 0, localFlushOne: Int = 0) {
        self.remoteFlush = remoteFlush; self.remoteFlushReceived = remoteFlushReceived
        self.localFlushAll = localFlushAll; self.localFlushOne = localFlushOne
    }

    /// The counters as `/proc/vmstat` prints them.
    public var vmstatLines: [String] {
        ["nr_tlb_remote_flush \(remoteFlush)", "nr_tlb_remote_flush_received \(remoteFlushReceived)",
         "nr_tlb_local_flush_all \(localFlushAll)", "nr_tlb_local_flush_one \(localFlushOne)"]
    }
}

extension Machine: TLBFlushInterface {
    /// Above this many pages a range flush becomes a full flush (Linux:
    /// `tlb_single_page_flush_ceiling`, default 33).
    public static let singlePageFlushCeiling: UInt64 = 33

    /// Shoots down `[start, end)` of `mm` on every CPU that ran it: locally on the initiator, by IPI
    /// elsewhere; CPUs that no longer run `mm` drop all its translations and leave its cpumask.
    /// Linux: `flush_tlb_mm_range()` → `flush_tlb_func()` locally, `native_flush_tlb_multi()` remotely.
    public func flushRange(_ mm: AddressSpace, start: VirtualAddress, end: VirtualAddress) {
        guard end > start else { return }
        let pages = (end - start + PageGeometry.pageSize - 1) >> PageGeometry.pageShift
        shootDown(mm, start: start.rawValue, end: end.rawValue, pages: pages > Self.singlePageFlushCeiling ? nil : pages)
    }

    /// Shoots down every translation of `mm` (Linux: `flush_tlb_mm()`).
    public func flushAll(_ mm: AddressSpace) {
        shootDown(mm, start: 0, end: PageGeometry.userAddressLimit, pages: nil)
    }

    /// `pages` nil means a full flush of the mm's ASID.
    private func shootDown(_ mm: AddressSpace, start: UInt64, end: UInt64, pages: UInt64?) {
        let mask = cpumasks[mm.pid] ?? CPUMask()
        guard !mask.isEmpty else { return }
        let asid = CPU.asid(of: mm)
        let t = machineDescription.timing
        let localCost = pages.map { Double($0) * t.invlpgCycles } ?? t.fullFlushCycles
        var remote = 0
        var keep = mask
        for cpu in cpus where mask.contains(cpu.id) {
            let runsIt = cpu.mm === mm
            // A CPU that switched away drops everything of the mm and leaves its cpumask.
            cpu.invalidate(asid: asid, start: start, end: runsIt ? (pages == nil ? nil : end) : nil)
            if !runsIt { keep.remove(cpu.id) }
            if cpu.id == executingCPU && runsIt {
                if let pages { flushCounters.localFlushOne += Int(pages) } else { flushCounters.localFlushAll += 1 }
                cpu.tally.flushCycles += localCost
            } else {
                remote += 1
                flushCounters.remoteFlushReceived += 1
                shootdownsReceived[cpu.id] += 1
                cpu.tally.flushCycles += t.ipiReceiveCycles + localCost
            }
        }
        cpumasks[mm.pid] = keep
        if remote > 0 {
            flushCounters.remoteFlush += 1
            if executingCPU < cpus.count {
                cpus[executingCPU].tally.flushCycles += t.ipiSendCycles
                shootdownsSent[executingCPU] += 1
            }
        }
    }
}
