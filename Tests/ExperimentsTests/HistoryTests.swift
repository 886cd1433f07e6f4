import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import Kernel
@testable import Experiments

/// The landmarks of `thpsim history` on small sizes: each checks the direction Linux's developers
/// reported (docs/history.md).
@Suite("History: landmark results reproduced")
struct HistoryTests {
    @Test("underused shrinker: OOM-killed without it, alive with it for max_ptes_none <= 470, killed above 471")
    func underusedShrinker() throws {
        let off = try UnderusedShrinkerLandmark.run(shrinkUnderused: false, maxPtesNone: 450)
        let touched = UnderusedShrinkerLandmark.touchedBytes
        #expect(off.killed && off.oomKills == 1 && off.underusedSplits == 0 && off.writtenBytes < touched)
        let on = try UnderusedShrinkerLandmark.run(shrinkUnderused: true, maxPtesNone: 470)
        // How much stays charged at the end depends on where the last reclaim fell (so on Linux too).
        #expect(!on.killed && on.writtenBytes == touched && on.underusedSplits >= 10 && on.peakBytes <= 20 << 20)
        // At the cover letter's 40 MiB the process fits without the shrinker (page tables charged).
        #expect(try !UnderusedShrinkerLandmark.run(shrinkUnderused: false, maxPtesNone: 450, touched: 40 << 20).killed)
        #expect(try UnderusedShrinkerLandmark.run(shrinkUnderused: true, maxPtesNone: 480).killed)
    }

    @Test("underused shrinker, production heap: RSS with madvise < always + shrinker at 409 < always; madvise holds what was written")
    func underusedShrinkerHeap() throws {
        let madvise = try UnderusedShrinkerLandmark.productionHeap(enabled: "madvise", shrinkUnderused: false, ranges: 40)
        let always = try UnderusedShrinkerLandmark.productionHeap(enabled: "always", shrinkUnderused: false, ranges: 40)
        let shrunk = try UnderusedShrinkerLandmark.productionHeap(enabled: "always", shrinkUnderused: true, ranges: 40)
        // memory.current holds the pages and the page tables that map them.
        #expect(madvise.chargedBytes == madvise.usedBytes + madvise.pageTableBytes)
        #expect(always.chargedBytes == 40 * (2 << 20) + always.pageTableBytes && always.underusedSplits == 0)
        #expect(always.pageTableBytes >= 40 * 4096)
        #expect(shrunk.underusedSplits > 0)
        #expect(madvise.chargedBytes < shrunk.chargedBytes && shrunk.chargedBytes < always.chargedBytes)
    }

    @Test("malloc1: 6.7's alignment makes every iteration fault a THP; 6.12's rule and no alignment fault 4 KiB")
    func malloc1() throws {
        let none = try AnonymousAlignmentLandmark.malloc1(.none, iterations: 20)
        let six7 = try AnonymousAlignmentLandmark.malloc1(.atLeastPMD, iterations: 20)
        let six12 = try AnonymousAlignmentLandmark.malloc1(.pmdMultiples, iterations: 20)
        #expect(six7.aligned && six7.hugeFaultsPerIteration == 1)
        #expect(!none.aligned && none.hugeFaultsPerIteration == 0 && !six12.aligned && six12.hugeFaultsPerIteration == 0)
        #expect(six7.faultCyclesPerIteration > 10 * none.faultCyclesPerIteration)
        #expect(six12.faultCyclesPerIteration == none.faultCyclesPerIteration)
    }

    @Test("4,632 KiB mappings: 6.7 aligns each (a VMA each, padding between), 6.12 merges them into one with more THPs")
    func cactusMappings() throws {
        let six7 = try AnonymousAlignmentLandmark.mappings(.atLeastPMD, count: 8)
        let six12 = try AnonymousAlignmentLandmark.mappings(.pmdMultiples, count: 8)
        #expect(six7.vmas == 8 && six7.firstAligned && six7.hugeBytes == 8 * 2 * (2 << 20))
        #expect(six12.vmas == 1 && !six12.firstAligned && six12.hugeBytes > six7.hugeBytes)
    }

    @Test("thread stacks: a THP each under always without the MAP_STACK rule and in 2010; 16 KiB each in 6.18")
    func threadStacks() throws {
        let threads = 32
        let today = try ThreadStacksLandmark.run(.linux6_18, threads: threads)
        let without = try ThreadStacksLandmark.run(.withoutRule, threads: threads)
        let old = try ThreadStacksLandmark.run(.linux2010, threads: threads)
        #expect(today.rssBytes == UInt64(threads) * (16 << 10) && today.hugeBytes == 0)
        #expect(without.rssBytes == UInt64(threads) * (2 << 20))
        #expect(old.hugeBytes >= UInt64(threads - 1) * (2 << 20), "the first stack's top shares a 2 MiB range with the mapping above")
    }

    @Test("returned memory: khugepaged refills the holes at max_ptes_none=511, not at 0")
    func returnedMemory() throws {
        let heap: UInt64 = 8 << 20
        let refill = try ReturnedMemoryLandmark.run(maxPtesNone: 511, heap: heap, fullScans: 2)
        let kept = try ReturnedMemoryLandmark.run(maxPtesNone: 0, heap: heap, fullScans: 2)
        #expect(refill.rssAfterScavenge == heap / 2 && kept.rssAfterScavenge == heap / 2)
        #expect(refill.rssAtEnd == heap && refill.collapsed == 4)
        #expect(kept.rssAtEnd == heap / 2 && kept.collapsed == 0)
        #expect(refill.rssOverTime.count > 2 && refill.rssOverTime.last!.seconds > 0)
    }

    @Test("mTHP: 64 KiB folios cut a build's anonymous faults about 16x and their cycles; none are mapped when the size is off")
    func multiSizeTHP() throws {
        let base = try MultiSizeTHPLandmark.run(mthp64K: false, processes: 8)
        let mthp = try MultiSizeTHPLandmark.run(mthp64K: true, processes: 8)
        #expect(base.touchedBytes == mthp.touchedBytes && base.faults == Int(base.touchedBytes / 4096) && base.folios64K == 0)
        // Each heap's unaligned head and tail (under 64 KiB each) still fault 4 KiB at a time.
        #expect(mthp.folios64K > 0 && mthp.faults >= mthp.folios64K && mthp.faults < base.faults / 10)
        #expect(mthp.faults > base.faults / 16 - 1)
        #expect(mthp.faultCycles < base.faultCycles / 2)
    }

    @Test("fork: the 2010 design copies 2 MiB per shared huge PMD written; 6.18 copies 4 KiB like enabled=never")
    func forkCopyOnWrite() throws {
        let size: UInt64 = 16 << 20
        let old = try ForkCopyOnWriteLandmark.run(.linux2010, size: size)
        let today = try ForkCopyOnWriteLandmark.run(.linux6_18, size: size)
        let never = try ForkCopyOnWriteLandmark.run(.never, size: size)
        #expect(old.hugeBytesAtFork == size && today.hugeBytesAtFork == size && never.hugeBytesAtFork == 0)
        #expect(old.copiedBytes % (2 << 20) == 0 && old.copiedBytes > 2 * today.copiedBytes)
        #expect(today.copiedBytes == never.copiedBytes && today.copiedBytes > 0)
        #expect(old.writeFaults == Int(old.copiedBytes / (2 << 20)))
        #expect(today.writeFaults >= Int(today.copiedBytes / 4096) && never.writeFaults == Int(never.copiedBytes / 4096))
        #expect(old.p50Cycles > 10 * today.p99Cycles)
        #expect(today.p50Cycles == never.p50Cycles)
    }

    @Test("every landmark has a unique name; the report renders as JSON and well-formed HTML with a chart per unit")
    func report() throws {
        #expect(Set(HistoryLandmark.all.map(\.name)).count == HistoryLandmark.all.count)
        #expect(HistoryLandmark.named("no-such") == nil)
        let result = HistoryResult(name: "x", title: "X & Y", source: "s", setup: "m",
                                   figures: [HistoryFigure("a", reported: "1", modelled: "2", unit: "MiB", reportedValue: 1, modelledValue: 2),
                                             HistoryFigure("b", reported: "killed", modelled: "killed")],
                                   direction: "d", agrees: false, notes: ["n"])
        let report = HistoryReport(thpsimVersion: "test", results: [result])
        #expect(!report.agrees && report.text.contains("THE MODEL DISAGREES"))
        let decoded = try JSONDecoder().decode(HistoryReport.self, from: Data(report.json.utf8))
        #expect(decoded.results == [result])
        #expect(report.html.contains("data-charts=\"1\"") && report.html.contains("X &amp; Y"))
        _ = try XMLDocument(xmlString: report.html, options: [])
    }
}

/// `thpsim history` through the built binary: bad input is named, with a non-zero status.
@Suite("History on the command line", .enabled(if: Binary.thpsim != nil, "the thpsim binary was not found next to the test bundle (run swift build)"))
struct HistoryCLITests {
    @Test("an unknown landmark or flag, no landmark, a name with --all, a directory for --html: an error naming the problem")
    func badInput() throws {
        let unknown = try Binary.run(["history", "no-such-landmark"])
        #expect(unknown.status != 0 && !unknown.crashed && unknown.err.contains("no history landmark 'no-such-landmark'")
                && unknown.err.contains("underused-shrinker"), "\(unknown.err)")
        let none = try Binary.run(["history"])
        #expect(none.status != 0 && none.err.contains("name a landmark or give --all"), "\(none.err)")
        let both = try Binary.run(["history", "--all", "thread-stacks"])
        #expect(both.status != 0 && both.err.contains("not both"), "\(both.err)")
        let flag = try Binary.run(["history", "underused-shrinker", "--bogus"])
        #expect(flag.status != 0 && flag.err.contains("Unknown option '--bogus'"), "\(flag.err)")
        let dir = try Binary.run(["history", "underused-shrinker", "--html", NSTemporaryDirectory()])
        #expect(dir.status != 0 && dir.err.contains("is a directory"), "\(dir.err)")
    }

    @Test("a landmark prints reported and modelled numbers, and --json and --html write them (a chart per unit)")
    func runsOne() throws {
        let html = temporaryFile("history.html")
        let r = try Binary.run(["history", "underused-shrinker", "--json", "--html", html])
        #expect(r.status == 0 && !r.crashed, "\(r.err)")
        #expect(r.out.contains("\"name\" : \"underused-shrinker\"") && r.out.contains("\"agrees\" : true"), "\(r.out)")
        #expect(try String(contentsOfFile: html, encoding: .utf8).contains("data-charts=\"2\""))
    }
}
