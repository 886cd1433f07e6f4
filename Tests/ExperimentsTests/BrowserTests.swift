import Foundation
import Testing
@testable import Experiments

/// Renders the HTML report in headless Chromium (Debian's `chromium`) and reads back what the
/// page's script recorded: how many chart marks the browser laid out with a non-empty box.
@Suite("HTML report in a browser")
struct BrowserTests {
    static let chromium: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test("headless Chromium draws every chart mark and reports no script error",
          .enabled(if: chromium != nil, "chromium is not installed (apt-get install chromium); .ci/run installs it"))
    func rendersCharts() throws {
        let report = Small.report
        let path = temporaryFile("report.html")
        try Data(report.html.utf8).write(to: URL(fileURLWithPath: path))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.chromium!)
        // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        p.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=" + temporaryFile("chromium-profile"),
                       "--virtual-time-budget=5000", "--dump-dom", URL(fileURLWithPath: path).absoluteString]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let dom = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        guard let bodyStart = dom.range(of: "<body"), let bodyEnd = dom[bodyStart.upperBound...].firstIndex(of: ">") else {
            Issue.record("no <body> in Chromium's DOM: \(dom.prefix(300))")
            return
        }
        let body = String(dom[bodyStart.lowerBound...bodyEnd])
        func attribute(_ name: String) -> Int? {
            guard let r = body.range(of: name + "=\"") else { return nil }
            return Int(body[r.upperBound...].prefix { $0 != "\"" })
        }
        #expect(!body.contains("data-script-error"), "script error: \(body)")
        let marks = try #require(attribute("data-marks"), "the page's script ran: \(body)")
        #expect(marks == report.results.count * 11)
        #expect(attribute("data-marks-drawn") == marks, "every mark has a box: \(body)")
        #expect(dom.components(separatedBy: "<svg").count - 1 == attribute("data-charts"))
    }
}
