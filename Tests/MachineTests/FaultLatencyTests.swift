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
}
