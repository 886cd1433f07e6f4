import Synchronization
import VMCore

/// khugepaged, the kernel thread that collapses small pages back into huge ones, on simulated time.
///
/// An address space gets an *mm slot* when MADV_HUGEPAGE marks one of its VMAs or a fault in a VMA
/// that allows huge pages meets an empty PMD (and its child at fork when it has one). Each wake-up
/// scans up to `pages_to_scan` PTEs, continuing where the last one stopped: slot by slot, VMA by VMA,
/// 2 MiB range by 2 MiB range (each range costs 512, each VMA it must skip 1), collapsing every range
/// the rules allow; when it finishes the last slot, `full_scans` grows and the next scan starts from
/// the first. It then sleeps `scan_sleep_millisecs`, or `alloc_sleep_millisecs` after an allocation
/// failed; with no slot it sleeps until one is registered.
///
/// ```
///  slots: [mm 3] ─► [mm 5] ─► [mm 9]          cursor: (mm 5, 0x7f..400000)
///                     ▲ next wake-up resumes here
/// ```
/// The thread runs on whatever thread advances the clock (`Kernel.advanceTime(by:)`). Its slot list
/// and cursor are under `state`'s lock, a leaf; a scan itself takes each mm's locks as a collapse
/// needs them and holds `running`, so that two callers never run two khugepaged (Linux: `khugepaged()`,
/// `khugepaged_do_scan()`, `khugepaged_scan_mm_slot()`, `khugepaged_mm_lock`).
public final class Khugepaged: Sendable {
    struct Slot {
        weak var mm: AddressSpace?
        let pid: Int
        /// Where the scan resumes when a policy sends it back to this mm (Linux: `mm_slot->address`).
        var address = VirtualAddress(0)
    }

    struct State {
        var settings = KhugepagedSettings()
        var slots: [Slot] = []
        /// The slot being scanned and where in it; nil between full scans (Linux: `khugepaged_scan`).
        var cursor: (pid: Int, address: VirtualAddress)?
        /// When the thread wakes next; nil while it sleeps with nothing to do.
        var nextWakeup: UInt64?
        var pagesCollapsed = 0
        var fullScans = 0
    }

    /// The slots, cursor and counters: a leaf spin lock, TSan-visible and never sleeping.
    private let state = SpinLocked(State())
    /// Held while a wake-up runs, so that one runs at a time (Linux has one khugepaged thread). A
    /// waiter spins at scheduling points, so the deterministic scheduler can run the holder meanwhile.
    private let running = Atomic<Bool>(false)

    init() {}

    /// The `khugepaged/` tunables.
    public var settings: KhugepagedSettings {
        get { state.withLock { $0.settings } }
    }

    /// `khugepaged/pages_collapsed`: ranges khugepaged (not MADV_COLLAPSE) collapsed.
    public var pagesCollapsed: Int { state.withLock { $0.pagesCollapsed } }
    /// `khugepaged/full_scans`: passes over every registered mm.
    public var fullScans: Int { state.withLock { $0.fullScans } }
    /// The pids of the registered address spaces, in scan order.
    public var registeredPIDs: [Int] { state.withLock { $0.slots.map(\.pid) } }
    /// The mm the scan is in, nil between full scans.
    var cursorPID: Int? { state.withLock { $0.cursor?.pid } }

    /// Sets a `khugepaged/` knob from its sysfs text, or returns what is wrong with it. Changing a sleep
    /// wakes the thread, as writing the sysfs file does (Linux: `scan_sleep_millisecs_store()`).
    public func set(_ name: String, to text: String, now: UInt64) -> String? {
        state.withLock { s in
            if let problem = s.settings.set(name, to: text) { return problem }
            if name.hasSuffix("_sleep_millisecs") && !s.slots.isEmpty { s.nextWakeup = now }
            return nil
        }
    }

    /// The text `cat khugepaged/NAME` prints, counters included; nil for an unknown name.
    public func sysfsText(_ name: String) -> String? {
        switch name {
        case "khugepaged/pages_collapsed": String(pagesCollapsed)
        case "khugepaged/full_scans": String(fullScans)
        default: settings.sysfsText(name)
        }
    }

    /// When khugepaged wakes next, in simulated nanoseconds; nil while it waits for an mm to register.
    public var nextWakeupTime: UInt64? { state.withLock { $0.nextWakeup } }
    func nextWakeup() -> UInt64? { nextWakeupTime }

    /// Adds an mm slot for `mm` unless it has one, waking the thread if it had nothing to do (Linux:
    /// `__khugepaged_enter()`).
    func enter(_ mm: AddressSpace, now: UInt64) {
        guard !mm.khugepagedRegistered.exchange(true, ordering: .acquiringAndReleasing) else { return }
        state.withLock { s in
            s.slots.append(Slot(mm: mm, pid: mm.pid))
            if s.nextWakeup == nil { s.nextWakeup = now }
        }
    }

    /// Wakes the thread now if it has slots but no wake-up pending (because `enabled` was `never`)
    /// (Linux: `start_stop_khugepaged()`).
    func wakeIfWaiting(now: UInt64) {
        state.withLock { s in
            if s.nextWakeup == nil && !s.slots.isEmpty { s.nextWakeup = now }
        }
    }

    private func removeSlot(_ pid: Int, _ s: inout State) {
        s.slots.removeAll { $0.pid == pid }
    }

    /// One wake-up: scan up to `pages_to_scan` PTEs, passing the head of the slot list at most twice,
    /// then set the next wake-up (Linux: `khugepaged_do_scan()` and `khugepaged_wait_work()`).
    func wakeUp(_ kernel: Kernel) {
        while running.exchange(true, ordering: .acquiring) { Scheduling.pause() }
        defer { running.store(false, ordering: .releasing) }
        do {
            let settings = self.settings
            let budget = settings.pagesToScan
            var progress = 0, passesThroughHead = 0
            var allocationFailed = false, waitedForAllocation = false
            // A policy's queue of ranges to promote comes before the scan (Ingens).
            let queued = kernel.collapsePolicyQueue(budget: budget, settings)
            if queued.collapsed > 0 { state.withLock { $0.pagesCollapsed += queued.collapsed } }
            progress += queued.progress
            allocationFailed = queued.allocationFailed
            while progress < budget && !allocationFailed {
                let atHead = state.withLock { $0.cursor == nil }
                if atHead { passesThroughHead += 1 }
                guard passesThroughHead < 2, kernel.hugepageSettings.mode(order: 9) != .never,
                      state.withLock({ !$0.slots.isEmpty }) else { break }
                let (done, result) = scanSlot(kernel, budget: budget - progress, settings)
                progress += done
                if result == .allocationFailed {
                    // Linux sleeps alloc_sleep_millisecs once within the wake-up and gives up on a second failure.
                    if waitedForAllocation { allocationFailed = true; break }
                    waitedForAllocation = true
                    kernel.clock.set(kernel.clock.now + settings.allocSleepMillisecs * SimulatedClock.nanosecondsPerMillisecond)
                }
            }
            // With ranges on a policy's queue the thread does not sleep: it wakes again at once (Ingens's
            // khugepaged_wait_work(): "aggressive promotion when asynchronous promotion requests exist").
            let queueWaits = !allocationFailed && kernel.policyHasQueuedCollapses()
            state.withLock { s in
                let hasWork = !s.slots.isEmpty && kernel.hugepageSettings.mode(order: 9) != .never
                let sleep = allocationFailed ? s.settings.allocSleepMillisecs : s.settings.scanSleepMillisecs
                if queueWaits {
                    s.nextWakeup = kernel.clock.now
                } else {
                    s.nextWakeup = hasWork ? kernel.clock.now + sleep * SimulatedClock.nanosecondsPerMillisecond : nil
                }
            }
        }
    }

    /// Scans the slot at the cursor from where it stopped, until the budget is spent, a collapse was
    /// attempted (the mmap lock was dropped, so the walk restarts from the cursor), or the mm is done,
    /// which moves the cursor to the next slot and at the end of the list counts a full scan. Returns
    /// the progress made and the result of the last range (Linux: `khugepaged_scan_mm_slot()`).
    private func scanSlot(_ kernel: Kernel, budget: Int, _ settings: KhugepagedSettings) -> (Int, CollapseResult?) {
        // A policy may send the scan to another mm, which resumes where the scan last left it (Ingens's
        // fairness: the mm with the highest metric; Linux goes on where it is).
        if let target = kernel.policyScanTarget(among: registeredPIDs) {
            state.withLock { s in
                guard s.cursor?.pid != target, let i = s.slots.firstIndex(where: { $0.pid == target }) else { return }
                if let c = s.cursor, let j = s.slots.firstIndex(where: { $0.pid == c.pid }) { s.slots[j].address = c.address }
                s.cursor = (target, s.slots[i].address)
            }
        }
        let (slot, start): (Slot, VirtualAddress) = state.withLock { s in
            if let c = s.cursor, let slot = s.slots.first(where: { $0.pid == c.pid }) { return (slot, c.address) }
            s.cursor = (s.slots[0].pid, VirtualAddress(0))
            return (s.slots[0], VirtualAddress(0))
        }
        var progress = 0
        var lastResult: CollapseResult?
        var finished = true
        if let mm = slot.mm, !mm.hasExited {
            // The ranges to look at, from the cursor on, found under the mmap read lock.
            var plan: [VirtualAddress] = []
            mm.mmapLock.withReadLock {
                guard !mm.hasExited else { return }
                let all = kernel.hugepageSettings
                for vma in mm.vmas.areas where vma.end > start {
                    if progress + plan.count * PageGeometry.entriesPerTable >= budget { finished = false; break }
                    let hstart = max(vma.start, start).alignedUp(PageGeometry.pmdSize)
                    let hend = vma.end.alignedDown(PageGeometry.pmdSize)
                    guard hstart < hend, kernel.khugepagedMayCollapse(vma, all) else {
                        progress += 1
                        continue
                    }
                    var haddr = hstart
                    while haddr < hend {
                        if progress + plan.count * PageGeometry.entriesPerTable >= budget { finished = false; break }
                        plan.append(haddr)
                        haddr = haddr + PageGeometry.pmdSize
                    }
                }
            }
            for haddr in plan {
                guard kernel.policyAllowsScanCollapse(mm, haddr) else {
                    progress += PageGeometry.entriesPerTable
                    state.withLock { $0.cursor = (slot.pid, haddr + PageGeometry.pmdSize) }
                    continue
                }
                let control = CollapseControl(isKhugepaged: true, limits: settings)
                let (result, attempted) = mm.collapseAttempt(haddr, control)
                kernel.policyNoteScanCollapse(mm, haddr, result)
                lastResult = result
                progress += PageGeometry.entriesPerTable
                state.withLock { s in
                    s.cursor = (slot.pid, haddr + PageGeometry.pmdSize)
                    if result == .succeeded { s.pagesCollapsed += 1 }
                }
                // Past the scan the collapse dropped the mmap lock: the next call walks the mm again
                // from the cursor (and after a failed allocation the wake-up decides whether to sleep).
                if attempted { return (progress, result) }
            }
            if !finished { return (progress, lastResult) }
        }
        // This mm is done: on to the next slot, or a full scan is complete.
        state.withLock { s in
            guard let i = s.slots.firstIndex(where: { $0.pid == slot.pid }) else { s.cursor = nil; return }
            s.slots[i].address = VirtualAddress(0)
            let exited = slot.mm.map(\.hasExited) ?? true
            if i + 1 < s.slots.count {
                s.cursor = (s.slots[i + 1].pid, VirtualAddress(0))
            } else {
                s.cursor = nil
                s.fullScans += 1
            }
            if exited { removeSlot(slot.pid, &s) }
        }
        return (max(progress, 1), lastResult)
    }
}

extension AddressSpace {
    /// Registers this mm with khugepaged when `vma` may get huge pages from it (Linux:
    /// `khugepaged_enter_vma()`).
    /// - Precondition: the mmap lock is held.
    func khugepagedEnter(_ vma: VMA) {
        let settings = kernel.hugepageSettings
        guard kernel.khugepagedMayCollapse(vma, settings),
              vma.end.alignedDown(PageGeometry.pmdSize) > vma.start.alignedUp(PageGeometry.pmdSize) else { return }
        kernel.khugepaged.enter(self, now: kernel.clock.now)
    }

    /// Whether khugepaged has a slot for this mm (Linux: `MMF_VM_HUGEPAGE`).
    public var isRegisteredWithKhugepaged: Bool { khugepagedRegistered.load(ordering: .relaxed) }
}

extension Kernel {
    /// Sets a `khugepaged/` knob from its sysfs text; returns what is wrong with the name or value.
    public func setKhugepagedKnob(_ name: String, to text: String) -> String? {
        khugepaged.set(name, to: text, now: clock.now)
    }
}

extension Kernel {
    /// khugepaged's bookkeeping: one slot per registered mm and a registration flag on exactly those
    /// mms, a cursor that names a slot, and a pending wake-up whenever there is work.
    func checkKhugepagedInvariants() -> [String] {
        var problems: [String] = []
        let pids = khugepaged.registeredPIDs
        if Set(pids).count != pids.count { problems.append("khugepaged has duplicate mm slots: \(pids)") }
        for mm in addressSpaces where !mm.hasExited && mm.isRegisteredWithKhugepaged != pids.contains(mm.pid) {
            problems.append("mm \(mm.pid): registered with khugepaged \(mm.isRegisteredWithKhugepaged) but slot \(pids.contains(mm.pid))")
        }
        if let pid = khugepaged.cursorPID, !pids.contains(pid) { problems.append("khugepaged's cursor names mm \(pid), which has no slot") }
        if !pids.isEmpty && hugepageSettings.mode(order: 9) != .never && khugepaged.nextWakeupTime == nil {
            problems.append("khugepaged has \(pids.count) mm slots but no wake-up pending")
        }
        return problems
    }
}
