import Testing
import VMCore
import Kernel
@testable import Workloads
import Simulation

@Suite("kvstore and kvfork: the key-value workloads")
struct KeyValueWorkloadTests {
    @Test("kvstore: 4 KiB values to 90 % of the size, 80 % of them deleted with MADV_DONTNEED, 2 MiB values back up to the size")
    func kvstorePhases() {
        let size: UInt64 = 64 << 20
        let c = census(.kvstore, size: size, accesses: 5_000)
        let small = Int(size / 4096 * 9 / 10)
        let deleted = c.events.filter { if case .madvise(_, 4096, .dontNeed) = $0 { true } else { false } }
        #expect(deleted.count == small * 8 / 10)
        // Deleted pages are distinct and among the small values.
        let deletedPages = Set(deleted.compactMap { if case .madvise(let a, _, _) = $0 { a } else { nil } })
        #expect(deletedPages.count == deleted.count)
        #expect(deletedPages.allSatisfy { $0 >= SyntheticLayout.base && $0 < SyntheticLayout.base + UInt64(small) * 4096 })
        // Live bytes after the third phase: the kept small values and the large ones, at most the size.
        let liveSmall = UInt64(small - small * 8 / 10) * 4096
        let large = (size - liveSmall) >> 21
        #expect(c.mapped.count == 2 && c.mapped[1] == (KeyValueStoreWorkload.largeRegion(size: size), large << 21))
        #expect(liveSmall + large << 21 <= size && size - (liveSmall + large << 21) < 2 << 20)
        #expect(c.setupAccesses == small + Int(large) * 512)
        #expect(c.measuredAccesses == 5_000 && c.measuredByKind[0] == 5_000)
        // GETs read live values only.
        #expect(c.events.last == .beginMeasurement)
    }

    @Test("kvfork: fill, fork; the child reads every value once and exits; the parent's SETs go on, skewed")
    func kvforkPhases() {
        let size: UInt64 = 4 << 20
        let c = census(.kvfork, size: size, accesses: 20_000, threads: 2)
        #expect(c.setupAccesses == 1024)
        #expect(c.events.contains(.fork(child: 2)) && c.events.contains(.exit))
        #expect(c.measuredAccesses == 20_000)
        #expect(c.measuredByKind[0] == 1024)            // the child's dump: one load per value
        #expect(c.measuredByKind[1] == 20_000 - 1024)   // the parent's SETs
    }

    @Test("kvfork on a machine: the parent's writes while the child lives copy pages", arguments: [TransparentHugepageSettings.Enabled.never, .always])
    func kvforkCopies(enabled: TransparentHugepageSettings.Enabled) throws {
        var s = SystemBuilder()
        s.design = .linux6_18
        s.enabled = enabled
        s.memoryBytes = 256 << 20
        let e = try s.makeExecutor()
        var sink = e
        SyntheticWorkload.kvfork.generate(SyntheticParameters(size: 16 << 20, accesses: 40_000), into: &sink)
        let r = e.finish()
        #expect(r.signals.isEmpty)
        if enabled == .always {
            #expect(r.vmstatFinal["thp_fault_alloc"] == 8)
        } else {
            #expect((r.vmstatFinal["pgfault"] ?? 0) > 4096 + 100)
        }
    }
}
