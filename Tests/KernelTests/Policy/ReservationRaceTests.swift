import Testing
import Foundation
import VMCore
import PhysicalMemory
@testable import Kernel
import TestSupport

/// FreeBSD's reservations (`Reservations.swift`) under the deterministic scheduler: CPUs faulting pages
/// into one reservation, the fault that fills it promoting it, while another CPU breaks it (the
/// deferred-split scan reclaim runs first, FreeBSD's `vm_reserv_reclaim_inactive()`) or unmaps part of
/// it. Each seed is one interleaving and must end with every invariant holding, every written byte
/// readable and the reservation either promoted or broken, never both half-way. A failing seed replays
/// exactly (THPSIM_RACE_SEED=N runs only that seed).
@Suite("Reservations: faults, promotion and breaking raced seed by seed", .serialized)
struct ReservationRaceTests {
    static var seeds: [UInt64] {
        if let one = ProcessInfo.processInfo.environment["THPSIM_RACE_SEED"].flatMap({ UInt64($0) }) { return [one] }
        let count = TestLength.pick(short: 50, full: 400, variable: "THPSIM_RACE_SEEDS")
        return (0..<UInt64(count)).map { $0 }
    }

    struct Shared: @unchecked Sendable {
        let kernel: Kernel
        let mm: AddressSpace
        let a: VirtualAddress
    }

    /// The byte page `page` of the range holds once written.
    static func mark(_ page: Int) -> UInt8 { UInt8(truncatingIfNeeded: page) | 1 }

    /// A FreeBSD kernel with one 2 MiB range whose reservation has `populated` pages written.
    func reservation(populated: Int) throws -> Shared {
        var configuration = KernelConfiguration(memoryBytes: 8 << 20, mode: .data, watermarks: .zero, design: .linux6_18,
                                                hugepageSettings: TransparentHugepageSettings(enabled: .always, defrag: .madvise, useZeroPage: true))
        configuration.policy = FreeBSDPolicy()
        let kernel = Kernel(configuration)
        let mm = kernel.createAddressSpace()!
        let a = try anon(mm, PageGeometry.pmdSize, at: VirtualAddress(1 << 30))
        for page in 0..<populated { try mm.write(a + UInt64(page) * 4096, [Self.mark(page)]).get() }
        #expect(kernel.vmstat[.thpReservAlloc] == 1)
        return Shared(kernel: kernel, mm: mm, a: a)
    }

    /// Writes the mark of each page in `pages`, one fault each.
    static func write(_ s: Shared, _ pages: Range<Int>) {
        for page in pages { try! s.mm.write(s.a + UInt64(page) * 4096, [mark(page)]).get() }
    }

    func explore(_ name: String, populated: Int, tasks: (Shared) -> [@Sendable () -> Void],
                 check: (Shared, UInt64) throws -> Void) throws {
        var points = 0
        for seed in Self.seeds {
            let s = try reservation(populated: populated)
            let scheduler = DeterministicScheduler(seed: seed)
            scheduler.run(tasks(s))
            points += scheduler.points
            #expect(s.kernel.checkInvariants().isEmpty, "seed \(seed): \(s.kernel.checkInvariants().prefix(3))")
            try check(s, seed)
            try s.mm.munmap(s.a, length: PageGeometry.pmdSize)
            #expect(s.kernel.checkInvariants().isEmpty && s.kernel.vmstatState(.nrAnonPages) == 0, "seed \(seed): after munmap")
        }
        print("race \(name): \(Self.seeds.count) seeds, \(points) switch points")
    }

    @Test("two CPUs fill a reservation (the last fault promotes it) while a third breaks it: promoted or broken, data intact")
    func fillVersusBreak() throws {
        try explore("reservation fill vs break", populated: 500, tasks: { s in [
            { Self.write(s, 500..<506) },
            { Self.write(s, 506..<512) },
            { _ = s.kernel.deferredSplitScan() },
        ] }, check: { s, seed in
            let promoted = s.kernel.vmstat[.thpReservPromote], broken = s.kernel.vmstat[.thpReservBroken]
            #expect(promoted + broken == 1, "seed \(seed): promoted \(promoted), broken \(broken), \(String(describing: s.mm.translate(s.a)?.level))")
            #expect((s.mm.translate(s.a)?.level == .pmd) == (promoted == 1), "seed \(seed)")
            #expect(s.kernel.vmstatState(.nrAnonPages) == 512, "seed \(seed): RSS is the 512 pages written")
            for page in [0, 250, 499, 500, 505, 506, 511] {
                #expect((try? s.mm.read(s.a + UInt64(page) * 4096, count: 1).get()) == [Self.mark(page)], "seed \(seed): page \(page)")
            }
        })
    }

    @Test("the filling fault races with MADV_DONTNEED of other pages: promoted then split, or never full; the rest intact")
    func fillVersusDontneed() throws {
        try explore("reservation fill vs MADV_DONTNEED", populated: 508, tasks: { s in [
            { Self.write(s, 508..<512) },
            { try! s.mm.madvise(s.a, length: 8 * 4096, advice: .dontNeed) },
        ] }, check: { s, seed in
            #expect(s.mm.translate(s.a + 100 * 4096)?.level == .pte, "seed \(seed): a range with holes is PTE-mapped")
            #expect(s.kernel.vmstatState(.nrAnonPages) == 504, "seed \(seed)")
            for page in [0, 7] { #expect((try? s.mm.read(s.a + UInt64(page) * 4096, count: 1).get()) == [0], "seed \(seed): page \(page)") }
            for page in [8, 300, 507, 508, 511] {
                #expect((try? s.mm.read(s.a + UInt64(page) * 4096, count: 1).get()) == [Self.mark(page)], "seed \(seed): page \(page)")
            }
        })
    }
}
