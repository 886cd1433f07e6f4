// Host instructions Swift has no spelling for, used on the simulator's own hot tables: streaming
// stores for the frame table's records of large folios, written when they are allocated and freed.
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

/// Writes `count` 16-byte frame records from `records` on: words (header, 0, 0, link), as 32-bit
/// little-endian words. Streaming (non-temporal) stores write whole host lines without reading them
/// first, which halves the memory traffic of a large folio's records; a fence at the end orders them
/// before any later store, so the records are visible before the folio is published. Under the
/// thread sanitizer the stores are relaxed atomics instead, which it understands.
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
