import ArgumentParser
import Machine

/// `thpsim machines`: the machine presets, or one machine config file, as the model will build it.
struct MachinesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "machines",
        abstract: "List the machine presets, or check and show a machine config file."
    )

    @Argument(help: "A preset name or a machine config file (default: list every preset).")
    var machine: String?

    func run() throws {
        if let machine {
            describe(try loadMachine(machine))
            return
        }
        for name in MachineDescription.presetNames { describe(MachineDescription.presets[name]!) }
    }

    func describe(_ d: MachineDescription) {
        print("\(d.name)  (\(d.source), \(d.frequencyGHz) GHz)")
        print("  L1 dTLB     " + d.l1Data.map(\.description).joined(separator: "; "))
        print("  L1 iTLB     " + d.l1Instruction.map(\.description).joined(separator: "; "))
        print("  L2 TLB      " + d.l2.map(\.description).joined(separator: "; "))
        func pwc(_ s: TLBArraySpec) -> String { s.entries == 0 ? "none" : "\(s.entries)" + (s.ways == s.entries ? "" : "/\(s.ways)-way") }
        print("  walk caches PML4E \(pwc(d.pml4Cache)), PDPTE \(pwc(d.pdptCache)), PDE \(pwc(d.pdCache)); nested TLB \(pwc(d.nestedTLB))")
        print("  caches      " + d.caches.enumerated().map { "L\($0.offset + 1) \($0.element.bytes >> 10)K/\($0.element.ways)-way \(Int($0.element.latency))c" }.joined(separator: ", ")
              + ", memory \(Int(d.timing.memoryLatencyNs)) ns")
    }
}

/// A preset by name, or a config file by path; errors name the file and line.
func loadMachine(_ name: String) throws -> MachineDescription {
    if let preset = MachineDescription.presets[name] { return preset }
    if !name.contains("/") && !name.contains(".") {
        throw ValidationError("unknown machine '\(name)' (presets: \(MachineDescription.presetNames.joined(separator: ", ")); or give a config file path)")
    }
    do { return try MachineDescription.load(contentsOf: name) } catch { throw ValidationError(error.description) }
}
