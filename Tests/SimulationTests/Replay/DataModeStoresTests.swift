import Testing
import VMCore
import Kernel
import Machine
import Workloads
import Simulation

/// In data mode a workload's stores leave a byte in each page they write first, so the kernel's
/// zero-page checks tell written pages from untouched ones.
@Suite("Workload stores in data mode")
struct DataModeStoresTests {
    @Test("the underused shrinker splits a THP the workload wrote 10 pages of, not one it wrote whole",
          arguments: [true, false])
    func underusedSeesStores(dataMode: Bool) throws {
        var s = SystemBuilder()
        s.design = .linux6_18
        s.enabled = .always
        s.mode = dataMode ? .data : .metadata
        s.memoryBytes = 64 << 20
        s.tunables = [.init(name: "shrink_underused", value: "1"), .init(name: "khugepaged/max_ptes_none", value: "409")]
        let e = try s.makeExecutor()
        let base: UInt64 = 0x4000_0000
        e.event(thread: 0, .mmap(address: base, length: 4 << 20, protection: .readWrite, shared: false))
        for page in 0..<512 { e.access(thread: 0, address: base + UInt64(page) * 4096 + 64, kind: .store, count: 1) }
        for page in 0..<10 { e.access(thread: 0, address: base + (2 << 20) + UInt64(page) * 4096, kind: .store, count: 1) }
        let report = e.finish()
        #expect(report.signals.isEmpty)
        let kernel = e.machine.kernel
        #expect(kernel.vmstatValues()["thp_fault_alloc"] == 2)
        kernel.deferredSplitScan()
        // Metadata mode keeps no bytes: nothing is underused there.
        #expect(kernel.vmstatValues()["thp_underused_split_page"] == (dataMode ? 1 : 0))
        #expect(kernel.checkInvariants().isEmpty)
    }
}
