import Testing
import VMCore
import Kernel
import Machine
import Workloads
import Simulation

/// The directions issue 24 asks Ingens to show, on small sizes: no bloat on sparse memory, and most of
/// Linux's TLB benefit on dense random access once khugepaged has run.
@Suite("Ingens against Linux 6.18: bloat and TLB benefit")
struct IngensDirectionTests {
    static let base: UInt64 = 0x7e00_0000_0000

    func executor(_ policy: (any HugepagePolicy)?, enabled: TransparentHugepageSettings.Enabled) throws -> MachineExecutor {
        var s = SystemBuilder()
        s.design = .linux6_18
        s.enabled = enabled
        s.memoryBytes = 256 << 20
        s.policy = policy
        return try s.makeExecutor()
    }

    @Test("one byte written per 64 KiB: Ingens's RSS is within 5 % of the bytes touched; Linux always maps 2 MiB per range")
    func sparse() throws {
        let size: UInt64 = 64 << 20
        var rss: [String: UInt64] = [:], touched: UInt64 = 0
        for (name, policy) in [("ingens", IngensPolicy() as (any HugepagePolicy)?), ("linux-6.18", nil)] {
            let e = try executor(policy, enabled: .always)
            e.event(thread: 0, .mmap(address: Self.base, length: size, protection: .readWrite, shared: false))
            for offset in stride(from: 0, to: size, by: 64 << 10) {
                e.access(thread: 0, address: Self.base + offset, kind: .store, count: 1)
            }
            e.event(thread: 0, .idle(milliseconds: 60_000))   // khugepaged runs, and finds nothing to promote
            let r = e.finish()
            rss[name] = r.anonBytes
            touched = r.touchedBytes
        }
        #expect(touched == (size / (64 << 10)) * 4096)
        #expect(Double(rss["ingens"]!) <= 1.05 * Double(touched) && rss["ingens"]! >= touched)
        #expect(rss["linux-6.18"]! == size)
    }

    @Test("gups over 32 MiB: after khugepaged has run, Ingens (and HawkEye) get ≥ 90 % of Linux always's cut in page walks")
    func gups() throws {
        let size: UInt64 = 32 << 20
        var walks: [String: Int] = [:], huge: [String: UInt64] = [:]
        for (name, policy, enabled) in [("never", nil, .never), ("always", nil, .always),
                                        ("ingens", IngensPolicy() as (any HugepagePolicy)?, .always),
                                        ("hawkeye", HawkEyePolicy(), .always)]
                as [(String, (any HugepagePolicy)?, TransparentHugepageSettings.Enabled)] {
            let e = try executor(policy, enabled: enabled)
            e.event(thread: 0, .mmap(address: Self.base, length: size, protection: .readWrite, shared: false))
            for offset in stride(from: 0, to: size, by: 4096) { e.access(thread: 0, address: Self.base + offset, kind: .store, count: 1) }
            // 16 ranges, 8 per wake-up (pages_to_scan 4096), a wake-up every 10 s.
            e.event(thread: 0, .idle(milliseconds: 30_000))
            e.event(thread: 0, .beginMeasurement)
            var rng = SplitMix64(seed: 7)
            for _ in 0..<50_000 { e.access(thread: 0, address: Self.base + rng.below(size / 8) * 8, kind: .store, count: 1) }
            let r = e.finish()
            walks[name] = r.measuredCounters.walks
            huge[name] = r.anonHugeBytes
        }
        #expect(huge["ingens"] == size && huge["hawkeye"] == size && huge["always"] == size && huge["never"] == 0)
        for name in ["ingens", "hawkeye"] {
            let benefit = Double(walks["never"]! - walks[name]!) / Double(walks["never"]! - walks["always"]!)
            #expect(benefit >= 0.9, "\(name): walks \(walks)")
        }
    }

    /// 512 MiB, so that set-up spans two of the executor's clock ticks (65,536 accesses each): the
    /// wake-up due since the first fault runs at the first tick and promotes the 128 ranges filled by
    /// then; the other 128 wait for the wake-up 10 s later.
    @Test("gups 512 MiB with --settle 10s: khugepaged drains Ingens's queue in the settle, so the measured accesses get ≥ 90 % of Linux always's cut in page walks; without it, half the ranges wait")
    func gupsSettle() throws {
        let size: UInt64 = 512 << 20
        var walks: [String: Int] = [:], huge: [String: UInt64] = [:]
        for (name, policy, enabled, settle) in [("never", nil, .never, 0), ("always", nil, .always, 0),
                                                ("ingens", IngensPolicy() as (any HugepagePolicy)?, .always, 10_000),
                                                ("ingens, no settle", IngensPolicy(), .always, 0)]
                as [(String, (any HugepagePolicy)?, TransparentHugepageSettings.Enabled, UInt64)] {
            var p = SyntheticParameters(size: size, accesses: 50_000)
            p.settleMilliseconds = settle
            var s = SystemBuilder()
            s.design = .linux6_18
            s.enabled = enabled
            s.memoryBytes = 1 << 30
            s.policy = policy
            var e = try s.makeExecutor()
            SyntheticWorkload.gups.generate(p, into: &e)
            let r = e.finish()
            walks[name] = r.measuredCounters.walks
            huge[name] = r.anonHugeBytes
        }
        func benefit(_ name: String) -> Double {
            Double(walks["never"]! - walks[name]!) / Double(walks["never"]! - walks["always"]!)
        }
        #expect(huge["ingens"] == size && huge["ingens, no settle"] == size / 2, "huge \(huge)")
        #expect(benefit("ingens") >= 0.9, "walks \(walks)")
        #expect(benefit("ingens, no settle") < 0.9, "walks \(walks)")
    }

    @Test("huge pages come only from khugepaged's queue, never from a fault, and only after a range filled")
    func onlyKhugepaged() throws {
        let e = try executor(IngensPolicy(), enabled: .always)
        let size: UInt64 = 8 << 20
        e.event(thread: 0, .mmap(address: Self.base, length: size, protection: .readWrite, shared: false))
        for offset in stride(from: 0, to: size, by: 4096) { e.access(thread: 0, address: Self.base + offset, kind: .store, count: 1) }
        e.event(thread: 0, .idle(milliseconds: 30_000))
        let r = e.finish()
        #expect(r.anonHugeBytes == size && r.anonBytes == size)
        #expect(r.vmstatFinal["thp_fault_alloc"] == 0 && r.vmstatFinal["thp_collapse_alloc"] == 4)
        #expect(r.vmstatFinal["ingens_ranges_queued"] == 4 && r.vmstatFinal["ingens_ranges_promoted"] == 4)
        #expect(r.faultLatency.count == 2048)
    }
}
