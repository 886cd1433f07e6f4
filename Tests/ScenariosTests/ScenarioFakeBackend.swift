@testable import Scenarios

/// A tiny in-memory kernel for interpreter tests, written apart from the shadow so that the two
/// check each other: per-page mappings, private pages copied at fork, shared pages in a box.
///
/// It places mappings at unaligned addresses (so the interpreter's 2 MiB trimming runs) and can
/// be told to misbehave (`forgetDontneed`) so that data mismatches are reported.
final class FakeBackend: ScenarioBackend {
    final class SharedBox { var pages: [UInt64: [UInt8]] = [:] }

    struct Page {
        var protection: Protection
        var shared: SharedBox?
        var sharedIndex: UInt64 = 0
        var dontfork = false
    }

    final class Memory {
        var pages: [UInt64: Page] = [:]
        var bytes: [UInt64: [UInt8]] = [:]
    }

    static let page: UInt64 = 4096
    var name: String { "fake" }
    var countersAreSystemWide = false
    var nextAddress: UInt64 = 0x10_0000_3000
    var forgetDontneed = false
    var unsupportedKhugepaged = false
    var tunables: [String: String] = [:]
    var writes: Int64 = 0
    var finished = false
    var calls: [String] = []

    func start(_ scenario: Scenario) throws(ScenarioError) -> Memory { Memory() }
    func setTunable(_ knob: Knob) throws(ScenarioError) { tunables[knob.name] = knob.value }

    private func pages(_ address: UInt64, _ length: UInt64) -> StrideTo<UInt64> {
        stride(from: address, to: address + (length + Self.page - 1) / Self.page * Self.page, by: Int(Self.page))
    }

    func mmap(in m: Memory, address: UInt64?, length: UInt64, protection: Protection, shared: Bool, stack: Bool) throws(ScenarioError) -> Result<UInt64, ScenarioErrno> {
        calls.append("mmap \(length)")
        guard length > 0 else { return .failure(ScenarioErrno(name: "EINVAL")!) }
        let start = address ?? nextAddress
        if address == nil { nextAddress += (length + Self.page - 1) / Self.page * Self.page + 0x10_0000 }
        _ = try munmap(in: m, address: start, length: length)
        let box = shared ? SharedBox() : nil
        for (i, p) in pages(start, length).enumerated() { m.pages[p] = Page(protection: protection, shared: box, sharedIndex: UInt64(i)) }
        return .success(start)
    }

    func munmap(in m: Memory, address: UInt64, length: UInt64) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        guard address % Self.page == 0, length > 0 else { return .failure(ScenarioErrno(name: "EINVAL")!) }
        for p in pages(address, length) { m.pages[p] = nil; m.bytes[p] = nil }
        return .success(())
    }

    func mprotect(in m: Memory, address: UInt64, length: UInt64, protection: Protection) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        guard pages(address, length).allSatisfy({ m.pages[$0] != nil }) else { return .failure(ScenarioErrno(name: "ENOMEM")!) }
        for p in pages(address, length) { m.pages[p]!.protection = protection }
        return .success(())
    }

    func mremap(in m: Memory, address: UInt64, oldLength: UInt64, newLength: UInt64, destination: UInt64?) throws(ScenarioError) -> Result<UInt64, ScenarioErrno> {
        guard newLength > 0 else { return .failure(ScenarioErrno(name: "EINVAL")!) }
        let target = destination ?? (newLength <= oldLength ? address : nextAddress)
        if destination == nil && newLength > oldLength { nextAddress += newLength + 0x10_0000 }
        let kept = Array(pages(address, min(oldLength, newLength)))
        let moved = kept.map { (m.pages[$0], m.bytes[$0]) }
        let template = m.pages[address]
        _ = try munmap(in: m, address: address, length: oldLength)
        _ = try munmap(in: m, address: target, length: newLength)
        for (i, p) in pages(target, newLength).enumerated() {
            if i < moved.count { (m.pages[p], m.bytes[p]) = moved[i] } else if var t = template { t.sharedIndex += UInt64(i); m.pages[p] = t }
        }
        return .success(target)
    }

    func madvise(in m: Memory, address: UInt64, length: UInt64, advice: Advice) throws(ScenarioError) -> Result<Void, ScenarioErrno> {
        guard address % Self.page == 0 else { return .failure(ScenarioErrno(name: "EINVAL")!) }
        for p in pages(address, length) where m.pages[p] != nil {
            switch advice {
            case .dontneed where !forgetDontneed && m.pages[p]!.shared == nil: m.bytes[p] = nil
            case .dontfork: m.pages[p]!.dontfork = true
            case .dofork: m.pages[p]!.dontfork = false
            default: break
            }
        }
        return .success(())
    }

    func touch(in m: Memory, address: UInt64, length: UInt64, access: TouchAccess) throws(ScenarioError) -> TouchOutcome {
        for i in 0 ..< length {
            let a = address + i, p = a / Self.page * Self.page
            guard let info = m.pages[p] else { return .segv(address: a) }
            guard case .write(let pattern) = access else {
                if !info.protection.readable { return .segv(address: a) }
                continue
            }
            guard info.protection.writable else { return .segv(address: a) }
            if let box = info.shared {
                box.pages[info.sharedIndex, default: Array(repeating: 0, count: 4096)][Int(a - p)] = pattern.byte(at: i)
            } else {
                m.bytes[p, default: Array(repeating: 0, count: 4096)][Int(a - p)] = pattern.byte(at: i)
            }
        }
        if case .write = access { writes += 1 }
        return .completed
    }

    func readData(in m: Memory, address: UInt64, length: UInt64) throws(ScenarioError) -> DataRead {
        var out: [UInt8] = []
        for i in 0 ..< length {
            let a = address + i, p = a / Self.page * Self.page
            guard let info = m.pages[p] else { return .unmapped(address: a) }
            let page = info.shared.map { $0.pages[info.sharedIndex] } ?? m.bytes[p]
            out.append(page?[Int(a - p)] ?? 0)
        }
        return .bytes(out)
    }

    func fork(_ m: Memory) throws(ScenarioError) -> Result<Memory, ScenarioErrno> {
        let child = Memory()
        child.pages = m.pages.filter { !$0.value.dontfork }
        child.bytes = m.bytes.filter { child.pages[$0.key] != nil }
        return .success(child)
    }

    func exit(_ m: Memory) throws(ScenarioError) { m.pages = [:] }

    func runKhugepaged(fullScans: Int) throws(ScenarioError) {
        if unsupportedKhugepaged { throw .unsupported("no khugepaged in the fake") }
    }

    func split(in m: Memory, address: UInt64, length: UInt64) throws(ScenarioError) {}

    func pin(in m: Memory, address: UInt64, length: UInt64) throws(ScenarioError) -> Result<Void, ScenarioErrno> { .success(()) }

    func unpin(in m: Memory, address: UInt64, length: UInt64) throws(ScenarioError) {}

    /// Size and Rss of the run of mapped pages that starts at `vmaStart`.
    func smaps(of m: Memory, vmaStart: UInt64) throws(ScenarioError) -> [String: Int64]? {
        guard m.pages[vmaStart] != nil, m.pages[vmaStart - Self.page] == nil else { return nil }
        var end = vmaStart
        while m.pages[end] != nil { end += Self.page }
        let resident = pages(vmaStart, end - vmaStart).count { m.bytes[$0] != nil || m.pages[$0]?.shared?.pages[m.pages[$0]!.sharedIndex] != nil }
        return ["Size": Int64(end - vmaStart) / 1024, "Rss": Int64(resident) * 4]
    }

    func vmstat() throws(ScenarioError) -> [String: Int64] { ["fake_writes": writes] }
    func meminfo() throws(ScenarioError) -> [String: Int64] { ["FakeWrites": writes * 4] }
    func createCgroup(_ name: String) throws(ScenarioError) -> Result<Void, ScenarioErrno> { throw .unsupported("fake") }
    func writeCgroup(_ name: String, file: String, value: String) throws(ScenarioError) -> Result<Void, ScenarioErrno> { throw .unsupported("fake") }
    func removeCgroup(_ name: String) throws(ScenarioError) -> Result<Void, ScenarioErrno> { throw .unsupported("fake") }
    func joinCgroup(_ process: Process, _ name: String?) throws(ScenarioError) -> Result<Void, ScenarioErrno> { throw .unsupported("fake") }
    func readCgroup(_ name: String, file: String) throws(ScenarioError) -> String { throw .unsupported("fake") }
    func wasKilled(_ process: Process) throws(ScenarioError) -> Bool { false }
    func finish() { finished = true }
}
