import VMCore

/// The system calls and first writes with which `thp_memscale`'s threads come to own their
/// buffers, on glibc 2.17-era malloc and NPTL over Linux 3.12 (x86-64), at the addresses Linux
/// would give them (`TopDownPlacement`): what decides which 2 MiB ranges of each buffer a huge
/// page can fault into.
///
/// For each thread, in three steps:
/// 1. **Its stack**, mapped by the creating thread (NPTL `allocate_stack()`): `mmap` of the default
///    stack size (8 MiB: `RLIMIT_STACK`), read-write; its lowest page `mprotect`ed to `PROT_NONE`
///    (the guard). The creator writes the thread descriptor and static TLS at the top (the top page);
///    the thread's own first frames start below them (the page beneath: `struct pthread` and the
///    static TLS block with its surplus take about 4 KiB).
/// 2. **Its arena**, at its first `malloc()` (`arena_get2()` → `_int_new_arena()`): the request is
///    larger than a heap, so `new_heap()` is asked for a minimal one. It maps 2 × `HEAP_MAX_SIZE`
///    (64 MiB) `PROT_NONE`, unmaps what lies outside the 64 MiB-aligned `HEAP_MAX_SIZE` inside it
///    (when the mapping was already aligned it keeps the upper half as the next heap's hint,
///    `aligned_heap_area`, and that next `new_heap()` tries it first), and `mprotect`s the heap's
///    first pages read-write: the heap header, the arena and `DEFAULT_TOP_PAD` (128 KiB), 33 pages.
///    Writing the arena header faults the first page.
/// 3. **Its buffer**: `sysmalloc()` serves a request above the mmap threshold with its own `mmap`
///    of the request plus the chunk header, rounded up to pages (512,000,000 bytes: 125,001
///    pages), and writes the chunk header in the first page; the buffer starts 16 bytes in.
///
/// The order of the steps across threads is the one thing the program does not fix: thread
/// creation races with the threads' own calls. `Order` names the candidates for the addresses; the
/// workload uses `.stacksThenArenasThenBuffers`, whose arenas and buffers reach the kernel in that
/// order (`orderingPoint`; docs/concurrency.md, "memscale").
struct MemscaleLayout {
    /// The order in which the threads' steps reach the kernel.
    enum Order: CaseIterable {
        /// Every stack first (the creator outruns its threads), then every thread's arena, then every
        /// thread's buffer, each in thread order — what a random interleaving of the threads' system
        /// calls gives too, because a thread's arena takes four short calls and its buffer one.
        case stacksThenArenasThenBuffers
        /// Every stack first, then each thread's arena and buffer before the next thread's.
        case stacksThenThreads
        /// Each thread created and done allocating before the next is created.
        case serial
    }

    /// An ordering point after each arena and each buffer (`Order.stacksThenArenasThenBuffers`, more
    /// than one thread): a sleep of no time, after which the next steps reach the kernel.
    ///
    /// The layout's addresses are the ones Linux gives the calls in this order, replayed with
    /// `MAP_FIXED`: they are right only if the calls run in it. In simulated time a thread's calls run
    /// at its clock (`MachineExecutor`), so without these points the order would be the clocks':
    /// an arena's transient 128 MiB `PROT_NONE` mapping covers where a later arena's heap goes (the
    /// upper half it keeps as `aligned_heap_area`), so an arena made early would be mapped over and
    /// unmapped by an earlier one made late; and a buffer mapped before the header of the buffer
    /// above it was written would make their shared 2 MiB range one huge fault, which in Linux's order
    /// it is not. Racing the set-up needs addresses chosen when the calls run (Linux's placement in
    /// the kernel model, the workload's later accesses following it), which a stream of events made
    /// ahead of the run cannot do. The stacks need no point (thread 0 maps them all, in its order).
    static let orderingPoint = Step.event(thread: 0, .idle(milliseconds: 0))

    /// A system call or first write of the set-up, in order.
    enum Step: Equatable {
        case event(thread: Int, WorkloadEvent)
        case store(thread: Int, address: UInt64)
    }

    /// NPTL's default stack (8 MiB, the usual `RLIMIT_STACK`; `__default_stacksize`).
    static let stackSize: UInt64 = 8 << 20
    /// glibc's `HEAP_MAX_SIZE` on 64-bit (2 × `DEFAULT_MMAP_THRESHOLD_MAX`).
    static let heapMaxSize: UInt64 = 64 << 20
    /// What `new_heap()` makes read-write for a minimal heap: `sizeof(heap_info)` (32) +
    /// `sizeof(struct malloc_state)` (2,184) + `MALLOC_ALIGNMENT` (16) + `DEFAULT_TOP_PAD` (131,072),
    /// rounded up to pages by `mprotect`.
    static let heapReadWriteSize: UInt64 = (32 + 2_184 + 16 + 131_072 + PageGeometry.pageSize - 1) / PageGeometry.pageSize * PageGeometry.pageSize
    /// Bytes `sysmalloc()` maps for a request of `bytes`: `request2size()` (the request + `SIZE_SZ`,
    /// rounded up to 16) + `SIZE_SZ`, rounded up to pages.
    static func mappedLength(request bytes: UInt64) -> UInt64 {
        let chunk = (bytes + 8 + 15) & ~15
        return (chunk + 8 + PageGeometry.pageSize - 1) & ~(PageGeometry.pageSize - 1)
    }
    /// Where the buffer starts in its mapping (`chunk2mem()`: after `prev_size` and `size`).
    static let chunkHeader: UInt64 = 16

    private(set) var steps: [Step] = []
    /// Each thread's stack mapping (its lowest address; the guard page is there).
    private(set) var stacks: [UInt64] = []
    /// Each thread's heap (64 MiB-aligned; its first 33 pages read-write).
    private(set) var heaps: [UInt64] = []
    /// Each thread's buffer mapping and its length (the buffer is `chunkHeader` bytes in).
    private(set) var buffers: [(address: UInt64, length: UInt64)] = []

    private var space: TopDownPlacement
    private var alignedHeapArea: UInt64?

    /// The layout of `requests.count` threads, thread `t` asking `malloc` for `requests[t]` bytes,
    /// below `ceiling`. Nil when the address space between `floor` and `ceiling` cannot hold it.
    init?(requests: [UInt64], order: Order, ceiling: UInt64, floor: UInt64) {
        space = TopDownPlacement(ceiling: ceiling, floor: floor)
        let threads = requests.indices
        stacks = Array(repeating: 0, count: requests.count)
        heaps = stacks
        buffers = Array(repeating: (0, 0), count: requests.count)
        switch order {
        case .stacksThenArenasThenBuffers:
            for t in threads { guard createThread(t) else { return nil } }
            for t in threads {
                guard newArena(t) else { return nil }
                if requests.count > 1 { steps.append(Self.orderingPoint) }
            }
            for t in threads {
                guard mallocBuffer(t, requests[t]) else { return nil }
                if requests.count > 1 { steps.append(Self.orderingPoint) }
            }
        case .stacksThenThreads:
            for t in threads { guard createThread(t) else { return nil } }
            for t in threads { guard newArena(t), mallocBuffer(t, requests[t]) else { return nil } }
        case .serial:
            for t in threads { guard createThread(t), newArena(t), mallocBuffer(t, requests[t]) else { return nil } }
        }
    }

    /// Thread 0, standing for the program's main thread, maps thread `t`'s stack, protects its
    /// guard page and writes the descriptor at its top; thread `t` starts and writes its first frames
    /// (Linux: `pthread_create()` → `allocate_stack()`, `create_thread()`).
    private mutating func createThread(_ t: Int) -> Bool {
        guard let stack = space.map(length: Self.stackSize) else { return false }
        stacks[t] = stack
        let top = stack + Self.stackSize, page = PageGeometry.pageSize
        steps.append(.event(thread: 0, .mmap(address: stack, length: Self.stackSize, protection: .readWrite, shared: false)))
        steps.append(.event(thread: 0, .mprotect(address: stack, length: page, protection: .none)))
        steps.append(.store(thread: 0, address: top - page))
        if t > 0 { steps.append(.event(thread: 0, .spawn(thread: t))) }
        steps.append(.store(thread: t, address: top - 2 * page))
        return true
    }

    /// Thread `t`'s first `malloc` makes it an arena in a heap of its own (glibc: `_int_new_arena()`
    /// → `new_heap()`).
    private mutating func newArena(_ t: Int) -> Bool {
        let size = Self.heapMaxSize
        var heap: UInt64?
        if let hint = alignedHeapArea {
            alignedHeapArea = nil
            if let p = space.map(length: size, hint: hint) {
                steps.append(.event(thread: t, .mmap(address: p, length: size, protection: .none, shared: false)))
                if p % size == 0 {
                    heap = p
                } else {
                    space.unmap(p, length: size)
                    steps.append(.event(thread: t, .munmap(address: p, length: size)))
                }
            }
        }
        if heap == nil {
            guard let p1 = space.map(length: 2 * size) else { return false }
            steps.append(.event(thread: t, .mmap(address: p1, length: 2 * size, protection: .none, shared: false)))
            let p2 = (p1 + size - 1) & ~(size - 1), below = p2 - p1
            if below > 0 {
                space.unmap(p1, length: below)
                steps.append(.event(thread: t, .munmap(address: p1, length: below)))
            } else {
                alignedHeapArea = p2 + size
            }
            space.unmap(p2 + size, length: size - below)
            steps.append(.event(thread: t, .munmap(address: p2 + size, length: size - below)))
            heap = p2
        }
        heaps[t] = heap!
        steps.append(.event(thread: t, .mprotect(address: heap!, length: Self.heapReadWriteSize, protection: .readWrite)))
        steps.append(.store(thread: t, address: heap!))
        return true
    }

    /// Thread `t`'s `malloc(bytes)`, served by `sysmalloc()` with a mapping of its own.
    private mutating func mallocBuffer(_ t: Int, _ bytes: UInt64) -> Bool {
        let length = Self.mappedLength(request: bytes)
        guard let address = space.map(length: length) else { return false }
        buffers[t] = (address, length)
        steps.append(.event(thread: t, .mmap(address: address, length: length, protection: .readWrite, shared: false)))
        steps.append(.store(thread: t, address: address + 8))
        return true
    }
}
