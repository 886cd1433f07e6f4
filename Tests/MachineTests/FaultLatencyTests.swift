import Testing
import VMCore
import Kernel
@testable import Machine
import TestSupport

@Suite("Fault latency")
struct FaultLatencyTests {
    let t = TimingParameters()

    @Test("the cost model: small and huge zeroing, minor faults, copies, compaction, reclaim, swap-in")
    func costModel() {
        var w = FaultWork()
        #expect(t.faultCycles(w) == t.minorFaultCycles)
        w.smallPages = 1
        #expect(t.faultCycles(w) == t.baseFaultCycles)
        w.copyOnWrite = true
        #expect(t.faultCycles(w) == t.baseFaultCycles + t.copyPageCycles - t.zeroPageCycles)
        var h = FaultWork()
        h.hugePages = 1
        #expect(t.faultCycles(h) == t.hugeFaultCycles)
        h.copyOnWrite = true
        #expect(abs(t.faultCycles(h) - (t.hugeFaultCycles + 512 * (t.copyPageCycles - t.zeroPageCycles))) < 1e-6)
        var c = FaultWork()
        c.hugePages = 1; c.compactStalls = 1; c.compactScanned = 1000; c.pagesMigrated = 20
        #expect(abs(t.faultCycles(c) - (t.hugeFaultCycles + t.compactStallCycles + 1000 * t.compactScanCycles + 20 * t.migratePageCycles)) < 1e-6)
        var r = FaultWork()
        r.smallPages = 1; r.pagesReclaimed = 32; r.pagesSwappedOut = 32
        #expect(t.faultCycles(r) == t.baseFaultCycles + 32 * t.reclaimPageCycles + 32 * t.swapOutPageCycles)
        var s = FaultWork()
        s.pagesSwappedIn = 1
        #expect(t.faultCycles(s) == t.minorFaultCycles + t.swapInPageCycles)
    }

    @Test("a latency is recorded as rounded() rounds it, halves away from zero, and 0 below zero", arguments: [
        0, 0.25, 0.49999999999999994, 0.5, 0.5000000000000001, 1.5, 2.5, 2.4999999999999996, 1_000.5, 1_001.5,
        123_456.7, 4_503_599_627_370_495.5, 4_503_599_627_370_497, 9_007_199_254_740_993, 1e18, -0.0, -0.5, -3.7,
    ])
    func roundedValue(cycles: Double) {
        #expect(FaultLatencyHistogram.value(cycles: cycles) == UInt64(Swift.max(0, cycles.rounded())))
    }

    @Test("an undefined latency (NaN) is recorded as 0")
    func nanValue() {
        #expect(FaultLatencyHistogram.value(cycles: .nan) == 0)
    }

    @Test("a CPU records each fault: 4 KiB zero-fill, zero-page read, copy-on-write after fork, and a huge fault")
    func recordedPerFault() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata)
        let m = Machine(kernel: kernel, description: .skylakeSP)
        let mm = kernel.createAddressSpace()!
        let cpu = m.cpus[0]
        cpu.switchTo(mm)
        let va = try mm.mmap(address: nil, length: 1 << 20, protection: .readWrite, flags: .private)
        _ = cpu.access(va, .write)                       // zero-fill
        _ = cpu.access(va + 4096, .read)                  // the zero page: allocates nothing
        let child = try mm.fork()
        _ = cpu.access(va, .write)                        // copy-on-write of a page the child shares
        #expect(cpu.counters.faults == 3)
        #expect(cpu.faultLatency.count == 3)
        let expected = t.baseFaultCycles + t.minorFaultCycles + (t.baseFaultCycles + t.copyPageCycles - t.zeroPageCycles)
        #expect(abs(cpu.counters.faultCycles - expected) < 1e-6)
        #expect(cpu.faultLatency.percentile(0) == 1000)
        child.exit()

        var settings = kernel.hugepageSettings
        settings.enabled = .always
        kernel.hugepageSettings = settings
        let huge = try mm.mmap(address: VirtualAddress(0x4000_0000), length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
        _ = cpu.access(huge, .write)
        #expect(kernel.vmstat[.thpFaultAlloc] == 1)
        #expect(cpu.faultLatency.count == 4)
        // Three significant digits: the max is within 0.1 % of the huge fault's cost.
        #expect(abs(Double(cpu.faultLatency.max) - t.hugeFaultCycles) <= t.hugeFaultCycles / 1000)
        #expect(m.faultLatency == cpu.faultLatency)
        let rebuilt = FaultLatencyHistogram(buckets: cpu.faultLatency.buckets)
        #expect(rebuilt == cpu.faultLatency)
        #expect(abs(Double(rebuilt.percentile(99)) - Double(cpu.faultLatency.percentile(99))) <= t.hugeFaultCycles / 1000)
        #expect(FaultLatencyHistogram(buckets: rebuilt.buckets).percentile(99) == rebuilt.percentile(99))
    }

    @Test("runs of equal latencies: the CPU's histogram is each fault's latency recorded one by one, at any moment")
    func runsOfEqualLatencies() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata)
        let m = Machine(kernel: kernel, description: .skylakeSP)
        let mm = kernel.createAddressSpace()!
        let cpu = m.cpus[0]
        cpu.switchTo(mm)
        var settings = kernel.hugepageSettings
        settings.enabled = .always
        kernel.hugepageSettings = settings
        let small = try mm.mmap(address: VirtualAddress(0x1000_0000), length: 1 << 20, protection: .readWrite, flags: [.private, .fixed])
        let huge = try mm.mmap(address: VirtualAddress(0x4000_0000), length: 8 << 20, protection: .readWrite, flags: [.private, .fixed])
        try mm.madvise(small, length: 1 << 20, advice: .noHugepage)
        // Runs of 4 KiB faults broken by huge ones and by zero-page reads: each fault's cost, as the
        // kernel recorded its work, goes into a reference histogram one by one.
        var reference = FaultLatencyHistogram()
        var faults = 0
        func touch(_ va: VirtualAddress, _ kind: MemoryAccess) {
            let before = cpu.counters.faults
            _ = cpu.access(va, kind)
            if cpu.counters.faults > before, let fault = cpu.lastFault {
                reference.record(cycles: m.machineDescription.timing.faultCycles(FaultWork(fault)))
                faults += 1
            }
        }
        for i in 0..<40 { touch(small + UInt64(i) * 4096, .write) }
        #expect(cpu.faultLatency == reference)
        touch(huge, .write)
        for i in 40..<60 { touch(small + UInt64(i) * 4096, i % 3 == 0 ? .read : .write) }
        #expect(cpu.faultLatency == reference)
        touch(huge + (2 << 20), .write)
        touch(huge + (4 << 20), .write)
        for i in 60..<70 { touch(small + UInt64(i) * 4096, .write) }
        #expect(faults == 73)
        #expect(cpu.faultLatency.count == UInt64(faults))
        #expect(cpu.faultLatency == reference)
        #expect(m.faultLatency == reference)
        // Setting the histogram drops the run in progress too.
        cpu.faultLatency = FaultLatencyHistogram()
        #expect(cpu.faultLatency.count == 0)
        touch(small + 70 * 4096, .write)
        #expect(cpu.faultLatency.count == 1)
    }
}
