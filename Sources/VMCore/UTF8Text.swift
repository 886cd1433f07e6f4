/// Where bytes read as text stop being UTF-8, for errors that name the place.
public enum UTF8Text {
    /// The offset of the first byte that does not belong to a valid UTF-8 sequence, or nil if all are valid.
    public static func firstInvalidByte(_ bytes: some Collection<UInt8>) -> Int? {
        var iterator = bytes.makeIterator()
        var decoder = Unicode.UTF8()
        var offset = 0
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): offset += UTF8.width(scalar)
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }
}
