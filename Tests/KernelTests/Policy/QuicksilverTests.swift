import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

/// Quicksilver's Sync-N and Async-N on FreeBSD's reservations (`QuicksilverPolicy`).
@Suite("Quicksilver")
struct QuicksilverTests {
    static let huge = PageGeometry.pmdSize
    static let second = 1000 * SimulatedClock.nanosecondsPerMillisecond

    func kernel(_ policy: QuicksilverPolicy) -> (Kernel, AddressSpace) {
        var configuration = KernelConfiguration(memoryBytes: 64 << 20, mode: .data, watermarks: .zero, design: .linux6_18,
                                                hugepageSettings: TransparentHugepageSettings(enabled: .always, defrag: .madvise, useZeroPage: true))
        configuration.policy = policy
        let kernel = Kernel(configuration)
        return (kernel, kernel.createAddressSpace()!)
    }

    func touch(_ mm: AddressSpace, _ va: VirtualAddress) -> FaultContext {
        var fault = FaultContext(address: va, access: .write, present: false)
        #expect(mm.handleFault(&fault) == .handled)
        return fault
    }

    @Test("FreeBSD and Quicksilver take the reservation rules through ReservationPolicy, seen as any HugepagePolicy")
    func reservationRules() throws {
        let (_, mm) = kernel(QuicksilverPolicy())
        let start = try mm.mmap(length: 4 << 20, protection: .readWrite, flags: .private)
        let vma = try #require(mm.vmas.vma(containing: start))
        let settings = TransparentHugepageSettings(enabled: .always, defrag: .madvise, useZeroPage: true)
        for policy in [FreeBSDPolicy() as any HugepagePolicy, QuicksilverPolicy()] {
            #expect(policy.reservesPages)
            #expect(policy.faultOrders(in: vma, at: vma.start, among: .anonymous, settings: settings).isEmpty)
            #expect(!policy.khugepagedMayCollapse(vma, settings: settings) && !policy.madviseMayCollapse(vma, settings: settings))
            #expect(policy.defersSplit(partiallyMapped: true) && !policy.defersSplit(partiallyMapped: false))
            #expect(!policy.splitsUnderused(settings: settings))
        }
        #expect(!Linux6_18Policy().reservesPages)
    }

    @Test("Sync-64: the 64th page's fault zeroes and maps the other 448 and promotes the range; before, 4 KiB at a time")
    func syncN() throws {
        let (kernel, mm) = kernel(QuicksilverPolicy(syncN: 64))
        let start = try anon(mm, Self.huge, at: VirtualAddress(1 << 30))
        for page in 0..<63 {
            #expect(touch(mm, start + UInt64(page) * 4096).bytesZeroed == 4096)
        }
        #expect(mm.translate(start)?.level == .pte && kernel.vmstatState(.nrAnonPages) == 63)
        let fault = touch(mm, start + 100 * 4096)
        #expect(fault.bytesZeroed == UInt64(512 - 63) * 4096, "the 64th page and the 448 never touched")
        let t = try #require(mm.translate(start + 100 * 4096))
        #expect(t.level == .pmd && t.frame.rawValue % 512 == 100)
        #expect(kernel.vmstat[.thpReservFill] == 1 && kernel.vmstat[.thpReservPromote] == 1)
        #expect(kernel.vmstatState(.nrAnonPages) == 512)
        #expect(try mm.read(start + 300 * 4096, count: 2).get() == [0, 0])
        expectClean(kernel)
    }

    @Test("sync_n=0 leaves FreeBSD's rule: no fill at 64 pages")
    func syncOff() throws {
        let (kernel, mm) = kernel(QuicksilverPolicy(syncN: 0))
        let start = try anon(mm, Self.huge, at: VirtualAddress(1 << 30))
        for page in 0..<100 { _ = touch(mm, start + UInt64(page) * 4096) }
        #expect(mm.translate(start)?.level == .pte && kernel.vmstatState(.nrAnonPages) == 100)
        #expect(kernel.vmstat[.thpReservFill] == 0)
        kernel.advanceTime(by: 10 * Self.second)
        #expect(mm.translate(start)?.level == .pte, "no thread without async_n")
    }

    @Test("Async-64: the thread wakes each interval and fills the reservations at 64 pages or more, zeroing ahead")
    func asyncN() throws {
        let (kernel, mm) = kernel(QuicksilverPolicy(syncN: 0, asyncN: 64))
        let start = try anon(mm, 2 * Self.huge, at: VirtualAddress(1 << 30))
        for page in 0..<100 { _ = touch(mm, start + UInt64(page) * 4096) }
        for page in 0..<10 { _ = touch(mm, start + Self.huge + UInt64(page) * 4096) }
        kernel.advanceTime(by: Self.second - 1)
        #expect(mm.translate(start)?.level == .pte, "not before the first wake-up")
        kernel.advanceTime(by: 1)
        #expect(mm.translate(start)?.level == .pmd)
        #expect(mm.translate(start + Self.huge)?.level == .pte, "10 pages are under the threshold")
        #expect(kernel.vmstat[.thpReservPrepopulate] == 1 && kernel.vmstat[.thpReservPrezero] == 412)
        #expect(kernel.vmstat[.thpReservPromote] == 1)
        for page in 10..<64 { _ = touch(mm, start + Self.huge + UInt64(page) * 4096) }
        kernel.advanceTime(by: Self.second)
        #expect(mm.translate(start + Self.huge)?.level == .pmd, "at 64 pages the next wake-up takes it")
        #expect(try mm.read(start + Self.huge + 500 * 4096, count: 1).get() == [0])
        expectClean(kernel)
    }

    @Test("the thread's budget: one reservation per wake-up, the most recently changed first")
    func budget() throws {
        let (kernel, mm) = kernel(QuicksilverPolicy(syncN: 0, asyncN: 64, asyncBudget: 1))
        let start = try anon(mm, 2 * Self.huge, at: VirtualAddress(1 << 30))
        let a = start, b = start + Self.huge
        for page in 0..<70 { _ = touch(mm, a + UInt64(page) * 4096) }
        for page in 0..<70 { _ = touch(mm, b + UInt64(page) * 4096) }
        kernel.advanceTime(by: Self.second)
        #expect(mm.translate(b)?.level == .pmd && mm.translate(a)?.level == .pte)
        kernel.advanceTime(by: Self.second)
        #expect(mm.translate(a)?.level == .pmd)
        #expect(kernel.vmstat[.thpReservPrepopulate] == 2)
        expectClean(kernel)
    }

    @Test("defragmentation: a reservation unchanged for inactive_ms is broken and its pages migrated out, freeing its 2 MiB block; a changing one stays")
    func defrag() throws {
        let (kernel, mm) = kernel(QuicksilverPolicy(syncN: 0, defrag: true, inactiveMilliseconds: 2000))
        let start = try anon(mm, 2 * Self.huge, at: VirtualAddress(1 << 30))
        let idle = start, busy = start + Self.huge
        for page in 0..<10 { try mm.write(idle + UInt64(page) * 4096, [UInt8(page + 1)]).get() }
        _ = touch(mm, busy)
        let block = try #require(mm.translate(idle)).frame
        for second in 1...3 {
            _ = touch(mm, busy + UInt64(second) * 4096)
            kernel.advanceTime(by: Self.second)
            if second < 3 { #expect(kernel.vmstat[.thpReservEvict] == 0, "not inactive for 2 s yet at \(second) s") }
        }
        #expect(kernel.vmstat[.thpReservEvict] == 1 && kernel.vmstat[.thpReservEvictMigrated] == 10)
        let frames = kernel.memory.frames
        #expect((0..<512).allSatisfy { frames.kind(block + $0) == .free }, "the idle reservation's block is free")
        for page in 0..<10 {
            let t = try #require(mm.translate(idle + UInt64(page) * 4096))
            #expect(!(block.rawValue..<block.rawValue + 512).contains(t.frame.rawValue))
            #expect(try mm.read(idle + UInt64(page) * 4096, count: 1).get() == [UInt8(page + 1)])
        }
        #expect(frames.flags(try #require(mm.translate(busy)).frame).contains(.head), "the busy reservation stays")
        expectClean(kernel)
    }
}
