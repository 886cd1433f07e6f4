import Foundation

/// Small SVG charts drawn as text (no scripts, no fonts to fetch): grouped bars and line charts.
/// Every chart is an `<svg class="chart" data-chart="NAME">` whose marks carry `class="mark"`.
struct SVGChart {
    static let width = 760.0, height = 300.0
    static let left = 70.0, right = 20.0, top = 30.0, bottom = 60.0

    static func escape(_ s: String) -> String {
        var out = ""
        for ch in s {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(ch)
            }
        }
        return out
    }

    static func n(_ x: Double) -> String { String(format: "%.1f", x) }

    /// A "nice" upper bound for an axis and its tick step.
    static func niceScale(_ maxValue: Double) -> (top: Double, step: Double) {
        guard maxValue > 0, maxValue.isFinite else { return (1, 0.25) }
        let raw = maxValue / 4
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        return (ceil(maxValue / step) * step, step)
    }

    static func open(_ name: String, title: String, width: Double = width, height: Double = height) -> String {
        "<svg class=\"chart\" data-chart=\"\(escape(name))\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(n(width))\" height=\"\(n(height))\" viewBox=\"0 0 \(n(width)) \(n(height))\" role=\"img\">"
            + "<title>\(escape(title))</title>"
            + "<text x=\"\(n(width / 2))\" y=\"18\" text-anchor=\"middle\" class=\"chart-title\">\(escape(title))</text>"
    }

    /// A tick label with as many decimals as the step needs.
    static func tick(_ v: Double, step: Double) -> String {
        var decimals = 0
        while decimals < 3 && abs(step * pow(10, Double(decimals)) - (step * pow(10, Double(decimals))).rounded()) > 1e-6 { decimals += 1 }
        return String(format: "%.\(decimals)f", v)
    }

    static func yAxis(_ scale: (top: Double, step: Double), label: String, plotHeight: Double, width: Double = width) -> String {
        var s = ""
        var v = 0.0
        while v <= scale.top + scale.step / 1000 {
            let y = top + plotHeight - v / scale.top * plotHeight
            s += "<line x1=\"\(n(left))\" x2=\"\(n(width - right))\" y1=\"\(n(y))\" y2=\"\(n(y))\" class=\"grid\"/>"
            s += "<text x=\"\(n(left - 6))\" y=\"\(n(y + 4))\" text-anchor=\"end\" class=\"tick\">\(escape(tick(v, step: scale.step)))</text>"
            v += scale.step
        }
        s += "<text x=\"14\" y=\"\(n(top + plotHeight / 2))\" transform=\"rotate(-90 14 \(n(top + plotHeight / 2)))\" text-anchor=\"middle\" class=\"axis-label\">\(escape(label))</text>"
        return s
    }

    static func legend(_ series: [(name: String, color: String)], y: Double) -> String {
        var s = "", x = left
        for (name, color) in series {
            s += "<rect x=\"\(n(x))\" y=\"\(n(y - 9))\" width=\"10\" height=\"10\" fill=\"\(color)\"/>"
            s += "<text x=\"\(n(x + 14))\" y=\"\(n(y))\" class=\"tick\">\(escape(name))</text>"
            x += 24 + Double(name.count) * 7
        }
        return s
    }

    /// A centred label broken at spaces into lines that fit `width` (about 6 px a character at the
    /// tick font), at most three; the last keeps the rest.
    static func label(_ text: String, x: Double, y: Double, width: Double) -> String {
        let perLine = max(8, Int(width / 6.2))
        var lines = Format.wrap(text, width: perLine, indent: "")
        if lines.count > 3 { lines = Array(lines.prefix(2)) + [lines.dropFirst(2).joined(separator: " ")] }
        var s = "<text x=\"\(n(x))\" y=\"\(n(y))\" text-anchor=\"middle\" class=\"tick\">"
        for (i, line) in lines.enumerated() {
            s += "<tspan x=\"\(n(x))\" dy=\"\(i == 0 ? "0" : "12")\">\(escape(line))</tspan>"
        }
        return s + "</text>"
    }

    /// Grouped bars: one group per label, one bar per series; `stacked` splits a bar in two parts
    /// (the first drawn solid, the second lighter), e.g. fault and access cycles.
    static func bars(name: String, title: String, unit: String, groups: [String], series: [(name: String, color: String)],
                     values: [[Double?]], lower: [[Double?]]? = nil, lowerLabel: String = "",
                     format: (Double) -> String) -> String {
        let plotHeight = height - top - bottom - 16   // room for group labels of three lines
        let maxValue = values.flatMap { $0.compactMap { $0 } }.max() ?? 0
        let scale = niceScale(maxValue)
        var s = open(name, title: title) + yAxis(scale, label: unit, plotHeight: plotHeight)
        let groupWidth = (width - left - right) / Double(max(1, groups.count))
        let barWidth = min(40, groupWidth * 0.8 / Double(max(1, series.count)))
        for (g, label) in groups.enumerated() {
            let gx = left + Double(g) * groupWidth + (groupWidth - barWidth * Double(series.count)) / 2
            for (k, serie) in series.enumerated() {
                guard let v = values[g][k] else { continue }
                let h = v / scale.top * plotHeight
                let x = gx + Double(k) * barWidth
                let y = top + plotHeight - h
                s += "<rect class=\"mark\" x=\"\(n(x))\" y=\"\(n(y))\" width=\"\(n(barWidth - 2))\" height=\"\(n(max(h, 0.5)))\" fill=\"\(serie.color)\" fill-opacity=\"0.45\"><title>\(escape("\(label) \(serie.name): \(format(v))"))</title></rect>"
                if let lower, let lv = lower[g][k] {
                    let lh = lv / scale.top * plotHeight
                    s += "<rect class=\"mark\" x=\"\(n(x))\" y=\"\(n(top + plotHeight - lh))\" width=\"\(n(barWidth - 2))\" height=\"\(n(max(lh, 0.5)))\" fill=\"\(serie.color)\"><title>\(escape("\(label) \(serie.name) \(lowerLabel): \(format(lv))"))</title></rect>"
                }
            }
            s += Self.label(label, x: left + (Double(g) + 0.5) * groupWidth, y: top + plotHeight + 14, width: groupWidth)
        }
        s += legend(series, y: height - 14)
        if lower != nil {
            s += "<text x=\"\(n(width - right))\" y=\"\(n(height - 5))\" text-anchor=\"end\" class=\"tick\">\(escape("solid: \(lowerLabel); pale: the rest"))</text>"
        }
        return s + "</svg>"
    }

    /// How a line is drawn: its colour, dash pattern (`nil`: solid) and width. Series that may lie on
    /// top of each other differ in dash and width as well as colour, so each stays visible.
    struct Stroke {
        var color: String
        var dash: String?
        var width: Double
    }

    /// Lines over a shared x axis. On a log x axis the range starts a decade below the smallest
    /// value when that value sits on a power of ten, so no line hugs the y axis.
    static func lines(name: String, title: String, xLabel: String, yLabel: String,
                      series: [(name: String, stroke: Stroke, points: [(Double, Double)])],
                      logX: Bool = false, yMax: Double? = nil, width: Double = width) -> String {
        let plotHeight = height - top - bottom
        let plotWidth = width - left - right
        let xs = series.flatMap { $0.points.map(\.0) }
        let ys = series.flatMap { $0.points.map(\.1) }
        let tx: (Double) -> Double = logX ? { log10(max($0, 1e-3)) } : { $0 }
        let xMin = logX ? floor(tx(xs.min() ?? 1) - 0.05) : 0
        let xMax = max(xMin + 1e-9, logX ? max(xMin + 1, ceil(tx(xs.max() ?? 10) + 0.05)) : (xs.max() ?? 1))
        let scale = yMax.map { ($0, $0 / 4) } ?? niceScale(ys.max() ?? 0)
        var s = open(name, title: title, width: width) + yAxis(scale, label: yLabel, plotHeight: plotHeight, width: width)
        // x ticks
        let xScale = niceScale(xMax - xMin)
        let ticks: [Double] = logX ? Array(stride(from: xMin, through: xMax, by: 1))
            : Array(stride(from: xMin, through: xMax + xScale.step / 1000, by: xScale.step))
        for t in ticks {
            let x = left + (t - xMin) / (xMax - xMin) * plotWidth
            let label = logX ? tick(pow(10, t), step: pow(10, t)) : tick(t, step: xScale.step)
            s += "<text x=\"\(n(x))\" y=\"\(n(top + plotHeight + 16))\" text-anchor=\"middle\" class=\"tick\">\(escape(label))</text>"
        }
        s += "<text x=\"\(n(left + plotWidth / 2))\" y=\"\(n(top + plotHeight + 32))\" text-anchor=\"middle\" class=\"axis-label\">\(escape(xLabel))</text>"
        // The widest lines first, so narrower ones on top of them stay visible.
        let drawOrder = series.indices.sorted { (series[$0].stroke.width, $1) > (series[$1].stroke.width, $0) }
        for serie in drawOrder.map({ series[$0] }) where !serie.points.isEmpty {
            let pts = serie.points.map { p in
                n(left + (tx(p.0) - xMin) / (xMax - xMin) * plotWidth) + "," + n(top + plotHeight - min(p.1, scale.0) / scale.0 * plotHeight)
            }
            let dash = serie.stroke.dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
            s += "<polyline class=\"mark\" fill=\"none\" stroke=\"\(serie.stroke.color)\" stroke-width=\"\(n(serie.stroke.width))\"\(dash) points=\"\(pts.joined(separator: " "))\"><title>\(escape(serie.name))</title></polyline>"
        }
        s += lineLegend(series.map { ($0.name, $0.stroke) }, y: height - 10)
        return s + "</svg>"
    }

    /// A legend of line samples, each drawn with its series' dash and width.
    static func lineLegend(_ series: [(name: String, stroke: Stroke)], y: Double) -> String {
        var s = "", x = left
        for (name, stroke) in series {
            let dash = stroke.dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
            s += "<line x1=\"\(n(x))\" x2=\"\(n(x + 24))\" y1=\"\(n(y - 4))\" y2=\"\(n(y - 4))\" stroke=\"\(stroke.color)\" stroke-width=\"\(n(stroke.width))\"\(dash)/>"
            s += "<text x=\"\(n(x + 28))\" y=\"\(n(y))\" class=\"tick\">\(escape(name))</text>"
            x += 40 + Double(name.count) * 7
        }
        return s
    }
}
