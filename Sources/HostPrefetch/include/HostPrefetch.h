// A host prefetch hint for the simulator's own tables (the cache model's sets, the kernel model's
// page-table entries): Swift has no prefetch intrinsic, and a static inline C function is inlined
// into Swift callers by the compiler.
#ifndef THPSIM_HOST_PREFETCH_H
#define THPSIM_HOST_PREFETCH_H

static inline void thpsim_host_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

#endif
