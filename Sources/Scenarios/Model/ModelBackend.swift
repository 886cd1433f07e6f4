import VMCore
import PhysicalMemory
import Kernel
import Simulation

/// Makes the backend that runs scenarios on the thpsim model, for `design`, `memory` and `swap` as the
/// scenario gives them (nil: the model's defaults, 1 GiB in data mode, a swap device as large as
/// memory without clusters).
public func makeModelScenarioBackend(design: String?, memoryBytes: UInt64?, swap: SwapRequest? = nil)
    throws(ScenarioError) -> any ScenarioBackend {
    try ModelScenarioBackend(design: design, memoryBytes: memoryBytes, swap: swap)
}

/// Runs scenarios on the kernel model: each scenario process is an `AddressSpace`, in data mode so
/// that `expect data` reads real bytes.
///
/// Knobs are written through the kernel's sysfs (`Kernel.transparentHugepageSysfs`). A file the model
/// (or the scenario's design) does not have is reported as unsupported, which skips the expectations
/// after it with that reason rather than comparing against behaviour not yet built; a value Linux
/// refuses fails the scenario.
final class ModelScenarioBackend: ScenarioBackend {
    typealias Process = AddressSpace
    let kernel: Kernel
    let design: String
    var name: String { "model" }
    var countersAreSystemWide: Bool { false }

    /// The system a scenario runs on, for the `design`, `memory` and `swap` lines it gives: data mode,
    /// so that `expect data` reads real bytes; 1 GiB unless the scenario says; the design's boot settings.
    static func system(design: KernelDesign, memoryBytes: UInt64?, swap: SwapRequest?) -> SystemBuilder {
        var s = SystemBuilder()
        s.design = design
        s.memoryBytes = memoryBytes ?? (1 << 30)
        s.mode = .data
        if let swap { s.swap = SwapConfiguration(slots: Int(swap.bytes / 4096), clusters: swap.clusters) }
        return s
    }

    init(design: String?, memoryBytes: UInt64?, swap: SwapRequest?) throws(ScenarioError) {
        let chosen = design ?? SystemBuilder.defaultDesign.name
        guard let kernelDesign = KernelDesign.named(chosen) else {
            throw .unsupported("the model has no design '\(chosen)' (known: \(KernelDesign.all.map(\.name).joined(separator: ", ")))")
        }
        self.design = chosen
        let system = Self.system(design: kernelDesign, memoryBytes: memoryBytes, swap: swap)
        if let problem = PhysicalMemory.problem(withSize: system.memoryBytes) { throw .unsupported("memory: \(problem)") }
        // What a scenario touches is known only as it runs: refuse what the host cannot even reserve.
        if let shortfall = system.hostShortfall("memory \(ByteCount.human(system.memoryBytes))", touching: 0) {
            throw .run("\(shortfall)")
        }
        do throws(SysfsError) { kernel = try system.makeKernel() } catch { throw .run(error.message) }
    }

    /// `memory_recursiveprot`: `MemoryCgroups.recursiveProtection` (the parser takes no other option).
    func mountCgroups(options: [String]) throws(ScenarioError) {
        for option in options {
            guard option == "memory_recursiveprot" else { throw .unsupported("the model has no cgroup2 mount option '\(option)'") }
            kernel.memoryCgroups.recursiveProtection = true
        }
    }

    func start(_ scenario: Scenario) throws(ScenarioError) -> AddressSpace {
        guard let mm = kernel.createAddressSpace() else { throw .run("the model has no memory for a process") }
        return mm
    }

    func setTunable(_ knob: Knob) throws(ScenarioError) {
        do throws(SysfsError) { try kernel.transparentHugepageSysfs.write(knob.name, knob.value) } catch {
            // No such file here: Linux may have it, the model (or this design) does not.
            if error.errno == .ENOENT { throw .unsupported(error.message) }
            throw .run(error.message)
        }
    }

    func mmap(in mm: AddressSpace, address: UInt64?, length: UInt64, protection: Protection, shared: Bool, stack: Bool)
        throws(ScenarioError) -> Result<UInt64, ScenarioErrno> {
        var flags: MapFlags = shared ? .shared : .private
        if address != nil { flags.insert(.fixed) }
        if stack { flags.insert(.stack) }
        do throws(Errno) {
            return .success(try mm.mmap(address: address.map { VirtualAddress($0) }, length: length,
                                        protection: Self.protection(protection), flags: flags).rawValue)
        } catch { return .failure(ScenarioErrno(error)) }
    }

    func munmap(in mm: AddressSpace, address: UInt64, length: UInt64) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        Self.result { () throws(Errno) in try mm.munmap(VirtualAddress(address), length: length) }
    }

    func mprotect(in mm: AddressSpace, address: UInt64, length: UInt64, protection: Protection)
        throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        Self.result { () throws(Errno) in
            try mm.mprotect(VirtualAddress(address), length: length, protection: Self.protection(protection))
        }
    }

    func mremap(in mm: AddressSpace, address: UInt64, oldLength: UInt64, newLength: UInt64, destination: UInt64?)
        throws(ScenarioError) -> Result<UInt64, ScenarioErrno> {
        do throws(Errno) {
            let moved = try mm.mremap(VirtualAddress(address), oldSize: oldLength, newSize: newLength,
                                      flags: destination == nil ? .mayMove : [.mayMove, .fixed],
                                      newAddress: destination.map { VirtualAddress($0) })
            return .success(moved.rawValue)
        } catch { return .failure(ScenarioErrno(error)) }
    }

    func madvise(in mm: AddressSpace, address: UInt64, length: UInt64, advice: Advice)
        throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        let kernelAdvice: MadviseAdvice
        switch advice {
        case .hugepage: kernelAdvice = .hugepage
        case .nohugepage: kernelAdvice = .noHugepage
        case .dontneed: kernelAdvice = .dontNeed
        case .dontfork: kernelAdvice = .dontFork
        case .dofork: kernelAdvice = .doFork
        case .collapse: kernelAdvice = .collapse
        case .pageout: kernelAdvice = .pageout
        }
        return Self.result { () throws(Errno) in try mm.madvise(VirtualAddress(address), length: length, advice: kernelAdvice) }
    }

    func touch(in mm: AddressSpace, address: UInt64, length: UInt64, access: TouchAccess) throws(ScenarioError) -> TouchOutcome {
        var va = VirtualAddress(address)
        var done: UInt64 = 0
        while done < length {
            let chunk = min(length - done, PageGeometry.pageSize - UInt64(va.pageOffset))
            let result: Result<Void, AccessFault>
            switch access {
            case .read: result = mm.access(va, .read).map { _ in () }
            case .write(let pattern): result = mm.write(va, pattern.bytes(from: done, count: Int(chunk)))
            }
            if case .failure(let fault) = result {
                switch fault.outcome {
                case .segv: return .segv(address: va.rawValue)
                case .sigbus: throw .run("SIGBUS at \(va): the access lies past the end of the shared object")
                case .outOfMemory:
                    if mm.wasOOMKilled { return .killed(address: va.rawValue) }
                    throw .run("the model ran out of memory at \(va) (raise `memory`)")
                case .handled: preconditionFailure("a handled fault reported as a failure")
                }
            }
            done += chunk
            va = va + chunk
        }
        return .completed
    }

    /// Reads bytes the way `/proc/PID/mem` does: through PROT_NONE too, without faulting anything in
    /// (Linux: `access_remote_vm()` with FOLL_FORCE).
    func readData(in mm: AddressSpace, address: UInt64, length: UInt64) throws(ScenarioError) -> DataRead {
        guard let storage = kernel.memory.storage else { throw .unsupported("the model keeps no bytes in metadata mode") }
        var out = [UInt8]()
        out.reserveCapacity(Int(length))
        var va = VirtualAddress(address)
        while UInt64(out.count) < length {
            let chunk = min(Int(length) - out.count, Int(PageGeometry.pageSize) - va.pageOffset)
            guard let vma = mm.vmas.vma(containing: va) else { return .unmapped(address: va.rawValue) }
            var frame = mm.residentFrame(va)
            if frame == nil, let object = vma.sharedObject, vma.pageIndex(of: va) < UInt64(object.pages) {
                frame = object.cachedFrame(at: Int(vma.pageIndex(of: va)))
            }
            if frame == nil, let swapped = mm.swappedOutBytes(at: va.alignedDown(PageGeometry.pageSize)) {
                // Reading readable memory faults swapped pages back in, as the native process's own
                // read does; PROT_NONE memory is read through /proc/PID/mem's view without that.
                if vma.flags.protection.contains(.read), case .success(let pfn) = mm.access(va, .read) {
                    frame = pfn
                } else {
                    out.append(contentsOf: swapped[va.pageOffset..<(va.pageOffset + chunk)])
                    va = va + UInt64(chunk)
                    continue
                }
            }
            if let frame {
                let page = storage.bytes(of: frame)
                out.append(contentsOf: page[va.pageOffset..<(va.pageOffset + chunk)])
            } else {
                out.append(contentsOf: repeatElement(0, count: chunk))
            }
            va = va + UInt64(chunk)
        }
        return .bytes(out)
    }

    func fork(_ mm: AddressSpace) throws(ScenarioError) -> Result<AddressSpace, ScenarioErrno> {
        do throws(Errno) { return .success(try mm.fork()) } catch { return .failure(ScenarioErrno(error)) }
    }

    func exit(_ mm: AddressSpace) throws(ScenarioError) { mm.exit() }

    /// Advances simulated time wake-up by wake-up until `khugepaged/full_scans` grew by `fullScans`.
    func runKhugepaged(fullScans: Int) throws(ScenarioError) {
        let target = kernel.khugepaged.fullScans + fullScans
        var wakeups = 0
        while kernel.khugepaged.fullScans < target {
            guard kernel.runNextKernelThreadWakeup() else {
                throw .run("khugepaged has no address space to scan (none used MADV_HUGEPAGE or took a huge fault), "
                    + "so full_scans would never grow")
            }
            wakeups += 1
            if wakeups > 1_000_000 { throw .run("khugepaged did not finish \(fullScans) full scans in a million wake-ups") }
        }
    }

    func split(in mm: AddressSpace, address: UInt64, length: UInt64) throws(ScenarioError) {
        mm.splitHugePages(VirtualAddress(address), length: length)
    }

    /// Pinned pages by (address space, start, length), until `unpin` or `finish`.
    private var pins: [PinnedRange: [PFN]] = [:]
    private struct PinnedRange: Hashable {
        let mm: ObjectIdentifier
        let address: UInt64
        let length: UInt64
    }

    func pin(in mm: AddressSpace, address: UInt64, length: UInt64) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        let key = PinnedRange(mm: ObjectIdentifier(mm), address: address, length: length)
        guard pins[key] == nil else { throw .run("pin: this range is pinned already") }
        let count = Int((length + 4095) / 4096)
        switch mm.pinUserPages(VirtualAddress(address), count: count, write: true) {
        case .success(let pages):
            pins[key] = pages
            return .success(())
        case .failure(let errno):
            return .failure(ScenarioErrno(errno))
        }
    }

    func unpin(in mm: AddressSpace, address: UInt64, length: UInt64) throws(ScenarioError) {
        guard let pages = pins.removeValue(forKey: PinnedRange(mm: ObjectIdentifier(mm), address: address, length: length)) else {
            throw .run("unpin: no pin of exactly this range (pin and unpin must name the same start and size)")
        }
        kernel.releasePinnedPages(pages)
    }

    func smaps(of mm: AddressSpace, vmaStart: UInt64) throws(ScenarioError) -> [String: Int64]? {
        guard let entry = mm.smaps(startingAt: VirtualAddress(vmaStart)) else { return nil }
        var fields = [String: Int64]()
        for (name, bytes) in entry.fields { fields[name] = Int64(bytes >> 10) }
        fields["THPeligible"] = Int64(entry.thpEligible)
        return fields
    }

    /// `/proc/vmstat`, and the mTHP counters of every size (`hugepages-64kB/stats/anon_fault_alloc`, …).
    func vmstat() throws(ScenarioError) -> [String: Int64] {
        kernel.vmstatValues().merging(kernel.mthpStatValues()) { a, _ in a }.mapValues { Int64($0) }
    }

    func meminfo() throws(ScenarioError) -> [String: Int64] {
        var fields = [String: Int64]()
        for field in kernel.meminfo().fields { fields[field.name] = Int64(field.bytes >> 10) }
        return fields
    }

    func createCgroup(_ name: String) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        Self.result { () throws(Errno) in try kernel.createMemoryCgroup(name) }
    }

    func writeCgroup(_ name: String, file: String, value: String) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        Self.result { () throws(Errno) in try kernel.writeCgroupFile(name, file, value) }
    }

    func removeCgroup(_ name: String) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        Self.result { () throws(Errno) in try kernel.removeMemoryCgroup(name) }
    }

    func joinCgroup(_ mm: AddressSpace, _ name: String?) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        guard let name else { return Self.result { () throws(Errno) in try kernel.move(mm, to: nil) } }
        return Self.result { () throws(Errno) in try kernel.writeCgroupFile(name, "cgroup.procs", "\(mm.pid)") }
    }

    func setOOMScoreAdj(_ mm: AddressSpace, _ value: Int) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        mm.oomScoreAdj.store(value, ordering: .relaxed)
        return .success(())
    }

    func readCgroup(_ name: String, file: String) throws(ScenarioError) -> String {
        do { return try kernel.readCgroupFile(name, file) } catch { throw .run("cannot read \(file) of cgroup '\(name)': \(error)") }
    }

    func wasKilled(_ mm: AddressSpace) throws(ScenarioError) -> Bool { mm.wasOOMKilled }

    func finish() {
        for pages in pins.values { kernel.releasePinnedPages(pages) }
        pins = [:]
        for mm in kernel.addressSpaces { mm.exit() }
    }

    static func protection(_ p: Protection) -> VMCore.Protection {
        switch p {
        case .none: []
        case .r: .read
        case .rw: .readWrite
        case .rx: [.read, .execute]
        case .rwx: [.read, .write, .execute]
        }
    }

    static func result(_ body: () throws(Errno) -> Void) -> Result<Void, ScenarioErrno> {
        do throws(Errno) { try body(); return .success(()) } catch { return .failure(ScenarioErrno(error)) }
    }
}
