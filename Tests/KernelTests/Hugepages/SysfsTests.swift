import Testing
import VMCore
import Kernel

/// `/sys/kernel/mm/transparent_hugepage/` written through the kernel: good writes change what the
/// fault path and khugepaged read; refused writes get the errno Linux 6.18 gives (probed on this
/// machine's kernel: `enabled`=bogus → EINVAL, `use_zero_page`=2 → EINVAL, a 23-digit
/// `use_zero_page` → ERANGE, `hpage_pmd_size` → EACCES at open, an unknown file → ENOENT at open).
@Suite("THP sysfs through the kernel")
struct SysfsTests {
    func kernel(_ design: KernelDesign) -> Kernel {
        Kernel(KernelConfiguration(memoryBytes: 64 << 20, mode: .metadata, design: design))
    }

    func errno(_ kernel: Kernel, _ path: String, _ value: String) -> Errno? {
        do throws(SysfsError) { try kernel.transparentHugepageSysfs.write(path, value); return nil } catch { return error.errno }
    }

    @Test("good writes change the kernel's settings, with Linux's spellings")
    func goodWrites() throws {
        let k = kernel(.linux6_18)
        let sysfs = k.transparentHugepageSysfs
        try sysfs.write("enabled", "never")
        #expect(k.hugepageSettings.enabled == .never)
        try sysfs.write("defrag", "defer+madvise\n")
        #expect(k.hugepageSettings.defrag == .deferMadvise)
        try sysfs.write("use_zero_page", "+0")
        #expect(!k.hugepageSettings.useZeroPage)
        try sysfs.write("shrink_underused", "off")
        #expect(!k.hugepageSettings.shrinkUnderused)
        try sysfs.write("shrink_underused", "y")
        #expect(k.hugepageSettings.shrinkUnderused)
        try sysfs.write("hugepages-64kB/enabled", "always")
        #expect(k.hugepageSettings.sizeEnabled(order: 4) == .always)
        try sysfs.write("khugepaged/max_ptes_none", "0")
        #expect(k.khugepaged.settings.maxPtesNone == 0)
        #expect(try sysfs.read("khugepaged/max_ptes_none") == "0")
        #expect(try sysfs.read("enabled") == "always madvise [never]")
        #expect(try sysfs.read("hpage_pmd_size") == "2097152")
    }

    @Test("a value the store function refuses is EINVAL, and changes nothing")
    func badValues() {
        let k = kernel(.linux6_18)
        let before = k.hugepageSettings
        #expect(errno(k, "enabled", "bogus") == .EINVAL)
        #expect(errno(k, "enabled", "[always]") == .EINVAL)
        #expect(errno(k, "defrag", "sometimes") == .EINVAL)
        #expect(errno(k, "use_zero_page", "2") == .EINVAL)
        #expect(errno(k, "shrink_underused", "2") == .EINVAL)
        #expect(errno(k, "hugepages-64kB/enabled", "bogus") == .EINVAL)
        #expect(errno(k, "khugepaged/max_ptes_none", "512") == .EINVAL)
        #expect(errno(k, "khugepaged/pages_to_scan", "0") == .EINVAL)
        #expect(errno(k, "khugepaged/max_ptes_swap", "abc") == .EINVAL)
        #expect(errno(k, "use_zero_page", "99999999999999999999999") == .ERANGE)
        #expect(errno(k, "khugepaged/defrag", "99999999999999999999999") == .ERANGE)
        #expect(k.hugepageSettings == before)
        #expect(k.khugepaged.settings == KhugepagedSettings())
    }

    @Test("an unknown file is ENOENT; a read-only one is EACCES; messages name the file")
    func unknownAndReadOnly() {
        let k = kernel(.linux6_18)
        #expect(errno(k, "bogus", "1") == .ENOENT)
        #expect(errno(k, "shmem_enabled", "always") == .ENOENT)
        #expect(errno(k, "hugepages-4kB/enabled", "always") == .ENOENT)
        #expect(errno(k, "khugepaged/bogus", "1") == .ENOENT)
        #expect(errno(k, "hpage_pmd_size", "1") == .EACCES)
        #expect(errno(k, "khugepaged/pages_collapsed", "1") == .EACCES)
        let problem = TransparentHugepageSysfs.problem(writing: "1", to: "bogus", design: .linux6_18)
        #expect(problem?.message.contains("'bogus'") == true)
        #expect(TransparentHugepageSysfs.problem(writing: "512", to: "khugepaged/max_ptes_none", design: .linux6_18)?.message
                == "khugepaged/max_ptes_none must be an integer from 0 to 511, not '512'")
    }

    @Test("a knob the design does not have is its ENOENT: the 2010 design has no hugepages-<size>kB/")
    func designRefuses() {
        let old = kernel(.linux2_6_38)
        #expect(errno(old, "hugepages-64kB/enabled", "always") == .ENOENT)
        #expect(old.hugepageSettings.sizeEnabled(order: 4) == .never)
        #expect(TransparentHugepageSysfs.problem(writing: "always", to: "hugepages-64kB/enabled", design: .linux2_6_38)?.message
                .contains("no multi-size THP") == true)
        #expect(TransparentHugepageSysfs.problem(writing: "always", to: "hugepages-64kB/enabled", design: .linux6_18) == nil)
    }
}
