import Testing
import Foundation
import VMCore
@testable import PhysicalMemory

/// Each simulated CPU frees to and allocates from lists of its own (Linux: `this_cpu_ptr(zone->
/// per_cpu_pageset)`), whichever host thread runs it.
@Suite("Physical memory: per-CPU lists belong to the simulated CPU")
struct PerCPUListOwnershipTests {
    /// 64 MiB: each CPU keeps up to 32 base pages and moves 10 at once.
    func memory(cpus: Int) -> PhysicalMemory {
        PhysicalMemory(bytes: 64 << 20, mode: .metadata, watermarks: .zero, perCPULists: true, cpus: cpus)
    }
    func allocate(_ m: PhysicalMemory) -> PFN { m.allocateFolio(order: .base, kind: .anonymous, zeroed: false)! }
    func free(_ m: PhysicalMemory, _ pfn: PFN) {
        m.frames.setRefcount(pfn, 0)
        m.freeFolio(pfn)
    }
    func listed(_ m: PhysicalMemory, _ cpu: Int) -> [PFN] { m.buddy.perCPUBlocks(cpu: cpu, order: .base) }

    @Test("two CPUs interleaved on one host thread: a page freed on CPU 1 goes to CPU 1's list and CPU 1's next allocation reuses it, not CPU 0's")
    func interleavedOnOneThread() {
        let m = memory(cpus: 2)
        let a = SimulatedCPU.run(on: 0) { allocate(m) }
        let b = SimulatedCPU.run(on: 1) { allocate(m) }
        // Each CPU refilled its own list with a batch and took one of it.
        #expect(listed(m, 0).count == 9 && listed(m, 1).count == 9)
        #expect(Set(listed(m, 0)).isDisjoint(with: listed(m, 1)))
        let before0 = listed(m, 0)
        SimulatedCPU.run(on: 1) { free(m, b) }
        #expect(listed(m, 1).last == b && listed(m, 0) == before0)
        let c = SimulatedCPU.run(on: 0) { allocate(m) }
        #expect(c != b && c == before0.last)
        let d = SimulatedCPU.run(on: 1) { allocate(m) }
        #expect(d == b)
        for pfn in [a, c, d] { free(m, pfn) }
        #expect(m.freePages == 16384)
        #expect(m.checkPhysicalInvariants().isEmpty)
    }

    @Test("the CPU count sizes the lists; a CPU beyond it shares a slot", arguments: [1, 3, 5])
    func sized(cpus: Int) {
        let m = memory(cpus: cpus)
        #expect(m.buddy.perCPU.cpus == cpus && m.buddy.perCPU.stacks.cpus == cpus)
        let pfn = SimulatedCPU.run(on: cpus + 1) { allocate(m) }
        SimulatedCPU.run(on: cpus + 1) { free(m, pfn) }
        #expect(listed(m, 1 % cpus).last == pfn)
    }

    @Test("a drain empties every CPU's lists and merges the blocks back (drain_all_pages)")
    func drainReachesEveryCPU() {
        let m = memory(cpus: 4)
        for cpu in 0..<4 {
            SimulatedCPU.run(on: cpu) { free(m, allocate(m)) }
            #expect(listed(m, cpu).count == 10)
        }
        #expect(m.buddy.drainPerCPULists() == 40)
        for cpu in 0..<4 { #expect(listed(m, cpu).isEmpty) }
        #expect(m.buddy.freeBlocksPerOrder[10] == 16)
        #expect(m.checkPhysicalInvariants().isEmpty)
    }

    @Test("simulated CPUs on host threads of their own each use their own lists")
    func ownHostThreads() {
        let m = memory(cpus: 2)
        let freed = Locked<[Int: PFN]>([:])
        let group = DispatchGroup()
        for cpu in 0..<2 {
            group.enter()
            Thread {
                SimulatedCPU.switchTo(cpu)
                let pfn = allocate(m)
                free(m, pfn)
                freed.withLock { $0[cpu] = pfn }
                group.leave()
            }.start()
        }
        group.wait()
        let pfns = freed.withLock { $0 }
        for cpu in 0..<2 {
            #expect(listed(m, cpu).count == 10 && listed(m, cpu).last == pfns[cpu])
        }
        #expect(m.checkPhysicalInvariants().isEmpty)
    }
}

/// A value behind a lock, for the threads of a test.
private final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&value) }
}
