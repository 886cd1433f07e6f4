import Synchronization

/// `memory.min` and `memory.low`: memory a cgroup keeps when reclaim looks for pages
/// (Documentation/admin-guide/cgroup-v2.rst, "memory.min", "memory.low", "Memory Ownership").
///
/// Each reclaim works out, for every cgroup it visits, the *effective* protection below the cgroup
/// it reclaims from (the target; the root for global reclaim): a child of the target has its own
/// `memory.min` and `memory.low`; a cgroup further down gets at most its parent's effective value,
/// shared among the siblings in proportion to the protected memory they use when they claim more
/// than the parent has (Linux: `mem_cgroup_calculate_protection()` →
/// `page_counter_calculate_protection()` → `effective_protection()`). With cgroup2's
/// `memory_recursiveprot` mount option (`MemoryCgroups.recursiveProtection`), what the parent's
/// effective value leaves after its children's claims is shared among them too, in proportion to the
/// memory each uses above its own claim, so a subtree is protected from its neighbours without every
/// leaf setting a value. The target itself is never protected (`mem_cgroup_unprotected()`).
///
/// Then (Linux: `shrink_node_memcgs()`):
/// - a cgroup whose usage is at most its effective `memory.min` is skipped;
/// - one at most its effective `memory.low` is skipped too, and the pass notes it
///   (`memcg_low_skipped`), unless the pass is the second one, which reclaims it and counts a `low`
///   event;
/// - any other with protection is scanned in proportion to the part above its protection
///   (`get_scan_count()`'s `lruvec_size - lruvec_size * protection / (cgroup_size + 1)`, at least
///   `SWAP_CLUSTER_MAX`), `memory.low`'s while it is honoured (which also notes the pass), else
///   `memory.min`'s.
///
/// A direct or cgroup reclaim that freed nothing while it passed over `memory.low` goes round once
/// more honouring `memory.min` alone (`do_try_to_free_pages()`: "Untapped cgroup reserves? Don't
/// OOM, retry."). kswapd does not, as in 6.18 (`balance_pgdat()` has no such pass; patches proposed
/// one in 2017 and in October 2025, after 6.18's merge window), so protected memory waits for an
/// allocation's direct reclaim.
///
/// While no cgroup has a `memory.min` or `memory.low`, reclaim looks at none of this.
struct ReclaimProtection {
    /// The cgroup reclaimed from; nil for global reclaim (the root).
    let target: MemoryCgroup?
    /// The second pass: `memory.low` is no longer honoured (Linux: `sc->memcg_low_reclaim`).
    var lowReclaim = false
    /// A cgroup was passed over or scanned less for its `memory.low` (Linux: `sc->memcg_low_skipped`).
    var lowSkipped = false

    init(target: MemoryCgroup?) { self.target = target }

    /// What reclaim does with a cgroup's lists.
    enum Verdict: Equatable {
        /// Scan them as usual.
        case scan
        /// Scan them for at most `size - size * protection / (usage + 1)` pages of each list of
        /// `size` pages (at least `SWAP_CLUSTER_MAX`), before the priority's shift.
        case scanProportionally(protection: Int, usage: Int)
        /// Leave them alone.
        case skip
    }

    /// What this pass does with the lists of `memcg` (nil: the root's, never protected), counting
    /// `low` events and noting skips as Linux's `shrink_node_memcgs()` and `get_scan_count()` do.
    mutating func verdict(for memcg: MemoryCgroup?, in groups: MemoryCgroups) -> Verdict {
        guard let memcg, memcg !== target else { return .scan }
        let usage = memcg.usagePages
        let (emin, elow) = groups.effectiveProtection(of: memcg, target: target)
        if emin >= usage { return .skip }
        if elow >= usage {
            guard lowReclaim else {
                lowSkipped = true
                return .skip
            }
            memcg.count(.low)
        }
        guard emin > 0 || elow > 0 else { return .scan }
        if !lowReclaim && elow > emin {
            lowSkipped = true
            return .scanProportionally(protection: elow, usage: max(usage, elow))
        }
        return .scanProportionally(protection: emin, usage: max(usage, emin))
    }

    /// Pages of a list of `size` to scan under `verdict`, before the priority's shift.
    static func scanSize(_ size: Int, _ verdict: Verdict) -> Int {
        guard case .scanProportionally(let protection, let usage) = verdict, size > 0 else { return size }
        // `protection` is below `usage` here (a cgroup at or under it was skipped), so nothing overflows.
        let scan = size - size * protection / (usage + 1)
        return max(scan, Kernel.swapClusterMax)
    }

    /// Begins the second pass if this one freed nothing and passed over protected memory.
    mutating func shouldRetry(freedNothing: Bool) -> Bool {
        guard freedNothing && lowSkipped && !lowReclaim else { return false }
        lowReclaim = true
        lowSkipped = false
        return true
    }
}

extension MemoryCgroups {
    /// Whether some cgroup has a `memory.min` or `memory.low` above zero: until then reclaim skips
    /// the protection checks.
    var anyProtection: Bool { protectionSet.load(ordering: .relaxed) }

    /// cgroup2's `memory_recursiveprot` mount option (Linux: `CGRP_ROOT_MEMORY_RECURSIVE_PROT`, which
    /// systemd sets when it mounts the hierarchy): a parent's protection that its children do not
    /// claim is shared among them in proportion to their unclaimed usage. Off by default, as for
    /// a plain `mount -t cgroup2`; it may change at any time (a remount).
    public var recursiveProtection: Bool {
        get { recursiveProtectionSet.load(ordering: .relaxed) }
        set { recursiveProtectionSet.store(newValue, ordering: .relaxed) }
    }

    /// The effective `memory.min` and `memory.low` of `memcg` in pages, for reclaim from `target`
    /// (nil: global) (Linux: `page_counter_calculate_protection()`, `effective_protection()`).
    func effectiveProtection(of memcg: MemoryCgroup, target: MemoryCgroup?) -> (min: Int, low: Int) {
        if memcg === target { return (0, 0) }
        let usage = memcg.usagePages
        guard usage > 0 else { return (0, 0) }
        let ownMin = memcg.minPages.load(ordering: .relaxed), ownLow = memcg.lowPages.load(ordering: .relaxed)
        guard let parent = memcg.parent, parent !== target else { return (ownMin, ownLow) }
        let parentEffective = effectiveProtection(of: parent, target: target)
        let siblings = all.filter { $0.parent === parent }
        let recursive = recursiveProtection
        let parentUsage = recursive ? parent.usagePages : 0
        func share(_ setting: Int, _ parentValue: Int, _ siblingSetting: (MemoryCgroup) -> Int) -> Int {
            let protected = min(usage, setting)
            let claimed = siblings.reduce(0) { $0 + min($1.usagePages, siblingSetting($1)) }
            // `parentValue` is below `claimed`, a sum of page counts: nothing overflows.
            if claimed > parentValue { return protected * parentValue / claimed }
            // With `memory_recursiveprot`, what the parent affords beyond its children's claims goes
            // to them by the usage they do not claim. The product is taken in full width: with a
            // parent at `max` it passes 64 bits, where Linux's unsigned arithmetic wraps around.
            guard recursive, parentValue > claimed, parentUsage > claimed, usage > protected else { return protected }
            let unclaimed = UInt(parentValue - claimed), divisor = UInt(parentUsage - claimed)
            let product = unclaimed.multipliedFullWidth(by: UInt(usage - protected))
            // The share is at most `unclaimed` (usage − protected ≤ parentUsage − claimed), unless the
            // usages, read one by one, moved meanwhile: then it is capped there.
            let share = product.high < divisor ? min(divisor.dividingFullWidth(product).quotient, unclaimed) : unclaimed
            return protected + Int(share)
        }
        return (share(ownMin, parentEffective.min) { $0.minPages.load(ordering: .relaxed) },
                share(ownLow, parentEffective.low) { $0.lowPages.load(ordering: .relaxed) })
    }
}
