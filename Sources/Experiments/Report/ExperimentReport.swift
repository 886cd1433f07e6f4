import Foundation

/// The version every report records (with the design, machine, settings and seeds of each cell), so
/// a number can be traced to what produced it.
public enum THPSimVersion {
    public static let string = "0.9.0"
}

/// The results of an experiment, or of one shard of it: what `thpsim run --json` prints and
/// `thpsim merge` reads. Keys are documented in docs/report-format.md.
public struct ExperimentReport: Sendable, Equatable, Codable {
    /// Bumped when a key changes meaning or goes away (new keys do not bump it).
    public static let currentSchema = 1

    public var schema: Int
    public var thpsimVersion: String
    /// The whole grid, also in a shard's report (so shards can be checked against each other).
    public var grid: ExperimentGrid
    /// Cells of the whole grid.
    public var cellCount: Int

    /// Which slice of the grid a shard ran (`--shard index/count`, index from 0).
    public struct Shard: Sendable, Hashable, Codable {
        public var index: Int
        public var count: Int
        public init(index: Int, count: Int) { self.index = index; self.count = count }
    }
    /// Nil for a whole grid (a run without `--shard`, or a merge of every shard).
    public var shard: Shard?
    /// One result per cell run, in cell order.
    public var results: [CellResult]
    /// The CPUs' cache model every cell ran with (`full` or `sampled`; absent in reports written
    /// before it could be chosen, which ran `full`).
    public var cacheModel: String?

    public init(grid: ExperimentGrid, shard: Shard?, results: [CellResult]) {
        schema = Self.currentSchema
        thpsimVersion = THPSimVersion.string
        self.grid = grid
        cellCount = grid.cells.count
        self.shard = shard
        self.results = results
    }

    /// Fills in each result's `speedupVsNever` and `steadySpeedupVsNever` from the `never` cell of its
    /// group, if present; none where either cell's program was killed.
    public mutating func computeSpeedups() {
        var never: [String: CellResult] = [:]
        for r in results where r.cell.enabled == "never" { never[r.cell.groupKey] = r }
        func ratio(_ base: Double?, _ cycles: Double?) -> Double? {
            guard let base, let cycles, cycles > 0 else { return nil }
            return base / cycles
        }
        for i in results.indices {
            let r = results[i]
            guard let base = never[r.cell.groupKey], base.completed, r.completed else {
                results[i].speedupVsNever = nil
                results[i].steadySpeedupVsNever = nil
                continue
            }
            results[i].speedupVsNever = ratio(base.estimatedCycles, r.estimatedCycles)
            results[i].steadySpeedupVsNever = ratio(base.steady?.estimatedCycles, r.steady?.estimatedCycles)
        }
    }

    /// The report as JSON: sorted keys, indented, so equal reports are equal bytes.
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return String(decoding: try! encoder.encode(self), as: UTF8.self)
    }

    /// Reads a report that `json` wrote; the error names what is wrong (for `thpsim merge`).
    public static func decode(_ data: Data) throws(ExperimentError) -> ExperimentReport {
        let report: ExperimentReport
        do { report = try JSONDecoder().decode(ExperimentReport.self, from: data) } catch let e as DecodingError {
            throw ExperimentError("not a thpsim report: \(describe(e))")
        } catch {
            throw ExperimentError("not a thpsim report: \(error)")
        }
        guard report.schema == currentSchema else {
            throw ExperimentError("report schema \(report.schema), this thpsim reads schema \(currentSchema)")
        }
        return report
    }

    private static func describe(_ e: DecodingError) -> String {
        func path(_ c: DecodingError.Context) -> String {
            c.codingPath.isEmpty ? "" : " at " + c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch e {
        case .dataCorrupted(let c): return "invalid JSON\(path(c)) (\(c.underlyingError.map { "\($0)" } ?? c.debugDescription))"
        case .keyNotFound(let k, let c): return "missing key '\(k.stringValue)'\(path(c))"
        case .typeMismatch(_, let c), .valueNotFound(_, let c): return "wrong type\(path(c)): \(c.debugDescription)"
        @unknown default: return "\(e)"
        }
    }

    /// Combines the reports of shards of one grid into the report of the whole grid, as an unsharded
    /// run would have written it. Files are named in errors as `names` gives them.
    /// - Throws: when the reports come from different grids or thpsim versions, a shard is missing or
    ///   repeated, or a cell's result is missing.
    public static func merge(_ reports: [(name: String, report: ExperimentReport)]) throws(ExperimentError) -> ExperimentReport {
        guard let first = reports.first else { throw ExperimentError("no reports to merge") }
        var byCell: [Int: CellResult] = [:]
        var shardsSeen: [Int: String] = [:]
        for (name, r) in reports {
            guard r.grid == first.report.grid else {
                throw ExperimentError("\(name): a different grid from \(first.name)'s (shards must come from one command line)")
            }
            guard r.cacheModel == first.report.cacheModel else {
                throw ExperimentError("\(name): cache model \(r.cacheModel ?? "full"), but \(first.name) ran \(first.report.cacheModel ?? "full")")
            }
            guard r.thpsimVersion == first.report.thpsimVersion else {
                throw ExperimentError("\(name): thpsim \(r.thpsimVersion), but \(first.name) is from thpsim \(first.report.thpsimVersion)")
            }
            if let s = r.shard {
                if let other = shardsSeen[s.index] { throw ExperimentError("\(name): shard \(s.index)/\(s.count) again (also in \(other))") }
                shardsSeen[s.index] = name
            }
            for c in r.results {
                guard c.cell.index >= 0, c.cell.index < r.cellCount else {
                    throw ExperimentError("\(name): cell index \(c.cell.index) outside the grid's \(r.cellCount) cells")
                }
                if byCell[c.cell.index] != nil { throw ExperimentError("\(name): cell \(c.cell.index) (\(c.cell.workload.label), \(c.cell.enabled)) appears twice") }
                byCell[c.cell.index] = c
            }
        }
        let cells = first.report.grid.cells
        let missing = cells.filter { byCell[$0.index] == nil }
        if !missing.isEmpty {
            let shardCount = reports.compactMap(\.report.shard?.count).first
            let hint = shardCount.map { n in
                " (shards present: " + shardsSeen.keys.sorted().map { "\($0)/\(n)" }.joined(separator: ", ") + ")"
            } ?? ""
            throw ExperimentError("\(missing.count) of \(cells.count) cells missing, e.g. cell \(missing[0].index) (\(missing[0].workload.label), \(missing[0].enabled))\(hint)")
        }
        var merged = ExperimentReport(grid: first.report.grid, shard: nil, results: cells.map { byCell[$0.index]! })
        merged.thpsimVersion = first.report.thpsimVersion
        merged.cacheModel = first.report.cacheModel
        merged.computeSpeedups()
        return merged
    }
}
