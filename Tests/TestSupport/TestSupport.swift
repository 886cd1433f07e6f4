#if canImport(Glibc)
import Glibc
#endif
import VMCore
import PhysicalMemory
import Kernel

/// A deterministic random number generator (SplitMix64), so a failing seed replays exactly.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Small machines for tests.
public enum TestMachine {
    /// Swap whose faults read only their own slot (`page-cluster` 0), for tests of swap behaviour
    /// other than readahead (`SwapReadaheadTests` has those), whose counts would otherwise include the
    /// neighbours each fault reads.
    public static let swapWithoutReadahead = SwapConfiguration(pageCluster: 0)

    /// A kernel with `memory` bytes, no watermark reserve, in `mode`, with THP `enabled` as given
    /// (`never` by default, so tests of 4 KiB behaviour see only 4 KiB pages) and the design's other
    /// settings.
    public static func kernel(memory: UInt64 = 16 << 20, mode: PhysicalMemory.Mode = .data,
                              design: KernelDesign = .linux2_6_38,
                              enabled: TransparentHugepageSettings.Enabled = .never,
                              useZeroPage: Bool? = nil, swap: SwapConfiguration = SwapConfiguration()) -> Kernel {
        var settings = design.defaultSettings
        settings.enabled = enabled
        if let useZeroPage { settings.useZeroPage = useZeroPage }
        var configuration = KernelConfiguration(memoryBytes: memory, mode: mode, watermarks: .zero, design: design,
                                                hugepageSettings: settings)
        configuration.swap = swap
        return Kernel(configuration)
    }

    /// A kernel and one process in it.
    public static func process(memory: UInt64 = 16 << 20, mode: PhysicalMemory.Mode = .data,
                               enabled: TransparentHugepageSettings.Enabled = .never,
                               useZeroPage: Bool? = nil, swap: SwapConfiguration = SwapConfiguration()) -> (Kernel, AddressSpace) {
        let kernel = kernel(memory: memory, mode: mode, enabled: enabled, useZeroPage: useZeroPage, swap: swap)
        return (kernel, kernel.createAddressSpace()!)
    }
}

public extension UInt64 {
    static let KiB: UInt64 = 1 << 10
    static let MiB: UInt64 = 1 << 20
    static let GiB: UInt64 = 1 << 30
}

/// This test process as the host sees it.
public enum HostProcess {
    /// Resident bytes now (the second field of `/proc/self/statm`, in pages), or nil off Linux.
    public static var residentBytes: UInt64? {
        #if canImport(Glibc)
        guard let file = fopen("/proc/self/statm", "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        guard fgets(&line, Int32(line.count), file) != nil else { return nil }
        let fields = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }.split(separator: " ")
        guard fields.count >= 2, let pages = UInt64(fields[1]) else { return nil }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
        #else
        return nil
        #endif
    }
}

/// How long the randomized, stress and race-exploring tests run. `swift test` runs them short, so the
/// whole suite takes a few minutes; `.ci/run` sets `THPSIM_TEST_LENGTH=full` for the lengths they
/// were written with. A test's own variable (`THPSIM_STEPS`, `THPSIM_RACE_SEEDS`, …) wins over both.
public enum TestLength {
    /// Whether `THPSIM_TEST_LENGTH=full` is set.
    public static let isFull: Bool = {
        #if canImport(Glibc)
        guard let value = getenv("THPSIM_TEST_LENGTH") else { return false }
        return String(cString: value) == "full"
        #else
        return false
        #endif
    }()

    /// `full` under `THPSIM_TEST_LENGTH=full`, else `short`; an integer in `variable`, if set, instead.
    public static func pick(short: Int, full: Int, variable: String? = nil) -> Int {
        #if canImport(Glibc)
        if let variable, let value = getenv(variable), let n = Int(String(cString: value)) { return n }
        #endif
        return isFull ? full : short
    }
}

/// MADV_PAGEOUT over `[start, start + length)`, then the reclaim that frees the pages it wrote once
/// their writes end (Linux keeps a page under asynchronous writeback in the swap cache:
/// `Kernel.keepWrittenInSwapCache`), so that the pages are on the device only and a touch reads them.
/// Returns how many kept pages were freed.
@discardableResult
public func pageOutToDevice(_ kernel: Kernel, _ mm: AddressSpace, _ start: VirtualAddress, length: UInt64) throws -> Int {
    try mm.madvise(start, length: length, advice: .pageout)
    return kernel.shrinkSwapCache()
}
