// tlbcal — native calibration for thpsim's timing model (issue 7).
//
// Times three access patterns over an anonymous region with MADV_HUGEPAGE or MADV_NOHUGEPAGE and
// prints one line per run: pattern, size, page policy, AnonHugePages of the region, ns per access.
//
//   gups   random read-modify-write of 8-byte words (independent accesses: memory-level parallelism)
//   chase  random pointer chasing, one pointer per 64-byte line, a single cycle (Sattolo), dependent loads
//   seq    sequential 8-byte reads over the whole region
//
// Build: cc -O2 -o tlbcal tlbcal.c      Run: ./tlbcal PATTERN SIZE_MIB huge|nohuge [ACCESSES]
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static inline uint64_t next_random(void) {  // xorshift64*
    uint64_t x = rng_state;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/// AnonHugePages (kB) of the mapping that contains `p`, from /proc/self/smaps.
static long anon_huge_kb(void *p) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    int inside = 0;
    long kb = -1;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        uintptr_t lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = a >= lo && a < hi;
            continue;
        }
        if (inside && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) break;
    }
    fclose(f);
    return kb;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s gups|chase|seq SIZE_MIB huge|nohuge [ACCESSES]\n", argv[0]);
        return 2;
    }
    const char *pattern = argv[1];
    uint64_t bytes = strtoull(argv[2], NULL, 10) << 20;
    int huge = strcmp(argv[3], "huge") == 0;
    if (!huge && strcmp(argv[3], "nohuge") != 0) { fprintf(stderr, "policy must be huge or nohuge\n"); return 2; }
    uint64_t accesses = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;

    // Map 2 MiB more and align, so that every 2 MiB of the region can be a huge page.
    uint64_t align = 2ull << 20;
    char *raw = mmap(NULL, bytes + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) { perror("mmap"); return 1; }
    char *base = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    if (madvise(base, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0) { perror("madvise"); return 1; }
    memset(base, 1, bytes);  // first touch: faults in every page (huge or not)

    uint64_t *words = (uint64_t *)base;
    uint64_t nwords = bytes / 8;
    double t0, t1;
    uint64_t sink = 0;

    if (strcmp(pattern, "gups") == 0) {
        if (!accesses) accesses = 1ull << 25;
        uint64_t mask = nwords - 1;  // sizes are powers of two
        for (uint64_t i = 0; i < (1u << 20); i++) words[next_random() & mask] ^= i;  // warm
        t0 = now();
        for (uint64_t i = 0; i < accesses; i++) words[next_random() & mask] ^= i;
        t1 = now();
    } else if (strcmp(pattern, "chase") == 0) {
        if (!accesses) accesses = 1ull << 24;
        uint64_t lines = bytes / 64, stride = 8;  // one pointer per 64-byte line
        // Sattolo's algorithm over line indices, written in place as pointers: one cycle through all lines.
        for (uint64_t i = 0; i < lines; i++) words[i * stride] = i;
        for (uint64_t i = lines - 1; i > 0; i--) {
            uint64_t j = next_random() % i;
            uint64_t t = words[i * stride]; words[i * stride] = words[j * stride]; words[j * stride] = t;
        }
        for (uint64_t i = 0; i < lines; i++) words[i * stride] = (uint64_t)(uintptr_t)&words[words[i * stride] * stride];
        uint64_t *p = &words[0];
        for (uint64_t i = 0; i < (1u << 20); i++) p = (uint64_t *)*p;  // warm
        t0 = now();
        for (uint64_t i = 0; i < accesses; i++) p = (uint64_t *)*p;
        t1 = now();
        sink = (uint64_t)(uintptr_t)p;
    } else if (strcmp(pattern, "seq") == 0) {
        uint64_t passes = accesses ? (accesses + nwords - 1) / nwords : (bytes >= (1ull << 30) ? 1 : 4);
        accesses = passes * nwords;
        t0 = now();
        for (uint64_t p = 0; p < passes; p++)
            for (uint64_t i = 0; i < nwords; i++) sink += words[i];
        t1 = now();
    } else {
        fprintf(stderr, "unknown pattern %s\n", pattern);
        return 2;
    }
    long kb = anon_huge_kb(base);
    printf("%s %llu MiB %s AnonHugePages=%ld kB accesses=%llu ns/access=%.3f sink=%llu\n", pattern,
           (unsigned long long)(bytes >> 20), huge ? "huge" : "nohuge", kb, (unsigned long long)accesses,
           (t1 - t0) * 1e9 / (double)accesses, (unsigned long long)(sink & 1));
    return 0;
}
