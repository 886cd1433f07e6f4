// A program in a package of its own that depends on thpsim's `THPSim` library by version and uses
// only its public API: a kernel with transparent hugepages, one process, a simulated CPU.
// `Examples/Consumer/check.sh` builds and runs it (docs/library.md).
import VMCore
import Kernel
import Machine
import Foundation

var settings = KernelDesign.linux6_18.defaultSettings
settings.enabled = .always
let kernel = Kernel(KernelConfiguration(memoryBytes: 256 << 20, mode: .metadata, design: .linux6_18,
                                        hugepageSettings: settings))
guard let mm = kernel.createAddressSpace() else { print("no address space"); exit(1) }
let length: UInt64 = 8 << 20
let start = try mm.mmap(length: length, protection: .readWrite, flags: .private)

let machine = Machine(kernel: kernel, description: .skylakeSP, cpuCount: 1)
let cpu = machine.cpus[0]
cpu.switchTo(mm)
var address = start.rawValue
while address < start.rawValue + length {
    if case .failure(let fault) = cpu.access(VirtualAddress(address), .write) { fatalError("\(fault)") }
    address += 4096
}
print("faults \(cpu.counters.faults) thp_fault_alloc \(kernel.vmstat[.thpFaultAlloc]) accesses \(cpu.counters.accesses)")
// 8 MiB under enabled=always: four huge faults (or fewer if the mapping is not 2 MiB-aligned).
guard kernel.vmstat[.thpFaultAlloc] >= 3, cpu.counters.accesses == Int(length / 4096) else {
    print("unexpected counts"); exit(1)
}
