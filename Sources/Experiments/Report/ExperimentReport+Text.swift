/// The comparison table `thpsim run` prints: one block per workload (and policy with its design, machine,
/// tunables), one row per `enabled` policy, a status column and footnotes when a program was killed
/// or its calls failed, and a footer with the legend and the settings.
extension ExperimentReport {
    /// A column of the table: a two-line header (the top line may be empty).
    struct TextColumn {
        var top: String
        var bottom: String
        var title: String { top.isEmpty ? bottom : top + " " + bottom }
    }

    static let textColumns: [TextColumn] = [
        .init(top: "", bottom: "accesses"),
        .init(top: "dTLB L1", bottom: "miss/1K"),
        .init(top: "STLB", bottom: "miss/1K"),
        .init(top: "walk", bottom: "Mcyc"),
        .init(top: "est.", bottom: "Mcyc"),
        .init(top: "vs never", bottom: "whole run"),
        .init(top: "vs never", bottom: "steady"),
        .init(top: "", bottom: "THP"),
        .init(top: "", bottom: "RSS"),
        .init(top: "", bottom: "bloat"),
        .init(top: "", bottom: "faults"),
        .init(top: "huge", bottom: "faults"),
        .init(top: "fault", bottom: "p50 µs"),
        .init(top: "fault", bottom: "p99 µs"),
        .init(top: "fault", bottom: "max µs"),
        .init(top: "splits", bottom: "pg/pmd"),
        .init(top: "", bottom: "collapses"),
    ]

    /// Spaces between columns.
    static let gap = 2

    public var text: String {
        var lines: [String] = []
        let cells = "\(results.count) of \(cellCount) cells" + (shard.map { " (shard \($0.index)/\($0.count))" } ?? "")
        lines.append("thpsim \(thpsimVersion) — \(cells); counts cover the whole run, set-up included (steady: the measured accesses alone)"
                     + (cacheModel.map { "; cache model \($0)" } ?? ""))
        lines.append("")

        let notes = footnotes
        let showStatus = !notes.isEmpty
        let rows = results.map { r in
            (label: "  " + r.cell.enabled, status: notes.marker(r), values: Self.textValues(r))
        }
        let labelWidth = rows.map(\.label.count).max().map { $0 + 1 } ?? 10
        let statusColumn = TextColumn(top: "", bottom: "status")
        let statusWidth = showStatus ? ([statusColumn.bottom.count] + rows.map(\.status.count)).max()! : 0
        let widths = Self.textColumns.indices.map { i in
            ([Self.textColumns[i].top.count, Self.textColumns[i].bottom.count] + rows.map { $0.values[i].count }).max()!
        }
        func line(_ label: String, _ status: String, _ values: [String]) -> String {
            var s = Format.pad(label, labelWidth, left: true)
            if showStatus { s += Format.pad(status, statusWidth, left: true) }
            for (v, w) in zip(values, widths) { s += String(repeating: " ", count: Self.gap) + Format.pad(v, w) }
            return s
        }
        lines.append(line("", "", Self.textColumns.map(\.top)).trimmingTrailingSpaces)
        lines.append(line("", showStatus ? statusColumn.bottom : "", Self.textColumns.map(\.bottom)))
        var lastGroup: String?
        for (r, row) in zip(results, rows) {
            if r.cell.groupKey != lastGroup {
                lastGroup = r.cell.groupKey
                var title = "\(r.cell.workload.label) — \(r.cell.policyLabel), \(r.cell.machine)"
                if !r.cell.tunables.isEmpty { title += ", " + r.cell.tunables.map { "\($0.name)=\($0.value)" }.joined(separator: " ") }
                lines.append(title)
            }
            lines.append(line(row.label, row.status, row.values))
        }
        lines.append("")
        if !notes.isEmpty {
            let failed = results.filter { !$0.completed }.count
            if failed > 0 {
                lines += Format.wrap("WARNING: \(failed) of \(results.count) cells did not complete (a process was killed): their figures "
                                     + "cover the run until then, and no speedup is computed with them.", width: 118, indent: "")
            }
            for (i, note) in notes.texts.enumerated() { lines += Format.wrap("[\(i + 1)] \(note)", width: 118, indent: "    ") }
            lines.append("")
        }
        let ghz = Set(results.map(\.frequencyGHz)).sorted().map { Format.fixed($0, 1) }.joined(separator: "/")
        lines.append("miss/1K: per 1,000 accesses, those that missed every L1 data TLB (dTLB L1), and those that missed the second-level")
        lines.append("TLB too (STLB: a page walk); Mcyc: million cycles; est. = faults + accesses (TLB, walks, data); vs never: enabled=never's")
        lines.append("estimated cycles over this row's, for the whole run (first-touch faults included) and the steady state (the measured")
        lines.append("accesses alone); THP: AnonHugePages/AnonPages at the end; RSS: peak AnonPages; bloat: RSS − bytes written; fault")
        lines.append("latency at \(ghz) GHz (docs/report-format.md).")
        lines.append(contentsOf: timeLines)
        lines.append(contentsOf: reproduction)
        return lines.joined(separator: "\n")
    }

    /// The footer's last lines: seeds or traces, and the settings the runs started with (those every
    /// cell shares once; those that differ, per design or per cell).
    var reproduction: [String] {
        var parts: [String] = []
        let seeds = Set(results.compactMap(\.seed)).sorted()
        if !seeds.isEmpty { parts.append((seeds.count == 1 ? "seed " : "seeds ") + seeds.map(String.init).joined(separator: ",")) }
        let traces = Set(results.compactMap(\.cell.workload.trace)).sorted()
        if !traces.isEmpty { parts.append("traces replayed as recorded (no seed): " + traces.joined(separator: ", ")) }
        var keys = ["defrag", "use_zero_page", "khugepaged/max_ptes_none", "khugepaged/scan_sleep_millisecs"]
        for axis in grid.tunables where !keys.contains(axis.name) { keys.append(axis.name) }
        var shared: [String] = [], varying: [String] = []
        for key in keys {
            let values = results.compactMap { $0.settings[key].map(Self.selected) }
            guard let first = values.first else { continue }
            if values.allSatisfy({ $0 == first }) { shared.append("\(key)=\(first)"); continue }
            var distinct: [String] = []
            for v in values where !distinct.contains(v) { distinct.append(v) }
            let designs = Set(results.map(\.cell.design)).sorted()
            let byDesign = designs.map { d in Set(results.filter { $0.cell.design == d }.compactMap { $0.settings[key].map(Self.selected) }) }
            if grid.tunables.contains(where: { $0.name == key }) {
                varying.append("\(key)=\(distinct.joined(separator: ",")) as each group's title says")
            } else if byDesign.allSatisfy({ $0.count == 1 }) {
                varying.append("\(key): " + zip(designs, byDesign).map { "\($0) \($1.first!)" }.joined(separator: ", "))
            } else {
                varying.append("\(key) differs by cell (\(distinct.joined(separator: ", ")); each cell's in --json)")
            }
        }
        let settings = (shared.isEmpty ? [] : [shared.joined(separator: " ")]) + varying
        if !settings.isEmpty { parts.append("settings " + settings.joined(separator: "; ")) }
        return Format.wrap(parts.joined(separator: "; "), width: 118, indent: "  ")
    }

    /// `always [madvise] never` → `madvise`: the selected value of a sysfs choice.
    static func selected(_ sysfs: String) -> String {
        guard let open = sysfs.firstIndex(of: "["), let close = sysfs.firstIndex(of: "]"), open < close else { return sysfs }
        return String(sysfs[sysfs.index(after: open)..<close])
    }

    /// The table's figures for one cell, one string per column of `textColumns`.
    static func textValues(_ r: CellResult) -> [String] {
        let ghz = r.frequencyGHz
        func speedup(_ s: Double?) -> String { r.completed ? s.map { Format.fixed($0, 2) + "×" } ?? "—" : "killed" }
        return [
            Format.count(r.accesses.total),
            Format.fixed(r.tlb.l1MissesPerKilo, 1),
            Format.fixed(r.tlb.l2MissesPerKilo, 1),
            Format.fixed(r.tlb.walkCycles / 1e6, 1),
            Format.fixed(r.estimatedCycles / 1e6, 1),
            speedup(r.speedupVsNever),
            speedup(r.steadySpeedupVsNever),
            "\(Int((r.memory.thpCoverage * 100).rounded()))%",
            Format.bytes(r.memory.rssBytes),
            Format.signedBytes(r.memory.bloatBytes),
            Format.count(r.faults.count),
            Format.count(r.faults.huge),
            Format.micros(r.faults.p50Cycles, ghz),
            Format.micros(r.faults.p99Cycles, ghz),
            Format.micros(r.faults.maxCycles, ghz),
            Format.count(r.splits) + "/" + Format.count(r.splitPMDs),
            Format.count(r.collapses),
        ]
    }
}

/// The footnotes of a report: one per distinct trouble (cells with the same trouble share it).
struct Footnotes {
    var texts: [String] = []
    var numbers: [Int: Int] = [:]
    var isEmpty: Bool { texts.isEmpty }

    /// The status cell of `r`: `ok`, or `killed [n]` / `calls failed [n]` pointing at its footnote.
    func marker(_ r: CellResult) -> String {
        guard let n = numbers[r.cell.index] else { return r.status }
        return r.status + " [\(n)]"
    }
}

extension ExperimentReport {
    var footnotes: Footnotes {
        var notes = Footnotes()
        var byText: [String: (number: Int, cells: [String])] = [:]
        var order: [String] = []
        for r in results {
            guard let trouble = r.trouble else { continue }
            if byText[trouble] == nil { order.append(trouble); byText[trouble] = (order.count, []) }
            byText[trouble]!.cells.append("\(r.cell.workload.label) \(r.cell.enabled)")
            notes.numbers[r.cell.index] = byText[trouble]!.number
        }
        notes.texts = order.map { t in
            let cells = byText[t]!.cells
            let who = cells.count > 3 ? "\(cells.count) cells" : cells.joined(separator: ", ")
            return "\(who): \(t)"
        }
        return notes
    }
}

extension CellResult {
    /// What went wrong in the run, in a sentence: processes killed, failed system calls, accesses
    /// not made; nil when nothing did.
    public var trouble: String? {
        var parts: [String] = []
        let kills = self.kills ?? []
        if kills.count == 1, let k = kills.first, let rss = k.rssBytes {
            parts.append("process \(k.process) killed by its memory cgroup's OOM killer (\(k.reason)), anon-rss \(rss >> 10) kB")
        } else if kills.count == 1, let k = kills.first {
            parts.append("process \(k.process) killed by \(k.signal) (\(k.reason)) at 0x\(String(k.address, radix: 16))")
        } else if kills.count > 1 {
            var bySignal: [String: Int] = [:]
            for k in kills { bySignal["\(k.signal) (\(k.reason))", default: 0] += 1 }
            parts.append("\(kills.count) processes killed (" + bySignal.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")
                         + "), the first at 0x\(String(kills[0].address, radix: 16))")
        } else if signals > 0 {
            parts.append("\(signals) process\(signals == 1 ? "" : "es") killed")
        }
        if !failedCalls.isEmpty {
            parts.append("failed system calls " + failedCalls.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
        }
        if let dropped = droppedAccesses, dropped > 0 {
            parts.append("\(Format.count(dropped)) accesses not made (their process had died)")
        }
        return parts.isEmpty ? nil : parts.joined(separator: "; ")
    }
}

extension String {
    var trimmingTrailingSpaces: String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}
