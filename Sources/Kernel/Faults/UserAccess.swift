import Synchronization
import VMCore
import PhysicalMemory

/// A user-visible translation of one address, as the MMU would use it.
public struct Translation: Sendable, Hashable {
    public var frame: PFN
    /// The entry that mapped it, and at which level (`.pte`, or `.pmd` for a huge mapping).
    public var entry: PageTableEntry
    public var level: PageTableLevel
}

/// Why a user access did not complete.
public struct AccessFault: Error, Sendable, Hashable, CustomStringConvertible {
    public var address: VirtualAddress
    public var outcome: FaultOutcome
    public var description: String { "\(outcome) at \(address)" }
}

extension AddressSpace {
    /// Looks up the translation of `va` without side effects: no fault, no A/D bits (the functional
    /// walk of gem5's `translateFunctional`; Linux: `follow_page()` without FOLL_GET).
    public func translate(_ va: VirtualAddress) -> Translation? {
        guard let (pmd, pmdIndex) = walk(va, to: .pmd, allocate: false) else { return nil }
        let pmdEntry = pmd[pmdIndex]
        if pmdEntry.isNone { return nil }
        if pmdEntry.isHuge {
            guard pmdEntry.isPresent else { return nil }
            return Translation(frame: pmdEntry.pfn + va.tableIndex(.pte), entry: pmdEntry, level: .pmd)
        }
        let entry = kernel.table(at: pmdEntry)[va.tableIndex(.pte)]
        guard entry.isPresent else { return nil }
        return Translation(frame: entry.pfn, entry: entry, level: .pte)
    }

    /// The frame an entry maps at `va`, present or hidden by PROT_NONE, without side effects (the zero
    /// page for zero-page entries); nil when nothing is mapped (Linux: `follow_page()` with FOLL_FORCE).
    public func residentFrame(_ va: VirtualAddress) -> PFN? {
        guard let (pmd, pmdIndex) = walk(va, to: .pmd, allocate: false) else { return nil }
        let pmdEntry = pmd[pmdIndex]
        if pmdEntry.isNone { return nil }
        if pmdEntry.isHuge { return pmdEntry.isMapped ? pmdEntry.pfn + va.tableIndex(.pte) : nil }
        let entry = kernel.table(at: pmdEntry)[va.tableIndex(.pte)]
        return entry.isMapped ? entry.pfn : nil
    }

    /// The hardware walk of one access (`PageTableWalk` seen by the software MMU): permission check
    /// and A/D update on success; on a fault, whether a present entry forbade the access (x86's P
    /// bit). Lockless, as the MMU is.
    @inline(__always)
    func hardwareWalk(_ va: VirtualAddress, _ access: MemoryAccess) -> (PFN?, present: Bool) {
        var observer = SoftwareWalk(kernel)
        switch PageTableWalk.walk(va.rawValue, access, root: root, &observer) {
        case .mapped(let entry, let level):
            return (level == .pte ? entry.pfn : entry.pfn + va.tableIndex(.pte), false)
        case .notPresent: return (nil, false)
        case .protection: return (nil, true)
        }
    }

    /// One access by the program: walk, fault if needed, retry (the software MMU the kernel model uses
    /// until the Machine layer stands in front of it; `PageTableWalk.resolve`'s retry rule). The walk
    /// runs in a lockless-walk window, as a hardware walk is covered by the TLB-flush IPI: no table it
    /// reads is freed under it. Returns the frame, or the fault that stopped it.
    @inline(__always)
    public func access(_ va: VirtualAddress, _ kind: MemoryAccess) -> Result<PFN, AccessFault> {
        PageTableWalk.resolve(va, walk: { kernel.locklessWalk { hardwareWalk(va, kind) } }, fault: { present in
            var fault = FaultContext(address: va, access: kind, present: present)
            return handleFault(&fault)
        })
    }

    /// Touches every page of `[start, start + length)` with `kind`.
    public func touch(_ start: VirtualAddress, length: UInt64, _ kind: MemoryAccess) -> Result<Void, AccessFault> {
        guard length > 0 else { return .success(()) }
        var va = start.alignedDown(PageGeometry.pageSize)
        let end = start + length
        while va < end {
            if case .failure(let f) = access(va, kind) { return .failure(f) }
            va = va + PageGeometry.pageSize
        }
        return .success(())
    }

    /// One access whose data moves while the translation is known valid: `body` runs with the frame
    /// inside the lockless-walk window, so no other CPU can free and reuse the frame before the bytes
    /// are in (as a store completes before the TLB flush that unmaps its page can finish).
    @inline(__always)
    func accessFrame(_ va: VirtualAddress, _ kind: MemoryAccess, _ body: (PFN) -> Void) -> Result<Void, AccessFault> {
        PageTableWalk.resolve(va, walk: {
            kernel.locklessWalk { () -> (Void?, present: Bool) in
                let (pfn, present) = hardwareWalk(va, kind)
                guard let pfn else { return (nil, present) }
                body(pfn)
                return ((), false)
            }
        }, fault: { present in
            var fault = FaultContext(address: va, access: kind, present: present)
            return handleFault(&fault)
        })
    }

    /// Writes `bytes` at `start`, page by page, as the program's stores would (Linux:
    /// `copy_to_user()` semantics: stops at the first fault).
    public func write(_ start: VirtualAddress, _ bytes: some Collection<UInt8>) -> Result<Void, AccessFault> {
        var va = start
        var remaining = bytes[...]
        let storage = kernel.memory.storage
        while !remaining.isEmpty {
            let chunk = min(remaining.count, Int(PageGeometry.pageSize) - va.pageOffset)
            let result = accessFrame(va, .write) { pfn in
                guard let storage else { return }
                let page = storage.bytes(of: pfn)
                var offset = va.pageOffset
                for byte in remaining.prefix(chunk) { page[offset] = byte; offset += 1 }
            }
            if case .failure(let f) = result { return .failure(f) }
            remaining = remaining.dropFirst(chunk)
            va = va + UInt64(chunk)
        }
        return .success(())
    }

    /// Reads `count` bytes at `start` (zeros in metadata mode, which keeps no bytes).
    public func read(_ start: VirtualAddress, count: Int) -> Result<[UInt8], AccessFault> {
        var out = [UInt8]()
        out.reserveCapacity(count)
        var va = start
        let storage = kernel.memory.storage
        while out.count < count {
            let chunk = min(count - out.count, Int(PageGeometry.pageSize) - va.pageOffset)
            let result = accessFrame(va, .read) { pfn in
                if let storage {
                    out.append(contentsOf: storage.bytes(of: pfn)[va.pageOffset..<(va.pageOffset + chunk)])
                } else {
                    out.append(contentsOf: repeatElement(0, count: chunk))
                }
            }
            if case .failure(let f) = result { return .failure(f) }
            va = va + UInt64(chunk)
        }
        return .success(out)
    }
}
