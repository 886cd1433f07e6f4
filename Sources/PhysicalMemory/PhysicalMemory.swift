import VMCore

/// Simulated physical memory: the frame table, the buddy allocator of its one zone (Normal), folios,
/// and in data mode the frames' bytes.
public final class PhysicalMemory: @unchecked Sendable {
    /// Whether frames carry bytes.
    public enum Mode: String, Sendable, CaseIterable {
        /// Every frame has 4 KiB of real bytes: what programs write can be read back.
        case data
        /// Metadata only: 16 bytes per frame, for large memories and traces.
        case metadata
    }

    public let mode: Mode
    public let totalPages: Int
    public let frames: FrameTable
    public let buddy: BuddyAllocator
    /// The bytes, in data mode.
    public let storage: FrameStorage?

    /// The smallest memory the model accepts: one max-order block (4 MiB).
    public static let minimumBytes: UInt64 = PageOrder.max.bytes

    /// Checks a size given from outside; returns a message saying what is wrong, or nil.
    public static func problem(withSize bytes: UInt64) -> String? {
        if bytes % PageGeometry.pageSize != 0 { return "memory size \(bytes) is not a multiple of 4 KiB" }
        if bytes < minimumBytes { return "memory size \(ByteCount.human(bytes)) is below the minimum of 4M" }
        if bytes > (UInt64(UInt32.max) << PageGeometry.pageShift) { return "memory size \(ByteCount.human(bytes)) is above the maximum of 16T" }
        return nil
    }

    /// Memory of `bytes`; `perCPULists` turns on per-CPU lists for each of `cpus` CPUs.
    /// - Precondition: `problem(withSize: bytes) == nil`.
    public init(bytes: UInt64, mode: Mode, watermarks: Watermarks? = nil, perCPULists: Bool = false,
                cpus: Int = SimulatedCPU.defaultCount) {
        precondition(Self.problem(withSize: bytes) == nil, Self.problem(withSize: bytes) ?? "")
        self.mode = mode
        totalPages = Int(bytes >> PageGeometry.pageShift)
        frames = FrameTable(frames: totalPages)
        buddy = BuddyAllocator(frames: frames, watermarks: watermarks ?? .linuxDefaults(pages: totalPages),
                               perCPULists: perCPULists, cpus: cpus)
        if mode == .data {
            guard let s = FrameStorage(frames: totalPages) else {
                preconditionFailure("the host refused to reserve \(ByteCount.human(bytes)) for data mode")
            }
            storage = s
        } else {
            storage = nil
        }
    }

    deinit { frames.release() }

    public var freePages: Int { buddy.freePages }

    /// Whether more than `pages` base pages are free (`BuddyAllocator.hasFreePages(above:)`). Here so
    /// that the kernel's watermark check reaches the allocator through one reference, which Swift
    /// does not retain around the call (docs/concurrency.md).
    public func hasFreePages(above pages: Int) -> Bool { buddy.hasFreePages(above: pages) }

    /// Allocates a folio of 2^order frames: the head has refcount 1 and `.head` when order > 0; each
    /// tail links to the head (Linux: `folio_alloc()`, `prep_compound_page()`). Zeroes the bytes when
    /// `zeroed` and in data mode (Linux: `__GFP_ZERO`).
    public func allocateFolio(order: PageOrder, kind: FrameKind, zeroed: Bool = true,
                              reserve: BuddyAllocator.Reserve = .min) -> PFN? {
        guard let head = buddy.allocate(order: order, reserve: reserve) else { return nil }
        prepareFolio(head, order: order, kind: kind)
        if zeroed, let storage { storage.zero(head, pages: order.pages) }
        return head
    }

    /// Writes a new folio's records: the head's kind, order and refcount 1, `.head` and the tails'
    /// links when order > 0 (Linux: `prep_new_page()`, `prep_compound_page()`).
    @inline(__always)
    func prepareFolio(_ head: PFN, order: PageOrder, kind: FrameKind) {
        if order.rawValue == 0 {
            frames.setHeader(head, kind: kind, order: order, flags: [])
        } else {
            frames.setHeader(head, kind: kind, order: order, flags: .head)
            frames.initializeTails(of: head, count: order.pages, kind: kind)
        }
        frames.setRefcount(head, 1)
    }

    /// Gives a folio back to the allocator (Linux: `free_compound_page()`, `free_unref_page()`).
    /// - Precondition: nothing maps it and its refcount has dropped to zero.
    public func freeFolio(_ head: PFN) {
        precondition(!frames.flags(head).contains(.tail), "freeing a tail page")
        precondition(frames.refcount(head) == 0, "freeing a referenced folio (\(head), refcount \(frames.refcount(head)))")
        precondition(frames.mapcount(head) == 0, "freeing a mapped folio")
        buddy.free(head, order: frames.order(head))
    }

    /// Order of the folio whose head is `head`.
    @inlinable public func folioOrder(_ head: PFN) -> PageOrder { frames.order(head) }
}
