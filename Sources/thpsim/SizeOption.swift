import ArgumentParser
import VMCore

/// Parses a size option's value (`4G`, `512M`, `4096`; `ByteCount.parse`), naming the option and
/// saying plainly when the value is negative.
func parseSize(_ text: String, option: String) throws -> UInt64 {
    if text.hasPrefix("-") {
        throw ValidationError("\(option): '\(text)' is negative; give a positive size (e.g. 4G, 512M)")
    }
    guard let bytes = ByteCount.parse(text) else { throw ValidationError("\(option): '\(text)' is not a size (e.g. 4G, 512M)") }
    return bytes
}

/// Parses a duration option's value in simulated time (`30s`, `500ms`, `2m`, `1h`; a bare number is
/// milliseconds) into milliseconds, naming the option when the value is not one.
func parseMilliseconds(_ text: String, option: String) throws -> UInt64 {
    let units: [(suffix: String, ms: UInt64)] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)]
    let trimmed = text
    var number = Substring(trimmed), scale: UInt64 = 1
    for u in units where trimmed.hasSuffix(u.suffix) {
        number = trimmed.dropLast(u.suffix.count)
        scale = u.ms
        break
    }
    guard !number.isEmpty, number.allSatisfy(\.isASCII), let value = UInt64(number),
          case (let ms, false) = value.multipliedReportingOverflow(by: scale) else {
        throw ValidationError("\(option): '\(text)' is not a duration (e.g. 30s, 500ms, 2m)")
    }
    return ms
}
