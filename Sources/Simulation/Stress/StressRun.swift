import Foundation
import Synchronization
import VMCore
import PhysicalMemory
import Kernel

/// `thpsim stress`: simulated CPUs (threads) of one process hammer the kernel model at once — faults,
/// huge faults, munmap, mprotect, MADV_DONTNEED, MADV_PAGEOUT, reclaim, splits, GUP and gup-fast pins
/// with O_DIRECT-like DMA, fork, a secondary MMU — in data mode. After each round all CPUs stop, and every invariant and every
/// byte each CPU wrote is checked. Each CPU works in its own address window, so it knows what its
/// bytes must be, while the kernel's shared structures (the mm, its locks and tables, the allocator)
/// see all of them at once.
public struct StressRun: Sendable {
    public struct Options: Sendable {
        public var seconds: Double = 5
        public var threads = 2
        public var seed: UInt64 = 1
        public var design: KernelDesign = SystemBuilder.defaultDesign
        /// One CPU at a time under the deterministic scheduler (replayable) instead of parallel threads.
        public var deterministic = false
        public var operationsPerRound = 150
        /// With a count, exactly that many rounds, whatever `seconds` says (a deterministic run then
        /// replays whole, not only as far as the clock let it).
        public var rounds: Int?
        public var memoryBytes: UInt64 = 256 << 20
        public init() {}

        /// The system the CPUs hammer: data mode, so every byte can be checked; no watermarks, so
        /// reclaim runs only when a CPU asks for it; `enabled=always`; one kernel CPU per thread.
        public var system: SystemBuilder {
            var s = SystemBuilder()
            s.design = design
            s.memoryBytes = memoryBytes
            s.mode = .data
            s.watermarks = .zero
            s.enabled = .always
            s.kernelCPUs = max(threads, 1)
            return s
        }
    }

    public struct Report: Sendable {
        public var rounds = 0
        public var operations = 0
        public var invariantChecks = 0
        public var pagesVerified = 0
        /// Pages read from swap (`pswpin`, and `swpin_zero` for those the zero map filled), and those
        /// of them swap readahead read (`swap_ra`; today's design counts it), so a run shows that it
        /// reached those paths.
        public var pagesSwappedIn = 0
        public var pagesReadAhead = 0
        /// The first problem found, naming the round; nil when all held.
        public var failure: String?
    }

    public let options: Options
    public init(_ options: Options) { self.options = options }

    /// What a page must hold: the bytes written as page `seed`'s version `version` (the seed moves with
    /// the bytes when mremap moves the page); version 0 is zeros.
    struct Content: Sendable, CustomStringConvertible {
        var seed: UInt64
        var version: UInt32
        static let zero = Content(seed: 0, version: 0)
        var bytes: [UInt8] { StressRun.content(page: seed, version: version) }
        var description: String { version == 0 ? "zeros" : "page \(VirtualAddress(seed << 12)) version \(version)" }
    }

    /// What one CPU's window must hold.
    final class Window: @unchecked Sendable {
        let base: VirtualAddress
        var pages: [UInt64: Content] = [:]   // page number → content (only mapped pages are present)
        var readOnly: Set<UInt64> = []
        var rng: UInt64
        var nextVersion: UInt32 = 1
        var operations = 0
        var problem: String?
        init(base: VirtualAddress, seed: UInt64) { self.base = base; rng = seed }
        func random(_ n: UInt64) -> UInt64 {
            rng &+= 0x9E37_79B9_7F4A_7C15
            var z = rng
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return (z ^ (z >> 31)) % n
        }
    }

    static let windowBytes: UInt64 = 32 << 20
    static let windowPages = windowBytes >> 12

    /// The bytes of `page` at `version`.
    static func content(page: UInt64, version: UInt32) -> [UInt8] {
        if version == 0 { return [UInt8](repeating: 0, count: 4096) }
        var out = [UInt8](repeating: 0, count: 4096)
        var x = page &* 0x9E37_79B9 &+ UInt64(version) &* 0x85EB_CA6B
        for i in stride(from: 0, to: 4096, by: 8) {
            x = x &* 6364136223846793005 &+ 1442695040888963407
            withUnsafeBytes(of: x.littleEndian) { for j in 0..<8 { out[i + j] = $0[j] } }
        }
        return out
    }

    public func run() -> Report {
        var report = Report()
        let kernel: Kernel
        do throws(SysfsError) { kernel = try options.system.makeKernel() } catch { report.failure = "\(error)"; return report }
        guard let mm = kernel.createAddressSpace() else { report.failure = "no memory for the process"; return report }
        let secondary = SecondaryMMU(mirroring: mm)
        let device = DirectIODevice(kernel: kernel)
        let windows = (0..<options.threads).map {
            Window(base: VirtualAddress(0x4000_0000_0000) + UInt64($0) * Self.windowBytes * 2,
                   seed: options.seed &* 0x1000_0001 &+ UInt64($0))
        }
        let deadline = Date().addingTimeInterval(options.seconds)
        var round = 0
        repeat {
            round += 1
            let tasks: [@Sendable () -> Void] = windows.enumerated().map { cpu, window in
                { @Sendable in
                    SimulatedCPU.switchTo(cpu)
                    for _ in 0..<options.operationsPerRound where window.problem == nil {
                        Self.operate(window, cpu: cpu, mm: mm, kernel: kernel, device: device, secondary: secondary)
                    }
                }
            }
            if options.deterministic {
                DeterministicScheduler(seed: options.seed &+ UInt64(round)).run(tasks)
            } else {
                let group = DispatchGroup()
                for task in tasks { Thread { task(); group.leave() }.startAfterEntering(group) }
                group.wait()
            }
            report.rounds = round
            report.pagesSwappedIn = kernel.vmstat[.pswpin] + kernel.vmstat[.swpinZero]
            report.pagesReadAhead = kernel.vmstat[.swapRA]
            report.operations = windows.reduce(0) { $0 + $1.operations }
            if let problem = windows.compactMap(\.problem).first {
                report.failure = "round \(round): \(problem)"
                return report
            }
            let problems = kernel.checkInvariants()
            report.invariantChecks += 1
            if !problems.isEmpty {
                report.failure = "round \(round): invariants: \(problems.prefix(3).joined(separator: "; "))"
                return report
            }
            for window in windows {
                // In page order: reading may fault pages in, and a seed must replay.
                for (page, content) in window.pages.sorted(by: { $0.key < $1.key }) {
                    let va = VirtualAddress(page << 12)
                    guard case .success(let bytes) = mm.read(va, count: 4096) else {
                        if window.readOnly.contains(page) { continue }
                        report.failure = "round \(round): \(va) cannot be read"; return report
                    }
                    if bytes != content.bytes {
                        report.failure = "round \(round): bytes at \(va) differ from \(content)"
                        return report
                    }
                    report.pagesVerified += 1
                }
            }
            for m in secondary.mappings {
                guard let t = mm.translate(m.address), (m.huge ? t.entry.pfn : t.frame) == m.frame else {
                    report.failure = "round \(round): the secondary MMU still maps \(m.address) to \(m.frame)"
                    return report
                }
            }
        } while options.rounds.map { round < $0 } ?? (Date() < deadline)
        mm.exit()
        return report
    }

    /// One random operation of one CPU on its window.
    static func operate(_ w: Window, cpu: Int, mm: AddressSpace, kernel: Kernel, device: DirectIODevice,
                        secondary: SecondaryMMU) {
        w.operations += 1
        let slot = w.random(Self.windowPages / 512 - 4) * 512
        let offset = w.random(4) == 0 ? w.random(512) : 0
        let first = w.base.pageNumber + slot + offset
        let count = [1, 8, 512, 1024, 1536][Int(w.random(5))] as UInt64
        let va = VirtualAddress(first << 12)
        let length = count << 12
        func mapped(_ p: UInt64) -> Bool { w.pages[p] != nil }
        let op = w.random(100)
        if ProcessInfo.processInfo.environment["THPSIM_STRESS_TRACE"] != nil {
            print("cpu \(cpu) op \(op) va \(va) count \(count)")
        }
        switch op {
        case 0..<12:
            guard (try? mm.mmap(address: va, length: length, protection: .readWrite, flags: [.private, .fixed])) != nil else {
                w.problem = "mmap \(va) failed"; return
            }
            for p in first..<(first + count) { w.pages[p] = .zero; w.readOnly.remove(p) }
            if w.random(2) == 0 { try? mm.madvise(va, length: length, advice: .hugepage) }
        case 12..<20:
            try? mm.munmap(va, length: length)
            for p in first..<(first + count) { w.pages[p] = nil; w.readOnly.remove(p) }
        case 20..<50:
            for p in first..<(first + min(count, 16)) where mapped(p) && !w.readOnly.contains(p) {
                let version = w.nextVersion; w.nextVersion += 1
                if case .failure(let f) = mm.write(VirtualAddress(p << 12), content(page: p, version: version)) {
                    w.problem = "write at \(VirtualAddress(p << 12)) faulted: \(f)"; return
                }
                w.pages[p] = Content(seed: p, version: version)
            }
        case 50..<51:
            // The THP settings change under everyone (they are global, like sysfs).
            var settings = kernel.hugepageSettings
            settings.enabled = [.always, .always, .madvise, .never][Int(w.random(4))]
            settings.useZeroPage = w.random(2) == 0
            kernel.hugepageSettings = settings
        case 51..<60:
            for p in first..<(first + min(count, 16)) where mapped(p) && !w.readOnly.contains(p) {
                guard case .success(let bytes) = mm.read(VirtualAddress(p << 12), count: 4096) else {
                    w.problem = "\(VirtualAddress(p << 12)) cannot be read by CPU \(cpu)"; return
                }
                let expected = w.pages[p]!.bytes
                if bytes != expected {
                    let i = bytes.indices.first { bytes[$0] != expected[$0] }!
                    w.problem = "bytes at \(VirtualAddress(p << 12)) changed under CPU \(cpu): byte \(i) is \(bytes[i]), expected \(expected[i]) (\(w.pages[p]!))"
                    return
                }
            }
        case 60..<66:
            guard (first..<(first + count)).allSatisfy(mapped) else { return }
            let readOnly = w.random(2) == 0
            guard (try? mm.mprotect(va, length: length, protection: readOnly ? .read : .readWrite)) != nil else {
                w.problem = "mprotect \(va) failed"; return
            }
            for p in first..<(first + count) { if readOnly { w.readOnly.insert(p) } else { w.readOnly.remove(p) } }
        case 66..<72:
            guard (first..<(first + count)).allSatisfy(mapped) else { return }
            try? mm.madvise(va, length: length, advice: .dontNeed)
            for p in first..<(first + count) { w.pages[p] = .zero }
        case 72..<76:
            mm.splitHugePages(va, length: length)
        case 76..<77:
            // MADV_PAGEOUT: the bytes go to swap and come back on the next touch (the swap cache
            // when a fork shares the entries).
            try? mm.madvise(va, length: length, advice: .pageout)
        case 77..<78:
            // Direct reclaim from the LRU lists, isolating folios other CPUs fault, split and unmap.
            kernel.reclaim(pages: 64, by: .direct)
        case 78..<88:
            // O_DIRECT read into up to 8 pages: the DMA writes the next version of each.
            let pages = min(count, 8)
            guard (first..<(first + pages)).allSatisfy({ mapped($0) && !w.readOnly.contains($0) }) else { return }
            guard case .success(let request) = device.submit(.read, in: mm, buffer: va, length: Int(pages << 12), cpu: cpu) else {
                w.problem = "O_DIRECT submit at \(va) failed"; return
            }
            var data = [UInt8]()
            var versions: [UInt32] = []
            for p in first..<(first + pages) {
                let version = w.nextVersion; w.nextVersion += 1
                versions.append(version)
                data += content(page: p, version: version)
            }
            device.completeRead(request, data: data)
            for (i, p) in (first..<(first + pages)).enumerated() { w.pages[p] = Content(seed: p, version: versions[i]) }
        case 88..<92:
            if case .success(let pages) = mm.getUserPagesFast(va, count: Int(min(count, 16)), write: false, cpu: cpu) {
                kernel.putUserPages(pages)
            }
        case 92..<94:
            if mapped(first) { secondary.fault(at: va, write: !w.readOnly.contains(first)) }
        case 94..<96:
            // mremap a fully mapped range to another slot of the window (aligned: huge PMDs move whole).
            guard (first..<(first + count)).allSatisfy(mapped) else { return }
            let target = w.base.pageNumber + w.random(Self.windowPages / 512 - 4) * 512 + (w.random(4) == 0 ? w.random(512) : 0)
            guard target + count <= w.base.pageNumber + Self.windowPages,
                  target + count <= first || first + count <= target else { return }
            do throws(Errno) {
                _ = try mm.mremap(va, oldSize: length, newSize: length, flags: [.mayMove, .fixed],
                                  newAddress: VirtualAddress(target << 12))
            } catch {
                // The range may span VMAs that differ (advice, protection): EFAULT, and nothing moved.
                if error != .EFAULT { w.problem = "mremap \(va) → \(VirtualAddress(target << 12)) failed: \(error)" }
                return
            }
            let moved = (0..<count).map { (w.pages[first + $0]!, w.readOnly.contains(first + $0)) }
            for p in target..<(target + count) { w.pages[p] = nil; w.readOnly.remove(p) }
            for p in first..<(first + count) { w.pages[p] = nil; w.readOnly.remove(p) }
            for (i, (content, readOnly)) in moved.enumerated() {
                w.pages[target + UInt64(i)] = content
                if readOnly { w.readOnly.insert(target + UInt64(i)) }
            }
        default:
            // fork: the child writes to its copies and exits; the parent's bytes must not change.
            guard let child = try? mm.fork() else { return }
            // The lowest writable page (not dictionary order, which varies between processes).
            if let p = w.pages.keys.filter({ !w.readOnly.contains($0) }).min() {
                _ = child.write(VirtualAddress(p << 12), [UInt8](repeating: 0xEE, count: 4096))
            }
            child.exit()
        }
    }
}

extension Thread {
    /// Starts the thread after entering `group`; the thread's body must leave it.
    func startAfterEntering(_ group: DispatchGroup) {
        group.enter()
        start()
    }
}
