import Machine

/// A run's simulated time on its machine's CPUs: each CPU's clock, the elapsed time (the slowest
/// CPU), and on a machine of more than one CPU what sharing cost (`SimulatedTime`): waits per lock by
/// Linux's names, cache-line transfers, memory-bandwidth stalls, system calls, and shootdowns per CPU.
public struct SimulatedTimeReport: Sendable, Hashable, Codable {
    /// Each CPU's clock at the end, in nanoseconds at the machine's frequency.
    public var cpuNanoseconds: [UInt64] = []
    /// The slowest CPU's clock: the run's elapsed simulated time, idle time asked for excluded.
    public var elapsedNanoseconds: UInt64 = 0
    /// The CPUs' clocks summed (CPU time, as `perf stat`'s task-clock).
    public var totalCPUNanoseconds: UInt64 = 0
    /// Nanoseconds CPUs spent spinning or waiting for each lock, by Linux's lock name.
    public var lockWaitNanoseconds: [String: UInt64] = [:]
    /// Acquisitions of each lock, and those that found it held.
    public var lockAcquisitions: [String: Int] = [:]
    public var lockContended: [String: Int] = [:]
    /// Nanoseconds of cache-line transfers of shared lines, and of waiting for memory bandwidth.
    public var transferNanoseconds: UInt64 = 0
    public var bandwidthStallNanoseconds: UInt64 = 0
    /// System calls charged to CPUs (machines of more than one CPU).
    public var systemCalls = 0
    /// Shootdowns each CPU sent (flushes that interrupted others) and IPIs each received.
    public var shootdownsSent: [Int] = []
    public var shootdownsReceived: [Int] = []

    public init() {}

    /// The figures of `machine` now.
    public init(_ machine: Machine) {
        let ghz = machine.machineDescription.frequencyGHz
        let ns = { (cycles: Double) in UInt64(max(0, cycles) / ghz) }
        cpuNanoseconds = machine.cpus.indices.map { ns(machine.clock(of: $0)) }
        elapsedNanoseconds = ns(machine.elapsedCycles)
        totalCPUNanoseconds = ns(machine.cpus.indices.reduce(0.0) { $0 + machine.clock(of: $1) })
        shootdownsSent = machine.shootdownsSent
        shootdownsReceived = machine.shootdownsReceived
        guard let time = machine.simulatedTime else { return }
        for c in LockClass.allCases where time.acquisitions[c.rawValue] > 0 {
            lockWaitNanoseconds[c.name] = ns(time.waitCycles[c.rawValue])
            lockAcquisitions[c.name] = time.acquisitions[c.rawValue]
            lockContended[c.name] = time.contended[c.rawValue]
        }
        transferNanoseconds = ns(time.transferCycles)
        bandwidthStallNanoseconds = ns(time.bandwidthCycles)
        systemCalls = time.systemCalls
    }

    /// The report as text lines.
    public var lines: [String] {
        var s = ["simulated time: \(Self.ms(elapsedNanoseconds)) elapsed (slowest of \(cpuNanoseconds.count) CPUs), "
                 + "\(Self.ms(totalCPUNanoseconds)) CPU time"]
        if !lockWaitNanoseconds.isEmpty {
            s.append("lock waits: " + lockWaitNanoseconds.sorted { $0.key < $1.key }.map {
                "\($0.key) \(Self.ms($0.value)) (\(lockContended[$0.key] ?? 0)/\(lockAcquisitions[$0.key] ?? 0) contended)"
            }.joined(separator: ", "))
            s.append("cache-line transfers \(Self.ms(transferNanoseconds)), memory-bandwidth stalls \(Self.ms(bandwidthStallNanoseconds)), \(systemCalls) system calls")
        }
        let sent = shootdownsSent.reduce(0, +), received = shootdownsReceived.reduce(0, +)
        if sent > 0 || received > 0 { s.append("shootdowns: \(sent) sent, \(received) IPIs received") }
        return s
    }

    static func ms(_ ns: UInt64) -> String {
        let v = Double(ns) / 1e6
        return v >= 100 ? "\(Int(v.rounded())) ms" : String(Double(Int(v * 1000)) / 1000) + " ms"
    }
}
