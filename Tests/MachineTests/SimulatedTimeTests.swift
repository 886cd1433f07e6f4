import Testing
import VMCore
import Kernel
@testable import Machine
import TestSupport

@Suite("Simulated time on many CPUs")
struct SimulatedTimeTests {
    @Test("one CPU has no contention timeline: its clock is its cycles")
    func oneCPU() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata)
        let mm = kernel.createAddressSpace()!
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 1, simulatedTime: true)
        m.cpus[0].switchTo(mm)
        touchPages(m.cpus[0], try anon(mm, 1 << 20), 1 << 20, .write)
        #expect(m.simulatedTime == nil)
        #expect(m.clock(of: 0) == m.cpus[0].counters.cycles && m.elapsedCycles == m.cpus[0].counters.cycles)
    }

    @Test("two CPUs faulting in one mm move its mmap lock's count line between them; the clocks carry it")
    func sharedCountLine() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata)
        let mm = kernel.createAddressSpace()!
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 2, simulatedTime: true)
        let time = try #require(m.simulatedTime)
        for cpu in m.cpus { cpu.switchTo(mm) }
        let va = try anon(mm, 1 << 20)
        // The CPUs take turns, one fault each, in time order.
        for page in 0..<64 {
            let cpu = m.cpus[page % 2]
            _ = cpu.access(va + UInt64(page) * 4096, .write)
        }
        #expect(time.transferCycles > 0)
        #expect(time.acquisitions[LockClass.mmapLock.rawValue] == 64)
        for i in 0..<2 { #expect(m.clock(of: i) > m.cpus[i].counters.cycles) }
        #expect(m.elapsedCycles == max(m.clock(of: 0), m.clock(of: 1)))
    }

    @Test("a CPU alone pays no transfer for lines it wrote last")
    func privateLines() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata)
        let mm = kernel.createAddressSpace()!
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 2, simulatedTime: true)
        m.cpus[0].switchTo(mm)
        touchPages(m.cpus[0], try anon(mm, 1 << 20), 1 << 20, .write)
        #expect(m.simulatedTime!.transferCycles == 0)
        #expect(m.simulatedTime!.waitCycles.allSatisfy { $0 == 0 })
        #expect(m.clock(of: 1) == 0)
    }

    @Test("a ticket lock's hand-off grows with its waiters, a queued lock's does not; split PMD locks keep CPUs on PMD tables of their own apart")
    func spinLockHandOffs() {
        /// `cpus` CPUs look up a page behind a huge PMD at time 0, `stride` bytes apart; the waits on
        /// the PMD lock (page_table_lock or the split PMD locks).
        func waits(_ cpus: Int, _ lock: KernelDesign.PMDLockGranularity, _ spin: KernelDesign.SpinLockKind,
                   stride: UInt64 = 2 << 20) -> Double {
            let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata)
            let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: cpus, simulatedTime: true)
            var design = KernelDesign.linux2_6_38
            design.pmdLock = lock
            design.spinLocks = spin
            let time = m.simulatedTime!
            for cpu in 0..<cpus {
                time.chargeNodeLookup(cpu: cpu, pid: 1, address: UInt64(cpu) * stride, hugePMD: true, design: LockDesign(design), now: 0)
            }
            #expect(time.acquisitions[LockClass.pageTableLock.rawValue] + time.acquisitions[LockClass.pmdPTL.rawValue] == cpus)
            return time.waitCycles[LockClass.pageTableLock.rawValue] + time.waitCycles[LockClass.pmdPTL.rawValue]
        }
        let ticket4 = waits(4, .pageTableLock, .ticket), ticket16 = waits(16, .pageTableLock, .ticket)
        let queued4 = waits(4, .pageTableLock, .queued), queued16 = waits(16, .pageTableLock, .queued)
        #expect(queued4 > 0 && ticket4 >= queued4 && ticket16 > queued16)
        // Four times the CPUs: a queued lock's waits grow by the queue (about 4² = 16×), a ticket
        // lock's by more, since each of its hand-offs also grows with the queue.
        #expect(ticket16 / ticket4 > queued16 / queued4)
        // One PMD table (1 GiB) per CPU: the split PMD locks are not shared, so nobody waits; the
        // same lookups within one PMD table share its split lock.
        #expect(waits(16, .splitPMDLock, .ticket, stride: 1 << 30) == 0)
        #expect(waits(16, .splitPMDLock, .ticket) == ticket16)
    }

    @Test("a timeline serves a request made for an earlier time in the gap before later reservations")
    func timelineGaps() {
        let t = Timeline()
        #expect(t.reserve(at: 1_000, cpu: 1) { _, _ in 100 } == (1_000, -1))
        // Earlier and short enough to fit before: not delayed by the later reservation.
        #expect(t.reserve(at: 0, cpu: 2) { _, _ in 100 } == (0, -1))
        // Overlapping the reservation at 1,000: waits for its end, and CPU 1 held it before.
        #expect(t.reserve(at: 1_050, cpu: 3) { _, _ in 10 } == (1_100, 1))
        // Too long for the gap between 100 and 1,000: goes after 1,110.
        #expect(t.reserve(at: 100, cpu: 4) { _, _ in 950 } == (1_110, 3))
    }

    @Test("a timeline answers as a plain sorted list would that forgets, past 256 intervals, those that end by the horizon (or past 4,096 the oldest half), over thousands of out-of-order requests",
          arguments: [false, true])
    func timelineMatchesPlainList(horizonMoves: Bool) {
        let fast = Timeline(); var plain = PlainTimeline()
        var rng = SplitMix64(seed: 20)
        var clock = 0.0
        var mismatches = 0, delayed = 0, early = 0
        for n in 0..<20_000 {
            // Requests mostly near the front of time, some far behind it (a CPU a quantum late), of
            // lengths that depend on the previous holder as a transfer does. No request is earlier
            // than 20,000 cycles behind the front: that is the horizon, when it moves.
            clock += Double(rng.next() % 600)
            let t = max(0, clock - Double(rng.next() % (n % 7 == 0 ? 20_000 : 600)))
            let horizon = horizonMoves ? clock - 20_000 : -.infinity
            let cpu = Int(rng.next() % 8)
            let base = Double(10 + rng.next() % 120)
            // A ticket lock's hand-off: longer the more reservations the request waits behind.
            let cost: (Int32, Int) -> Double = { ($0 < 0 || Int($0) == cpu ? base : base + 110) + 3 * Double($1) }
            // `shortest` and `shortestAfterOther` are lower bounds (after the request's own CPU or
            // nobody, after another CPU) the timeline may use to pass short gaps without asking `cost`.
            let a = fast.reserve(at: t, horizon: horizon, cpu: cpu, shortest: base, shortestAfterOther: base + 110, duration: cost)
            let b = plain.reserve(at: t, horizon: horizon, cpu: cpu, duration: cost)
            if a.start != b.0 || a.previous != b.1 { mismatches += 1 }
            if a.start > t { delayed += 1 }
            if a.start < clock - 1_000 { early += 1 }
        }
        #expect(mismatches == 0)
        // The requests exercised waiting, gaps before later reservations, and dropping.
        #expect(delayed > 1_000 && early > 100)
        // With a horizon the timeline stays near 256 intervals; without, it grows to 4,096 and halves.
        if horizonMoves {
            #expect(plain.intervals.count < 512)
        } else {
            #expect(plain.intervals.count > 2_048 && plain.intervals.count <= 4_096)
        }
    }

    @Test("a count line's timeline answers as a plain sorted list would that forgets the same intervals, over thousands of out-of-order requests that often leave gaps too short for any",
          arguments: [false, true], [20.0, 0])
    func lineTimelineMatchesPlainList(horizonMoves: Bool, least: Double) {
        let line = LineTimeline(shortest: least, shortestAfterOther: least + 110); var plain = PlainTimeline()
        var rng = SplitMix64(seed: 35)
        var clock = 0.0
        var mismatches = 0, delayed = 0, early = 0, merged = 0, afterDrop = 0
        for n in 0..<20_000 {
            // As above, with every request at least `least` cycles (110 more after another CPU),
            // and short gaps common: some too short for any request, some only for the CPU that
            // holds the line before them. With no least, many requests take no time.
            clock += Double(rng.next() % 300)
            let t = max(0, clock - Double(rng.next() % (n % 7 == 0 ? 20_000 : 600)))
            let horizon = horizonMoves ? clock - 2_000 : -.infinity
            let cpu = Int(rng.next() % 8)
            let base = least + Double(rng.next() % 4) * Double(rng.next() % 30)
            let cost: (Int32) -> Double = { $0 < 0 || Int($0) == cpu ? base : base + 110 }
            let a = line.reserve(at: t, horizon: horizon, cpu: cpu, duration: cost)
            let b = plain.reserve(at: t, horizon: horizon, cpu: cpu) { holder, _ in cost(holder) }
            if a.start != b.0 || a.previous != b.1 { mismatches += 1 }
            if a.start > t { delayed += 1 }
            if a.start < clock - 1_000 { early += 1 }
            if line.counts.runs * 2 < line.counts.reservations { merged += 1 }
            if a.previous < 0 && n > 1_000 { afterDrop += 1 }
            #expect(line.counts.reservations == plain.intervals.count)
        }
        #expect(mismatches == 0)
        #expect(delayed > 1_000 && early > 100)
        // Runs formed, unless requests may take no time (then no gap is too short for all).
        #expect(least > 0 ? merged > 1_000 : merged == 0)
        // Some requests were served before the oldest reservation kept, after others were dropped:
        // nobody held the line before, as far as the timeline (and the plain list) knows.
        if horizonMoves { #expect(afterDrop > 10) }
    }

    @Test("a count line's timeline answers as a plain timeline does, for 64 CPUs that each ask in their own time order behind a long queue",
          arguments: [false, true])
    func lineTimelineMatchesTimeline(bySocket: Bool) {
        // By socket, the line knows that a request after a CPU of another socket (28 CPUs each)
        // lasts at least 320 cycles, and passes shorter gaps after one without weighing them.
        let line = bySocket ? LineTimeline(shortest: 20, shortestAfterOther: 120, groupSize: 28, shortestAfterOtherGroup: 320)
                            : LineTimeline(shortest: 20, shortestAfterOther: 120)
        let plain = Timeline()
        var rng = SplitMix64(seed: 33)
        var clocks = [Double](repeating: 0, count: 64)
        var mismatches = 0, longWaits = 0, merged = 0
        for _ in 0..<40_000 {
            // A CPU's next request comes after its last one ended, like a fault's `down_read()`
            // after its previous `up_read()`; the CPUs' clocks drift apart, so queues form.
            let cpu = Int(rng.next() % 64)
            let t = clocks[cpu] + Double(rng.next() % 3_000)
            let horizon = (clocks.min() ?? 0) - 1
            let cost: (Int32) -> Double = { holder in holder < 0 || Int(holder) == cpu ? 20 : holder / 28 == Int32(cpu / 28) ? 120 : 320 }
            let a = line.reserve(at: t, horizon: horizon, cpu: cpu, duration: cost)
            let b = plain.reserve(at: t, horizon: horizon, cpu: cpu, shortest: 20, shortestAfterOther: 120) { holder, _ in cost(holder) }
            if a.start != b.start || a.previous != b.previous { mismatches += 1 }
            // Passed at least 16 reservations of other CPUs.
            if a.start - t > 16 * 120 { longWaits += 1 }
            if line.counts.runs < line.counts.reservations { merged += 1 }
            clocks[cpu] = b.start + cost(b.previous)
        }
        #expect(mismatches == 0)
        #expect(longWaits > 1_000 && merged > 1_000)
    }

    @Test("a count line's timeline keeps reservations that no request can come between as one run, and remembers who held its end")
    func lineTimelineRuns() {
        let line = LineTimeline(shortest: 20, shortestAfterOther: 120)
        // 20 cycles after the CPU itself or nobody, 120 after another CPU.
        func cost(_ cpu: Int) -> (Int32) -> Double { { $0 < 0 || Int($0) == cpu ? 20 : 120 } }
        #expect(line.reserve(at: 0, cpu: 1, duration: cost(1)) == (0, -1))
        // 10 cycles after CPU 1's end, too short a gap for any request: one run from 0 to 150.
        #expect(line.reserve(at: 30, cpu: 2, duration: cost(2)) == (30, 1))
        #expect(line.counts == (2, 1))
        // CPU 3 goes after the run, after CPU 2, its last holder (not CPU 1, its first).
        #expect(line.reserve(at: 5, cpu: 3, duration: cost(3)) == (150, 2))
        #expect(line.counts == (3, 1))
        // 45 cycles after it, a run of its own.
        #expect(line.reserve(at: 315, cpu: 4, duration: cost(4)) == (315, 3))
        #expect(line.counts == (4, 2))
        // CPU 3 after itself: 20 cycles at 270 leave a gap of 25 before 315, which 20 would fit.
        #expect(line.reserve(at: 270, cpu: 3, duration: cost(3)) == (270, 3))
        #expect(line.counts == (5, 2))
        // CPU 3 again, in that gap: it fits, and leaves 5 cycles: one run from 0 to 435.
        #expect(line.reserve(at: 290, cpu: 3, duration: cost(3)) == (290, 3))
        #expect(line.counts == (6, 1))
        // The run ends with CPU 4's reservation: the next request pays CPU 4's transfer.
        #expect(line.reserve(at: 0, cpu: 3, duration: cost(3)) == (435, 4))
    }

    @Test("a timeline never grants a lock to two CPUs at once: what it forgot still delays a request for an earlier time")
    func timelineNeverDoubleBooks() {
        let t = Timeline()
        // 300 back-to-back holds of 10 cycles from time 0, more than a timeline keeps, with no horizon.
        for i in 0..<300 { _ = t.reserve(at: Double(i * 10), cpu: 1) { _, _ in 10 } }
        // A request for time 5 must wait for the end of the last one: the lock was never free since.
        #expect(t.reserve(at: 5, cpu: 2) { _, _ in 1 }.start == 3_000)
        // Once the horizon passes them, the old holds are forgotten, but a request for a time before
        // the horizon still starts no earlier than where they ended.
        let u = Timeline()
        for i in 0..<300 { _ = u.reserve(at: Double(i * 10), horizon: 1_500, cpu: 1) { _, _ in 10 } }
        let late = u.reserve(at: 5, horizon: 1_500, cpu: 2) { _, _ in 1 }
        #expect(late.start >= 1_500)
        #expect(late.start == 3_000)
    }

    @Test("bandwidth slots answer as a dictionary of slot to bytes would, through late requests, jumps and drops")
    func bandwidthSlotsMatchDictionary() {
        var slots = BandwidthSlots(), plain: [Int: Double] = [:]
        var rng = SplitMix64(seed: 7)
        var front = 0
        var mismatches = 0, farWrites = 0, drops = 0
        for n in 0..<40_000 {
            // The front of time moves by a few slots, now and then by far more than the ring holds.
            front += Int(rng.next() % 3) + (n % 5_000 == 0 ? BandwidthSlots.ringSlots * 3 : 0)
            let behind = n % 11 == 0 ? Int(rng.next() % UInt64(3 * BandwidthSlots.ringSlots)) : Int(rng.next() % 8)
            let slot = max(0, front - behind)
            if slot < front - BandwidthSlots.ringSlots { farWrites += 1 }
            if slots[slot] != (plain[slot] ?? 0) { mismatches += 1 }
            let bytes = (plain[slot] ?? 0) + Double(1 + rng.next() % 100)
            slots.set(slot, bytes)
            plain[slot] = bytes
            // SimulatedTime drops below 2,048 slots before the request once 4,096 slots carry
            // bytes; smaller numbers here, so that drops come often.
            if plain.count > 256 {
                let floor = slot - 128
                slots.drop(below: floor)
                let before = plain.count
                plain = plain.filter { $0.key >= floor }
                if plain.count < before { drops += 1 }
            }
            if slots.count != plain.count { mismatches += 1 }
        }
        for (slot, bytes) in plain where slots[slot] != bytes { mismatches += 1 }
        #expect(mismatches == 0)
        #expect(farWrites > 1_000 && drops > 100)
    }

    @Test("machines up to 256 CPUs: a shootdown reaches a CPU above 64 and is counted per CPU")
    func manyCPUs() throws {
        var configuration = KernelConfiguration(memoryBytes: 64 << 20, mode: .metadata, watermarks: .zero)
        configuration.cpus = 130
        let kernel = Kernel(configuration)
        let mm = kernel.createAddressSpace()!
        let m = Machine(kernel: kernel, description: .zen4, cpuCount: 130, simulatedTime: true)
        let va = try anon(mm, 1 << 20)
        m.cpus[0].switchTo(mm)
        m.cpus[129].switchTo(mm)
        touchPages(m.cpus[0], va, 4 * 4096, .write)
        touchPages(m.cpus[129], va, 4 * 4096)
        #expect(m.cpusThatRan(mm) == [0, 129])
        try m.run(on: 0) { try mm.munmap(va, length: 4096) }
        #expect(m.cpus[129].cachedTranslation(va) == nil)
        #expect(m.shootdownsSent[0] == 1 && m.shootdownsReceived[129] == 1)
        #expect(m.shootdownsReceived.reduce(0, +) == 1)
    }
}

/// The specification of a timeline: every interval in one sorted array; past 256, those that end by
/// the horizon go if at least 128 can, past 4,096 the oldest half; nothing is granted before the end
/// of what went.
private struct PlainTimeline {
    var intervals: [(start: Double, end: Double, holder: Int32)] = []
    var floor = -Double.infinity
    mutating func reserve(at requested: Double, horizon: Double, cpu: Int, duration: (Int32, Int) -> Double) -> (Double, Int32) {
        let t = max(requested, floor)
        var i = intervals.firstIndex { $0.end > t } ?? intervals.count
        var start = t
        let firstAfter = i
        while true {
            let previous: Int32 = i > 0 ? intervals[i - 1].holder : -1
            let d = duration(previous, i - firstAfter)
            if i == intervals.count || start + d <= intervals[i].start {
                intervals.insert((start, start + d, Int32(cpu)), at: i)
                if intervals.count > 256 {
                    let past = intervals.prefix { $0.end <= horizon }.count
                    let drop = past >= 128 ? past : intervals.count > 4096 ? intervals.count / 2 : 0
                    if drop > 0 {
                        floor = max(floor, intervals[drop - 1].end)
                        intervals.removeFirst(drop)
                    }
                }
                return (start, previous)
            }
            start = max(start, intervals[i].end)
            i += 1
        }
    }
}
