import VMCore
import PhysicalMemory
import Kernel
import Simulation

/// One figure of a landmark: what Linux's developers reported and what the model gives for the same
/// setup. A value that is not a number (an outcome) keeps `reportedValue`/`modelledValue` nil; rows
/// with both values and the same `unit` are drawn side by side in the HTML report.
public struct HistoryFigure: Sendable, Hashable, Codable {
    public var label: String
    public var reported: String
    public var modelled: String
    public var unit: String
    public var reportedValue: Double?
    public var modelledValue: Double?

    public init(_ label: String, reported: String, modelled: String, unit: String = "",
                reportedValue: Double? = nil, modelledValue: Double? = nil) {
        self.label = label; self.reported = reported; self.modelled = modelled; self.unit = unit
        self.reportedValue = reportedValue; self.modelledValue = modelledValue
    }
}

/// What one landmark run gives: the figures side by side, where they come from, the direction the
/// model must agree with (checked), and what the model leaves out (docs/history.md).
public struct HistoryResult: Sendable, Hashable, Codable {
    public var name: String
    public var title: String
    /// The commit, cover letter or bug the reported numbers come from.
    public var source: String
    /// The setup the model ran, in a line or two.
    public var setup: String
    public var figures: [HistoryFigure]
    /// The direction the reported numbers show, as a sentence.
    public var direction: String
    /// Whether the model's numbers go the same way.
    public var agrees: Bool
    public var notes: [String]
    /// Values over time (drawn as lines in the HTML report), and the x and y axes' labels.
    public var series: [HistorySeries] = []
    public var seriesXLabel = ""
    public var seriesYLabel = ""

    var seriesAxes: (String, String) {
        get { (seriesXLabel, seriesYLabel) }
        set { (seriesXLabel, seriesYLabel) = newValue }
    }
}

/// One line of a landmark's over-time chart.
public struct HistorySeries: Sendable, Hashable, Codable {
    public var name: String
    public var x: [Double]
    public var y: [Double]

    public init(name: String, points: [(Double, Double)]) {
        self.name = name
        x = points.map(\.0)
        y = points.map(\.1)
    }
}

/// A change in Linux's history whose measurements the model reproduces (`thpsim history NAME`).
public struct HistoryLandmark: Sendable {
    public var name: String
    public var title: String
    /// Runs the landmark at the sizes `thpsim history` uses.
    public var run: @Sendable () throws(HistoryError) -> HistoryResult

    public init(name: String, title: String, run: @escaping @Sendable () throws(HistoryError) -> HistoryResult) {
        self.name = name; self.title = title; self.run = run
    }

    /// Every landmark, in the order of docs/history.md.
    public static let all: [HistoryLandmark] = [
        UnderusedShrinkerLandmark.landmark,
        AnonymousAlignmentLandmark.landmark,
        ThreadStacksLandmark.landmark,
        ReturnedMemoryLandmark.landmark,
        MultiSizeTHPLandmark.landmark,
        ForkCopyOnWriteLandmark.landmark,
    ]

    public static func named(_ name: String) -> HistoryLandmark? { all.first { $0.name == name } }
}

/// A landmark run that could not finish: the model refused the setup or ran out of memory.
public struct HistoryError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The pieces every landmark's run uses.
enum HistoryRun {
    /// A kernel for `design` with `memory` and the sysfs `tunables`, in `mode`, without swap.
    static func kernel(_ design: KernelDesign, memory: UInt64, mode: PhysicalMemory.Mode = .metadata,
                       tunables: [(String, String)]) throws(HistoryError) -> Kernel {
        try system(design, memory: memory, mode: mode, tunables: tunables).makeKernelOrThrow()
    }

    static func system(_ design: KernelDesign, memory: UInt64, mode: PhysicalMemory.Mode = .metadata,
                       tunables: [(String, String)]) -> SystemBuilder {
        var s = SystemBuilder()
        s.design = design
        s.memoryBytes = memory
        s.mode = mode
        s.tunables = tunables.map { SystemBuilder.Tunable(name: $0.0, value: $0.1) }
        return s
    }

    static func process(_ kernel: Kernel) throws(HistoryError) -> AddressSpace {
        guard let mm = kernel.createAddressSpace() else { throw HistoryError("the model has no memory for a process") }
        return mm
    }

    static func mmap(_ mm: AddressSpace, _ length: UInt64, flags: MapFlags = .private) throws(HistoryError) -> VirtualAddress {
        do throws(Errno) {
            return try mm.mmap(length: length, protection: [.read, .write], flags: flags)
        } catch { throw HistoryError("mmap of \(ByteCount.human(length)) failed: \(error)") }
    }

    /// A meminfo field in bytes (`AnonPages`, `AnonHugePages`).
    static func meminfo(_ kernel: Kernel, _ field: String) -> UInt64 {
        kernel.meminfo().fields.first { $0.name == field }?.bytes ?? 0
    }

    static func mib(_ bytes: UInt64) -> Double { Double(bytes) / 1_048_576 }
}

extension SystemBuilder {
    func makeKernelOrThrow() throws(HistoryError) -> Kernel {
        do throws(SysfsError) { return try makeKernel() } catch { throw HistoryError(error.message) }
    }
}
