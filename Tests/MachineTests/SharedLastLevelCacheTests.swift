import Testing
import Kernel
@testable import Machine
import TestSupport

@Suite("A socket's CPUs share one last-level cache in simulated time")
struct SharedLastLevelCacheTests {
    /// Four skylake-sp CPUs, two per socket.
    func machine(simulatedTime: Bool, kind: CacheModel.Kind = .full) -> Machine {
        var description = MachineDescription.skylakeSP
        description.contention.cpusPerSocket = 2
        let m = Machine(kernel: TestMachine.kernel(memory: 16 << 20, mode: .metadata), description: description,
                        cpuCount: 4, simulatedTime: simulatedTime)
        if kind != .full { m.cacheModel = kind }
        return m
    }

    /// Where each CPU finds the line at `address` after CPU 0 read it.
    func levels(afterCPU0Reads address: UInt64, _ m: Machine) -> [Int?] {
        m.cpus[0].cache.access(physicalAddress: address)
        return m.cpus.map { $0.cache.level(holding: address) }
    }

    @Test("a line one CPU brought in is in the last level for the other CPU of its socket, not for the other socket's",
          arguments: [CacheModel.Kind.full, .sampled])
    func sharedWithinSocket(kind: CacheModel.Kind) {
        let m = machine(simulatedTime: true, kind: kind)
        // A line the sampled model runs through its outer levels (under `full` every line is).
        let address = (UInt64(1)...).lazy.map { $0 << 6 }.first { CacheModel.mix($0 >> 6) >> 60 == 0 }!
        let last = MachineDescription.skylakeSP.caches.count - 1
        #expect(levels(afterCPU0Reads: address, m) == [0, last, nil, nil])
        #expect(m.shareLastLevelCache(0, 1) && m.shareLastLevelCache(2, 3) && !m.shareLastLevelCache(1, 2))
        // The other CPU of the socket hits there; its access costs the L3's latency, not memory's.
        #expect(m.cpus[1].cache.access(physicalAddress: address) == MachineDescription.skylakeSP.caches[last].latency)
        #expect(m.cpus[2].cache.access(physicalAddress: address) == m.cpus[2].cache.memoryLatency)
    }

    @Test("outside simulated time every CPU keeps a last level of its own")
    func privateOutsideSimulatedTime() {
        let m = machine(simulatedTime: false)
        #expect(levels(afterCPU0Reads: 64, m) == [0, nil, nil, nil])
        #expect(!m.shareLastLevelCache(0, 1))
        #expect(m.cpus[1].cache.access(physicalAddress: 64) == m.cpus[1].cache.memoryLatency)
    }

    @Test("caches of two levels are a core's own: nothing is shared")
    func twoLevelsStayPrivate() {
        var description = MachineDescription.skylakeSP
        description.caches.removeLast()
        let m = Machine(kernel: TestMachine.kernel(memory: 16 << 20, mode: .metadata), description: description,
                        cpuCount: 2, simulatedTime: true)
        #expect(!m.shareLastLevelCache(0, 1))
    }
}
