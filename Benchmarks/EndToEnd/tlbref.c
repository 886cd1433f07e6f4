// The plain C reference for thpsim's end-to-end replay benchmark (docs/performance.md, "End to end"):
// the same kind of work thpsim's default path does per access, written as one tight loop — a
// two-level TLB (L1 dTLB 64 entries 4-way, STLB 1,536 entries 12-way, LRU, Skylake-SP's 4 KiB
// arrays) in front of a four-level radix page table walked on every STLB miss, no caches, no
// faults (every page is mapped on its first walk). It prints accesses per second of the timed loop.
//
// Usage: tlbref gups|chase|seq SIZE_MIB ACCESSES [SEED]
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { uint64_t tag[64]; uint64_t age[64]; } L1;           // 16 sets × 4 ways
typedef struct { uint64_t tag[1536]; uint64_t age[1536]; } L2;       // 128 sets × 12 ways

static uint64_t clock_tick;
static uint64_t walks, l1_misses, table_pages;

// A radix table: 512 entries per level, allocated on first use.
typedef struct node { void *slot[512]; } node;
static node *root;

static uint64_t walk(uint64_t page) {
    node *n = root;
    for (int level = 3; level > 0; level--) {
        unsigned i = (page >> (9 * level)) & 511;
        if (!n->slot[i]) { n->slot[i] = calloc(1, sizeof(node)); table_pages++; }
        n = n->slot[i];
    }
    unsigned i = page & 511;
    if (!n->slot[i]) n->slot[i] = (void *)(uintptr_t)(page + 1);   // the "frame"
    walks++;
    return (uint64_t)(uintptr_t)n->slot[i];
}

static inline int lookup(uint64_t *tag, uint64_t *age, unsigned ways, uint64_t key) {
    for (unsigned w = 0; w < ways; w++) if (tag[w] == key) { age[w] = ++clock_tick; return 1; }
    return 0;
}

static inline void insert(uint64_t *tag, uint64_t *age, unsigned ways, uint64_t key) {
    unsigned victim = 0;
    for (unsigned w = 1; w < ways; w++) if (age[w] < age[victim]) victim = w;
    tag[victim] = key; age[victim] = ++clock_tick;
}

static L1 l1; static L2 l2;

static inline void translate(uint64_t address) {
    uint64_t page = address >> 12, key = page + 1;
    unsigned s1 = page & 15, s2 = page & 127;
    if (lookup(&l1.tag[s1 * 4], &l1.age[s1 * 4], 4, key)) return;
    l1_misses++;
    if (!lookup(&l2.tag[s2 * 12], &l2.age[s2 * 12], 12, key)) {
        walk(page);
        insert(&l2.tag[s2 * 12], &l2.age[s2 * 12], 12, key);
    }
    insert(&l1.tag[s1 * 4], &l1.age[s1 * 4], 4, key);
}

static uint64_t xorshift(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: tlbref gups|chase|seq SIZE_MIB ACCESSES [SEED]\n"); return 2; }
    const char *pattern = argv[1];
    uint64_t size = strtoull(argv[2], NULL, 10) << 20, accesses = strtoull(argv[3], NULL, 10);
    uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 1, state = seed * 0x9E3779B97F4A7C15ull | 1;
    if (size < 4096 || accesses == 0) { fprintf(stderr, "tlbref: size and accesses must be positive\n"); return 2; }
    root = calloc(1, sizeof(node));
    uint64_t base = 0x7f0000000000ull, words = size / 8;
    // The pointer chase's order: a random cyclic permutation of pages (one touch per page visit).
    uint64_t pages = size >> 12, *next = NULL;
    if (!strcmp(pattern, "chase")) {
        next = malloc(pages * sizeof *next);
        uint64_t *order = malloc(pages * sizeof *order);
        for (uint64_t i = 0; i < pages; i++) order[i] = i;
        for (uint64_t i = pages - 1; i > 0; i--) { uint64_t j = xorshift(&state) % (i + 1), t = order[i]; order[i] = order[j]; order[j] = t; }
        for (uint64_t i = 0; i < pages; i++) next[order[i]] = order[(i + 1) % pages];
        free(order);
    } else if (strcmp(pattern, "gups") && strcmp(pattern, "seq")) {
        fprintf(stderr, "tlbref: unknown pattern '%s' (gups, chase, seq)\n", pattern); return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t cursor = 0;
    for (uint64_t i = 0; i < accesses; i++) {
        uint64_t address;
        if (pattern[0] == 'g') address = base + (xorshift(&state) % words) * 8;
        else if (pattern[0] == 's') { address = base + (cursor % words) * 8; cursor++; }
        else { cursor = next[cursor]; address = base + (cursor << 12) + (i & 511) * 8; }
        translate(address);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("tlbref %s %llu MiB: %llu accesses in %.3f s = %.1f M accesses/s (L1 misses %llu, walks %llu, table pages %llu)\n",
           pattern, (unsigned long long)(size >> 20), (unsigned long long)accesses, seconds, accesses / seconds / 1e6,
           (unsigned long long)l1_misses, (unsigned long long)walks, (unsigned long long)table_pages);
    return 0;
}
