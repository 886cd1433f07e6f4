import Synchronization
import VMCore
import PhysicalMemory

/// The object behind a shared anonymous mapping: an unnamed shmem file of fixed size whose page cache
/// holds one frame per page once touched (Linux: `shmem_zero_setup()`, `shmem_get_folio()`).
///
/// Each cached frame holds one reference for the cache and one per mapping PTE. The object lives as
/// long as a VMA refers to it; `users` counts those VMAs (Linux: the file's reference count).
public final class SharedMemoryObject: @unchecked Sendable {
    public let pages: Int
    private struct State { var frames: [UInt32]; var users: Int }
    private let state: SpinLocked<State>

    init(pages: Int) {
        self.pages = pages
        state = SpinLocked(State(frames: [UInt32](repeating: FrameTable.noLink, count: pages), users: 0))
    }

    /// The frame at `index`, allocating a zeroed one when the page was never touched; nil when memory
    /// is exhausted. The returned frame carries an extra reference for the caller's mapping;
    /// `allocated` says whether it is new.
    func frame(at index: Int, kernel: Kernel) -> (PFN, allocated: Bool)? {
        state.withLock { s -> (PFN, allocated: Bool)? in
            if s.frames[index] != FrameTable.noLink {
                let pfn = PFN(s.frames[index])
                kernel.memory.frames.addRefcount(pfn, 1)
                return (pfn, false)
            }
            guard let pfn = kernel.memory.allocateFolio(order: .base, kind: .shmem) else { return nil }
            kernel.countAllocation(pages: 1)
            kernel.memory.frames.setLink(pfn, UInt32(index))
            kernel.memory.frames.setRefcount(pfn, 2)
            kernel.vmstat.modify(.nrShmem, 1)
            s.frames[index] = pfn.rawValue
            return (pfn, true)
        }
    }

    /// The cached frame at `index`, if any, without taking a reference.
    public func cachedFrame(at index: Int) -> PFN? {
        state.withLock { s in s.frames[index] == FrameTable.noLink ? nil : PFN(s.frames[index]) }
    }

    /// Every cached frame.
    public var cachedFrames: [PFN] {
        state.withLock { s in s.frames.filter { $0 != FrameTable.noLink }.map { PFN($0) } }
    }

    func addUser() { state.withLock { $0.users += 1 } }

    /// Drops one VMA's hold; the last one truncates the cache (Linux: `shmem_evict_inode()`).
    func removeUser(kernel: Kernel) {
        let released: [UInt32] = state.withLock { s in
            s.users -= 1
            precondition(s.users >= 0)
            guard s.users == 0 else { return [] }
            defer { s.frames = [] }
            return s.frames.filter { $0 != FrameTable.noLink }
        }
        for raw in released {
            kernel.vmstat.modify(.nrShmem, -1)
            kernel.putPage(PFN(raw))
        }
    }
}
