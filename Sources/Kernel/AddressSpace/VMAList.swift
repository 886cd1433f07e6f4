import Synchronization
import VMCore

/// The VMAs of an address space, ordered by address and non-overlapping (Linux: the maple tree
/// `mm->mm_mt`). A sorted array with binary search: lookups are O(log n), edits O(n).
public struct VMAList: Sendable {
    public private(set) var areas: ContiguousArray<VMA> = []

    public init() {}

    public var count: Int { areas.count }
    public subscript(index: Int) -> VMA {
        get { areas[index] }
        set { areas[index] = newValue }
    }

    /// Index of the first VMA whose end lies above `va` (Linux: `find_vma()`).
    /// - Complexity: O(log n): the range halves each step whichever way the comparison goes (its
    ///   start moves up or not), a few instructions a step and no bounds checks.
    public func firstIndex(endingAbove va: VirtualAddress) -> Int {
        areas.withUnsafeBufferPointer { a in
            var base = 0, length = a.count
            guard length > 0 else { return 0 }
            // The answer lies in [base, base + length].
            while length > 1 {
                let half = length &>> 1
                base = a[base &+ half].end <= va ? base &+ half : base
                length &-= half
            }
            return a[base].end <= va ? base &+ 1 : base
        }
    }

    /// Index of the VMA that contains `va` (Linux: `vma_lookup()`): the one the calling CPU found last
    /// when it still does (`VMALookupHints`), else by binary search. It writes nothing but its CPU's
    /// hint, atomically, so that faults on several CPUs can look up under the mmap lock held for
    /// reading (an earlier last-found cache, one per list, was a plain write under that shared lock:
    /// a data race Thread Sanitizer found).
    public func index(containing va: VirtualAddress) -> Int? {
        let cpu = SimulatedCPU.current
        return areas.withUnsafeBufferPointer { a in
            let hint = VMALookupHints.index(for: cpu)
            if hint >= 0 && hint < a.count && a[hint].start <= va && va < a[hint].end { return hint }
            let i = firstIndex(endingAbove: va)
            guard i < a.count, a[i].start <= va else { return nil }
            VMALookupHints.set(i, for: cpu)
            return i
        }
    }

    /// The VMA that contains `va` (`index(containing:)`).
    public func vma(containing va: VirtualAddress) -> VMA? {
        index(containing: va).map { areas[$0] }
    }

    /// Indices of the VMAs that intersect `[start, end)`.
    public func indices(intersecting start: VirtualAddress, _ end: VirtualAddress) -> Range<Int> {
        let first = firstIndex(endingAbove: start)
        var last = first
        while last < areas.count && areas[last].start < end { last += 1 }
        return first..<last
    }

    /// Whether any VMA intersects `[start, end)`.
    public func intersects(_ start: VirtualAddress, _ end: VirtualAddress) -> Bool {
        let i = firstIndex(endingAbove: start)
        return i < areas.count && areas[i].start < end
    }

    mutating func insert(_ vma: VMA) {
        let i = firstIndex(endingAbove: vma.start)
        precondition(i == areas.count || areas[i].start >= vma.end, "inserting an overlapping VMA")
        areas.insert(vma, at: i)
    }

    mutating func remove(at index: Int) -> VMA {
        areas.remove(at: index)
    }

    mutating func removeAll() -> ContiguousArray<VMA> {
        defer { areas = [] }
        return areas
    }
}

/// Per simulated CPU (`SimulatedCPU.current`, 256 slots, CPUs beyond sharing), the index of the VMA its
/// last lookup found, in whichever list (Linux 3.15+: the per-thread `vmacache` that `find_vma()` tries
/// first; before, one `mm->mmap_cache`). A hint only: a lookup uses it when the VMA at that index of
/// its own list contains the address, which then is the answer a search gives (VMAs do not overlap),
/// so no answer depends on it. A process whose threads each work in a region of their own looks up
/// once per fault and once per `get_mempolicy()` over as many VMAs as threads; each CPU mostly finds
/// its own again. Not kept in the list: a reference there would be retained around every lookup.
/// Relaxed atomics: lookups on several host threads read lists under the mmap lock held for reading.
enum VMALookupHints {
    private static let slots = 256
    private nonisolated(unsafe) static let indices: UnsafeMutablePointer<Atomic<Int>> = {
        let p = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: slots)
        for i in 0..<slots { (p + i).initialize(to: Atomic(-1)) }
        return p
    }()

    /// The index `cpu` found last, or -1.
    @inline(__always) static func index(for cpu: Int) -> Int {
        (indices + (cpu & (slots - 1))).pointee.load(ordering: .relaxed)
    }

    @inline(__always) static func set(_ index: Int, for cpu: Int) {
        (indices + (cpu & (slots - 1))).pointee.store(index, ordering: .relaxed)
    }
}
