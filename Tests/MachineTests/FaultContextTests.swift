import Testing
import VMCore
import Kernel
import Machine
import TestSupport

@Suite("Fault context on the Machine")
struct MachineFaultContextTests {
    @Test("a CPU raises faults with the walk's error code and charges what the kernel recorded")
    func errorCodeAndCharge() throws {
        let (m, mm) = machine()
        let cpu = m.cpus[0]
        let t = m.machineDescription.timing
        let va = try anon(mm, 64 << 10)
        // Not present: a read maps the zero page, a minor fault.
        #expect(cpu.access(va, .read) == .success(mm.translate(va)!.frame))
        var f = try #require(cpu.lastFault)
        #expect(f.cpu == 0 && f.address == va && f.access == .read)
        #expect(f.errorCode == [.user])
        #expect(f.mapped == .base && f.bytesZeroed == 0)
        #expect(cpu.counters.faultCycles == t.minorFaultCycles)
        // Present and read-only: a write is a protection fault; the zero page's copy is charged as one.
        #expect(cpu.access(va, .write) == .success(mm.translate(va)!.frame))
        f = try #require(cpu.lastFault)
        #expect(f.errorCode == [.present, .write, .user])
        #expect(f.resolution == .copyOnWrite && f.basePages == 1 && f.bytesZeroed == 4096)
        #expect(cpu.counters.faultCycles == t.minorFaultCycles + t.faultCycles(FaultWork(f)))
        #expect(FaultWork(f).copyOnWrite)
        // Not present, written: one zeroed page.
        #expect(cpu.access(va + 4096, .write) == .success(mm.translate(va + 4096)!.frame))
        f = try #require(cpu.lastFault)
        #expect(f.errorCode == [.write, .user] && f.bytesZeroed == 4096 && !FaultWork(f).copyOnWrite)
        // An instruction fetch from a non-executable page that is present.
        #expect(cpu.access(va + 4096, .execute) == .failure(AccessFault(at: va + 4096, outcome: .segv(.accErr))))
        #expect(cpu.lastFault?.errorCode == [.present, .instructionFetch, .user])
    }

    @Test("a huge fault on the Machine records 2 MiB zeroed and is charged as one")
    func hugeFault() throws {
        let kernel = TestMachine.kernel(memory: 64 << 20, mode: .metadata, enabled: .always)
        let mm = try #require(kernel.createAddressSpace())
        let m = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 1)
        let cpu = m.cpus[0]
        cpu.switchTo(mm)
        let va = try mm.mmap(address: VirtualAddress(1 << 30), length: 4 << 20, protection: .readWrite, flags: [.private, .fixed])
        _ = try cpu.access(va, .write).get()
        let f = try #require(cpu.lastFault)
        #expect(f.hugePages == 1 && f.bytesZeroed == 2 << 20 && f.mapped == .pmd)
        #expect(cpu.counters.faultCycles == m.machineDescription.timing.hugeFaultCycles)
    }
}
