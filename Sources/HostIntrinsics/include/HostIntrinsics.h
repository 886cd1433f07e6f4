// Host instructions Swift has no spelling for, used on the simulator's own hot tables: streaming
// stores for the frame table's records of large folios, written when they are allocated and freed,
// the spin-wait hint of spinning lock waiters, a thread-local word (`SimulatedCPU`), and a prefetch
// hint for the simulated page tables a batch of accesses will walk.
// Static inline functions are inlined into their Swift callers.
#ifndef THPSIM_HOST_INTRINSICS_H
#define THPSIM_HOST_INTRINSICS_H

#include <stddef.h>
#include <stdint.h>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define THPSIM_TSAN 1
#endif
#endif

/// The simulated CPU the calling thread executes, plus one; 0 until `SimulatedCPU` sets it. A C thread-local
/// because Swift has none: reading it is one load, where `pthread_getspecific()` is a call.
extern _Thread_local long thpsim_thread_cpu_slot;

static inline long thpsim_cpu_slot(void) { return thpsim_thread_cpu_slot; }
static inline void thpsim_set_cpu_slot(long value) { thpsim_thread_cpu_slot = value; }

/// Tells the core that the thread is spin-waiting (x86 `pause`, Arm `yield`): it saves power, lets a
/// hyperthread sibling run, and avoids the memory-order mis-speculation penalty when the lock word
/// changes (Linux: `cpu_relax()`).
static inline void thpsim_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

/// Writes `count` 16-byte frame records from `records` on: words (header, 0, 0, link), as 32-bit
/// little-endian words. Streaming (non-temporal) stores write whole host lines without reading them
/// first, which halves the memory traffic of a large folio's records; a fence at the end orders them
/// before any later store, so the records are visible before the folio is published. Under the
/// thread sanitizer the stores are relaxed atomics instead, which it understands.
/// Asks the host to bring the cache line at `address` into its caches ahead of a load (x86
/// `prefetcht0`). A hint: it never faults and changes nothing the program can observe.
static inline void thpsim_prefetch(const void *address) { __builtin_prefetch(address, 0, 3); }

static inline void thpsim_write_frame_records(uint32_t *records, size_t count, uint32_t header, uint32_t link) {
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "frame records are written as little-endian 64-bit halves"
#endif
    uint64_t *p = (uint64_t *)records;
    const uint64_t low = (uint64_t)header;
    const uint64_t high = (uint64_t)link << 32;
    for (size_t i = 0; i < count; i++) {
#if defined(THPSIM_TSAN)
        __atomic_store_n(&records[4 * i], header, __ATOMIC_RELAXED);
        __atomic_store_n(&records[4 * i + 1], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&records[4 * i + 2], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&records[4 * i + 3], link, __ATOMIC_RELAXED);
        (void)p; (void)low; (void)high;
#else
        __builtin_nontemporal_store(low, &p[2 * i]);
        __builtin_nontemporal_store(high, &p[2 * i + 1]);
#endif
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

#endif
