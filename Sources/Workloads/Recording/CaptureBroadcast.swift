import Foundation

/// Hands the bytes of one capture stream to several readers on their own threads: the trace file
/// being written and each replaying cell decode the same stream at their own pace. The producer
/// blocks while any reader is `capacity` buffers behind, so memory stays bounded and a slow model
/// slows the recorded program down instead of filling memory (the pipe behind it fills and the
/// plugin's writes wait).
public final class CaptureBroadcast: @unchecked Sendable {
    private let condition = NSCondition()
    private var queues: [[[UInt8]]]
    private var heads: [Int]
    private var ended = false
    private var cancelled = false
    public let capacity: Int

    /// - Parameter readers: how many `Input`s will read the stream.
    public init(readers: Int, capacity: Int = 64) {
        queues = Array(repeating: [], count: readers)
        heads = Array(repeating: 0, count: readers)
        self.capacity = capacity
    }

    /// Publishes `bytes` to every reader; waits while a reader's queue is full. Returns false once
    /// the stream was cancelled (a reader failed): the producer should stop.
    @discardableResult
    public func publish(_ bytes: [UInt8]) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while !cancelled && queues.indices.contains(where: { queues[$0].count - heads[$0] >= capacity }) {
            condition.wait()
        }
        guard !cancelled else { return false }
        for i in queues.indices { queues[i].append(bytes) }
        condition.broadcast()
        return true
    }

    /// No more bytes: readers see the end of their input after what was published.
    public func end() {
        condition.lock()
        ended = true
        condition.broadcast()
        condition.unlock()
    }

    /// Stops the stream: the producer's next `publish` returns false, readers see the end.
    public func cancel() {
        condition.lock()
        cancelled = true
        ended = true
        condition.broadcast()
        condition.unlock()
    }

    /// Reader `index`'s view of the stream, for a `TraceReader(stream:)`.
    public func input(_ index: Int) -> Input { Input(broadcast: self, index: index) }

    fileprivate func next(_ index: Int) -> [UInt8]? {
        condition.lock()
        defer { condition.unlock() }
        while heads[index] == queues[index].count && !ended { condition.wait() }
        guard heads[index] < queues[index].count, !cancelled else { return nil }
        let bytes = queues[index][heads[index]]
        queues[index][heads[index]] = []
        heads[index] += 1
        if heads[index] >= 256 {   // drop the consumed prefix now and then
            queues[index].removeFirst(heads[index])
            heads[index] = 0
        }
        condition.broadcast()
        return bytes
    }

    /// One reader's bytes.
    public struct Input: TraceInput, @unchecked Sendable {
        let broadcast: CaptureBroadcast
        let index: Int
        private var current: [UInt8] = []
        private var position = 0

        init(broadcast: CaptureBroadcast, index: Int) {
            self.broadcast = broadcast
            self.index = index
        }

        public mutating func read(into buffer: UnsafeMutableBufferPointer<UInt8>) -> Int {
            while position == current.count {
                guard let next = broadcast.next(index) else { return 0 }
                current = next
                position = 0
            }
            let n = min(buffer.count, current.count - position)
            current.withUnsafeBufferPointer { src in
                _ = buffer.initialize(from: UnsafeBufferPointer(rebasing: src[position..<(position + n)]))
            }
            position += n
            return n
        }
    }
}
