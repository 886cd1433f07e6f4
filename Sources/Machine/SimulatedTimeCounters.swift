/// Counters by index — per CPU or per lock class — in a buffer their `SimulatedTime` owns: read like
/// an array, and written without the uniqueness check an `Array` makes before each write (six per
/// fault). A view of the buffer, valid while its `SimulatedTime` lives.
public struct SimulatedTimeCounters<Element>: RandomAccessCollection {
    @usableFromInline let base: UnsafeMutablePointer<Element>
    public let count: Int

    /// `count` counters of `value`; `release()` gives the buffer back.
    init(repeating value: Element, count: Int) {
        base = .allocate(capacity: count)
        base.initialize(repeating: value, count: count)
        self.count = count
    }

    func release() {
        base.deinitialize(count: count)
        base.deallocate()
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    public subscript(index: Int) -> Element {
        @inlinable get {
            precondition(index >= 0 && index < count, "counter index out of range")
            return base[index]
        }
        nonmutating set {
            precondition(index >= 0 && index < count, "counter index out of range")
            base[index] = newValue
        }
    }
}
