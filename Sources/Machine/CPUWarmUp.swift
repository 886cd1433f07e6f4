import HostIntrinsics

/// Where each CPU's TLB sets lie in host memory, for `Machine.warmUp(cpu:for:)`: the arrays' buffers,
/// set masks and geometry, copied once into one small table (about 160 bytes a CPU) that stays in the
/// host's caches, so that computing a set's address loads nothing cold.
///
/// A machine of many CPUs runs a thread's accesses on one CPU, then another's: with 80 CPUs and a
/// quantum of one fault, each CPU's TLB arrays are cold in the host's caches every time its turn comes
/// (memscale THP off, 80 CPUs: the TLB fill and lookup took about 10 times the host time they take on
/// one CPU for as many accesses). `MachineExecutor` warms the sets of the thread most likely to run
/// next while the current one runs, so the host's loads overlap with its work. Hints only: nothing
/// simulated changes.
struct TLBWarmUpTable {
    struct Set {
        var tags, stamps: UnsafeMutablePointer<UInt64>
        var setMask: UInt64
        var ways: Int
        /// The page size's shift the set index is taken at.
        var shift: UInt64
    }

    let sets: UnsafeMutablePointer<Set>
    let perCPU: Int

    /// The L1 data and L2 arrays of every CPU (all alike) that hold 4 KiB pages, and the PMD-level
    /// paging-structure cache: what an access to a page not yet in the TLBs looks up and fills (a
    /// machine of many CPUs switches threads at faults, of 4 KiB pages but for THP's rare huge ones).
    /// Wide (fully associative) arrays are left out.
    init(_ cpus: [CPU]) {
        func arrays(_ cpu: CPU) -> [(TLBArray, UInt64)] {
            var out: [(TLBArray, UInt64)] = []
            for a in Array(cpu.tlb.l1Data) + Array(cpu.tlb.l2) where !a.wide && a.pageSizes.contains(.size4K) {
                out.append((a, 12))
            }
            if !cpu.pageWalkCache.pd.wide { out.append((cpu.pageWalkCache.pd, 21)) }
            return out
        }
        perCPU = cpus.first.map { arrays($0).count } ?? 0
        sets = .allocate(capacity: max(1, perCPU * cpus.count))
        for (c, cpu) in cpus.enumerated() {
            let list = arrays(cpu)
            precondition(list.count == perCPU, "CPUs of one machine have alike TLBs")
            for (i, (a, shift)) in list.enumerated() {
                (sets + c * perCPU + i).initialize(to: Set(tags: a.tags, stamps: a.stamps,
                                                            setMask: a.setMask, ways: a.ways, shift: shift))
            }
        }
    }

    func free() { sets.deallocate() }

    /// Prefetches `cpu`'s sets of `address` in every array of the table: the tags a lookup compares
    /// and the stamps a fill compares (a set of more than 8 ways spans two host lines). The payload a
    /// fill writes is left to the store, which does not wait for its line.
    @inline(__always)
    func warmUp(cpu: Int, for address: UInt64) {
        var s = sets + cpu &* perCPU
        for _ in 0..<perCPU {
            let set = s.pointee
            let base = Int(truncatingIfNeeded: (address >> set.shift) & set.setMask) &* set.ways
            thpsim_prefetch(set.tags + base)
            thpsim_prefetch(set.stamps + base)
            if set.ways > 8 {
                let last = base &+ set.ways &- 1
                thpsim_prefetch(set.tags + last)
                thpsim_prefetch(set.stamps + last)
            }
            s += 1
        }
    }
}
