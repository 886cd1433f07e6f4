import Foundation
import Synchronization

extension TraceReader where Input: SendableMetatype {
    /// `replay(into:)` on two host threads: a reader thread reads, decompresses and checks blocks
    /// (`nextBlock`) up to `depth` blocks ahead, while the calling thread decodes each block's records
    /// into `sink` in file order, so the sink sees exactly what `replay(into:)` gives it, and the
    /// same first error: a block's problem is thrown when its turn comes, after every block before it
    /// was replayed; nothing after an error is replayed. Memory: at most `depth` + 2 raw blocks.
    ///
    /// A capture stream (whose messages must reach `onMessage` in order with the records) is replayed
    /// by `replay(into:)` on the calling thread alone.
    public mutating func replayPipelined(into sink: inout some WorkloadSink, depth: Int = 4) throws(TraceError) -> Int {
        if isStream || depth < 1 { return try replay(into: &sink) }
        let queue = BlockQueue(capacity: depth)
        // The reader thread owns the reader (its input and buffer) until it is done; then it comes back.
        let box = ReaderBox(self)
        defer { self = box.reader }
        let thread = Thread {
            var announced = 0
            while true {
                let item: BlockQueue.Item
                do throws(TraceError) {
                    if let block = try box.reader.nextBlock(recordsSoFar: announced) {
                        announced &+= Int(truncatingIfNeeded: block.records)
                        item = .block(block)
                    } else {
                        item = .end
                    }
                } catch {
                    item = .failure(error)
                }
                guard queue.put(item) else { return }   // the consumer stopped
                if case .block = item { continue }
                return
            }
        }
        thread.stackSize = 1 << 20
        thread.start()
        defer { queue.stop(); queue.waitUntilProducerDone() }
        var total = 0
        while true {
            switch queue.take() {
            case .block(let block):
                let decoded = try block.raw.withUnsafeBufferPointer { (b) throws(TraceError) in
                    try Self.decodeBlock(b, into: &sink, payloadOffset: block.payloadOffset, compressed: block.compressed)
                }
                guard UInt64(decoded) == block.records else {
                    throw TraceError(.corrupted, at: block.payloadOffset, expected: "\(block.records) records in the block, found \(decoded)")
                }
                total += decoded
            case .end:
                return total
            case .failure(let error):
                throw error
            }
        }
    }
}

/// The reader while the reader thread uses it alone (the calling thread takes it back only after
/// `BlockQueue.waitUntilProducerDone`).
final class ReaderBox<Input: TraceInput>: @unchecked Sendable {
    var reader: TraceReader<Input>
    init(_ reader: TraceReader<Input>) { self.reader = reader }
}

/// A bounded single-producer, single-consumer queue of blocks, with a stop flag the consumer sets
/// when it leaves early.
final class BlockQueue: @unchecked Sendable {
    enum Item {
        case block(TraceBlock)
        case end
        case failure(TraceError)
    }
    private let lock = NSCondition()
    private var items: [Item] = []
    private var head = 0
    private let capacity: Int
    private var stopped = false
    private var producerDone = false

    init(capacity: Int) { self.capacity = capacity }

    /// Waits for room; false when the consumer stopped (the item is dropped).
    func put(_ item: Item) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        while items.count - head >= capacity && !stopped { lock.wait() }
        if case .block = item {} else { producerDone = true }
        if stopped { producerDone = true; lock.broadcast(); return false }
        items.append(item)
        lock.broadcast()
        return true
    }

    func take() -> Item {
        lock.lock()
        defer { lock.unlock() }
        while head == items.count { lock.wait() }
        let item = items[head]
        head += 1
        if head == items.count { items.removeAll(keepingCapacity: true); head = 0 }
        lock.broadcast()
        return item
    }

    func stop() {
        lock.lock()
        stopped = true
        lock.broadcast()
        lock.unlock()
    }

    func waitUntilProducerDone() {
        lock.lock()
        while !producerDone { lock.wait() }
        lock.unlock()
    }
}
