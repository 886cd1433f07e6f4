import Testing
import VMCore
import Kernel
import Machine
import TestSupport

/// A kernel, one process, and a machine of `cpus` CPUs of `preset`, with CPU 0 running the process.
func machine(_ preset: MachineDescription = .skylakeSP, cpus: Int = 1, memory: UInt64 = 64 << 20) -> (Machine, AddressSpace) {
    let kernel = TestMachine.kernel(memory: memory, mode: .metadata)
    let mm = kernel.createAddressSpace()!
    let m = Machine(kernel: kernel, description: preset, cpuCount: cpus)
    m.cpus[0].switchTo(mm)
    return (m, mm)
}

func anon(_ mm: AddressSpace, _ length: UInt64, prot: Protection = .readWrite, shared: Bool = false) throws -> VirtualAddress {
    try mm.mmap(length: length, protection: prot, flags: shared ? .shared : .private)
}

/// Accesses every page of `[start, start + bytes)` once, expecting success.
func touchPages(_ cpu: CPU, _ start: VirtualAddress, _ bytes: UInt64, _ kind: MemoryAccess = .read,
                sourceLocation: SourceLocation = #_sourceLocation) {
    var va = start
    while va < start + bytes {
        if case .failure(let f) = cpu.access(va, kind) { Issue.record("\(f)", sourceLocation: sourceLocation); return }
        va = va + 4096
    }
}
