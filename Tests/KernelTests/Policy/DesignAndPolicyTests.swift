import Testing
import VMCore
import PhysicalMemory
import Kernel
import TestSupport

@Suite("Designs and policies: each design's variants, Linux's fault-order decisions")
struct DesignAndPolicyTests {
    @Test("linux-2.6.38 chooses the 2010 mechanism, its policy and its knobs")
    func linux2_6_38() {
        let d = KernelDesign.linux2_6_38
        #expect(KernelDesign.named("linux-2.6.38") == d && d.name == "linux-2.6.38")
        #expect(d.pmdLock == .pageTableLock && d.tailPagePins && d.hugeCOWReuse == .mapcountOne)
        #expect(d.hugeCOWCopy == .copyWholeHugePage && !d.anonPagesCountHugePages && d.mapcounts == .compoundHead)
        #expect(d.splitPMDSplitsPage && !d.supportsMTHP && !d.swapsOutTHPWhole && !d.pinsAreVisible)
        #expect(!d.alignsLargeAnonymousMappings)
        #expect(d.anonLRU.newPagesActive && d.anonLRU.activateOnFirstReference && d.anonLRU.ratioFromZoneSize)
        #expect(d.policy == .linux2_6_38 && d.policy.implementation is Linux2_6_38Policy)
        #expect(d.defaultSettings.enabled == .always && d.defaultSettings.defrag == .always && !d.defaultSettings.useZeroPage)
        #expect(d.knobs == [.enabled, .defrag, .useZeroPage, .shrinkUnderused])
    }

    @Test("linux-6.18 chooses today's mechanism, its policy and its knobs")
    func linux6_18() {
        let d = KernelDesign.linux6_18
        #expect(KernelDesign.named("linux-6.18") == d && d.name == "linux-6.18")
        #expect(d.pmdLock == .splitPMDLock && !d.tailPagePins && d.hugeCOWReuse == .anonExclusive)
        #expect(d.hugeCOWCopy == .splitPMDCopyPage && d.anonPagesCountHugePages && d.mapcounts == .perPage)
        #expect(!d.splitPMDSplitsPage && d.supportsMTHP && d.swapsOutTHPWhole && d.pinsAreVisible)
        #expect(d.alignsLargeAnonymousMappings)
        #expect(!d.anonLRU.newPagesActive && !d.anonLRU.activateOnFirstReference && !d.anonLRU.ratioFromZoneSize)
        #expect(d.policy == .linux6_18 && d.policy.implementation is Linux6_18Policy)
        #expect(d.defaultSettings.enabled == .madvise && d.defaultSettings.defrag == .madvise && d.defaultSettings.useZeroPage)
        #expect(d.knobs == [.enabled, .defrag, .useZeroPage, .shrinkUnderused, .perSizeEnabled])
        #expect(KernelDesign.all == [.linux2_6_38, .linux6_18] && KernelDesign.named("linux-7.0") == nil)
    }

    @Test("a kernel accepts the knobs its design has", arguments: KernelDesign.all)
    func knobs(_ design: KernelDesign) {
        let kernel = TestMachine.kernel(design: design)
        for name in ["enabled", "defrag", "use_zero_page", "shrink_underused"] { #expect(kernel.acceptsHugepageKnob(name)) }
        #expect(kernel.acceptsHugepageKnob("hugepages-64kB/enabled") == design.supportsMTHP)
        #expect(!kernel.acceptsHugepageKnob("khugepaged/defrag") && !kernel.acceptsHugepageKnob("nonsense"))
    }

    struct Case: Sendable, CustomStringConvertible {
        var enabled: TransparentHugepageSettings.Enabled
        var advice: Advice?
        var huge: Bool
        var description: String { "enabled=\(enabled) advice=\(advice.map(\.rawValue) ?? "none") → \(huge ? "PMD" : "4K")" }
    }
    static let cases = [
        Case(enabled: .always, advice: nil, huge: true), Case(enabled: .always, advice: .hugepage, huge: true),
        Case(enabled: .always, advice: .noHugepage, huge: false), Case(enabled: .madvise, advice: nil, huge: false),
        Case(enabled: .madvise, advice: .hugepage, huge: true), Case(enabled: .madvise, advice: .noHugepage, huge: false),
        Case(enabled: .never, advice: nil, huge: false), Case(enabled: .never, advice: .hugepage, huge: false),
    ]

    /// A private anonymous VMA of 4 MiB with `advice`, and the address of its first byte.
    func vma(_ advice: Advice?) throws -> (VMA, VirtualAddress) {
        let (_, mm) = TestMachine.process()
        let a = try mm.mmap(address: VirtualAddress(0x7f00_0000_0000), length: 4 << 20, protection: .readWrite,
                            flags: [.private, .fixed])
        if let advice { try mm.madvise(a, length: 4 << 20, advice: advice) }
        return (try #require(mm.vmas.areas.first { $0.contains(a) }), a)
    }

    @Test("both Linux policies: enabled and VM_HUGEPAGE/VM_NOHUGEPAGE decide the PMD order at a fault",
          arguments: cases)
    func faultOrders(_ c: Case) throws {
        let (vma, a) = try vma(c.advice)
        var settings = KernelDesign.linux6_18.defaultSettings
        settings.enabled = c.enabled
        let policies: [any HugepagePolicy] = [Linux2_6_38Policy(), Linux6_18Policy()]
        for policy in policies {
            #expect(policy.faultOrders(in: vma, at: a, among: .anonymous, settings: settings) == (c.huge ? .pmd : []))
            #expect(policy.khugepagedMayCollapse(vma, settings: settings) == c.huge)
            #expect(policy.madviseMayCollapse(vma, settings: settings) == (c.advice != .noHugepage),
                    "MADV_COLLAPSE ignores enabled")
            #expect(policy.zeroing(order: PageGeometry.pmdOrder) == .atFault)
        }
    }

    @Test("linux-6.18 offers the mTHP orders hugepages-<size>kB/enabled allows, inheriting enabled")
    func mthpOrders() throws {
        let policy = Linux6_18Policy()
        var settings = KernelDesign.linux6_18.defaultSettings
        settings.enabled = .madvise
        settings.setSizeEnabled(order: 4, .always)     // 64 KiB
        settings.setSizeEnabled(order: 6, .madvise)    // 256 KiB
        settings.setSizeEnabled(order: 3, .inherit)    // 32 KiB: madvise, from enabled
        let (plain, a) = try vma(nil)
        #expect(policy.faultOrders(in: plain, at: a, among: .anonymous, settings: settings) == FolioOrders(order: 4))
        let (advised, b) = try vma(.hugepage)
        #expect(policy.faultOrders(in: advised, at: b, among: .anonymous, settings: settings)
                == [.pmd, FolioOrders(order: 6), FolioOrders(order: 4), FolioOrders(order: 3)])
        let (refused, c) = try vma(.noHugepage)
        #expect(policy.faultOrders(in: refused, at: c, among: .anonymous, settings: settings) == [])
        #expect(Linux2_6_38Policy().faultOrders(in: advised, at: b, among: .anonymous, settings: settings) == .pmd,
                "the 2010 policy has no multi-size THP")
        #expect(policy.faultOrders(in: advised, at: b, among: .belowPMD, settings: settings)
                == [FolioOrders(order: 6), FolioOrders(order: 4), FolioOrders(order: 3)], "only what is asked")
        #expect(policy.faultOrders(in: advised, at: b, among: .pmd, settings: settings) == .pmd)
        #expect(FolioOrders.belowPMD.rawValue == 0b1_1111_1100)
    }

    @Test("today's policy queues folios for a deferred split and splits underused THPs; the 2010 one does not")
    func splitting() {
        var settings = KernelDesign.linux6_18.defaultSettings
        #expect(Linux6_18Policy().defersSplit(partiallyMapped: true) && Linux6_18Policy().defersSplit(partiallyMapped: false))
        #expect(Linux6_18Policy().splitsUnderused(settings: settings))
        settings.shrinkUnderused = false
        #expect(!Linux6_18Policy().splitsUnderused(settings: settings))
        #expect(!Linux2_6_38Policy().defersSplit(partiallyMapped: true))
        #expect(!Linux2_6_38Policy().splitsUnderused(settings: KernelDesign.linux2_6_38.defaultSettings))
    }

    @Test("a kernel asks its design's policy unless it was given another", arguments: KernelDesign.all)
    func kernelPolicy(_ design: KernelDesign) {
        let kernel = TestMachine.kernel(design: design)
        #expect(type(of: kernel.hugepagePolicy) == type(of: design.policy.implementation))
    }
}
