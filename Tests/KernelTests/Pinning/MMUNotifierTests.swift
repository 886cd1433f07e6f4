import Testing
import Synchronization
import VMCore
import Kernel
import TestSupport

/// Records every call it gets, and checks that starts and ends pair up.
final class RecordingNotifier: MMUNotifier {
    struct Call: Equatable, Sendable { var kind: String; var start: UInt64; var end: UInt64 }
    let calls = Mutex<[Call]>([])
    let open = Atomic<Int>(0)
    func invalidateRangeStart(_ mm: AddressSpace, _ start: VirtualAddress, _ end: VirtualAddress) {
        open.add(1, ordering: .relaxed)
        calls.withLock { $0.append(Call(kind: "start", start: start.rawValue, end: end.rawValue)) }
    }
    func invalidateRangeEnd(_ mm: AddressSpace, _ start: VirtualAddress, _ end: VirtualAddress) {
        open.subtract(1, ordering: .relaxed)
        calls.withLock { $0.append(Call(kind: "end", start: start.rawValue, end: end.rawValue)) }
    }
    func release(_ mm: AddressSpace) { calls.withLock { $0.append(Call(kind: "release", start: 0, end: 0)) } }
    func take() -> [Call] { calls.withLock { let c = $0; $0 = []; return c } }
}

@Suite("MMU notifiers: secondary MMUs hear of every change before it happens")
struct MMUNotifierTests {
    @Test("munmap, mprotect, COW, split, mremap, fork and exit invalidate the range they change")
    func invalidations() throws {
        let (kernel, mm) = TestMachine.process(enabled: .always)
        let notifier = RecordingNotifier()
        mm.registerMMUNotifier(notifier)
        let a = try hugeRegion(mm, 4 * .MiB)
        try mm.write(a, [1]).get()
        try mm.write(a + 2 * .MiB, [1]).get()
        #expect(notifier.take().isEmpty, "faults that fill empty entries need no invalidation")

        try mm.mprotect(a, length: 2 * .MiB, protection: .read)
        #expect(notifier.take().first == .init(kind: "start", start: a.rawValue, end: (a + 2 * .MiB).rawValue))

        let child = try mm.fork()
        let forkCalls = notifier.take()
        #expect(forkCalls.contains { $0.kind == "start" && $0.start == a.rawValue })
        try mm.mprotect(a, length: 2 * .MiB, protection: .readWrite)
        _ = notifier.take()
        try mm.write(a + 2 * .MiB + 5, [2]).get()  // COW of the shared huge page
        #expect(notifier.take().first == .init(kind: "start", start: (a + 2 * .MiB).rawValue, end: (a + 4 * .MiB).rawValue))

        try child.munmap(a, length: 4 * .KiB)  // splits the page both map: the parent's PMD too
        #expect(notifier.take().first == .init(kind: "start", start: a.rawValue, end: (a + 2 * .MiB).rawValue))

        _ = try mm.mremap(a, oldSize: 4 * .MiB, newSize: 4 * .MiB, flags: [.mayMove, .fixed], newAddress: hugeBase + 16 * .MiB)
        #expect(notifier.take().first == .init(kind: "start", start: a.rawValue, end: (a + 4 * .MiB).rawValue))

        try mm.munmap(hugeBase + 16 * .MiB, length: 4 * .MiB)
        #expect(notifier.take().contains { $0.kind == "start" && $0.start == (hugeBase + 16 * .MiB).rawValue })
        #expect(notifier.open.load(ordering: .relaxed) == 0, "every start has its end")
        mm.exit()
        #expect(notifier.take().first?.kind == "release")
        expectClean(kernel)
    }
}
