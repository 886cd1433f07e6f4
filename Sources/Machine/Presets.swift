/// Named cores whose TLB geometry comes from their vendors' optimization manuals (docs/machines.md
/// cites each table). Paging-structure-cache and nested-TLB sizes are not documented by either
/// vendor; the presets use the small sizes commonly measured (see docs/machines.md) and say so.
extension MachineDescription {
    /// Every preset, by the name the CLI and config files use.
    public static let presets: [String: MachineDescription] = [
        "skylake-sp": .skylakeSP, "icelake-sp": .iceLakeSP, "zen3": .zen3, "zen4": .zen4, "zen5": .zen5,
    ]
    public static var presetNames: [String] { presets.keys.sorted() }

    /// Intel Xeon Scalable 1st generation (Skylake-SP): Intel 64 and IA-32 Architectures Optimization
    /// Reference Manual (248966), "TLB Parameters of the Skylake Microarchitecture" (Skylake-SP shares
    /// the client core's TLBs).
    public static let skylakeSP = MachineDescription(
        name: "skylake-sp",
        source: "Intel 248966, Skylake microarchitecture TLB parameters",
        frequencyGHz: 2.5,
        l1Data: [TLBArraySpec(.size4K, entries: 64, ways: 4), TLBArraySpec(.size2M, entries: 32, ways: 4),
                 TLBArraySpec(.size1G, entries: 4, ways: 4)],
        l1Instruction: [TLBArraySpec(.size4K, entries: 128, ways: 8), .full(.size2M, entries: 8)],
        l2: [TLBArraySpec([.size4K, .size2M], entries: 1536, ways: 12), TLBArraySpec(.size1G, entries: 16, ways: 4)],
        pml4Cache: .full(.size4K, entries: 2), pdptCache: .full(.size4K, entries: 4),
        pdCache: TLBArraySpec(.size4K, entries: 32, ways: 4),
        nestedTLB: .full(.all, entries: 16),
        caches: [CacheLevelSpec(bytes: 32 << 10, ways: 8, latency: 5),
                 CacheLevelSpec(bytes: 1 << 20, ways: 16, latency: 14),
                 CacheLevelSpec(bytes: 16 << 20, ways: 16, latency: 70)],
        timing: .init())

    /// Intel Xeon Scalable 3rd generation (Ice Lake-SP, Sunny Cove core): Intel 248966, "TLB
    /// Parameters" of the Ice Lake client microarchitecture (the server core's TLBs are the same).
    /// The real STLB's 1 GiB array also holds 4 KiB entries; the model keeps it for 1 GiB only.
    public static let iceLakeSP = MachineDescription(
        name: "icelake-sp",
        source: "Intel 248966, Ice Lake microarchitecture TLB parameters",
        frequencyGHz: 2.6,
        l1Data: [TLBArraySpec(.size4K, entries: 64, ways: 4), TLBArraySpec(.size2M, entries: 32, ways: 4),
                 .full(.size1G, entries: 8)],
        l1Instruction: [TLBArraySpec(.size4K, entries: 128, ways: 8), .full(.size2M, entries: 16)],
        l2: [TLBArraySpec([.size4K, .size2M], entries: 2048, ways: 16), TLBArraySpec(.size1G, entries: 1024, ways: 8)],
        pml4Cache: .full(.size4K, entries: 2), pdptCache: .full(.size4K, entries: 4),
        pdCache: TLBArraySpec(.size4K, entries: 32, ways: 4),
        nestedTLB: .full(.all, entries: 16),
        caches: [CacheLevelSpec(bytes: 48 << 10, ways: 12, latency: 5),
                 CacheLevelSpec(bytes: 1_310_720, ways: 20, latency: 14),
                 CacheLevelSpec(bytes: 16 << 20, ways: 16, latency: 70)],
        timing: .init())

    /// AMD EPYC 7003 (Zen 3): Software Optimization Guide for AMD Family 19h Processors (56665),
    /// "Translation-Lookaside Buffer". 1 GiB pages are smashed into 2 MiB entries in the L2 TLB.
    public static let zen3 = MachineDescription(
        name: "zen3",
        source: "AMD 56665, Family 19h SOG, TLB section",
        frequencyGHz: 3.0,
        l1Data: [.full(.all, entries: 64)],
        l1Instruction: [.full(.all, entries: 64)],
        l2: [TLBArraySpec([.size4K, .size2M], entries: 2048, ways: 16)],
        pml4Cache: .full(.size4K, entries: 4), pdptCache: .full(.size4K, entries: 8),
        pdCache: TLBArraySpec(.size4K, entries: 64, ways: 4),
        nestedTLB: .full(.all, entries: 32),
        caches: [CacheLevelSpec(bytes: 32 << 10, ways: 8, latency: 5),
                 CacheLevelSpec(bytes: 512 << 10, ways: 8, latency: 12),
                 CacheLevelSpec(bytes: 32 << 20, ways: 16, latency: 46)],
        timing: .init())

    /// AMD EPYC 9004 (Zen 4): Software Optimization Guide for AMD Family 19h Processors, Zen 4
    /// edition (57647), "Translation-Lookaside Buffer".
    public static let zen4 = MachineDescription(
        name: "zen4",
        source: "AMD 57647, Zen 4 SOG, TLB section",
        frequencyGHz: 3.0,
        l1Data: [.full(.all, entries: 72)],
        l1Instruction: [.full(.all, entries: 64)],
        l2: [TLBArraySpec([.size4K, .size2M], entries: 3072, ways: 24)],
        pml4Cache: .full(.size4K, entries: 4), pdptCache: .full(.size4K, entries: 8),
        pdCache: TLBArraySpec(.size4K, entries: 64, ways: 4),
        nestedTLB: .full(.all, entries: 32),
        caches: [CacheLevelSpec(bytes: 32 << 10, ways: 8, latency: 5),
                 CacheLevelSpec(bytes: 1 << 20, ways: 8, latency: 14),
                 CacheLevelSpec(bytes: 32 << 20, ways: 16, latency: 50)],
        timing: .init())

    /// AMD EPYC 9005 (Zen 5): Software Optimization Guide for the AMD Zen 5 Microarchitecture (58455),
    /// "Translation-Lookaside Buffer"; the L1 dTLB size agrees with CPUID 8000_0005h on this machine.
    public static let zen5 = MachineDescription(
        name: "zen5",
        source: "AMD 58455, Zen 5 SOG, TLB section",
        frequencyGHz: 2.6,
        l1Data: [.full(.all, entries: 96)],
        l1Instruction: [.full(.all, entries: 64)],
        l2: [TLBArraySpec([.size4K, .size2M], entries: 4096, ways: 16)],
        pml4Cache: .full(.size4K, entries: 4), pdptCache: .full(.size4K, entries: 8),
        pdCache: TLBArraySpec(.size4K, entries: 64, ways: 4),
        nestedTLB: .full(.all, entries: 32),
        caches: [CacheLevelSpec(bytes: 48 << 10, ways: 12, latency: 5),
                 CacheLevelSpec(bytes: 1 << 20, ways: 16, latency: 14),
                 CacheLevelSpec(bytes: 32 << 20, ways: 16, latency: 50)],
        timing: .init())
}
