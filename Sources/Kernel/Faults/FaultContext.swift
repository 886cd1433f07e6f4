import VMCore

/// The page-fault error code the MMU pushes for #PF, as x86 defines its low bits (Intel SDM vol. 3A,
/// 4.7; Linux: `enum x86_pf_error_code`, `X86_PF_PROT`, `X86_PF_WRITE`, `X86_PF_USER`, `X86_PF_INSTR`).
public struct FaultErrorCode: OptionSet, Sendable, Hashable {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// P: the leaf entry was present and forbade the access (a protection fault); clear when no
    /// present entry maps the address.
    public static let present = FaultErrorCode(rawValue: presentBit)
    /// W/R: the access was a write.
    public static let write = FaultErrorCode(rawValue: writeBit)
    /// The bits of `present` and `write`, for inlinable tests in other modules (a `static let` there
    /// is read through a call).
    @inlinable static var presentBit: UInt8 { 1 << 0 }
    @inlinable static var writeBit: UInt8 { 1 << 1 }
    /// U/S: the access came from user mode (every access the model's programs make).
    public static let user = FaultErrorCode(rawValue: 1 << 2)
    /// I/D: the access was an instruction fetch.
    public static let instructionFetch = FaultErrorCode(rawValue: 1 << 4)

    /// The code of a user access of `kind` that found a present leaf (`present`) or none.
    @inlinable public init(_ kind: MemoryAccess, present: Bool) {
        var raw: UInt8 = Self.user.rawValue
        if present { raw |= Self.present.rawValue }
        switch kind {
        case .read: break
        case .write: raw |= Self.write.rawValue
        case .execute: raw |= Self.instructionFetch.rawValue
        }
        rawValue = raw
    }
}

/// The size a fault mapped.
public enum FaultMapping: Sendable, Hashable {
    /// One 4 KiB page (a new page, the zero page, a copy, a page read from swap, a shmem page).
    case base
    /// A large folio of this order mapped by PTEs (multi-size THP, orders 2 to 8).
    case folio(order: UInt8)
    /// A 2 MiB page mapped by a PMD (a new THP, its copy, or the huge zero page).
    case pmd
    /// Several 4 KiB pages, one per PTE of a PMD's range (2.6.38's COW fallback).
    case basePages(Int)
}

/// How the fault handler resolved a fault it did not fail (the failures stay `FaultOutcome`s).
public enum FaultResolution: Sendable, Hashable {
    /// Nothing changed that the access needs: another CPU resolved it first, the handler waited for a
    /// split or a migration, or only accessed/dirty bits were set; the access is retried (Linux:
    /// `VM_FAULT_RETRY`, `VM_FAULT_NOPAGE` and the spurious-fault path of `handle_pte_fault()`).
    case retry
    /// A new mapping where none was present: a zeroed page, the zero page, a page read from swap, a
    /// shmem page (Linux: `do_anonymous_page()`, `do_huge_pmd_anonymous_page()`, `do_swap_page()`,
    /// `do_shared_fault()`).
    case mapped
    /// A write to a write-protected page: reused in place or copied (Linux: `do_wp_page()`,
    /// `do_huge_pmd_wp_page()`).
    case copyOnWrite
}

/// A lock or wait the handler had to sit out.
public enum FaultWait: Sendable, Hashable {
    /// The mmap lock was dropped and taken for writing to give the VMA an anon_vma.
    case mmapWriteLock
    /// A huge PMD being split (Linux 2.6.38: `wait_split_huge_page()`).
    case hugePMDSplit
    /// A migration entry (Linux: `migration_entry_wait()`).
    case migrationEntry
}

/// Direct compaction done on a caller's behalf (Linux: the `compact_*` events one
/// `__alloc_pages_direct_compact()` adds).
public struct CompactionWork: Sendable, Hashable {
    /// Direct compactions entered (`compact_stall`).
    public var stalls = 0
    /// Frames the migrate and free scanners looked at (`compact_migrate_scanned` + `compact_free_scanned`).
    public var scanned = 0
    /// Pages isolated for migration, each with a free target page taken (`compact_isolated` / 2).
    public var migrated = 0
    public init() {}
}

/// Direct reclaim done on a caller's behalf (Linux: `pgsteal_direct` and the `pswpout` it caused).
public struct ReclaimWork: Sendable, Hashable {
    /// Pages reclaim freed (the deferred-split shrinker's included, as `Kswapd.pagesReclaimed` counts).
    public var reclaimed = 0
    /// Pages written to swap.
    public var swappedOut = 0
    public init() {}
}

/// One page fault: what raised it, and what the kernel did to resolve it (Linux: `struct vm_fault`
/// for the input, `handle_mm_fault()`'s `vm_fault_t` for the outcome; Linux keeps no record of the
/// work, which delay accounting and `/proc/vmstat` spread over per-task and global counters).
///
/// The caller fills in the input; the handler records into the rest as it goes; the Machine charges
/// the fault's cycles from the record (`TimingParameters.faultCycles`).
///
/// ```
///  CPU #PF ──► FaultContext(cpu, address, access, error code) ──► AddressSpace.handleFault(&fault)
///                                                                   records: pages allocated, bytes
///                                                                   zeroed/copied, size mapped,
///                                                                   compaction, reclaim, swap-in, wait
///  CPU ◄── FaultOutcome + record ──► cycles charged, latency histogram
/// ```
public struct FaultContext: Sendable, Hashable {
    /// The simulated CPU that took the fault.
    public let cpu: Int
    public let address: VirtualAddress
    public let access: MemoryAccess
    public let errorCode: FaultErrorCode

    /// PMD-size folios allocated for the fault and mapped (`thp_fault_alloc`): zeroed, or copies.
    public internal(set) var hugePages = 0
    /// Of those, the ones a pre-zeroing thread had cleared ahead, which the fault did not zero.
    public internal(set) var hugePagesPreZeroed = 0
    /// Base pages allocated for the fault outside those: its 4 KiB pages (zeroed or copies), the
    /// pages of an mTHP folio, the huge zero page on first use (512), and a PTE table taken for a
    /// huge PMD's deposit and given back when the fault fell back to 4 KiB. Page tables kept, the
    /// target pages of compaction and pages read from swap are not counted here.
    public internal(set) var basePages = 0
    /// Bytes the handler cleared in new pages (Linux: `clear_user_highpage()`, `folio_zero_user()`).
    public internal(set) var bytesZeroed: UInt64 = 0
    /// Bytes the handler copied from the old page on copy-on-write (Linux: `copy_user_highpage()`,
    /// `copy_user_large_folio()`).
    public internal(set) var bytesCopied: UInt64 = 0
    /// What the fault mapped, if it mapped something new.
    public internal(set) var mapped: FaultMapping?
    public internal(set) var compaction = CompactionWork()
    public internal(set) var reclaim = ReclaimWork()
    /// Pages read back from swap (`pswpin`, a major fault).
    public internal(set) var pagesSwappedIn = 0
    /// What the handler waited for, if anything.
    public internal(set) var waited: FaultWait?
    public internal(set) var resolution = FaultResolution.retry
    /// What `handleFault` returned (nil before it returns): handled, or the error it ends with.
    public internal(set) var outcome: FaultOutcome?
    /// A reservation the fault filled, which `handleFault` promotes to a huge PMD once the mmap lock
    /// can be taken for writing (`Reservations.swift`).
    var reservationToPromote: VirtualAddress?

    /// Inlinable: a CPU makes one at every fault it raises.
    @inlinable
    public init(cpu: Int = 0, address: VirtualAddress, access: MemoryAccess, errorCode: FaultErrorCode) {
        self.cpu = cpu
        self.address = address
        self.access = access
        self.errorCode = errorCode
    }

    /// A fault on `address` for `access` whose error code says whether a present entry forbade it.
    @inlinable
    public init(cpu: Int = 0, address: VirtualAddress, access: MemoryAccess, present: Bool) {
        self.init(cpu: cpu, address: address, access: access, errorCode: FaultErrorCode(access, present: present))
    }

    /// A write-protect fault: a write that found a present entry without write permission. The pages
    /// it allocates are charged as copies (the zero page's copy, which is zeroed, included).
    /// Inlinable, and by the bits' values: the CPU's fault cost asks it at every fault.
    @inlinable public var isWriteProtectFault: Bool {
        let presentWrite = FaultErrorCode.presentBit | FaultErrorCode.writeBit
        return errorCode.rawValue & presentWrite == presentWrite
    }

    /// Records `pages` new base pages zeroed for the fault.
    @inline(__always) mutating func zeroed(pages: Int) {
        basePages &+= pages
        bytesZeroed &+= UInt64(pages) &* PageGeometry.pageSize
    }

    /// Records `pages` new base pages that hold copies of the old page's bytes.
    @inline(__always) mutating func copied(pages: Int) {
        basePages &+= pages
        bytesCopied &+= UInt64(pages) &* PageGeometry.pageSize
    }

    /// Records base pages the fault took from the allocator and gave back unused: a huge PMD's
    /// deposit table when the fault fell back, or a page another CPU's fault made unnecessary.
    @inline(__always) mutating func gaveBack(pages: Int) {
        basePages &+= pages
    }

    /// Records a new PMD-size page that a pre-zeroing thread had cleared ahead: nothing zeroed now.
    @inline(__always) mutating func hugePagePreZeroed() {
        hugePages &+= 1
        hugePagesPreZeroed &+= 1
    }

    /// Records a new PMD-size page, zeroed or copied.
    @inline(__always) mutating func hugePage(copied: Bool) {
        hugePages &+= 1
        if copied { bytesCopied &+= PageGeometry.pmdSize } else { bytesZeroed &+= PageGeometry.pmdSize }
    }
}
