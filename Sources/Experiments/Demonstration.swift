import VMCore
import PhysicalMemory
import Kernel
import Simulation

/// The built-in demonstration `thpsim run` performs until experiments exist: a small program's life —
/// map, touch, fork, copy-on-write, partial unmap, exit — with the counters a Linux user would read.
public struct Demonstration: Sendable {
    public var memoryBytes: UInt64
    public var mode: PhysicalMemory.Mode
    public var regionBytes: UInt64
    /// The huge-page design, with its boot settings (and `use_zero_page=1`).
    public var design: KernelDesign

    public init(memoryBytes: UInt64 = 1 << 30, mode: PhysicalMemory.Mode = .data, regionBytes: UInt64 = 64 << 20,
                design: KernelDesign = SystemBuilder.defaultDesign) {
        self.memoryBytes = memoryBytes
        self.mode = mode
        self.regionBytes = regionBytes
        self.design = design
    }

    /// The system the demonstration runs on: data mode by default, so the `/proc` views show real
    /// pages, and `use_zero_page=1`, so that a read fault shows the huge zero page.
    public var system: SystemBuilder {
        var s = SystemBuilder()
        s.design = design
        s.memoryBytes = memoryBytes
        s.mode = mode
        s.useZeroPage = true
        return s
    }

    /// What the run shows: the steps taken and the `/proc` views at the end.
    public struct Report: Sendable {
        public var steps: [String]
        public var smaps: String
        public var meminfo: String
        public var vmstat: String
        /// Invariant violations found at the end (empty on a correct model).
        public var problems: [String]
    }

    public enum Failure: Error, CustomStringConvertible {
        case invalid(String)
        case step(String)
        public var description: String {
            switch self {
            case .invalid(let m): m
            case .step(let m): "the demonstration failed: \(m)"
            }
        }
    }

    public func run() throws(Failure) -> Report {
        if let problem = PhysicalMemory.problem(withSize: memoryBytes) { throw .invalid(problem) }
        guard regionBytes >= 4 * PageGeometry.pageSize, regionBytes % PageGeometry.pageSize == 0 else {
            throw .invalid("region size must be a multiple of 4K and at least 16K")
        }
        let system = system
        // The demonstration touches its region a few times over.
        if let shortfall = system.hostShortfall("--memory \(ByteCount.human(memoryBytes))", touching: 3 * regionBytes) {
            throw .invalid("\(shortfall)")
        }
        let kernel: Kernel
        do throws(SysfsError) { kernel = try system.makeKernel() } catch { throw .invalid(error.description) }
        guard let parent = kernel.createAddressSpace() else { throw .step("no memory for a process") }
        var steps: [String] = []
        func check<T>(_ what: String, _ r: Result<T, AccessFault>) throws(Failure) {
            if case .failure(let f) = r { throw .step("\(what): \(f)") }
        }
        // Each step says what it did and what the counters a Linux user reads moved by.
        var before = kernel.vmstatValues()
        func step(_ text: String) {
            let after = kernel.vmstatValues()
            let moved = ["pgfault", "thp_fault_alloc", "thp_zero_page_alloc", "thp_split_pmd", "thp_split_page"]
                .compactMap { name -> String? in
                    let delta = (after[name] ?? 0) - (before[name] ?? 0)
                    return delta == 0 ? nil : "\(name) +\(delta)"
                }
            steps.append(text + (moved.isEmpty ? "" : " (" + moved.joined(separator: ", ") + ")"))
            before = after
        }
        let size = regionBytes
        let a: VirtualAddress
        do { a = try parent.mmap(length: size, protection: .readWrite, flags: .private) } catch { throw .step("mmap: \(error)") }
        step("mmap \(ByteCount.human(size)) anonymous private rw at \(a)")
        try check("write", parent.touch(a, length: size / 2, .write))
        step("write the first half")
        try check("read", parent.touch(a + size / 2, length: size / 4, .read))
        step("read the third quarter (use_zero_page=1: the huge zero page, no Rss)")
        let child: AddressSpace
        do { child = try parent.fork() } catch { throw .step("fork: \(error)") }
        step("fork: pid \(child.pid) shares every page copy-on-write")
        try check("child write", child.touch(a, length: size / 8, .write))
        step("child writes the first eighth: copy-on-write")
        do { try parent.munmap(a + size / 4, length: 4 * PageGeometry.pageSize) } catch { throw .step("munmap: \(error)") }
        step("parent unmaps 16K in the middle: the VMA splits in two, and so does the huge page there")
        child.exit()
        step("child exits: its copies are freed, the parent's pages are exclusive again")
        return Report(steps: steps, smaps: parent.smapsText(), meminfo: kernel.meminfo().text,
                      vmstat: kernel.vmstatText(), problems: kernel.checkInvariants())
    }
}
