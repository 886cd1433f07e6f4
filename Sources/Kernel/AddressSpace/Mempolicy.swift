import VMCore

/// What `get_mempolicy(&node, NULL, 0, address, MPOL_F_NODE | MPOL_F_ADDR)` found: the NUMA node of
/// the page at the address, and the page-table lock the lookup took to find it.
public struct PageNodeLookup: Sendable, Hashable {
    /// The node of the page (the model has one node: 0).
    public let node: Int
    /// The page was found through a huge PMD, under the PMD lock (`page_table_lock` before 3.13),
    /// rather than through a PTE under its table's split lock.
    public let hugePMD: Bool

    public init(node: Int, hugePMD: Bool) {
        self.node = node
        self.hugePMD = hugePMD
    }
}

extension AddressSpace {
    /// `get_mempolicy()` with `MPOL_F_NODE | MPOL_F_ADDR`: the node of the page mapped at `va`
    /// (Linux: `do_get_mempolicy()` → `find_vma_intersection()` under the mmap lock, then
    /// `lookup_node()`: `get_user_pages()` of that one page, `page_to_nid()`, `put_page()`). The page is
    /// faulted in when absent, as GUP does; EFAULT when no VMA holds `va`.
    ///
    /// `thp_memscale` calls it for every page it wrote, and that is what made THP slow there before
    /// 3.13: for a page behind a huge PMD, `follow_page_mask()` → `follow_trans_huge_pmd()` takes the
    /// mm's one `page_table_lock` (the split PMD lock after 3.13), where a 4 KiB page's lookup takes
    /// its PTE table's own lock (docs/concurrency.md, "memscale").
    ///
    /// Linux 2.6.38 to 5.x look the page up with the mmap lock held (`get_user_pages()`,
    /// `get_user_pages_locked()`); the model does so in every design.
    public func nodeOfPage(at va: VirtualAddress) -> Result<PageNodeLookup, Errno> {
        let page = va.alignedDown(PageGeometry.pageSize)
        mmapLock.readLock()
        var hugePMD = false
        let found: PFN?
        // The VMA's index, not a copy of the VMA (whose references a copy retains and releases).
        if hasExited || vmas.index(containing: page) == nil {
            mmapLock.unlock()
            return .failure(.EFAULT)
        }
        found = followPage(page, write: false, hugePMD: &hugePMD)
        mmapLock.unlock()
        guard let pfn = found else { return nodeOfAbsentPage(page) }
        kernel.putPage(pfn)
        return .success(PageNodeLookup(node: 0, hugePMD: hugePMD))
    }

    /// `nodeOfPage(at:)` of an absent page: the slow path faults it in (`faultin_page()`), then
    /// follows it again. Out of line: the lookup after a write finds the page.
    @inline(never)
    private func nodeOfAbsentPage(_ page: VirtualAddress) -> Result<PageNodeLookup, Errno> {
        var hugePMD = false
        switch getUserPages(page, count: 1, write: false) {
        case .failure(let errno): return .failure(errno)
        case .success(let pages):
            kernel.putUserPages(pages)
            mmapLock.readLock()
            let again = followPage(page, write: false, hugePMD: &hugePMD)
            mmapLock.unlock()
            if let again { kernel.putPage(again) }
            return .success(PageNodeLookup(node: 0, hugePMD: hugePMD))
        }
    }
}
