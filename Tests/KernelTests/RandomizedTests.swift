import Testing
import Foundation
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

/// A page-granular reference model of what each process's memory must contain, written independently
/// of the kernel's VMA code: Linux's semantics, stated per page.
final class ShadowObject { var pages: [Int: [UInt8]] = [:] }

struct ShadowPage {
    enum Backing { case anonymous([UInt8]?), shared(ShadowObject, Int) }
    var prot: Protection
    var dontFork = false
    var backing: Backing
    var bytes: [UInt8] {
        switch backing {
        case .anonymous(let b): b ?? Self.zeros
        case .shared(let o, let i): o.pages[i] ?? Self.zeros
        }
    }
    static let zeros = [UInt8](repeating: 0, count: 4096)
}

final class ShadowProcess {
    let mm: AddressSpace
    var pages: [UInt64: ShadowPage] = [:]
    init(_ mm: AddressSpace) { self.mm = mm }
}

/// Drives random system calls and accesses against the model and the reference, checking invariants
/// and every byte after each step.
struct RandomizedRun {
    var rng: SplitMix64
    let kernel: Kernel
    var processes: [ShadowProcess] = []
    var failures: [String] = []
    /// Whether the run maps huge pages: 2 MiB-aligned regions, THP settings changed at random, splits.
    let hugepages: Bool
    let window = VirtualAddress(0x1000_0000)
    let windowPages: UInt64
    let pageLimit: Int

    init(seed: UInt64, hugepages: Bool = false, design: KernelDesign = .linux2_6_38,
         swap: SwapConfiguration = SwapConfiguration()) {
        rng = SplitMix64(seed: seed)
        self.hugepages = hugepages
        kernel = hugepages ? TestMachine.kernel(memory: 32 << 20, design: design, enabled: .always, swap: swap)
                           : TestMachine.kernel(memory: 12 << 20, design: design, swap: swap)
        windowPages = hugepages ? 4608 : 768
        pageLimit = hugepages ? 1200 : 300
        processes = [ShadowProcess(kernel.createAddressSpace()!)]
    }

    mutating func random(_ n: UInt64) -> UInt64 { rng.next() % n }
    /// A page `p` has, chosen by the run's generator among its page numbers in order: a dictionary's
    /// own order changes from process to process, and a seed must replay.
    mutating func randomOwnedPage(_ p: ShadowProcess) -> UInt64? {
        guard !p.pages.isEmpty else { return nil }
        let pages = p.pages.keys.sorted()
        return pages[Int(random(UInt64(pages.count)))]
    }
    /// A page for the small-page operations: in the huge-page run they mostly stay below the 2 MiB
    /// slots, so that those slots' PMDs are empty when huge regions are mapped there (a leftover PTE
    /// table keeps a PMD from going huge, in Linux as here).
    mutating func randomPageInWindow() -> UInt64 {
        if hugepages { return window.pageNumber + random(smallPages) }
        return window.pageNumber + random(windowPages)
    }
    /// Pages of the window below the 2 MiB slots of the huge-page run.
    let smallPages: UInt64 = 1024
    /// A 2 MiB-aligned slot above the small pages, as a page number.
    mutating func randomHugeSlot() -> UInt64 {
        window.pageNumber + smallPages + random((windowPages - smallPages) / 512 - 1) * 512
    }

    mutating func run(steps: Int) {
        let trace = ProcessInfo.processInfo.environment["THPSIM_TRACE"] != nil
        for step in 0..<steps {
            let op = perform()
            if trace { print("step \(step): \(op)") }
            verify(step: step, op: op)
            if !failures.isEmpty { return }
        }
    }

    mutating func perform() -> String {
        let p = processes[Int(random(UInt64(processes.count)))]
        let mm = p.mm
        if hugepages, random(100) < 10 { return hugeOperation(p) }
        switch random(100) {
        case 0..<12:
            let pages = 1 + random(24)
            let prot: Protection = [.readWrite, .readWrite, .read, .none, [.read, .execute]][Int(random(5))]
            let shared = random(5) == 0
            let fixed = random(3) != 0
            let at = VirtualAddress(randomPageInWindow() << 12)
            guard p.pages.count + Int(pages) <= pageLimit else { return "mmap skipped" }
            let flags: MapFlags = (shared ? MapFlags.shared : MapFlags.private).union(fixed ? MapFlags.fixed : [])
            do {
                let a = try mm.mmap(address: fixed ? at : nil, length: pages << 12, protection: prot, flags: flags)
                let object = ShadowObject()
                for i in 0..<pages {
                    p.pages[a.pageNumber + i] = ShadowPage(prot: prot, backing: shared ? .shared(object, Int(i)) : .anonymous(nil))
                }
                return "mmap \(a) \(pages)p \(prot) shared=\(shared)"
            } catch {
                failures.append("mmap \(fixed ? at.description : "-") \(pages)p failed: \(error)")
                return "mmap"
            }
        case 12..<20:
            // The huge-page run also unmaps inside existing mappings (wholly or partly, huge or not).
            let first = hugepages && random(2) == 0 ? (randomOwnedPage(p) ?? randomPageInWindow())
                                                    : randomPageInWindow()
            let count = hugepages && random(4) == 0 ? 512 : 1 + random(16)
            do { try mm.munmap(VirtualAddress(first << 12), length: count << 12) } catch { failures.append("munmap: \(error)") }
            for page in first..<(first + count) { p.pages[page] = nil }
            return "munmap \(VirtualAddress(first << 12)) \(count)p"
        case 20..<30:
            guard let first = randomOwnedPage(p) else { return "mprotect skipped" }
            let count = 1 + random(12)
            let prot: Protection = [.readWrite, .read, .none, [.read, .execute], .readWrite][Int(random(5))]
            var expected: Errno? = nil
            for page in first..<(first + count) {
                guard p.pages[page] != nil else { expected = .ENOMEM; break }
                p.pages[page]!.prot = prot
            }
            if (first..<(first + count)).contains(where: { p.pages[$0] == nil }) { expected = .ENOMEM }
            let got = capture { () throws(Errno) in try mm.mprotect(VirtualAddress(first << 12), length: count << 12, protection: prot) }
            if got != expected { failures.append("mprotect errno \(String(describing: got)), expected \(String(describing: expected))") }
            return "mprotect \(VirtualAddress(first << 12)) \(count)p \(prot)"
        case 30..<38:
            return remap(p)
        case 38..<46:
            let first = randomOwnedPage(p) ?? randomPageInWindow()
            let count = 1 + random(8)
            let advice: Advice = [.dontNeed, .dontNeed, .dontFork, .doFork, .hugepage, .noHugepage, .pageout][Int(random(7))]
            var expected: Errno? = nil
            for page in first..<(first + count) {
                guard var sp = p.pages[page] else { expected = .ENOMEM; continue }
                switch advice {
                case .dontNeed: if case .anonymous = sp.backing { sp.backing = .anonymous(nil) }
                case .dontFork: sp.dontFork = true
                case .doFork: sp.dontFork = false
                default: break
                }
                p.pages[page] = sp
            }
            let got = capture { () throws(Errno) in try mm.madvise(VirtualAddress(first << 12), length: count << 12, advice: advice) }
            if got != expected { failures.append("madvise errno \(String(describing: got)), expected \(String(describing: expected))") }
            return "madvise \(VirtualAddress(first << 12)) \(count)p \(advice)"
        case 46..<72:
            let first = randomOwnedPage(p) ?? randomPageInWindow()
            let start = VirtualAddress(first << 12) + random(4096)
            let length = 1 + Int(random(6000))
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            // Reference: page by page until the first page that refuses a write.
            var expectedFault: VirtualAddress? = nil
            var va = start, offset = 0
            while offset < length {
                let chunk = min(length - offset, 4096 - va.pageOffset)
                guard let sp = p.pages[va.pageNumber], sp.prot.contains(.write) else { expectedFault = va; break }
                var data = sp.bytes
                data.replaceSubrange(va.pageOffset..<(va.pageOffset + chunk), with: bytes[offset..<(offset + chunk)])
                switch sp.backing {
                case .anonymous: p.pages[va.pageNumber]!.backing = .anonymous(data)
                case .shared(let o, let i): o.pages[i] = data
                }
                offset += chunk
                va = va + UInt64(chunk)
            }
            switch mm.write(start, bytes) {
            case .success: if let f = expectedFault { failures.append("write at \(start) succeeded, expected a fault at \(f)") }
            case .failure(let f): if f.address != expectedFault { failures.append("write at \(start) faulted at \(f.address) (\(f.outcome)), expected \(String(describing: expectedFault))") }
            }
            return "write \(start) \(length)"
        case 72..<84:
            let first = randomOwnedPage(p) ?? randomPageInWindow()
            let start = VirtualAddress(first << 12) + random(4096)
            let length = 1 + Int(random(9000))
            var expected = [UInt8](), fault: VirtualAddress? = nil
            var va = start
            while expected.count < length {
                let chunk = min(length - expected.count, 4096 - va.pageOffset)
                guard let sp = p.pages[va.pageNumber], !sp.prot.isEmpty else { fault = va; break }
                expected += sp.bytes[va.pageOffset..<(va.pageOffset + chunk)]
                va = va + UInt64(chunk)
            }
            switch mm.read(start, count: length) {
            case .success(let got):
                if fault != nil { failures.append("read at \(start) succeeded, expected a fault at \(fault!)") }
                else if got != expected { failures.append("read at \(start) returned other bytes") }
            case .failure(let f): if f.address != fault { failures.append("read at \(start) faulted at \(f.address), expected \(String(describing: fault))") }
            }
            return "read \(start) \(length)"
        case 84..<92:
            guard processes.count < 3 else { return "fork skipped" }
            do {
                let child = ShadowProcess(try mm.fork())
                for (page, sp) in p.pages where !sp.dontFork { child.pages[page] = sp }
                processes.append(child)
                return "fork \(mm.pid) → \(child.mm.pid)"
            } catch { failures.append("fork: \(error)"); return "fork" }
        default:
            guard processes.count > 1 else { return "exit skipped" }
            mm.exit()
            processes.removeAll { $0 === p }
            return "exit \(mm.pid)"
        }
    }

    /// Operations that only the huge-page run does: map a region where huge pages fit (aligned, or
    /// not), change the THP settings, or split the huge pages of a range as debugfs would.
    mutating func hugeOperation(_ p: ShadowProcess) -> String {
        let mm = p.mm
        switch random(10) {
        case 0..<5:
            let pages: UInt64 = 512 * (1 + random(2)) + (random(3) == 0 ? random(64) : 0)
            let at = VirtualAddress((randomHugeSlot() + (random(4) == 0 ? random(512) : 0)) << 12)
            let replaced = (0..<pages).filter { p.pages[at.pageNumber + $0] != nil }.count
            guard p.pages.count - replaced + Int(pages) <= pageLimit else { return "huge mmap skipped" }
            do {
                let a = try mm.mmap(address: at, length: pages << 12, protection: .readWrite, flags: [.private, .fixed])
                for i in 0..<pages { p.pages[a.pageNumber + i] = ShadowPage(prot: .readWrite, backing: .anonymous(nil)) }
                if random(4) != 0 { try? mm.madvise(a, length: pages << 12, advice: .hugepage) }
                return "huge mmap \(a) \(pages)p"
            } catch {
                failures.append("huge mmap \(at) \(pages)p failed: \(error)")
                return "huge mmap"
            }
        case 6 where kernel.hugepagePolicy.defersSplit(partiallyMapped: true):
            // The deferred-split shrinker, as memory pressure would run it.
            let freed = kernel.deferredSplitScan()
            return "deferred split scan: \(freed) pages freed"
        case 5:
            var settings = kernel.hugepageSettings
            settings.enabled = [.always, .always, .madvise, .madvise, .never][Int(random(5))]
            settings.useZeroPage = random(2) == 0
            var sizes = ""
            if kernel.design.supportsMTHP {
                // Multi-size THP: a random size below 2 MiB gets a random setting.
                let order = UInt8(2 + random(7))
                let value = TransparentHugepageSettings.SizeEnabled.allCases[Int(random(4))]
                settings.setSizeEnabled(order: order, value)
                sizes = " hugepages-\(4 << order)kB/enabled=\(value)"
            }
            kernel.hugepageSettings = settings
            return "set enabled=\(settings.enabled) use_zero_page=\(settings.useZeroPage)\(sizes)"
        case 7 where random(2) == 0:
            // Swap a whole 2 MiB range out (a THP goes whole to a device with clusters), or reclaim.
            if random(2) == 0 {
                let page = randomOwnedPage(p) ?? randomPageInWindow()
                let at = VirtualAddress((page & ~511) << 12)
                try? mm.madvise(at, length: 2 << 20, advice: .pageout)
                return "pageout \(at) 2M"
            }
            return "reclaim: \(kernel.reclaim(pages: 256)) pages freed"
        default:
            let first = randomOwnedPage(p) ?? randomPageInWindow()
            let count = 1 + random(1024)
            let split = mm.splitHugePages(VirtualAddress(first << 12), length: count << 12)
            return "split \(VirtualAddress(first << 12)) \(count)p: \(split) huge pages"
        }
    }

    mutating func remap(_ p: ShadowProcess) -> String {
        let mm = p.mm
        guard !mm.vmas.areas.isEmpty else { return "mremap skipped" }
        let vma = mm.vmas.areas[Int(random(UInt64(mm.vmas.count)))]
        let vmaPages = vma.length >> 12
        var skip = random(vmaPages)
        var oldPages = 1 + random(vmaPages - skip)
        var newPages = 1 + random(24)
        var flags: RemapFlags = random(2) == 0 ? .mayMove : []
        var destination: VirtualAddress? = nil
        // In the huge-page run, sometimes move an aligned 2 MiB piece to an aligned place (move_huge_pmd).
        let alignedMove = hugepages && random(3) == 0 && vmaPages >= 512
        if alignedMove {
            let firstAligned = (vma.start.pageNumber + 511) / 512 * 512
            if firstAligned + 512 <= vma.end.pageNumber {
                skip = firstAligned - vma.start.pageNumber
                oldPages = 512
                newPages = 512
            }
        }
        let old = vma.start + (skip << 12)
        if vma.isShared { newPages = min(newPages, oldPages) }
        if alignedMove || random(3) == 0 {
            let d = alignedMove ? VirtualAddress(randomHugeSlot() << 12)
                                : VirtualAddress(randomPageInWindow() << 12)
            if d + (newPages << 12) <= old || old + (oldPages << 12) <= d { destination = d; flags = [.mayMove, .fixed] }
        }
        guard p.pages.count + Int(newPages) <= pageLimit + 20 else { return "mremap skipped" }
        let result: VirtualAddress
        do throws(Errno) {
            result = try mm.mremap(old, oldSize: oldPages << 12, newSize: newPages << 12, flags: flags, newAddress: destination)
        } catch {
            if error != .ENOMEM || flags.contains(.fixed) { failures.append("mremap \(old) \(oldPages)→\(newPages) \(flags.rawValue): \(error)") }
            return "mremap refused"
        }
        let moved = (0..<oldPages).map { p.pages[old.pageNumber + $0]! }
        if let d = destination { for i in 0..<newPages { p.pages[d.pageNumber + i] = nil } }
        for i in 0..<oldPages { p.pages[old.pageNumber + i] = nil }
        let template = moved[0]
        for i in 0..<newPages {
            if i < oldPages { p.pages[result.pageNumber + i] = moved[Int(i)] }
            else { p.pages[result.pageNumber + i] = ShadowPage(prot: template.prot, dontFork: template.dontFork, backing: .anonymous(nil)) }
        }
        return "mremap \(old) \(oldPages)p → \(result) \(newPages)p"
    }

    func capture(_ body: () throws(Errno) -> Void) -> Errno? {
        do throws(Errno) { try body(); return nil } catch { return error }
    }

    /// 4 KiB of zeros, to compare with by `memcmp` (an element-wise loop is slow in debug builds).
    static let zeroPage = [UInt8](repeating: 0, count: 4096)

    mutating func verify(step: Int, op: String) {
        let invariants = kernel.checkInvariants()
        if !invariants.isEmpty { failures.append("step \(step) (\(op)): invariants: \(invariants.prefix(3))"); return }
        let storage = kernel.memory.storage!
        for p in processes {
            var covered = 0
            for vma in p.mm.vmas.areas {
                var va = vma.start
                while va < vma.end {
                    covered += 1
                    guard let sp = p.pages[va.pageNumber] else {
                        failures.append("step \(step) (\(op)): mm \(p.mm.pid) maps \(va), the reference does not"); return
                    }
                    if sp.prot != vma.flags.protection || sp.dontFork != vma.flags.contains(.dontCopy) {
                        failures.append("step \(step) (\(op)): mm \(p.mm.pid) \(va): prot \(vma.flags.protection) dontfork \(vma.flags.contains(.dontCopy)), reference \(sp.prot) \(sp.dontFork)"); return
                    }
                    var frame = p.mm.residentFrame(va)
                    if frame == nil, let object = vma.sharedObject { frame = object.cachedFrame(at: Int(vma.pageIndex(of: va))) }
                    // A page in swap holds its bytes in its slot.
                    let swapped = frame == nil ? p.mm.swappedOutBytes(at: va) : nil
                    let same: Bool = sp.bytes.withUnsafeBytes { want in
                        if let swapped { return swapped.withUnsafeBytes { memcmp(want.baseAddress!, $0.baseAddress!, 4096) == 0 } }
                        guard let frame else { return Self.zeroPage.withUnsafeBytes { memcmp(want.baseAddress!, $0.baseAddress!, 4096) == 0 } }
                        return memcmp(want.baseAddress!, storage.bytes(of: frame).baseAddress!, 4096) == 0
                    }
                    if !same { failures.append("step \(step) (\(op)): mm \(p.mm.pid) bytes at \(va) differ from the reference"); return }
                    va = va + 4096
                }
            }
            if covered != p.pages.count { failures.append("step \(step) (\(op)): mm \(p.mm.pid) maps \(covered) pages, reference \(p.pages.count)"); return }
        }
    }
}

@Suite("Randomized: system calls and accesses against a reference, in data mode")
struct RandomizedTests {
    static var seed: UInt64 {
        ProcessInfo.processInfo.environment["THPSIM_SEED"].flatMap { UInt64($0) } ?? 0x5EED_2026
    }
    static var steps: Int { TestLength.pick(short: 2_500, full: 10_000, variable: "THPSIM_STEPS") }
    /// Steps of the huge-page runs.
    static var hugeSteps: Int { TestLength.pick(short: 600, full: 2_000, variable: "THPSIM_HUGE_STEPS") }

    @Test("random operations (10,000 at full length) keep every byte and every invariant (seed printed; THPSIM_SEED replays)")
    func randomOperations() {
        let seed = Self.seed
        print("randomized kernel test: seed \(seed) (replay with THPSIM_SEED=\(seed)), \(Self.steps) steps")
        var run = RandomizedRun(seed: seed)
        run.run(steps: Self.steps)
        #expect(run.failures.isEmpty, "seed \(seed): \(run.failures.first ?? "")")
    }

    @Test("with huge pages: random operations over 2 MiB regions, settings and splits keep every byte and invariant")
    func randomOperationsWithHugepages() {
        let seed = Self.seed ^ 0x7E90   // 0x7E9 until the page choice stopped depending on hash order; this one exercises 7 huge faults and splits
        let steps = Self.hugeSteps
        print("randomized huge-page test: seed \(seed) (replay with THPSIM_SEED=\(Self.seed)), \(steps) steps")
        var run = RandomizedRun(seed: seed, hugepages: true)
        run.run(steps: steps)
        #expect(run.failures.isEmpty, "seed \(seed): \(run.failures.first ?? "")")
        let thp = run.kernel.vmstat
        print("randomized huge-page test: thp_fault_alloc \(thp[.thpFaultAlloc]), thp_split_page \(thp[.thpSplitPage]), thp_split_pmd \(thp[.thpSplitPMD]), thp_zero_page_alloc \(thp[.thpZeroPageAlloc]), thp_fault_fallback \(thp[.thpFaultFallback])")
        #expect(thp[.thpFaultAlloc] > 0 && thp[.thpSplitPage] > 0, "the run never exercised huge pages")
    }

    @Test("linux-6.18: random operations with PTE-mapped THPs, deferred splits and folio splits keep every byte and invariant")
    func randomOperationsWithHugepagesToday() {
        let seed = Self.seed ^ 0x618
        let steps = Self.hugeSteps
        print("randomized linux-6.18 test: seed \(seed) (replay with THPSIM_SEED=\(Self.seed)), \(steps) steps")
        var run = RandomizedRun(seed: seed, hugepages: true, design: .linux6_18)
        run.run(steps: steps)
        #expect(run.failures.isEmpty, "seed \(seed): \(run.failures.first ?? "")")
        let thp = run.kernel.vmstat
        print("randomized linux-6.18 test: thp_fault_alloc \(thp[.thpFaultAlloc]), thp_split_pmd \(thp[.thpSplitPMD]), thp_split_page \(thp[.thpSplitPage]), thp_split_page_failed \(thp[.thpSplitPageFailed]), thp_deferred_split_page \(thp[.thpDeferredSplitPage])")
        #expect(thp[.thpFaultAlloc] > 0 && thp[.thpSplitPMD] > 0 && thp[.thpSplitPage] > 0 && thp[.thpDeferredSplitPage] > 0,
                "the run never exercised PTE-mapped THPs and their splits")
    }

    @Test("linux-6.18 with a swap device of 2 MiB clusters: THPs go to swap whole; swap cache and shared reclaim keep every byte and invariant")
    func randomOperationsWithSwapClusters() {
        let seed = Self.seed ^ 0x5C1
        let steps = TestLength.pick(short: 1_000, full: 2_000, variable: "THPSIM_HUGE_STEPS")   // fewer never swap in
        print("randomized swap-cluster test: seed \(seed) (replay with THPSIM_SEED=\(Self.seed)), \(steps) steps")
        var run = RandomizedRun(seed: seed, hugepages: true, design: .linux6_18, swap: SwapConfiguration(clusters: true))
        run.run(steps: steps)
        #expect(run.failures.isEmpty, "seed \(seed): \(run.failures.first ?? "")")
        let v = run.kernel.vmstat
        print("randomized swap-cluster test: thp_swpout \(v[.thpSwpout]), thp_swpout_fallback \(v[.thpSwpoutFallback]), pswpout \(v[.pswpout]), pswpin \(v[.pswpin]), pgmajfault \(v[.pgmajfault]), pgsteal_direct \(v[.pgstealDirect]), allocstall_normal \(v[.allocstallNormal])")
        #expect(v[.pswpout] > 0 && v[.pswpin] > 0, "the run never swapped out and in")
    }
}
