import HostIntrinsics

/// Asks the host to start fetching the cache line at `pointer` (a hint: it changes no value).
@inline(__always)
func hostPrefetch<T>(_ pointer: UnsafeMutablePointer<T>) { thpsim_host_prefetch(pointer) }
