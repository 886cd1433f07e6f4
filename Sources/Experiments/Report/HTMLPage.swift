/// The frame of every HTML page thpsim writes (`thpsim run|merge --html`, `thpsim history --html`):
/// doctype, the XHTML root, a head with the escaped title and the style, and the body. Pages are
/// self-contained (inline CSS and SVG, nothing fetched) and well-formed XML, so an XML parser can
/// check them as well as a browser show them.
///
/// The style is the rules every page shares, then the page's own. No page rule sets a property a
/// shared rule sets for the same elements, except where the page overrides on purpose (a later
/// rule of equal specificity wins, as it did when each page wrote its whole style).
enum HTMLPage {
    /// Type, headings, the table grid, the warning box and the SVG charts (`SVGChart`'s classes).
    static let sharedStyle = """
        body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
        h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
        table { border-collapse: collapse; }
        td, th { border: 1px solid #ccc; vertical-align: top; }
        .warning { background: #fde8e8; border: 1px solid #d62728; padding: 0.6em 1em; font-weight: 600; }
        svg.chart { display: block; margin: 1em 0; background: #fff; max-width: 100%; height: auto; }
        .grid { stroke: #e3e3e3; } .tick { font-size: 11px; fill: #444; }
        .axis-label { font-size: 12px; fill: #333; } .chart-title { font-size: 13px; font-weight: 600; }
        """

    /// The whole page. `style` holds the page's own rules (after the shared ones), `bodyAttributes`
    /// the `<body>` element's attributes (values escaped here), `body` the content, already markup.
    static func render(title: String, style: String, bodyAttributes: [(name: String, value: String)] = [], body: String) -> String {
        let e = SVGChart.escape
        let attributes = bodyAttributes.map { " \($0.name)=\"\(e($0.value))\"" }.joined()
        return """
            <!DOCTYPE html>
            <html xmlns="http://www.w3.org/1999/xhtml" lang="en">
            <head>
            <meta charset="utf-8"/>
            <title>\(e(title))</title>
            <style>
            \(sharedStyle)
            \(style)
            </style>
            </head>
            <body\(attributes)>
            \(body)
            </body>
            </html>

            """
    }
}
