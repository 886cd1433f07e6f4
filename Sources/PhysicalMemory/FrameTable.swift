#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import VMCore
import HostIntrinsics

/// What a frame is used for; the frame table records exactly one owner per frame.
public enum FrameKind: UInt8, Sendable, CaseIterable {
    /// In the buddy allocator's free lists (the head of a free block, or inside one).
    case free = 0
    /// Part of an anonymous folio mapped by user page tables.
    case anonymous = 1
    /// A page-table page at any level.
    case pageTable = 2
    /// The shared zero page (Linux: `ZERO_PAGE(0)`), or a part of the huge zero page.
    case zeroPage = 3
    /// Backing of a shared anonymous mapping (Linux: shmem).
    case shmem = 4
    /// Taken by the kernel for something that is not modelled (reserved at boot, test holds).
    case kernel = 5
}

/// Per-frame flag bits (Linux: `enum pageflags`, a subset).
public struct FrameFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// First frame of a folio of order > 0 (Linux: `PG_head`).
    @inlinable public static var head: FrameFlags { FrameFlags(rawValue: 1 << 0) }
    /// Any other frame of such a folio; its link word holds the head's PFN (Linux: `compound_head`).
    @inlinable public static var tail: FrameFlags { FrameFlags(rawValue: 1 << 1) }
    /// First frame of a free block in the buddy allocator (Linux: `PageBuddy`).
    @inlinable public static var buddy: FrameFlags { FrameFlags(rawValue: 1 << 2) }
    /// On an LRU list (Linux: `PG_lru`).
    @inlinable public static var lru: FrameFlags { FrameFlags(rawValue: 1 << 3) }
    /// Written since it was last cleaned (Linux: `PG_dirty`).
    @inlinable public static var dirty: FrameFlags { FrameFlags(rawValue: 1 << 4) }
    /// Anonymous memory that swap backs (Linux: `PG_swapbacked`).
    @inlinable public static var swapBacked: FrameFlags { FrameFlags(rawValue: 1 << 5) }
    /// The per-head-page bit spinlock of the 2010 design (Linux 2.6.38: `PG_compound_lock`).
    @inlinable public static var compoundLock: FrameFlags { FrameFlags(rawValue: 1 << 6) }
    /// Only one process maps it; a write may reuse it without copying (Linux: `PG_anon_exclusive`).
    @inlinable public static var anonExclusive: FrameFlags { FrameFlags(rawValue: 1 << 7) }
    /// Recently referenced (Linux: `PG_referenced`).
    @inlinable public static var referenced: FrameFlags { FrameFlags(rawValue: 1 << 8) }
    /// On the active LRU list (Linux: `PG_active`).
    @inlinable public static var active: FrameFlags { FrameFlags(rawValue: 1 << 9) }
    /// First frame of a free block held on a per-CPU list rather than the free lists; it does not merge
    /// with its buddy until drained (Linux: a page on `pcp->lists`).
    @inlinable public static var perCPU: FrameFlags { FrameFlags(rawValue: 1 << 10) }
    /// On the deferred-split queue (Linux: a non-empty `folio->_deferred_list`).
    @inlinable public static var deferredSplit: FrameFlags { FrameFlags(rawValue: 1 << 11) }
    /// Some of its pages are unmapped while others are still mapped (Linux 6.12+: `PG_partially_mapped`).
    @inlinable public static var partiallyMapped: FrameFlags { FrameFlags(rawValue: 1 << 12) }
    /// Stands for a swap slot in the swap cache, which holds a reference on it (Linux: `PG_swapcache`).
    @inlinable public static var swapCache: FrameFlags { FrameFlags(rawValue: 1 << 13) }
    /// On the head of a PMD-order folio: some tail's record has been written out (see `FrameTable`,
    /// "implicit tails"), so freeing the folio must clear all of its records. The model's own; Linux
    /// writes every tail's `struct page` when it makes a compound page.
    @inlinable public static var explicitTails: FrameFlags { FrameFlags(rawValue: 1 << 14) }
    /// On the head of a free block: every byte of the block is zero, cleared ahead of its allocation by
    /// a policy's pre-zeroing thread; splitting the block keeps it on both halves, merging drops it
    /// (HawkEye: `PG_zeroed`).
    @inlinable public static var preZeroed: FrameFlags { FrameFlags(rawValue: 1 << 15) }
}

/// The frame table: one 16-byte record per 4 KiB frame, a flat array indexed by PFN (Linux: `mem_map`,
/// whose `struct page` is 64 bytes).
///
/// ```
///  word 0                         word 1          word 2          word 3
/// +--------+--------+------------+---------------+---------------+---------------+
/// | flags  | order  |   kind     |   refcount    |   mapcount    |     link      |
/// | 16 bit | 8 bit  |   8 bit    |   (or next    |   (or prev    | head PFN of a |
/// |        |        |            |  free block)  |  free block)  | tail; table   |
/// +--------+--------+------------+---------------+---------------+ slot; index  |
///                                                                 +---------------+
/// ```
/// Invariant: a frame of kind `.free` carries no refcount or mapcount; its words 1 and 2 are the
/// free-list links when it heads a free block (`.buddy`). Every word is an atomic, so lock-free
/// readers (gup-fast, the invariant checker) see whole values; relaxed loads cost a plain load.
///
/// **Implicit tails.** A PMD-order folio's 511 tail records are not written when it is allocated
/// (Linux's `prep_compound_page()` writes each tail's `compound_head`): a freed block's records are
/// all zero, and a zero word 0 inside a 512-frame block whose first frame is a PMD-order head reads as
/// a tail of that head (`header(_:)`, `head(of:)`). Words 1 and 2 of such a tail are real (a tail's
/// pins and mapcount start at zero, as the free block left them). A write to a tail's word 0 first
/// writes the record out (`materializeTail`) and marks the head `.explicitTails`; freeing a folio
/// without that mark clears only its head and the three tails that hold folio fields. A split writes
/// every tail's new header before it changes the head's, so a reader that finds the head changed and
/// reads the tail again sees the tail's new header. Writing 8 KiB of tail records per huge fault was
/// most of its cost and, on two CPUs, most of their memory bandwidth (docs/performance.md).
///
/// A value of this type is a view of the table: the address of its words and their count, copied
/// freely. `PhysicalMemory` owns the words and releases them (`release()`) when it goes. A view and
/// not a class, because every path of the model reaches the table: an object's reference count,
/// retained and released around each use by CPUs faulting at once, would be a cache line every
/// fault writes (docs/performance.md, concurrent huge faults).
public struct FrameTable: @unchecked Sendable {
    /// Number of frames.
    public let count: Int
    @usableFromInline let words: UnsafeMutablePointer<Atomic<UInt32>>

    /// A link value meaning "no frame".
    public static let noLink: UInt32 = .max

    public init(frames: Int) {
        precondition(frames > 0 && frames <= Int(UInt32.max))
        count = frames
        // Zeroed words are zero atomics; host huge pages, because faults and scanners reach records
        // all over the table.
        words = HostMemory.allocate(Atomic<UInt32>.self, count: frames * 4)
    }

    /// Returns the words to the host; no view of this table may be used afterwards.
    func release() {
        HostMemory.release(words, count: count * 4)
    }

    /// Bytes of metadata per frame.
    public static let bytesPerFrame = 16

    @inlinable func word(_ pfn: PFN, _ w: Int) -> UnsafeMutablePointer<Atomic<UInt32>> {
        words + (pfn.index &* 4 &+ w)
    }

    // MARK: Word 0: flags, order, kind

    /// Word 0 of `pfn`'s record as it reads: the stored word, or for an implicit tail the header of a
    /// tail of its head's kind.
    @inlinable func header(_ pfn: PFN) -> UInt32 {
        let stored = word(pfn, 0).pointee.load(ordering: .acquiring)
        return stored != 0 ? stored : implicitHeader(pfn)
    }

    /// The header of `pfn`, whose word 0 read zero: a tail's if the frame is inside a PMD-order folio,
    /// else zero. If the block's first frame is no longer such a head, a split or a free may have
    /// changed it after writing this frame's record, so the record is read again.
    @usableFromInline func implicitHeader(_ pfn: PFN) -> UInt32 {
        guard let head = implicitHead(pfn) else { return word(pfn, 0).pointee.load(ordering: .acquiring) }
        return Self.tailHeader(kind: head.kind)
    }

    /// The head of the PMD-order folio `pfn` would be an implicit tail of, with the head's kind.
    @usableFromInline func implicitHead(_ pfn: PFN) -> (pfn: PFN, kind: UInt32)? {
        let mask = UInt32(PageGeometry.pmdOrder.pages - 1)
        guard pfn.rawValue & mask != 0 else { return nil }
        let head = PFN(pfn.rawValue & ~mask)
        let h = word(head, 0).pointee.load(ordering: .acquiring)
        guard h & UInt32(FrameFlags.head.rawValue) != 0,
              (h >> 16) & 0xFF == UInt32(PageGeometry.pmdOrder.rawValue),
              h >> 24 != UInt32(FrameKind.free.rawValue) else { return nil }
        return (head, h >> 24)
    }

    @inlinable static func tailHeader(kind: UInt32) -> UInt32 { UInt32(FrameFlags.tail.rawValue) | kind << 24 }

    /// Writes out the record of `pfn` if it is an implicit tail, before its word 0 changes: the link
    /// first, then word 0, so a reader that sees `.tail` sees the head; the head is marked first, so
    /// that freeing the folio clears every record.
    @usableFromInline func materializeTail(_ pfn: PFN) {
        guard let head = implicitHead(pfn) else { return }
        word(head.pfn, 0).pointee.bitwiseOr(UInt32(FrameFlags.explicitTails.rawValue), ordering: .acquiringAndReleasing)
        word(pfn, 3).pointee.store(head.pfn.rawValue, ordering: .relaxed)
        _ = word(pfn, 0).pointee.compareExchange(expected: 0, desired: Self.tailHeader(kind: head.kind),
                                                 ordering: .acquiringAndReleasing)
    }

    @inlinable public func flags(_ pfn: PFN) -> FrameFlags {
        FrameFlags(rawValue: UInt16(truncatingIfNeeded: header(pfn)))
    }
    @inlinable public func order(_ pfn: PFN) -> PageOrder {
        PageOrder(rawValue: UInt8(truncatingIfNeeded: header(pfn) >> 16))
    }
    @inlinable public func kind(_ pfn: PFN) -> FrameKind {
        FrameKind(rawValue: UInt8(truncatingIfNeeded: header(pfn) >> 24))!
    }
    /// Sets word 0 whole: the frame's kind, order and flags.
    @inlinable public func setHeader(_ pfn: PFN, kind: FrameKind, order: PageOrder, flags: FrameFlags) {
        let value = UInt32(flags.rawValue) | UInt32(order.rawValue) << 16 | UInt32(kind.rawValue) << 24
        word(pfn, 0).pointee.store(value, ordering: .releasing)
    }
    /// Makes frames `head + 1 ..< head + count` tails of `head`, of `kind`, with no refcount or
    /// mapcount (Linux: the loop of `prep_compound_page()`). A PMD-order folio's tails stay implicit
    /// (above): nothing is written. Other folios are private to their allocator until an entry that
    /// maps them is published with release ordering, so their records are written with streaming
    /// stores and one fence (`thpsim_write_frame_records`).
    public func initializeTails(of head: PFN, count: Int, kind: FrameKind) {
        guard count > 1, count != PageGeometry.pmdOrder.pages else { return }
        thpsim_write_frame_records(plainWords(head + 1), count - 1, Self.tailHeader(kind: UInt32(kind.rawValue)),
                                   head.rawValue)
    }

    /// Atomically sets flag bits; returns the flags as they were (Linux: `test_and_set_bit()`).
    @inlinable @discardableResult public func insertFlags(_ pfn: PFN, _ f: FrameFlags) -> FrameFlags {
        let w = word(pfn, 0)
        if w.pointee.load(ordering: .relaxed) == 0 { materializeTail(pfn) }
        return FrameFlags(rawValue: UInt16(truncatingIfNeeded: w.pointee.bitwiseOr(UInt32(f.rawValue), ordering: .acquiringAndReleasing).oldValue))
    }
    /// Sets flag bits of a frame no other thread can reach yet (a new folio before it is published),
    /// without a locked read-modify-write; returns the flags as they were (Linux: the non-atomic
    /// `__folio_set_*()` helpers).
    @inlinable @discardableResult public func insertFlagsUnshared(_ pfn: PFN, _ f: FrameFlags) -> FrameFlags {
        let w = word(pfn, 0)
        if w.pointee.load(ordering: .relaxed) == 0 { materializeTail(pfn) }
        let old = w.pointee.load(ordering: .relaxed)
        w.pointee.store(old | UInt32(f.rawValue), ordering: .releasing)
        return FrameFlags(rawValue: UInt16(truncatingIfNeeded: old))
    }
    /// Atomically clears flag bits; returns the flags as they were (Linux: `test_and_clear_bit()`).
    @inlinable @discardableResult public func removeFlags(_ pfn: PFN, _ f: FrameFlags) -> FrameFlags {
        let w = word(pfn, 0)
        if w.pointee.load(ordering: .relaxed) == 0 { materializeTail(pfn) }
        return FrameFlags(rawValue: UInt16(truncatingIfNeeded: w.pointee.bitwiseAnd(~UInt32(f.rawValue), ordering: .acquiringAndReleasing).oldValue))
    }

    // MARK: Word 1: refcount (Linux: page->_refcount)

    @inlinable public func refcount(_ pfn: PFN) -> Int32 {
        Int32(bitPattern: word(pfn, 1).pointee.load(ordering: .acquiring))
    }
    @inlinable public func setRefcount(_ pfn: PFN, _ value: Int32) {
        word(pfn, 1).pointee.store(UInt32(bitPattern: value), ordering: .releasing)
    }
    /// Adds `delta` and returns the new count (Linux: `page_ref_add_return()`).
    @inlinable @discardableResult public func addRefcount(_ pfn: PFN, _ delta: Int32) -> Int32 {
        Int32(bitPattern: word(pfn, 1).pointee.wrappingAdd(UInt32(bitPattern: delta), ordering: .acquiringAndReleasing).newValue)
    }
    /// Takes a reference unless the count is zero (Linux: `get_page_unless_zero()`), as lockless
    /// walkers must: a zero count means the frame is being freed.
    @inlinable public func tryGetReference(_ pfn: PFN) -> Bool {
        var current = word(pfn, 1).pointee.load(ordering: .relaxed)
        while current != 0 {
            let (exchanged, original) = word(pfn, 1).pointee.compareExchange(
                expected: current, desired: current &+ 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    // MARK: Folio fields: word 1 of the first tails (Linux: the `struct folio` fields in tail pages)

    /// Counts a large folio keeps in its first tails, whose refcount words are otherwise unused when
    /// pins live in the head (Linux 6.18 keeps `_entire_mapcount`, `_pincount` and `_nr_pages_mapped`
    /// in the folio's first tail pages too). Needs order ≥ 2.
    public enum FolioField: Int, Sendable {
        /// PMDs that map the whole folio (Linux: `folio->_entire_mapcount` + 1).
        case entireMapcount = 1
        /// FOLL_PIN pins of the folio (Linux: `folio->_pincount`).
        case pincount = 2
        /// Pages of the folio that PTEs map, plus `entirelyMapped` while a PMD maps it (Linux:
        /// `folio->_nr_pages_mapped` with `ENTIRELY_MAPPED`).
        case pagesMapped = 3
    }
    /// The bit of `pagesMapped` that says a PMD maps the folio (Linux: `ENTIRELY_MAPPED`).
    public static let entirelyMapped: Int32 = 0x80_0000

    @inlinable public func folioField(_ head: PFN, _ field: FolioField) -> Int32 {
        Int32(bitPattern: word(head + field.rawValue, 1).pointee.load(ordering: .acquiring))
    }
    /// Adds `delta` to a folio field and returns the new value.
    @inlinable @discardableResult public func addFolioField(_ head: PFN, _ field: FolioField, _ delta: Int32) -> Int32 {
        Int32(bitPattern: word(head + field.rawValue, 1).pointee.wrappingAdd(UInt32(bitPattern: delta), ordering: .acquiringAndReleasing).newValue)
    }
    @inlinable public func setFolioField(_ head: PFN, _ field: FolioField, _ value: Int32) {
        word(head + field.rawValue, 1).pointee.store(UInt32(bitPattern: value), ordering: .releasing)
    }

    /// Freezes a refcount: replaces `expected` by zero, so that `tryGetReference` fails until it is
    /// set again (Linux: `folio_ref_freeze()`). False when the count was not `expected`.
    @inlinable public func freezeRefcount(_ pfn: PFN, expected: Int32) -> Bool {
        word(pfn, 1).pointee.compareExchange(expected: UInt32(bitPattern: expected), desired: 0,
                                             ordering: .acquiringAndReleasing).exchanged
    }

    // MARK: Word 2: mapcount (Linux: page->_mapcount + 1)

    /// How many page-table entries map this frame (zero when unmapped; Linux stores it biased by -1).
    @inlinable public func mapcount(_ pfn: PFN) -> Int32 {
        Int32(bitPattern: word(pfn, 2).pointee.load(ordering: .acquiring))
    }
    @inlinable public func setMapcount(_ pfn: PFN, _ value: Int32) {
        word(pfn, 2).pointee.store(UInt32(bitPattern: value), ordering: .releasing)
    }
    @inlinable @discardableResult public func addMapcount(_ pfn: PFN, _ delta: Int32) -> Int32 {
        Int32(bitPattern: word(pfn, 2).pointee.wrappingAdd(UInt32(bitPattern: delta), ordering: .acquiringAndReleasing).newValue)
    }

    // MARK: Word 2 of a page-table frame: the deposit list

    /// The next page table on a deposit list, or nil (Linux: the `lru` link of `pmd_huge_pte`). A PMD
    /// table's word 2 heads the list of PTE tables deposited beside its huge PMDs; each deposited
    /// table's word 2 links to the next.
    @inlinable public func depositLink(_ pfn: PFN) -> PFN? {
        let v = word(pfn, 2).pointee.load(ordering: .acquiring)
        return v == 0 ? nil : PFN(v - 1)
    }
    @inlinable public func setDepositLink(_ pfn: PFN, _ next: PFN?) {
        word(pfn, 2).pointee.store(next.map { $0.rawValue + 1 } ?? 0, ordering: .releasing)
    }

    // MARK: Word 3: link

    /// Where `pfn`'s record lives in host memory, for a host prefetch hint (nothing reads through it).
    @inlinable public func recordAddress(_ pfn: PFN) -> UnsafeRawPointer { UnsafeRawPointer(word(pfn, 0)) }

    /// The link word: a tail's head PFN, a page table's slot, a shmem page's index.
    @inlinable public func link(_ pfn: PFN) -> UInt32 { word(pfn, 3).pointee.load(ordering: .acquiring) }
    @inlinable public func setLink(_ pfn: PFN, _ value: UInt32) { word(pfn, 3).pointee.store(value, ordering: .releasing) }

    // MARK: Free-list links (words 1 and 2 of a free block's head)

    @inlinable func nextFree(_ pfn: PFN) -> UInt32 { word(pfn, 1).pointee.load(ordering: .relaxed) }
    @inlinable func prevFree(_ pfn: PFN) -> UInt32 { word(pfn, 2).pointee.load(ordering: .relaxed) }
    @inlinable func setNextFree(_ pfn: PFN, _ v: UInt32) { word(pfn, 1).pointee.store(v, ordering: .relaxed) }
    @inlinable func setPrevFree(_ pfn: PFN, _ v: UInt32) { word(pfn, 2).pointee.store(v, ordering: .relaxed) }

    /// Resets a frame to the free state with no links.
    @inlinable func clear(_ pfn: PFN) {
        for w in 0..<4 { word(pfn, w).pointee.store(0, ordering: .relaxed) }
    }

    /// Zeroes the records of `count` frames from `start` on, with streaming stores as
    /// `initializeTails` writes them (a freed 2 MiB folio: 8 KiB of records nobody reads next).
    func clear(_ start: PFN, count: Int) {
        thpsim_write_frame_records(plainWords(start), count, 0, 0)
    }

    /// Zeroes the records of the folio headed by `head` as it is freed: all of them, or for a
    /// PMD-order folio whose tails stayed implicit, the head and the three tails that hold folio fields.
    func clearFolio(_ head: PFN, order: PageOrder) {
        let h = word(head, 0).pointee.load(ordering: .relaxed)
        if order == PageGeometry.pmdOrder && h & UInt32(FrameFlags.head.rawValue) != 0
            && h & UInt32(FrameFlags.explicitTails.rawValue) == 0 {
            assert(implicitTailsAreBlank(head), "freeing \(head), whose implicit tails carry counts")
            clear(head, count: 4)
        } else {
            clear(head, count: order.pages)
        }
    }

    /// Whether the implicit tails beyond the folio fields of `head` have all-zero records (checked in
    /// debug builds as a folio is freed: a tail's pins and mapcount must be back to zero).
    private func implicitTailsAreBlank(_ head: PFN) -> Bool {
        (4..<PageGeometry.pmdOrder.pages).allSatisfy { i in
            (0..<4).allSatisfy { word(head + i, $0).pointee.load(ordering: .relaxed) == 0 }
        }
    }

    /// The first frame below `end` whose record has a non-zero word, or nil (for the invariant checker:
    /// the buddy allocator's untouched blocks must have none). Reading never-written records costs the
    /// host no memory: they are the host's zero page.
    func firstWrittenRecord(below end: Int) -> PFN? {
        let chunk = 256   // records per 4 KiB, compared at once
        return withUnsafeTemporaryAllocation(byteCount: chunk * Self.bytesPerFrame, alignment: 64) { zero -> PFN? in
            zero.initializeMemory(as: UInt8.self, repeating: 0)
            var start = 0
            while start < end {
                let n = min(chunk, end - start)
                if memcmp(UnsafeRawPointer(words + start * 4), zero.baseAddress!, n * Self.bytesPerFrame) != 0 {
                    return (start..<(start + n)).first { i in (0..<4).contains { word(PFN(UInt32(i)), $0).pointee.load(ordering: .relaxed) != 0 } }
                        .map { PFN(UInt32($0)) }
                }
                start += n
            }
            return nil
        }
    }

    /// The words of `pfn`'s record as plain 32-bit integers, for the C writers of whole records.
    private func plainWords(_ pfn: PFN) -> UnsafeMutablePointer<UInt32> {
        UnsafeMutableRawPointer(words + pfn.index &* 4).assumingMemoryBound(to: UInt32.self)
    }

    /// The head of the folio `pfn` belongs to (Linux: `compound_head()`, `page_folio()`).
    @inlinable public func head(of pfn: PFN) -> PFN {
        let stored = word(pfn, 0).pointee.load(ordering: .acquiring)
        if stored == 0 { return implicitHead(pfn)?.pfn ?? headOfReread(pfn) }
        return stored & UInt32(FrameFlags.tail.rawValue) != 0 ? PFN(link(pfn)) : pfn
    }

    /// `head(of:)` when `pfn` read as neither an implicit tail nor anything else: its record may have
    /// been written by a split meanwhile (see `implicitHeader`).
    @usableFromInline func headOfReread(_ pfn: PFN) -> PFN {
        word(pfn, 0).pointee.load(ordering: .acquiring) & UInt32(FrameFlags.tail.rawValue) != 0 ? PFN(link(pfn)) : pfn
    }
}
