import VMCore
import PhysicalMemory

/// What a kernel of this configuration costs the host. Its tables are sized for the whole simulated
/// memory but reserved as anonymous mappings the host backs on first touch, and the buddy allocator
/// leaves the records of untouched blocks alone, so what a run fills follows what it touches.
extension KernelConfiguration {
    /// Host address space reserved: per frame its 16-byte record, 16-byte LRU node and swap-map bit,
    /// and in data mode its 4 KiB of bytes.
    public var hostReservation: UInt64 {
        let pages = memoryBytes >> PageGeometry.pageShift
        return pages * UInt64(FrameTable.bytesPerFrame + 16 + 1) + (mode == .data ? memoryBytes : 0)
    }

    /// Host memory filled by a run that touches `bytes` of simulated memory (at most all of it): about
    /// 32 MiB for the process and 48 bytes per touched 4 KiB page (record, LRU node, page-table entry,
    /// the host's own page tables; `thpsim workload seq` measured 42–46), plus the page in data mode.
    public func hostResident(touching bytes: UInt64) -> UInt64 {
        let pages = min(bytes, memoryBytes) >> PageGeometry.pageShift
        return (32 << 20) + pages * (48 + (mode == .data ? PageGeometry.pageSize : 0))
    }

    /// Why the host cannot hold a run of this configuration that touches `bytes`, with `request`
    /// naming the option that asks for it; nil when it can.
    public func hostShortfall(_ request: String, touching bytes: UInt64) -> HostMemoryShortfall? {
        HostLimits.shortfall(request, reserved: hostReservation, resident: hostResident(touching: bytes))
    }
}
