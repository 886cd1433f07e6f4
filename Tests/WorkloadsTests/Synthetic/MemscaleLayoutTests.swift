import Testing
import VMCore
import Kernel
@testable import Workloads
import Simulation

/// memscale's set-up at the addresses Linux 3.12 and glibc 2.17 would give it (`TopDownPlacement`,
/// `MemscaleLayout`), checked against layouts worked out by hand, and the fault counts that follow.
@Suite("memscale: top-down placement, glibc's arenas and the faults they decide")
struct MemscaleLayoutTests {
    static let mib: UInt64 = 1 << 20, page: UInt64 = 4096

    @Test("top-down: each mapping at the top of the highest gap that fits; a free hint is taken as it is")
    func placement() {
        let mib = Self.mib
        var s = TopDownPlacement(ceiling: 256 * mib, floor: 1 * mib)
        #expect(s.map(length: 1 * mib) == 255 * mib)
        #expect(s.map(length: 2 * mib) == 253 * mib)
        s.unmap(255 * mib, length: mib)                         // a 1 MiB hole at the top
        #expect(s.map(length: 2 * mib) == 251 * mib)            // too big for the hole: below
        #expect(s.map(length: mib / 2) == 255 * mib + mib / 2)  // fits the hole: at its top
        #expect(s.map(length: mib, hint: 100 * mib) == 100 * mib)
        #expect(s.map(length: mib, hint: 252 * mib) == 250 * mib)   // taken: placed as without a hint
        s.unmap(252 * mib, length: mib / 2)                     // cuts the middle of [251, 253)
        #expect(s.mapped.map(\.start) == [100 * mib, 250 * mib, 251 * mib, 252 * mib + mib / 2, 253 * mib, 255 * mib + mib / 2])
        #expect(s.map(length: mib / 2) == 255 * mib)            // the rest of the top hole first
        #expect(s.map(length: mib / 2) == 252 * mib)            // then the cut
        var full = TopDownPlacement(ceiling: 4 * mib, floor: 2 * mib)
        #expect(full.map(length: 3 * mib) == nil)
        #expect(full.map(length: 2 * mib) == 2 * mib && full.map(length: Self.page) == nil)
    }

    @Test("malloc(512,000,000) maps 125,001 pages and returns the mapping + 16")
    func sysmallocLength() {
        #expect(MemscaleLayout.mappedLength(request: 512_000_000) == 125_001 * Self.page)
        #expect(MemscaleLayout.mappedLength(request: 4 * Self.mib) == 4 * Self.mib + Self.page)
        #expect(MemscaleLayout.mappedLength(request: 4 * Self.mib - 24) == 4 * Self.mib)
        #expect(MemscaleLayout.chunkHeader == 16 && MemscaleLayout.heapReadWriteSize == 33 * Self.page)
    }

    /// Three threads of 4 MiB under a 64 MiB-aligned ceiling C, worked by hand:
    /// stacks at C−8M, C−16M, C−24M. Arena 0: 128 MiB at C−152M; its aligned heap is C−128M; [C−152M,
    /// C−128M) and [C−64M, C−24M) go back. Arena 1: 128 MiB fits only below C−128M: at C−256M, aligned,
    /// so its upper half [C−192M, C−128M) goes back and becomes the next heap's hint. Arena 2 takes
    /// the hint. Buffers (4 MiB + 4 KiB) fill the 40 MiB hole [C−64M, C−24M) from its top.
    @Test("three threads: stacks, arenas (one from aligned_heap_area), buffers, as worked by hand")
    func handWorkedLayout() throws {
        let mib = Self.mib, page = Self.page, c: UInt64 = 0x7e00_0000_0000
        let l = try #require(MemscaleLayout(requests: [4 * mib, 4 * mib, 4 * mib], order: .stacksThenArenasThenBuffers,
                                            ceiling: c, floor: 1 << 44))
        #expect(l.stacks == [c - 8 * mib, c - 16 * mib, c - 24 * mib])
        #expect(l.heaps == [c - 128 * mib, c - 256 * mib, c - 192 * mib])
        #expect(l.buffers.map(\.address) == [c - 28 * mib - page, c - 32 * mib - 2 * page, c - 36 * mib - 3 * page])
        #expect(l.buffers.allSatisfy { $0.length == 4 * mib + page })
        let expected: [MemscaleLayout.Step] = [
            // Thread 1's creation: stack, guard, descriptor (by the creator), spawn, first frames.
            .event(thread: 0, .mmap(address: c - 16 * mib, length: 8 * mib, protection: .readWrite, shared: false)),
            .event(thread: 0, .mprotect(address: c - 16 * mib, length: page, protection: .none)),
            .store(thread: 0, address: c - 8 * mib - page),
            .event(thread: 0, .spawn(thread: 1)),
            .store(thread: 1, address: c - 8 * mib - 2 * page),
        ]
        #expect(Array(l.steps[4..<9]) == expected)   // after thread 0's four (it spawns no one)
        // The arenas' calls: the PROT_NONE reservations, what goes back, the read-write heads.
        let arenas = l.steps.filter {
            guard case .event(_, let e) = $0 else { return false }
            switch e {
            case .mmap(_, _, let protection, _): return protection == .none
            case .munmap: return true
            case .mprotect(_, _, let protection): return protection == .readWrite
            default: return false
            }
        }
        #expect(arenas == [
            .event(thread: 0, .mmap(address: c - 152 * mib, length: 128 * mib, protection: .none, shared: false)),
            .event(thread: 0, .munmap(address: c - 152 * mib, length: 24 * mib)),
            .event(thread: 0, .munmap(address: c - 64 * mib, length: 40 * mib)),
            .event(thread: 0, .mprotect(address: c - 128 * mib, length: 33 * page, protection: .readWrite)),
            .event(thread: 1, .mmap(address: c - 256 * mib, length: 128 * mib, protection: .none, shared: false)),
            .event(thread: 1, .munmap(address: c - 192 * mib, length: 64 * mib)),
            .event(thread: 1, .mprotect(address: c - 256 * mib, length: 33 * page, protection: .readWrite)),
            .event(thread: 2, .mmap(address: c - 192 * mib, length: 64 * mib, protection: .none, shared: false)),
            .event(thread: 2, .mprotect(address: c - 192 * mib, length: 33 * page, protection: .readWrite)),
        ])
        // The buffer's chunk header is written as malloc returns, before the next buffer is mapped;
        // an ordering point after each buffer keeps that order in simulated time.
        let tail = Array(l.steps.suffix(9))
        #expect(tail[0] == .event(thread: 0, .mmap(address: c - 28 * mib - page, length: 4 * mib + page, protection: .readWrite, shared: false)))
        #expect(tail[1] == .store(thread: 0, address: c - 28 * mib - page + 8))
        #expect(tail[2] == MemscaleLayout.orderingPoint)
        #expect(tail[3] == .event(thread: 1, .mmap(address: c - 32 * mib - 2 * page, length: 4 * mib + page, protection: .readWrite, shared: false)))
        #expect(tail[5] == MemscaleLayout.orderingPoint && tail[8] == MemscaleLayout.orderingPoint)
    }

    @Test("serial creation: each buffer lies directly below its own arena's heap, so it ends 64 MiB-aligned")
    func serialLayout() throws {
        let mib = Self.mib, c: UInt64 = 0x7e00_0000_0000
        let l = try #require(MemscaleLayout(requests: [100 * mib, 100 * mib, 100 * mib], order: .serial, ceiling: c, floor: 1 << 44))
        for t in 0..<3 {
            #expect(l.buffers[t].address + l.buffers[t].length == l.heaps[t])
            #expect(l.heaps[t] % (64 * mib) == 0)
        }
        #expect(l.stacks[0] == c - 8 * mib)
    }

    /// The 2 MiB ranges a huge page can fault into: those inside one buffer's own mapping. A range a
    /// buffer shares with a neighbour below (the default order maps them one below the other, and
    /// they merge) was written first by the upper buffer's chunk header, when the lower one was not
    /// mapped yet, and faults 4 KiB pages ever after; in the other orders a heap lies between buffers.
    static func expectedFaults(threads: Int, perThread: UInt64, huge thp: Bool, order: MemscaleLayout.Order) -> (faults: Int, huge: Int) {
        let pmd: UInt64 = 2 << 20, page = Self.page
        let w = MemscaleWorkload(p: SyntheticParameters(size: perThread * UInt64(threads), accesses: 0, threads: threads), order: order)
        let l = w.layout
        var faults = 0, huge = 0
        for t in 0..<threads {
            // The stack: the top two pages, one huge page if the top 2 MiB range is inside its VMA.
            let top = l.stacks[t] + MemscaleLayout.stackSize
            if thp && top % pmd == 0 { faults += 1; huge += 1 } else { faults += 2 }
            faults += 1                                          // the arena's header page
            let start = l.buffers[t].address, end = start + l.buffers[t].length
            let touched = Int(perThread / page)
            guard thp else { faults += touched; continue }
            let first = (start + pmd - 1) & ~(pmd - 1), last = end & ~(pmd - 1)
            let ranges = last > first ? Int((last - first) / pmd) : 0
            // Touched pages are [start, start + perThread): the mapping's last page is not.
            let touchedInRanges = ranges == 0 ? 0 : Int((min(last, start + perThread) - first) / page)
            huge += ranges
            faults += ranges + touched - touchedInRanges
        }
        return (faults, huge)
    }

    @Test("on a machine: faults are the buffers' pages (THP off) or what the layout predicts (THP on), in every order",
          arguments: [TransparentHugepageSettings.Enabled.never, .always], MemscaleLayout.Order.allCases)
    func faultsFollowLayout(enabled: TransparentHugepageSettings.Enabled, order: MemscaleLayout.Order) throws {
        let threads = 4, perThread: UInt64 = 5 << 20 | 7 << 12
        var s = SystemBuilder()
        s.design = .linux2_6_38
        s.enabled = enabled
        s.memoryBytes = 256 << 20
        let e = try s.makeExecutor()
        var sink = e
        MemscaleWorkload(p: SyntheticParameters(size: perThread * UInt64(threads), accesses: 0, threads: threads), order: order)
            .generate(into: &sink)
        let r = e.finish()
        #expect(r.signals.isEmpty && r.failedCalls.isEmpty)
        let expected = Self.expectedFaults(threads: threads, perThread: perThread, huge: enabled == .always, order: order)
        if enabled == .never { #expect(expected.faults == threads * (Int(perThread / Self.page) + 3)) }
        #expect(expected.huge > 0 || enabled == .never)
        #expect(r.vmstatFinal["pgfault"] == expected.faults)
        #expect((r.vmstatFinal["thp_fault_alloc"] ?? 0) == expected.huge)
    }

    @Test("the order decides the count: a buffer ending on its own heap (serial) faults 4 KiB pages at its low end only")
    func orderMatters() {
        // 100 MiB + 72 pages: a mapping of 100 MiB + 73 pages, too big for the holes beside the heaps.
        let threads = 3, perThread: UInt64 = 100 << 20 | 72 << 12, pages = Int(perThread / Self.page)
        let serial = Self.expectedFaults(threads: threads, perThread: perThread, huge: true, order: .serial)
        let packed = Self.expectedFaults(threads: threads, perThread: perThread, huge: true, order: .stacksThenArenasThenBuffers)
        // Serial: 50 huge ranges under the 64 MiB-aligned heap (the last of them holds the mapping's
        // untouched last page), 73 touched pages below them; each stack (in the hole above heap 0,
        // at 8 MiB steps under the ceiling) a huge fault at its top; each arena header a 4 KiB one.
        #expect(serial.huge == threads * (50 + 1))
        #expect(serial.faults == threads * (50 + (pages - (50 * 512 - 1)) + 1 + 1))
        // One below the other, each shared 2 MiB range faults 4 KiB pages: many more faults.
        #expect(packed.faults > serial.faults + 400)
    }

    @Test("the footprint: the buffers are --size plus a page each, every touch lies in a mapping")
    func footprint() {
        let c = census(.memscale, size: 8 << 20, accesses: 1_000, threads: 4)
        let buffers = c.mapped.filter { $0.1 == (2 << 20) + Self.page }
        #expect(buffers.count == 4)
        for page in c.touchedPages {
            #expect(c.mapped.contains { page << 12 >= $0.0 && page << 12 < $0.0 + $0.1 })
        }
    }
}
