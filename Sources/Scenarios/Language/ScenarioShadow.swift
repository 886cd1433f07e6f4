/// What one process's anonymous memory should contain by Linux's rules; `expect data` compares
/// the backend's bytes with it.
///
/// Private anonymous pages belong to the address space (copied at fork: `[UInt8]` is
/// copy-on-write, like the pages themselves); `MAP_SHARED` anonymous memory lives in a shared
/// object (shmem) that parent and child both map. Operations are applied only after the backend
/// said they succeeded, so their ranges are page-aligned. A page never written reads as zero.
///
///     mappings   [start, end) → private, or shared object + first page index; dontfork flag
///     private    page address → 4096 bytes
struct ShadowAddressSpace {
    static let pageSize: UInt64 = 4096

    struct Mapping {
        var start: UInt64
        var end: UInt64
        var shared: SharedAnonymousMemory?
        /// For shared mappings, the object's page index that `start` maps.
        var sharedPage: UInt64 = 0
        var dontfork = false
    }

    private(set) var mappings: [Mapping] = []
    private var privatePages: [UInt64: [UInt8]] = [:]

    static func pageRound(_ length: UInt64) -> UInt64 { (length &+ pageSize &- 1) & ~(pageSize &- 1) }

    /// A new mapping over `[start, start + length)`, replacing what was there (`MAP_FIXED` semantics).
    mutating func map(start: UInt64, length: UInt64, shared: Bool) {
        let end = start &+ Self.pageRound(length)
        unmap(start: start, end: end)
        insert(Mapping(start: start, end: end, shared: shared ? SharedAnonymousMemory() : nil))
    }

    /// Linux: `munmap()` — the range's private pages are gone.
    mutating func unmap(start: UInt64, length: UInt64) { unmap(start: start, end: start &+ Self.pageRound(length)) }

    private mutating func unmap(start: UInt64, end: UInt64) {
        cut(at: start)
        cut(at: end)
        mappings.removeAll { $0.start >= start && $0.end <= end }
        dropPrivatePages(start: start, end: end)
    }

    /// `MADV_DONTNEED`: private anonymous pages read as zero again; shared memory keeps its data.
    mutating func discard(start: UInt64, length: UInt64) {
        dropPrivatePages(start: start, end: start &+ Self.pageRound(length))
    }

    /// `MADV_DONTFORK` / `MADV_DOFORK`.
    mutating func setDontfork(_ value: Bool, start: UInt64, length: UInt64) {
        let end = start &+ Self.pageRound(length)
        cut(at: start)
        cut(at: end)
        for i in mappings.indices where mappings[i].start >= start && mappings[i].end <= end {
            mappings[i].dontfork = value
        }
    }

    /// Linux: `mremap()` — the mapping and its bytes move from `old` to `new`; growth reads as zero.
    mutating func move(old: UInt64, oldLength: UInt64, newLength: UInt64, to new: UInt64) {
        let oldEnd = old &+ Self.pageRound(oldLength)
        let kept = min(Self.pageRound(oldLength), Self.pageRound(newLength))
        cut(at: old)
        cut(at: old &+ kept)
        let pieces = mappings.filter { $0.start >= old && $0.end <= old &+ kept }
        let pages = privatePages.filter { $0.key >= old && $0.key < old &+ kept }
        unmap(start: old, end: oldEnd)
        let newEnd = new &+ Self.pageRound(newLength)
        unmap(start: new, end: newEnd)
        var last: Mapping?
        for var piece in pieces {
            piece.start = piece.start &- old &+ new
            piece.end = piece.end &- old &+ new
            insert(piece)
            last = piece
        }
        for (address, bytes) in pages { privatePages[address &- old &+ new] = bytes }
        if newLength > oldLength, var grown = last ?? mappings.first(where: { $0.end == new }) {
            grown.sharedPage &+= (grown.end &- grown.start) / Self.pageSize
            grown.start = grown.end
            grown.end = newEnd
            if grown.start < grown.end { insert(grown) }
        }
    }

    /// The child's address space at `fork()`: everything but `MADV_DONTFORK` mappings.
    func forked() -> ShadowAddressSpace {
        var child = ShadowAddressSpace()
        child.mappings = mappings.filter { !$0.dontfork }
        child.privatePages = privatePages.filter { page in child.mappings.contains { $0.start <= page.key && page.key < $0.end } }
        return child
    }

    /// Records a write of `length` bytes of `pattern` at `start` (only where something is mapped).
    mutating func write(start: UInt64, length: UInt64, pattern: DataPattern) {
        var address = start
        let end = start &+ length
        while address < end {
            let page = address & ~(Self.pageSize - 1)
            let chunkEnd = min(end, page &+ Self.pageSize)
            let from = Int(address - page), count = Int(chunkEnd - address)
            if let m = mapping(containing: page) {
                let index = address &- start
                if let object = m.shared {
                    let key = m.sharedPage &+ (page &- m.start) / Self.pageSize
                    var bytes = object.pages[key] ?? Self.zeroPage
                    Self.store(pattern, index: index, into: &bytes, at: from, count: count)
                    object.pages[key] = bytes
                } else {
                    var bytes = privatePages[page] ?? Self.zeroPage
                    Self.store(pattern, index: index, into: &bytes, at: from, count: count)
                    privatePages[page] = bytes
                }
            }
            address = chunkEnd
        }
    }

    /// What `[start, start + length)` should contain, or where the first unmapped byte is.
    func expectedBytes(start: UInt64, length: UInt64) -> DataRead {
        var result: [UInt8] = []
        result.reserveCapacity(Int(clamping: length))
        var address = start
        let end = start &+ length
        while address < end {
            let page = address & ~(Self.pageSize - 1)
            let chunkEnd = min(end, page &+ Self.pageSize)
            guard let m = mapping(containing: page) else { return .unmapped(address: address) }
            let bytes: [UInt8]? = if let object = m.shared {
                object.pages[m.sharedPage &+ (page &- m.start) / Self.pageSize]
            } else {
                privatePages[page]
            }
            let range = Int(address - page) ..< Int(chunkEnd - page)
            if let bytes { result.append(contentsOf: bytes[range]) } else { result.append(contentsOf: repeatElement(0, count: range.count)) }
            address = chunkEnd
        }
        return .bytes(result)
    }

    // MARK: Helpers

    private static let zeroPage = [UInt8](repeating: 0, count: Int(pageSize))

    private static func store(_ pattern: DataPattern, index: UInt64, into bytes: inout [UInt8], at offset: Int, count: Int) {
        bytes.withUnsafeMutableBytes { raw in
            pattern.fill(UnsafeMutableRawBufferPointer(rebasing: raw[offset ..< offset + count]), from: index)
        }
    }

    private func mapping(containing address: UInt64) -> Mapping? {
        mappings.first { $0.start <= address && address < $0.end }
    }

    private mutating func insert(_ mapping: Mapping) {
        let index = mappings.firstIndex { $0.start > mapping.start } ?? mappings.endIndex
        mappings.insert(mapping, at: index)
    }

    /// Splits the mapping that straddles `address`, like `split_vma()`.
    private mutating func cut(at address: UInt64) {
        guard let i = mappings.firstIndex(where: { $0.start < address && address < $0.end }) else { return }
        var tail = mappings[i]
        tail.sharedPage &+= (address &- tail.start) / Self.pageSize
        tail.start = address
        mappings[i].end = address
        mappings.insert(tail, at: i + 1)
    }

    private mutating func dropPrivatePages(start: UInt64, end: UInt64) {
        for key in privatePages.keys where key >= start && key < end { privatePages[key] = nil }
    }
}

/// The pages of one `MAP_SHARED | MAP_ANONYMOUS` mapping (a shmem object), shared across fork.
final class SharedAnonymousMemory {
    var pages: [UInt64: [UInt8]] = [:]
}
