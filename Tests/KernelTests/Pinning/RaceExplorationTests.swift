import Testing
import Foundation
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// Small racy programs run under the deterministic scheduler, one seed per interleaving: each seed
/// must end with every invariant holding (no lost reference, no page freed while pinned, no PMD left
/// splitting) and the program's own postcondition true. A failing seed replays exactly
/// (THPSIM_RACE_SEED=N runs only that seed).
@Suite("Races explored seed by seed under the deterministic scheduler", .serialized)
struct RaceExplorationTests {
    static var seeds: [UInt64] {
        if let one = ProcessInfo.processInfo.environment["THPSIM_RACE_SEED"].flatMap({ UInt64($0) }) { return [one] }
        let count = TestLength.pick(short: 120, full: 600, variable: "THPSIM_RACE_SEEDS")
        return (0..<UInt64(count)).map { $0 }
    }

    /// Runs `tasks` under the scheduler for every seed, after `setUp` and before `check`.
    func explore<S>(_ name: String, setUp: () throws -> S, tasks: (S) -> [@Sendable () -> Void],
                    check: (S, UInt64) throws -> Void) throws {
        var points = 0
        for seed in Self.seeds {
            let state = try setUp()
            let scheduler = DeterministicScheduler(seed: seed)
            scheduler.run(tasks(state))
            points += scheduler.points
            try check(state, seed)
        }
        print("race \(name): \(Self.seeds.count) seeds, \(points) switch points")
    }

    /// Offsets in the huge page where `hugePage()` writes 64 known bytes.
    static let marks: [UInt64] = [0, 40 * 1024, 1 << 20, (2 << 20) - 64]

    /// Whether the marks still read back (the page's data survived).
    func marksIntact(_ s: Shared, rewritten: [UInt64: UInt8] = [:]) -> Bool {
        Self.marks.allSatisfy { offset in
            (try? s.mm.read(s.a + offset, count: 64).get()) == pattern(rewritten[offset] ?? UInt8(truncatingIfNeeded: offset >> 12), 64)
        }
    }

    struct Shared: @unchecked Sendable {
        let kernel: Kernel
        let mm: AddressSpace
        let a: VirtualAddress
    }

    func hugePage(_ memory: UInt64 = 16 * .MiB, design: KernelDesign = .linux2_6_38) throws -> Shared {
        let kernel = TestMachine.kernel(memory: memory, design: design, enabled: .always)
        let mm = kernel.createAddressSpace()!
        let a = try hugeRegion(mm, 2 * .MiB)
        for offset in Self.marks { try mm.write(a + offset, pattern(UInt8(truncatingIfNeeded: offset >> 12), 64)).get() }
        return Shared(kernel: kernel, mm: mm, a: a)
    }

    @Test("GUP of a tail and its put race with a split of the same huge page")
    func gupVersusSplit() throws {
        try explore("gup vs split", setUp: { try hugePage() }, tasks: { s in [
            { let p = try! s.mm.getUserPages(s.a + 40 * .KiB, count: 2, write: false).get(); s.kernel.putUserPages(p) },
            { s.mm.splitHugePages(s.a, length: 2 * .MiB) },
        ] }, check: { s, seed in
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed): \(s.kernel.checkInvariants().prefix(3))")
            #expect(s.kernel.vmstat[.thpSplitPage] == 1, "seed \(seed)")
            #expect(marksIntact(s), "seed \(seed)")
        })
    }

    @Test("put_page on a pinned tail races with split_huge_page: the compound_lock hands the pin over exactly once")
    func putVersusSplit() throws {
        try explore("put_page vs split", setUp: { () throws -> Shared in
            let s = try hugePage()
            s.kernel.getPage(s.mm.translate(s.a)!.frame + 33)  // a pin taken earlier through tail 33
            return s
        }, tasks: { s in [
            { s.kernel.putPage(s.mm.translate(s.a)!.entry.pfn + 33) },
            { try! s.mm.munmap(s.a + 1 * .MiB, length: 4 * .KiB) },
        ] }, check: { s, seed in
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed): \(s.kernel.checkInvariants().prefix(3))")
        })
    }

    @Test("gup-fast races with munmap: it pins the old pages (kept until put) or finds nothing, never a freed page")
    func gupFastVersusMunmap() throws {
        try explore("gup-fast vs munmap", setUp: { try hugePage() }, tasks: { s in [
            {
                if case .success(let pages) = s.mm.getUserPagesFast(s.a + 64 * .KiB, count: 4, write: true, cpu: 0) {
                    s.kernel.putUserPages(pages)
                }
            },
            { try! s.mm.munmap(s.a, length: 2 * .MiB) },
        ] }, check: { s, seed in
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed): \(s.kernel.checkInvariants().prefix(3))")
            #expect(s.kernel.vmstat[.nrAnonTransparentHugepages] == 0, "seed \(seed)")
        })
    }

    @Test("two faults on one empty PMD: one huge page wins, the other fault retries and both writes land")
    func faultVersusFault() throws {
        try explore("fault vs fault", setUp: { () throws -> Shared in
            let (kernel, mm) = TestMachine.process(enabled: .always)
            return Shared(kernel: kernel, mm: mm, a: try hugeRegion(mm, 2 * .MiB))
        }, tasks: { s in [
            { _ = s.mm.write(s.a + 10, [0x11]) },
            { _ = s.mm.write(s.a + 1 * .MiB, [0x22]) },
        ] }, check: { s, seed in
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed)")
            #expect(s.kernel.vmstat[.thpFaultAlloc] == 1 && s.mm.translate(s.a)?.level == .pmd, "seed \(seed)")
            let first = try s.mm.read(s.a + 10, count: 1).get(), second = try s.mm.read(s.a + 1 * .MiB, count: 1).get()
            #expect(first == [0x11] && second == [0x22], "seed \(seed)")
        })
    }

    @Test("a secondary MMU's fault races with munmap: it never keeps a mapping of an unmapped page")
    func notifierVersusFault() throws {
        try explore("secondary fault vs munmap", setUp: { () throws -> (Shared, SecondaryMMU) in
            let s = try hugePage()
            return (s, SecondaryMMU(mirroring: s.mm))
        }, tasks: { pair in
            let (s, secondary) = pair
            return [
                { secondary.fault(at: s.a + 12 * .KiB, write: true) },
                { try! s.mm.munmap(s.a, length: 16 * .KiB) },
            ]
        }, check: { pair, seed in
            let (s, secondary) = pair
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed)")
            for m in secondary.mappings {
                let t = s.mm.translate(m.address)
                #expect(t != nil && (m.huge ? t!.entry.pfn : t!.frame) == m.frame, "seed \(seed): stale secondary mapping \(m)")
            }
        })
    }

    @Test("linux-6.18: a FOLL_PIN pin races with a folio split: the split fails while the pin is held, or succeeds before it")
    func pinVersusFolioSplit() throws {
        try explore("pin vs folio split", setUp: { try hugePage(design: .linux6_18) }, tasks: { s in [
            {
                let p = try! s.mm.pinUserPagesFast(s.a + 40 * .KiB, count: 2, write: true, cpu: 0).get()
                s.kernel.unpinUserPages(p)
            },
            { s.mm.splitHugePages(s.a, length: 2 * .MiB) },
        ] }, check: { s, seed in
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed): \(s.kernel.checkInvariants().prefix(3))")
            let split = s.kernel.vmstat[.thpSplitPage], failed = s.kernel.vmstat[.thpSplitPageFailed]
            #expect(split + failed <= 1 && s.kernel.vmstat[.thpSplitPMD] <= 1, "seed \(seed): split \(split) failed \(failed)")
            #expect(marksIntact(s), "seed \(seed)")
        })
    }

    @Test("linux-6.18: a partial munmap races with the deferred-split shrinker and gup-fast")
    func munmapVersusShrinker() throws {
        try explore("munmap vs deferred split vs gup-fast", setUp: { try hugePage(design: .linux6_18) }, tasks: { s in [
            { try! s.mm.munmap(s.a + 1 * .MiB + 4 * .KiB, length: 8 * .KiB) },
            { s.kernel.deferredSplitScan() },
            {
                if case .success(let pages) = s.mm.getUserPagesFast(s.a + 36 * .KiB, count: 8, write: false, cpu: 1) {
                    s.kernel.putUserPages(pages)
                }
            },
        ] }, check: { s, seed in
            s.kernel.deferredSplitScan()
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed): \(s.kernel.checkInvariants().prefix(3))")
            #expect(s.kernel.vmstat[.thpSplitPage] == 1, "seed \(seed): the partly unmapped folio is split in the end")
            #expect(marksIntact(s), "seed \(seed)")
        })
    }

    @Test("reclaim from the LRU lists races with munmap, a write and migration of the same small pages",
          arguments: [KernelDesign.linux2_6_38, .linux6_18])
    func reclaimVersusMunmapAndFault(design: KernelDesign) throws {
        try explore("lru reclaim vs munmap vs write vs migration (\(design))", setUp: { () throws -> Shared in
            let kernel = TestMachine.kernel(memory: 16 * .MiB, design: design)
            let mm = kernel.createAddressSpace()!
            let a = try anon(mm, 8 * 4096)
            for i in 0..<8 { try mm.write(a + UInt64(i) * 4096, pattern(UInt8(i), 64)).get() }
            // Old and inactive, so that reclaim takes them at once.
            kernel.shrinkActiveList(64)
            mm.clearYoung(a, length: 8 * 4096)
            return Shared(kernel: kernel, mm: mm, a: a)
        }, tasks: { s in [
            { _ = s.kernel.shrinkInactiveList(32, by: .kswapd); _ = s.kernel.shrinkInactiveList(32, by: .direct) },
            { try! s.mm.munmap(s.a + 2 * 4096, length: 2 * 4096) },
            // New bytes, so that a write lost to the swap-out shows.
            { _ = s.mm.write(s.a + 5 * 4096, pattern(0x50, 64)) },
            {
                guard let old = s.mm.residentFrame(s.a + 6 * 4096),
                      let target = s.kernel.memory.allocateFolio(order: .base, kind: .anonymous) else { return }
                if case .migrated = s.kernel.migratePage(old, to: target, mappings: [(s.mm, s.a + 6 * 4096)]) { return }
                s.kernel.putPage(target)
            },
        ] }, check: { s, seed in
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed): \(s.kernel.checkInvariants().prefix(3))")
            #expect(s.kernel.vmstat[.pswpout] >= 4, "seed \(seed): the four untouched old pages go to swap")
            for i in [0, 1, 4, 5, 6, 7] {
                #expect((try? s.mm.read(s.a + UInt64(i) * 4096, count: 64).get()) == pattern(i == 5 ? 0x50 : UInt8(i), 64), "seed \(seed): page \(i)")
            }
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed): \(s.kernel.checkInvariants().prefix(3))")
        })
    }

    @Test("MADV_PAGEOUT races with writes to the pages it swaps out: no write is lost",
          arguments: [KernelDesign.linux2_6_38, .linux6_18])
    func pageoutVersusWrite(design: KernelDesign) throws {
        try explore("MADV_PAGEOUT vs write (\(design))", setUp: { () throws -> Shared in
            let kernel = TestMachine.kernel(memory: 16 * .MiB, design: design)
            let mm = kernel.createAddressSpace()!
            let a = try anon(mm, 4 * 4096)
            for i in 0..<4 { try mm.write(a + UInt64(i) * 4096, pattern(UInt8(i), 64)).get() }
            return Shared(kernel: kernel, mm: mm, a: a)
        }, tasks: { s in [
            { try? s.mm.madvise(s.a, length: 4 * 4096, advice: .pageout) },
            { for i in 1..<3 { _ = s.mm.write(s.a + UInt64(i) * 4096, pattern(UInt8(0x40 + i), 64)) } },
        ] }, check: { s, seed in
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed): \(s.kernel.checkInvariants().prefix(3))")
            for i in 0..<4 {
                let want = pattern(UInt8(i == 1 || i == 2 ? 0x40 + i : i), 64)
                #expect((try? s.mm.read(s.a + UInt64(i) * 4096, count: 64).get()) == want, "seed \(seed): page \(i)")
            }
        })
    }

    @Test("reclaim of a THP (split, or whole to a clustered device) races with a pin and a write",
          arguments: [KernelDesign.linux2_6_38, .linux6_18])
    func reclaimVersusPinOfHugePage(design: KernelDesign) throws {
        try explore("lru reclaim of a THP vs pin vs write (\(design))", setUp: { () throws -> Shared in
            var settings = design.defaultSettings
            settings.enabled = .always
            var configuration = KernelConfiguration(memoryBytes: 16 * .MiB, mode: .data, watermarks: .zero, design: design,
                                                    hugepageSettings: settings)
            configuration.swap = SwapConfiguration(clusters: true)
            let kernel = Kernel(configuration)
            let mm = kernel.createAddressSpace()!
            let a = try hugeRegion(mm, 2 * .MiB)
            for offset in Self.marks { try mm.write(a + offset, pattern(UInt8(truncatingIfNeeded: offset >> 12), 64)).get() }
            kernel.shrinkActiveList(512)
            mm.clearYoung(a, length: 2 * .MiB)
            return Shared(kernel: kernel, mm: mm, a: a)
        }, tasks: { s in [
            { _ = s.kernel.shrinkInactiveList(32, by: .kswapd) },
            {
                if case .success(let pages) = s.mm.getUserPagesFast(s.a + 40 * .KiB, count: 2, write: false, cpu: 1) {
                    s.kernel.putUserPages(pages)
                }
            },
            // New bytes at a mark, so that a write lost to the swap-out shows.
            { _ = s.mm.write(s.a + 1 * .MiB, pattern(0x77, 64)) },
        ] }, check: { s, seed in
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed): \(s.kernel.checkInvariants().prefix(3))")
            // Reclaimed (2.6.38: split; 6.18: written whole, or split after a fallback), or kept huge:
            // the write made it young first, or (6.18) a pin made the split fail.
            let reclaimed = s.kernel.vmstat[.thpSplitPage] + s.kernel.vmstat[.thpSwpout] == 1
            #expect(reclaimed != isHuge(s.mm, s.a), "seed \(seed)")
            #expect(marksIntact(s, rewritten: [1 << 20: 0x77]), "seed \(seed)")
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed): \(s.kernel.checkInvariants().prefix(3))")
        })
    }

    @Test("the same seed replays the same interleaving")
    func replay() throws {
        func trace(_ seed: UInt64) throws -> (Int, Int) {
            let s = try hugePage()
            let scheduler = DeterministicScheduler(seed: seed)
            scheduler.run([
                { let p = try! s.mm.getUserPages(s.a, count: 1, write: false).get(); s.kernel.putUserPages(p) },
                { s.mm.splitHugePages(s.a, length: 2 * .MiB) },
                { _ = s.mm.write(s.a + 4096, [1]) },
            ])
            return (scheduler.points, s.kernel.vmstat[.pgfault])
        }
        let first = try trace(42), second = try trace(42)
        #expect(first == second)
        let others = try (0..<8).map { try trace($0).0 }
        #expect(Set(others).count > 1, "different seeds should interleave differently")
    }
}
