/// The bytes one socket's memory channels carry in each slot of simulated time, by slot: a map from
/// slot to bytes (a slot without any carries none) that can drop every slot below a floor. It answers
/// as a dictionary would; the slots near the front of time, where nearly every request falls, live in
/// a ring indexed by their low bits, and only those behind the ring in a dictionary.
///
/// ```
///   far (dictionary)  |  ring: slots low ..< low + ringSlots  |  beyond: the ring moves up to take it
/// ```
/// A slot the ring moves past keeps its bytes in `far`.
struct BandwidthSlots {
    static let ringSlots = 1 << 13
    private static let mask = ringSlots - 1
    private var ring = ContiguousArray<Double>(repeating: 0, count: BandwidthSlots.ringSlots)
    /// The first slot the ring holds.
    private var low = 0
    /// Slots below `low` that carry bytes.
    private var far: [Int: Double] = [:]
    /// Slots that carry bytes.
    private(set) var count = 0
    /// No slot that carries bytes lies below it.
    private var lowest = Int.max

    /// The bytes `slot` carries.
    subscript(slot: Int) -> Double {
        if slot >= low { return slot < low &+ Self.ringSlots ? ring[slot & Self.mask] : 0 }
        return farBytes(slot)
    }

    /// The bytes of a slot behind the ring (rare: out of line, as are the ring's moves and drops, so
    /// that a fault's charge stays small in the host's instruction cache).
    @inline(never)
    private func farBytes(_ slot: Int) -> Double { far[slot] ?? 0 }

    /// Sets the bytes `slot` carries.
    /// - Precondition: `bytes` > 0.
    mutating func set(_ slot: Int, _ bytes: Double) {
        if slot >= low &+ Self.ringSlots { moveRing(toCover: slot) }
        if slot >= low {
            let i = slot & Self.mask
            if ring[i] == 0 { count &+= 1 }
            ring[i] = bytes
        } else {
            setFar(slot, bytes)
        }
        if slot < lowest { lowest = slot }
    }

    @inline(never)
    private mutating func setFar(_ slot: Int, _ bytes: Double) {
        if far.updateValue(bytes, forKey: slot) == nil { count &+= 1 }
    }

    /// Moves the ring up so that it holds `slot`, with half the ring below it.
    @inline(never)
    private mutating func moveRing(toCover slot: Int) {
        let newLow = slot - Self.ringSlots / 2
        let end = min(newLow, low &+ Self.ringSlots)
        var k = max(low, min(lowest, end))
        while k < end {
            let i = k & Self.mask
            if ring[i] != 0 { far[k] = ring[i]; ring[i] = 0 }
            k += 1
        }
        low = newLow
    }

    /// Forgets every slot below `floor`.
    @inline(never)
    mutating func drop(below floor: Int) {
        guard floor > lowest else { return }
        let end = min(floor, low &+ Self.ringSlots)
        var k = max(lowest, low)
        while k < end {
            let i = k & Self.mask
            if ring[i] != 0 { ring[i] = 0; count &-= 1 }
            k += 1
        }
        if !far.isEmpty {
            let before = far.count
            far = far.filter { $0.key >= floor }
            count &-= before - far.count
        }
        lowest = floor
    }
}
