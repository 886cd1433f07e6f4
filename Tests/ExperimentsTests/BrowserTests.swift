import Foundation
import Testing
@testable import Experiments

/// Renders the HTML report in headless Chromium (Debian's `chromium`) and reads back what the
/// page's script recorded: how many chart marks the browser laid out with a non-empty box.
@Suite("HTML report in a browser")
struct BrowserTests {
    static let chromium: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Loads `html` in headless Chromium with a window `width` pixels wide and returns the `<body>` tag
    /// of the DOM after the page's script ran, and the whole DOM.
    static func render(_ html: String, name: String, width: Int = 1280) throws -> (body: String, dom: String, status: Int32) {
        let path = temporaryFile(name)
        try Data(html.utf8).write(to: URL(fileURLWithPath: path))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.chromium!)
        // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        p.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=" + temporaryFile("chromium-profile-" + name),
                       "--window-size=\(width),2000", "--virtual-time-budget=5000", "--dump-dom", URL(fileURLWithPath: path).absoluteString]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let dom = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard let bodyStart = dom.range(of: "<body"), let bodyEnd = dom[bodyStart.upperBound...].firstIndex(of: ">") else {
            return ("", dom, p.terminationStatus)
        }
        return (String(dom[bodyStart.lowerBound...bodyEnd]), dom, p.terminationStatus)
    }

    static func attribute(_ name: String, in body: String) -> Int? {
        guard let r = body.range(of: name + "=\"") else { return nil }
        return Int(body[r.upperBound...].prefix { $0 != "\"" })
    }

    @Test("headless Chromium draws every chart mark and reports no script error",
          .enabled(if: chromium != nil, "chromium is not installed (apt-get install chromium); .ci/run installs it"))
    func rendersCharts() throws {
        let report = Small.report
        let (body, dom, status) = try Self.render(report.html, name: "report.html")
        #expect(status == 0)
        #expect(!body.isEmpty, "no <body> in Chromium's DOM: \(dom.prefix(300))")
        #expect(!body.contains("data-script-error"), "script error: \(body)")
        let marks = try #require(Self.attribute("data-marks", in: body), "the page's script ran: \(body)")
        #expect(marks == report.results.count * 11)
        #expect(Self.attribute("data-marks-drawn", in: body) == marks, "every mark has a box: \(body)")
        #expect(dom.components(separatedBy: "<svg").count - 1 == Self.attribute("data-charts", in: body))
    }

    @Test("the page fits a 1280-pixel window, with a status column, notes and tunables in every cell",
          .enabled(if: chromium != nil, "chromium is not installed (apt-get install chromium); .ci/run installs it"))
    func fitsWindow() throws {
        var report = Small.report
        for i in report.results.indices {
            report.results[i].cell.tunables = [.init(name: "khugepaged/max_ptes_none", value: "511"), .init(name: "defrag", value: "defer+madvise")]
        }
        report.results[0].signals = 1
        report.results[0].kills = [.init(signal: "SIGSEGV", reason: "SEGV_MAPERR", address: 0x7e00_0000_0000, process: 0, thread: 0)]
        report.results[0].failedCalls = ["ENOMEM (12)": 1]
        report.results[0].droppedAccesses = 12_345_678
        report.computeSpeedups()
        let (body, dom, status) = try Self.render(report.html, name: "wide.html")
        #expect(status == 0)
        let width = try #require(Self.attribute("data-content-width", in: body), "the page's script ran: \(body) \(dom.prefix(300))")
        let view = try #require(Self.attribute("data-view-width", in: body))
        #expect(view > 1200 && view <= 1280, "the window shows \(view) px")
        #expect(width <= view, "the page needs \(width) px; a 1280 px window shows \(view) px")
        #expect(dom.contains("killed [1]"))
    }
}
