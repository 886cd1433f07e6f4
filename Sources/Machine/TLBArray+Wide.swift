/// Fully associative arrays with many ways (AMD's 64–96-entry L1 TLBs) would scan every way on
/// each lookup and fill. Instead they keep:
///
/// ```
/// index:   open-addressed hash of tag → slot (linear probing, 4× the entries, backward-shift delete)
/// recency: doubly linked list of slots, newest ⇄ … ⇄ oldest; invalid slots sit at the oldest end
/// ```
/// so a lookup is a probe or two and a move to the front, and a fill takes the oldest slot: the same
/// exact LRU as the scanning path, in constant time.
extension TLBArray {
    @inline(__always) func home(_ t: UInt64) -> Int {
        Int(truncatingIfNeeded: (t &* 0x9E37_79B9_7F4A_7C15) >> indexShift) & indexMask
    }

    func resetRecency() {
        index.update(repeating: -1, count: indexMask + 1)
        guard wide else { return }
        // Slot 0 newest … slot ways-1 oldest.
        for i in 0..<ways {
            newer[i] = Int32(i - 1)
            older[i] = i + 1 < ways ? Int32(i + 1) : -1
        }
        newest = 0
        oldestSlot = Int32(ways - 1)
    }

    @inline(__always) private func unlink(_ s: Int32) {
        let n = newer[Int(s)], o = older[Int(s)]
        if n >= 0 { older[Int(n)] = o } else { newest = o }
        if o >= 0 { newer[Int(o)] = n } else { oldestSlot = n }
    }

    /// Moves `s` to the newest end.
    @inline(__always) func makeNewest(_ s: Int32) {
        guard newest != s else { return }
        unlink(s)
        newer[Int(s)] = -1
        older[Int(s)] = newest
        newer[Int(newest)] = s
        newest = s
    }

    /// Moves `s` to the oldest end (an invalidated slot is reused first).
    func makeOldest(_ s: Int32) {
        guard oldestSlot != s else { return }
        unlink(s)
        older[Int(s)] = -1
        newer[Int(s)] = oldestSlot
        older[Int(oldestSlot)] = s
        oldestSlot = s
    }

    func wideLookup(_ t: UInt64, touch: Bool) -> Int {
        var h = home(t)
        while true {
            let s = index[h]
            if s < 0 { return -1 }
            if tags[Int(s)] == t {
                if touch { makeNewest(s) }
                return Int(s)
            }
            h = (h &+ 1) & indexMask
        }
    }

    func indexInsert(_ t: UInt64, _ slot: Int32) {
        var h = home(t)
        while index[h] >= 0 { h = (h &+ 1) & indexMask }
        index[h] = slot
    }

    /// Removes `t` from the index, shifting later entries of its probe run back (no tombstones).
    func indexRemove(_ t: UInt64) {
        var i = home(t)
        while index[i] >= 0 && tags[Int(index[i])] != t { i = (i &+ 1) & indexMask }
        guard index[i] >= 0 else { return }
        var j = i
        while true {
            j = (j &+ 1) & indexMask
            let s = index[j]
            if s < 0 { break }
            let k = home(tags[Int(s)])
            // Leave the entry where it is if its home lies cyclically in (i, j].
            let stays = i <= j ? (i < k && k <= j) : (i < k || k <= j)
            if stays { continue }
            index[i] = s
            i = j
        }
        index[i] = -1
    }

    func wideInsert(_ t: UInt64, size: PageSize, payload: UInt64) -> Int {
        let existing = wideLookup(t, touch: true)
        if existing >= 0 {
            payloads[existing] = payload
            return existing
        }
        let victim = oldestSlot
        let old = tags[Int(victim)]
        if old & Self.validBit != 0 {
            indexRemove(old)
            adjust(Self.size(ofTag: old), -1)
        }
        tags[Int(victim)] = t
        payloads[Int(victim)] = payload
        clock &+= 1
        stamps[Int(victim)] = stamp(way: Int(victim))
        adjust(size, 1)
        indexInsert(t, victim)
        makeNewest(victim)
        return Int(victim)
    }
}
