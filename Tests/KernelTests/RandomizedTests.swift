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
    let kernel = TestMachine.kernel(memory: 12 << 20)
    var processes: [ShadowProcess] = []
    var failures: [String] = []
    let window = VirtualAddress(0x1000_0000)
    let windowPages: UInt64 = 768

    init(seed: UInt64) {
        rng = SplitMix64(seed: seed)
        processes = [ShadowProcess(kernel.createAddressSpace()!)]
    }

    mutating func random(_ n: UInt64) -> UInt64 { rng.next() % n }
    mutating func randomPageInWindow() -> UInt64 { window.pageNumber + random(windowPages) }

    mutating func run(steps: Int) {
        for step in 0..<steps {
            let op = perform()
            verify(step: step, op: op)
            if !failures.isEmpty { return }
        }
    }

    mutating func perform() -> String {
        let p = processes[Int(random(UInt64(processes.count)))]
        let mm = p.mm
        switch random(100) {
        case 0..<12:
            let pages = 1 + random(24)
            let prot: Protection = [.readWrite, .readWrite, .read, .none, [.read, .execute]][Int(random(5))]
            let shared = random(5) == 0
            let fixed = random(3) != 0
            let at = VirtualAddress(randomPageInWindow() << 12)
            guard p.pages.count + Int(pages) <= 300 else { return "mmap skipped" }
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
            let first = randomPageInWindow(), count = 1 + random(16)
            do { try mm.munmap(VirtualAddress(first << 12), length: count << 12) } catch { failures.append("munmap: \(error)") }
            for page in first..<(first + count) { p.pages[page] = nil }
            return "munmap \(VirtualAddress(first << 12)) \(count)p"
        case 20..<30:
            guard let first = p.pages.keys.randomElement(using: &rng) else { return "mprotect skipped" }
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
            let first = p.pages.keys.randomElement(using: &rng) ?? randomPageInWindow()
            let count = 1 + random(8)
            let advice: Advice = [.dontNeed, .dontNeed, .dontFork, .doFork, .hugepage, .noHugepage][Int(random(6))]
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
            let first = p.pages.keys.randomElement(using: &rng) ?? randomPageInWindow()
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
            let first = p.pages.keys.randomElement(using: &rng) ?? randomPageInWindow()
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

    mutating func remap(_ p: ShadowProcess) -> String {
        let mm = p.mm
        guard !mm.vmas.areas.isEmpty else { return "mremap skipped" }
        let vma = mm.vmas.areas[Int(random(UInt64(mm.vmas.count)))]
        let vmaPages = vma.length >> 12
        let skip = random(vmaPages)
        let oldPages = 1 + random(vmaPages - skip)
        let old = vma.start + (skip << 12)
        var newPages = 1 + random(24)
        if vma.isShared { newPages = min(newPages, oldPages) }
        var flags: RemapFlags = random(2) == 0 ? .mayMove : []
        var destination: VirtualAddress? = nil
        if random(3) == 0 {
            let d = VirtualAddress(randomPageInWindow() << 12)
            if d + (newPages << 12) <= old || old + (oldPages << 12) <= d { destination = d; flags = [.mayMove, .fixed] }
        }
        guard p.pages.count + Int(newPages) <= 320 else { return "mremap skipped" }
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
                    let same: Bool = sp.bytes.withUnsafeBytes { want in
                        guard let frame else { return want.allSatisfy { $0 == 0 } }
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
    static var steps: Int {
        ProcessInfo.processInfo.environment["THPSIM_STEPS"].flatMap { Int($0) } ?? 10_000
    }

    @Test("10,000 random operations keep every byte and every invariant (seed printed; THPSIM_SEED replays)")
    func randomOperations() {
        let seed = Self.seed
        print("randomized kernel test: seed \(seed) (replay with THPSIM_SEED=\(seed)), \(Self.steps) steps")
        var run = RandomizedRun(seed: seed)
        run.run(steps: Self.steps)
        #expect(run.failures.isEmpty, "seed \(seed): \(run.failures.first ?? "")")
    }
}
