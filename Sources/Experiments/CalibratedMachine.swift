import Machine

/// The machine `thpsim calibrate` predicts for by default: `Benchmarks/Calibration/this-machine.machine`,
/// built in so that the command works from any directory. A test keeps the two texts equal.
public enum CalibratedMachine {
    /// Where the text comes from, relative to the repository root.
    public static let path = "Benchmarks/Calibration/this-machine.machine"

    public static let text = """
    # The machine the calibration ran on: AMD EPYC (CPU family 1Ah = Zen 5) under KVM (Firecracker
    # kernel 6.18.44-fc), 2 vCPUs at 2.6 GHz. TLB geometry from the zen5 preset; its 96-entry L1 dTLB
    # agrees with CPUID 8000_0005h here.
    #
    # Fitted, each on one 256 MiB native run with 4 KiB pages (MADV_NOHUGEPAGE):
    #   memory-ns on pointer chasing, mlp on GUPS, base on sequential reads.
    # Chosen after seeing the THP results (so fitted too): the L3 share this guest gets of the 32 MiB L3
    # it shares with other tenants (16 MiB; docs/machines.md shows 8 MiB and 32 MiB too), and that the
    # host backs guest memory with huge pages (thpsim calibrate --placement vm-host-thp).
    based-on zen5
    name this-machine (zen5 under KVM)
    timing memory-ns 148
    timing mlp 26
    timing base 0.46
    cache l3 16M 16 50
    """

    public static var description: MachineDescription {
        get throws(MachineConfigError) { try MachineDescription.parse(text, file: path + " (built in)") }
    }
}
