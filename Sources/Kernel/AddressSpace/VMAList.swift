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
    /// - Complexity: O(log n), without a branch on the comparisons: the range halves each step
    ///   whichever way the comparison goes (its start moves up or not), so a process of many VMAs
    ///   (a thread's region each) pays a few instructions a step and no mispredicted jumps.
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

    /// Index of the VMA that contains `va` (Linux: `vma_lookup()`). It reads only, so that faults on
    /// several CPUs can look up under the mmap lock held for reading (an earlier last-found cache was
    /// a write under that shared lock: a data race Thread Sanitizer found).
    public func index(containing va: VirtualAddress) -> Int? {
        let i = firstIndex(endingAbove: va)
        guard i < areas.count, areas[i].start <= va else { return nil }
        return i
    }

    /// The VMA that contains `va`.
    public func vma(containing va: VirtualAddress) -> VMA? {
        let i = firstIndex(endingAbove: va)
        return i < areas.count && areas[i].start <= va ? areas[i] : nil
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
