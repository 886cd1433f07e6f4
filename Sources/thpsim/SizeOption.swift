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
