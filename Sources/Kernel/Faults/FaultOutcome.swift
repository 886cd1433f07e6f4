import VMCore

/// What a memory access asks of a page.
public enum MemoryAccess: Sendable, Hashable {
    case read, write, execute
}

/// How a page fault ended (Linux: `vm_fault_t` and the signal `do_user_addr_fault()` sends).
public enum FaultOutcome: Sendable, Hashable, CustomStringConvertible {
    /// The fault was handled; the access can be retried.
    case handled
    /// SIGSEGV: no VMA at the address (`SEGV_MAPERR`) or the VMA forbids the access (`SEGV_ACCERR`).
    case segv(SegvCode)
    /// SIGBUS: the address lies past the end of the backing object (Linux: `VM_FAULT_SIGBUS`).
    case sigbus
    /// No memory for the page or its tables (Linux: `VM_FAULT_OOM`).
    case outOfMemory

    public enum SegvCode: Sendable, Hashable { case mapErr, accErr }

    public var description: String {
        switch self {
        case .handled: "handled"
        case .segv(.mapErr): "SIGSEGV (SEGV_MAPERR)"
        case .segv(.accErr): "SIGSEGV (SEGV_ACCERR)"
        case .sigbus: "SIGBUS"
        case .outOfMemory: "out of memory"
        }
    }
}
