import Testing
import VMCore
import Kernel
import Machine
import Workloads
import Simulation

/// The direction issue 24 asks HawkEye to show, on a small size: pre-zeroing takes the zeroing out of
/// huge faults, so their latency's p99 falls below Linux `always`'s.
@Suite("HawkEye against Linux 6.18: huge-fault latency")
struct HawkEyeDirectionTests {
    static let base: UInt64 = 0x7e00_0000_0000

    /// Faults one huge page every 100 ms (a store to each new 2 MiB range) after a second of warm-up.
    func run(_ policy: (any HugepagePolicy)?) throws -> ReplayReport {
        var s = SystemBuilder()
        s.design = .linux6_18
        s.enabled = .always
        s.memoryBytes = 1 << 30
        s.policy = policy
        let e = try s.makeExecutor()
        let ranges: UInt64 = 200
        e.event(thread: 0, .mmap(address: Self.base, length: ranges << 21, protection: .readWrite, shared: false))
        e.event(thread: 0, .idle(milliseconds: 1000))
        e.event(thread: 0, .beginMeasurement)
        for r in 0..<ranges {
            e.access(thread: 0, address: Self.base + (r << 21) + 64, kind: .store, count: 1)
            e.event(thread: 0, .idle(milliseconds: 100))
        }
        return e.finish()
    }

    @Test("a huge page faulted every 100 ms: HawkEye's p99 fault latency is below Linux always's")
    func latency() throws {
        let linux = try run(nil), hawkeye = try run(HawkEyePolicy())
        #expect(linux.vmstatFinal["thp_fault_alloc"] == 200 && hawkeye.vmstatFinal["thp_fault_alloc"] == 200)
        #expect(hawkeye.vmstatFinal["hawkeye_blocks_prezeroed"]! > 100)
        let p99 = (linux: linux.faultLatency.percentile(99), hawkeye: hawkeye.faultLatency.percentile(99))
        #expect(p99.hawkeye < p99.linux / 2, "p99 cycles \(p99)")
        #expect(hawkeye.faultLatency.percentile(50) < linux.faultLatency.percentile(50))
    }
}
