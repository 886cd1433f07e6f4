import VMCore

/// The VMAs of an address space, ordered by address and non-overlapping (Linux: the maple tree
/// `mm->mm_mt`). A sorted array with binary search: lookups are O(log n), edits O(n).
public struct VMAList: Sendable {
    public private(set) var areas: ContiguousArray<VMA> = []
    /// Index of the last VMA a lookup found (Linux: the per-thread `vmacache` of older kernels).
    private var lastFound = 0

    public init() {}

    public var count: Int { areas.count }
    public subscript(index: Int) -> VMA {
        get { areas[index] }
        set { areas[index] = newValue }
    }

    /// Index of the first VMA whose end lies above `va` (Linux: `find_vma()`).
    public func firstIndex(endingAbove va: VirtualAddress) -> Int {
        var low = 0, high = areas.count
        while low < high {
            let mid = (low + high) / 2
            if areas[mid].end > va { high = mid } else { low = mid + 1 }
        }
        return low
    }

    /// Index of the VMA that contains `va` (Linux: `vma_lookup()`).
    public mutating func index(containing va: VirtualAddress) -> Int? {
        if lastFound < areas.count, areas[lastFound].contains(va) { return lastFound }
        let i = firstIndex(endingAbove: va)
        guard i < areas.count, areas[i].start <= va else { return nil }
        lastFound = i
        return i
    }

    /// The VMA that contains `va`, without touching the lookup cache.
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
        lastFound = i
    }

    mutating func remove(at index: Int) -> VMA {
        lastFound = 0
        return areas.remove(at: index)
    }

    mutating func removeAll() -> ContiguousArray<VMA> {
        defer { areas = []; lastFound = 0 }
        return areas
    }
}
