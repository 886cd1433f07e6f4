import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import Experiments

/// `HTMLPage`: the one frame (head, title, shared style, body) of the experiment and history pages.
@Suite("HTML page shell")
struct HTMLPageTests {
    static func element(_ name: String, in document: XMLDocument) throws -> XMLElement? {
        try document.nodes(forXPath: "//*[local-name()='\(name)']").first as? XMLElement
    }

    @Test("the title and body attribute values are escaped, and the page parses as XML")
    func escapes() throws {
        let title = "a & <b> \"c\" 'd'"
        let value = "1 < 2 & \"3\""
        let html = HTMLPage.render(title: title, style: "p { color: red; }", bodyAttributes: [("data-x", value)], body: "<p>x</p>")
        let document = try XMLDocument(xmlString: html, options: [])
        #expect(try Self.element("title", in: document)?.stringValue == title)
        #expect(try document.nodes(forXPath: "//*[local-name()='body']/@data-x").first?.stringValue == value)
        #expect(try Self.element("p", in: document)?.stringValue == "x")
        let style = try Self.element("style", in: document)?.stringValue ?? ""
        #expect(style.contains(HTMLPage.sharedStyle))
        #expect(style.range(of: HTMLPage.sharedStyle)!.upperBound <= style.range(of: "p { color: red; }")!.lowerBound,
                "the page's own rules come after the shared ones, so they win where they override")
    }

    @Test("the experiment and history pages are framed by the shell: the shared style once, then their own width")
    func bothPages() {
        let pages = [(Small.report.html, "max-width: 1400px"), (HistoryReport(thpsimVersion: "test", results: []).html, "max-width: 1100px")]
        for (html, width) in pages {
            #expect(html.hasPrefix("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n"))
            #expect(html.components(separatedBy: HTMLPage.sharedStyle).count == 2)
            #expect(html.components(separatedBy: "<style>").count == 2)
            let shared = html.range(of: HTMLPage.sharedStyle), own = html.range(of: width)
            #expect(shared != nil && own != nil && shared!.upperBound <= own!.lowerBound)
            #expect(html.hasSuffix("</body>\n</html>\n"))
        }
    }
}
