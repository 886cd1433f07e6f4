import VMCore

extension AccessFault {
    /// The fault an access ends with when the kernel could not resolve it, as the Machine layer's
    /// MMU reports it (Linux: the signal `do_user_addr_fault()` delivers).
    @usableFromInline package init(at address: VirtualAddress, outcome: FaultOutcome) {
        self.init(address: address, outcome: outcome)
    }
}
