// thpsim's capture plugin for QEMU user-mode emulation (`qemu-x86_64 -plugin`).
//
// It turns a guest program's memory behaviour into thpsim trace blocks (docs/trace-format.md) and
// writes them to a pipe that `thpsim record` reads:
//
//   pipe   := chunk*
//   chunk  := block                  a trace block, method 0 (stored), up to 64 KiB
//           | 'M' length:u16le text  a message for thpsim (execve, counts, errors)
//
// Chunks are written whole under a lock shared with forked children (in MAP_SHARED memory), so the
// blocks of every process of the recorded tree interleave whole in one stream.
//
// What it records, per guest thread (a QEMU vCPU), into a buffer of that thread's own (no lock on
// the access path):
// - data accesses as page runs: a thread keeps one open run of loads and one of stores; a run is
//   one record when the thread's loads (or stores) move to another page. The first use of a page
//   in the process is a record of its own at once, so first touches keep their order and kind;
// - instruction fetches, with `fetches=1`: a run per executed translation block's page (off by
//   default: a callback per block costs more than the data accesses' runs);
// - the instruction count (an inline counter per translation block), reported at exit;
// - memory system calls with their results: mmap, munmap, mprotect, mremap, madvise (advice the
//   model has), brk (as mappings of the heap's growth, like thpsim's lackey converter), clone of a
//   thread, fork/vfork/clone of a process, exit_group; execve is reported as a message.
//
// Order: a thread's buffer is written to the pipe at each of its system calls and when full, and a
// memory system call's record right after it returns. So whatever a thread did before a system call
// precedes, in the stream, whatever another thread did after it learnt of that call (through the
// call's result or a futex); accesses racing with another thread's munmap may land after it.
// Pages used before any traced call mapped them (the program, the loader, the stack: exec set them
// up before tracing began) are mapped in the stream at once, before their first use.
// Thread ids come from a counter shared with forked children: unique in the whole process tree.
//
// Sampling (architecture-simulator style): `skip=N` instructions are not traced, then `window=N`
// instructions are, every `every=N` instructions (0: one window), counted over all threads and
// checked when a run ends. System calls and every page's first use are always recorded, so the
// address space and resident memory stay right; only repeated accesses are left out.
//
// The QEMU plugin API (version 1, QEMU 4.2 to 8.x) is reached through dlsym on the running QEMU,
// with our own declarations of the few types and functions used, written from QEMU's documentation
// (docs/devel/tcg-plugins.rst). Nothing is linked against QEMU.

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

// Nothing of ours is exported but the two symbols QEMU looks up (marked `default` below); the
// package sets no compiler flags, so that it stays usable as a dependency.
#pragma GCC visibility push(hidden)

// ---- The QEMU plugin API, version 1: the declarations this plugin relies on. ----

typedef uint64_t plugin_id;
typedef uint32_t plugin_meminfo;
struct plugin_tb;
struct plugin_insn;

typedef struct {
    const char *target_name;
    struct { int min; int cur; } version;
    bool system_emulation;
} plugin_info;

enum { CB_NO_REGS = 0 };
enum { MEM_RW = 3 };
enum { INLINE_ADD_U64 = 0 };

typedef void (*tb_trans_cb)(plugin_id, struct plugin_tb *);
typedef void (*vcpu_udata_cb)(unsigned int vcpu, void *udata);
typedef void (*mem_cb)(unsigned int vcpu, plugin_meminfo info, uint64_t vaddr, void *udata);
typedef void (*syscall_cb)(plugin_id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                           uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);
typedef void (*syscall_ret_cb)(plugin_id, unsigned int vcpu, int64_t num, int64_t ret);
typedef void (*udata_cb)(plugin_id, void *udata);

static struct {
    void (*register_tb_trans)(plugin_id, tb_trans_cb);
    void (*register_tb_exec)(struct plugin_tb *, vcpu_udata_cb, int flags, void *udata);
    void (*register_tb_inline)(struct plugin_tb *, int op, void *ptr, uint64_t imm);
    void (*register_mem)(struct plugin_insn *, mem_cb, int flags, int rw, void *udata);
    void (*register_syscall)(plugin_id, syscall_cb);
    void (*register_syscall_ret)(plugin_id, syscall_ret_cb);
    void (*register_atexit)(plugin_id, udata_cb, void *udata);
    size_t (*tb_n_insns)(const struct plugin_tb *);
    uint64_t (*tb_vaddr)(const struct plugin_tb *);
    struct plugin_insn *(*tb_get_insn)(const struct plugin_tb *, size_t);
    uint64_t (*insn_vaddr)(const struct plugin_insn *);
    size_t (*insn_size)(const struct plugin_insn *);
    bool (*mem_is_store)(plugin_meminfo);
    unsigned int (*mem_size_shift)(plugin_meminfo);
} api;

// The API version this plugin is written against; QEMU refuses to load a plugin whose version it
// does not support, and `qemu_plugin_install` checks the range QEMU reports.
__attribute__((visibility("default"))) int qemu_plugin_version = 1;

// ---- Trace records (docs/trace-format.md). ----

enum {
    TAG_LOAD = 0x01, TAG_STORE = 0x02, TAG_FETCH = 0x03, TAG_THREAD = 0x04,
    TAG_MMAP = 0x10, TAG_MUNMAP = 0x11, TAG_MPROTECT = 0x12, TAG_MADVISE = 0x13, TAG_MREMAP = 0x14,
    TAG_SPAWN = 0x16, TAG_FORK = 0x17, TAG_EXIT = 0x18, TAG_BEGIN = 0x1A,
};

enum { KIND_LOAD = 0, KIND_STORE = 1, KIND_FETCH = 2 };

#define BLOCK_BYTES (64 << 10)
#define BLOCK_LIMIT (BLOCK_BYTES - 128)
#define MAX_VCPUS 4096
#define THREAD_LIMIT 65536
#define CACHE_SLOTS 4096
// Open runs per thread and kind: accesses that alternate between a few pages (a comparison of two
// records, a copy) stay runs; each of these pages stays in any TLB while it is among them.
#define OPEN_RUNS 4

// A block being filled: its records, and the thread and page its next record is relative to.
struct block {
    uint32_t len, records, thread;
    uint64_t page;
    uint8_t bytes[BLOCK_BYTES];
};

// One guest thread: its open runs, its block, a cache of pages known to be used already.
struct vcpu {
    uint64_t page[3][OPEN_RUNS], count[3][OPEN_RUNS];   // open runs by kind (load, store, fetch)
    uint32_t victim[3];                                  // the next open run of a kind to close
    uint64_t tracing;          // 1 inside a sampling window (always, without sampling), else 0
    uint32_t thread;
    uint32_t pendingFork;      // child thread id reserved at a fork's entry
    uint32_t call;             // what the system call in flight is (CALL_…)
    uint64_t args[4];          // its arguments (the return callback has none)
    uint64_t seenCache[CACHE_SLOTS];
    struct block out;
};

enum { CALL_OTHER = 0, CALL_THREAD = 1, CALL_FORK = 2 };

// Shared with forked children (MAP_SHARED): the lock around pipe writes, the next thread id.
struct shared {
    pthread_mutex_t write_lock;
    uint32_t next_thread;
};

static struct vcpu *vcpus[MAX_VCPUS];
static __thread struct vcpu *self;
// The process's lock: the page set, described ranges, spawn queue, brk, fork.
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct shared *shared;
static int out_fd = -1;
static bool failed, fetches, main_claimed;
// Threads announced by clone(CLONE_VM) entries, taken by the next new vCPU, which writes the spawn
// record on its parent's behalf (so a clone that fails leaves no record).
static struct { uint32_t parent, child; } spawn_queue[256];
static unsigned spawn_head, spawn_tail;
static uint64_t brk_top;       // the heap's top, page-aligned (0: not known yet)
static uint64_t skip, window, every;
static bool sampling, measuring;
static uint64_t instructions;  // all threads', by an inline counter (racy between threads)
// The bit of a memory callback's info word that `qemu_plugin_mem_is_store` tests, found by asking
// it at installation (0: not a single bit; then every access asks it).
static plugin_meminfo store_bit;

// Pages used so far in this process: an open-addressing set of page + 1.
static uint64_t *seen;
static size_t seen_capacity, seen_count;
// The union of the ranges traced system calls mapped or unmapped (sorted, disjoint, page-aligned).
static struct range { uint64_t start, end; } *described;
static size_t described_count, described_capacity;
static uint64_t implicit_pages;

// ---- Blocks and the pipe. ----

static size_t varint_into(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    p[n++] = (uint8_t)v;
    return n;
}

static void put_varint(struct block *b, uint64_t v) { b->len += (uint32_t)varint_into(b->bytes + b->len, v); }
static void put_byte(struct block *b, uint8_t v) { b->bytes[b->len++] = v; }

static void write_all(const uint8_t *p, size_t n) {
    while (n > 0 && !failed) {
        ssize_t w = write(out_fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { failed = true; return; }   // thpsim went away: stop tracing, let the program run
        p += w; n -= (size_t)w;
    }
}

static void lock_writes(void) {
    if (pthread_mutex_lock(&shared->write_lock) == EOWNERDEAD) {
        // A process died while writing: its chunk may be cut, which thpsim reports.
        pthread_mutex_consistent(&shared->write_lock);
    }
}

// Writes `b` as one chunk and empties it.
static void flush(struct block *b) {
    if (b->len == 0) return;
    uint8_t header[32];
    size_t h = 0;
    header[h++] = 'B';
    h += varint_into(header + h, b->len);
    h += varint_into(header + h, b->len);
    h += varint_into(header + h, b->records);
    header[h++] = 0;
    // The checksum field stays 0: thpsim computes it (on its own core) when it writes the block.
    for (int i = 0; i < 4; i++) header[h++] = 0;
    lock_writes();
    write_all(header, h);
    write_all(b->bytes, b->len);
    pthread_mutex_unlock(&shared->write_lock);
    b->len = 0; b->records = 0; b->thread = 0; b->page = 0;
}

static void send_message(const char *text) {
    size_t n = strlen(text);
    if (n > 4000) n = 4000;
    uint8_t chunk[4096];
    chunk[0] = 'M'; chunk[1] = (uint8_t)n; chunk[2] = (uint8_t)(n >> 8);
    memcpy(chunk + 3, text, n);
    lock_writes();
    write_all(chunk, n + 3);
    pthread_mutex_unlock(&shared->write_lock);
}

// Starts a record of up to 64 bytes by `thread` in `b`.
static void begin_record(struct block *b, uint32_t thread) {
    if (b->len > BLOCK_LIMIT) flush(b);
    if (thread != b->thread) {
        put_byte(b, TAG_THREAD);
        put_varint(b, thread);
        b->thread = thread;
        b->records++;
    }
    b->records++;
}

static void put_run(struct block *b, uint32_t thread, uint32_t kind, uint64_t page, uint64_t count) {
    begin_record(b, thread);
    put_byte(b, (uint8_t)(kind + 1));
    int64_t delta = (int64_t)(page - b->page);
    put_varint(b, (uint64_t)((delta << 1) ^ (delta >> 63)));
    put_varint(b, count - 1);
    b->page = page;
}

static void put_mmap(struct block *b, uint32_t thread, uint64_t address, uint64_t length, uint8_t protection, bool shared_mapping) {
    begin_record(b, thread);
    put_byte(b, TAG_MMAP); put_varint(b, address); put_varint(b, length);
    put_byte(b, protection); put_byte(b, shared_mapping ? 1 : 0);
}

// ---- The page set and the described ranges. Lock held. ----

static bool seen_insert(uint64_t page) {
    if (seen_count * 2 >= seen_capacity) {
        size_t old = seen_capacity;
        uint64_t *old_table = seen;
        seen_capacity = old ? old * 2 : 1 << 16;
        seen = calloc(seen_capacity, sizeof *seen);
        if (!seen) { fprintf(stderr, "thpsim capture: out of memory\n"); abort(); }
        seen_count = 0;
        for (size_t i = 0; i < old; i++) if (old_table[i]) seen_insert(old_table[i] - 1);
        free(old_table);
    }
    uint64_t key = page + 1;
    size_t mask = seen_capacity - 1, i = (size_t)(key * 0x9E3779B97F4A7C15ull >> 20) & mask;
    while (seen[i]) {
        if (seen[i] == key) return false;
        i = (i + 1) & mask;
    }
    seen[i] = key;
    seen_count++;
    return true;
}

static void describe(uint64_t start, uint64_t length) {
    uint64_t end = (start + length + 0xFFF) & ~0xFFFull;
    start &= ~0xFFFull;
    if (end <= start) return;
    // The first range ending at or after `start`; every range touching [start, end) merges into it.
    size_t lo = 0, hi = described_count;
    while (lo < hi) { size_t mid = (lo + hi) / 2; if (described[mid].end < start) lo = mid + 1; else hi = mid; }
    size_t first = lo, last = lo;
    while (last < described_count && described[last].start <= end) {
        if (described[last].start < start) start = described[last].start;
        if (described[last].end > end) end = described[last].end;
        last++;
    }
    if (first == last) {
        if (described_count == described_capacity) {
            described_capacity = described_capacity ? described_capacity * 2 : 64;
            described = realloc(described, described_capacity * sizeof *described);
            if (!described) { fprintf(stderr, "thpsim capture: out of memory\n"); abort(); }
        }
        memmove(described + first + 1, described + first, (described_count - first) * sizeof *described);
        described_count++;
    } else if (last - first > 1) {
        memmove(described + first + 1, described + last, (described_count - last) * sizeof *described);
        described_count -= last - first - 1;
    }
    described[first].start = start;
    described[first].end = end;
}

static bool is_described(uint64_t address) {
    size_t lo = 0, hi = described_count;
    while (lo < hi) { size_t mid = (lo + hi) / 2; if (described[mid].end <= address) lo = mid + 1; else hi = mid; }
    return lo < described_count && described[lo].start <= address;
}

// ---- Threads. ----

// A thread id unique in the recorded process tree; past the trace format's limit, tracing stops.
static uint32_t new_thread_id(void) {
    uint32_t t = __atomic_fetch_add(&shared->next_thread, 1, __ATOMIC_RELAXED);
    if (t >= THREAD_LIMIT && !failed) {
        send_message("error more than 65536 threads and processes: the trace format's limit");
        failed = true;
    }
    return t & (THREAD_LIMIT - 1);
}

static bool in_window(void) {
    uint64_t n = __atomic_load_n(&instructions, __ATOMIC_RELAXED);
    if (n <= skip) return false;
    if (window == 0) return true;
    uint64_t t = n - skip - 1;
    return every ? (t % every) < window : t < window;
}

// The state of vCPU `index`, made on its first callback (in its own thread).
__attribute__((noinline, cold)) static struct vcpu *vcpu_init(unsigned int index) {
    if (index >= MAX_VCPUS) {
        fprintf(stderr, "thpsim capture: more than %d guest threads at once\n", MAX_VCPUS);
        abort();
    }
    struct vcpu *v = calloc(1, sizeof *v);
    if (!v) { fprintf(stderr, "thpsim capture: out of memory\n"); abort(); }
    memset(v->page, 0xFF, sizeof v->page);
    v->tracing = !sampling || skip == 0;
    pthread_mutex_lock(&lock);
    struct block note = { 0 };
    if (spawn_head != spawn_tail) {
        unsigned slot = spawn_head++ % 256;
        v->thread = spawn_queue[slot].child;
        begin_record(&note, spawn_queue[slot].parent);
        put_byte(&note, TAG_SPAWN); put_varint(&note, v->thread);
    } else if (!main_claimed) {
        v->thread = 0;
    } else {
        v->thread = new_thread_id();   // a vCPU nobody announced: a thread of its own
        begin_record(&note, 0);
        put_byte(&note, TAG_SPAWN); put_varint(&note, v->thread);
    }
    main_claimed = true;
    flush(&note);
    __atomic_store_n(&vcpus[index], v, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&lock);
    self = v;
    return v;
}

__attribute__((always_inline)) static inline struct vcpu *vcpu_of(unsigned int index) {
    struct vcpu *v = index < MAX_VCPUS ? vcpus[index] : NULL;
    return v ? v : vcpu_init(index);
}

// Emits `v`'s open runs into its block.
static void close_runs(struct vcpu *v) {
    for (uint32_t kind = 0; kind < 3; kind++) {
        for (int i = 0; i < OPEN_RUNS; i++) {
            if (v->count[kind][i]) put_run(&v->out, v->thread, kind, v->page[kind][i], v->count[kind][i]);
            v->count[kind][i] = 0;
            v->page[kind][i] = UINT64_MAX;
        }
    }
}

// ---- Accesses. ----

// Whether this is the process's first use of `page`; a page no traced call described is mapped in
// the stream at once (before any thread's access to it can be written).
static bool first_use(struct vcpu *v, uint64_t page) {
    uint64_t *slot = &v->seenCache[(page ^ (page >> 12)) & (CACHE_SLOTS - 1)];
    if (*slot == page + 1) return false;
    *slot = page + 1;
    pthread_mutex_lock(&lock);
    bool fresh = seen_insert(page);
    if (fresh && !is_described(page << 12)) {
        struct block note = { 0 };
        put_mmap(&note, v->thread, page << 12, 4096, 7, false);
        flush(&note);
        implicit_pages++;
    }
    pthread_mutex_unlock(&lock);
    return fresh;
}

// `v`'s loads, stores or fetches (`kind`) reach `page`, which is not among their open runs: the
// oldest open run closes and `page` takes its place. Returns the new run's slot.
static int new_page(struct vcpu *v, uint64_t page, uint32_t kind) {
    int slot = (int)v->victim[kind];
    v->victim[kind] = (v->victim[kind] + 1) % OPEN_RUNS;
    if (v->count[kind][slot]) put_run(&v->out, v->thread, kind, v->page[kind][slot], v->count[kind][slot]);
    if (sampling) {
        uint64_t in = in_window();
        if (in != v->tracing) {
            v->tracing = in;
            if (in && !__atomic_exchange_n(&measuring, true, __ATOMIC_RELAXED)) {
                begin_record(&v->out, v->thread); put_byte(&v->out, TAG_BEGIN);
            }
        }
    }
    v->page[kind][slot] = page;
    v->count[kind][slot] = 0;
    if (first_use(v, page)) {
        put_run(&v->out, v->thread, kind, page, 1);   // a first touch keeps its place and kind
    } else {
        v->count[kind][slot] = v->tracing;
    }
    return slot;
}

static inline void data_access(struct vcpu *v, uint64_t page, uint32_t kind) {
    uint64_t *open = v->page[kind];
    for (int i = 0; i < OPEN_RUNS; i++) {
        if (open[i] == page) { v->count[kind][i] += v->tracing; return; }
    }
    new_page(v, page, kind);
}

static void on_memory(unsigned int index, plugin_meminfo info, uint64_t vaddr, void *udata) {
    (void)udata;
    struct vcpu *v = vcpu_of(index);
    uint32_t kind = store_bit ? ((info & store_bit) ? KIND_STORE : KIND_LOAD) : (api.mem_is_store(info) ? KIND_STORE : KIND_LOAD);
    data_access(v, vaddr >> 12, kind);
    // An access that straddles two pages touches both (accesses are at most 64 bytes).
    if ((vaddr & 0xFFF) > 0xFC0 && (vaddr & 0xFFF) + (1u << api.mem_size_shift(info)) > 0x1000) {
        data_access(v, (vaddr >> 12) + 1, kind);
    }
}

// With `fetches=1`: the block's page (bits 12…) and instruction count (bits 0…11) are the user
// data, so translation allocates nothing.
static void on_block(unsigned int index, void *udata) {
    struct vcpu *v = vcpu_of(index);
    uint64_t packed = (uint64_t)(uintptr_t)udata, page = packed >> 12, n = packed & 0xFFF;
    for (int i = 0; i < OPEN_RUNS; i++) {
        if (v->page[KIND_FETCH][i] == page) { v->count[KIND_FETCH][i] += n * v->tracing; return; }
    }
    int slot = new_page(v, page, KIND_FETCH);
    v->count[KIND_FETCH][slot] += (n - 1) * v->tracing;
}

static void on_translate(plugin_id id, struct plugin_tb *tb) {
    (void)id;
    size_t n = api.tb_n_insns(tb);
    if (n == 0) return;
    api.register_tb_inline(tb, INLINE_ADD_U64, &instructions, n);
    if (fetches) {
        uint64_t packed = (api.tb_vaddr(tb) >> 12) << 12 | (n > 0xFFF ? 0xFFF : n);
        api.register_tb_exec(tb, on_block, CB_NO_REGS, (void *)(uintptr_t)packed);
    }
    for (size_t i = 0; i < n; i++) {
        api.register_mem(api.tb_get_insn(tb, i), on_memory, CB_NO_REGS, MEM_RW, NULL);
    }
}

// ---- System calls (x86-64 numbers). ----

enum {
    SYS_MMAP = 9, SYS_MPROTECT = 10, SYS_MUNMAP = 11, SYS_BRK = 12, SYS_MREMAP = 25, SYS_MADVISE = 28,
    SYS_CLONE = 56, SYS_FORK = 57, SYS_VFORK = 58, SYS_EXECVE = 59, SYS_EXIT = 60, SYS_EXIT_GROUP = 231,
    SYS_EXECVEAT = 322, SYS_CLONE3 = 435,
};
#define CLONE_VM_FLAG 0x100
#define MAP_SHARED_FLAG 0x01
#define MAP_ANONYMOUS_FLAG 0x20

// Linux's advice number as the trace's code (its index in thpsim's `Advice.allCases`: dontneed,
// hugepage, nohugepage, dontfork, dofork, collapse, pageout), or -1 for advice the model ignores.
static int advice_code(uint64_t advice) {
    switch (advice) {
    case 4: case 24: return 0;   // MADV_DONTNEED, MADV_DONTNEED_LOCKED
    case 14: return 1;           // MADV_HUGEPAGE
    case 15: return 2;           // MADV_NOHUGEPAGE
    case 10: return 3;           // MADV_DONTFORK
    case 11: return 4;           // MADV_DOFORK
    case 25: return 5;           // MADV_COLLAPSE
    case 21: return 6;           // MADV_PAGEOUT
    default: return -1;          // MADV_FREE, WILLNEED, COLD, … (docs/trace-format.md)
    }
}

// Calls with advice the model ignores, by advice number (reported at exit).
static uint64_t ignored_advice[64];

static bool failed_result(int64_t ret) { return ret < 0 && ret > -4096; }

// Reads a guest string (guest addresses are the host's in user mode with guest_base 0; a failed
// read gives an empty string rather than a crash).
static void read_guest_string(uint64_t address, char *out, size_t size) {
    out[0] = 0;
    int fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = pread(fd, out, size - 1, (off_t)address);
    close(fd);
    if (n <= 0) { out[0] = 0; return; }
    out[n] = 0;
    for (ssize_t i = 0; i < n && out[i]; i++) if ((unsigned char)out[i] < 0x20) { out[0] = 0; return; }
}

// Whether a clone(2) or clone3(2) makes a thread (CLONE_VM) rather than a process.
static bool clone_makes_thread(int64_t num, uint64_t a1) {
    uint64_t flags = a1;
    if (num == SYS_CLONE3) {
        // struct clone_args starts with the flags.
        flags = 0;
        int fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) { if (pread(fd, &flags, 8, (off_t)a1) != 8) flags = 0; close(fd); }
    }
    return flags & CLONE_VM_FLAG;
}

static void on_syscall(plugin_id id, unsigned int index, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
    (void)id; (void)a5; (void)a6; (void)a7; (void)a8;
    struct vcpu *v = vcpu_of(index);
    v->args[0] = a1; v->args[1] = a2; v->args[2] = a3; v->args[3] = a4;
    v->call = CALL_OTHER;
    if (failed) return;
    // Whatever this thread did before the call goes out now.
    close_runs(v);
    switch (num) {
    case SYS_CLONE:
    case SYS_CLONE3:
        if (clone_makes_thread(num, a1)) {
            pthread_mutex_lock(&lock);
            unsigned slot = spawn_tail++ % 256;
            spawn_queue[slot].parent = v->thread;
            spawn_queue[slot].child = new_thread_id();
            pthread_mutex_unlock(&lock);
            v->call = CALL_THREAD;
            break;
        }
        __attribute__((fallthrough));   // a clone without CLONE_VM is a fork
    case SYS_FORK:
    case SYS_VFORK:
        // The lock is held across the fork, so the child inherits it from this thread only; both
        // processes release it when the call returns.
        pthread_mutex_lock(&lock);
        v->pendingFork = new_thread_id();
        begin_record(&v->out, v->thread); put_byte(&v->out, TAG_FORK); put_varint(&v->out, v->pendingFork);
        v->call = CALL_FORK;
        break;
    case SYS_EXIT:
        // This thread ends; QEMU may give its vCPU index to the next new thread.
        flush(&v->out);
        __atomic_store_n(&vcpus[index], NULL, __ATOMIC_RELEASE);
        self = NULL;
        return;
    case SYS_EXIT_GROUP:
        begin_record(&v->out, v->thread); put_byte(&v->out, TAG_EXIT);
        break;
    case SYS_EXECVE:
    case SYS_EXECVEAT: {
        char path[1024], message[1200];
        read_guest_string(num == SYS_EXECVE ? a1 : a2, path, sizeof path);
        flush(&v->out);
        snprintf(message, sizeof message, "execve %u %s", v->thread, path);
        send_message(message);
        break;
    }
    default:
        break;
    }
    flush(&v->out);
}

static void on_syscall_return(plugin_id id, unsigned int index, int64_t num, int64_t ret) {
    (void)id;
    struct vcpu *v = vcpu_of(index);
    uint64_t *a = v->args;
    if (v->call == CALL_THREAD) {
        v->call = CALL_OTHER;
        if (failed_result(ret)) {
            // No thread: take back the announcement no vCPU will claim.
            pthread_mutex_lock(&lock);
            if (spawn_tail != spawn_head) spawn_tail--;
            pthread_mutex_unlock(&lock);
        }
        return;
    }
    if (v->call == CALL_FORK) {
        v->call = CALL_OTHER;
        if (ret == 0) {
            // The child: a new process whose only thread is this one. The other vCPUs and their
            // unwritten records were the parent's threads.
            pthread_mutex_init(&lock, NULL);
            for (unsigned i = 0; i < MAX_VCPUS; i++) if (i != index) vcpus[i] = NULL;
            spawn_head = spawn_tail = 0;
            implicit_pages = 0;
            instructions = 0;
            memset(ignored_advice, 0, sizeof ignored_advice);
            v->thread = v->pendingFork;
            v->pendingFork = 0;
            return;
        }
        if (failed_result(ret)) {
            // No child: the process the fork record announced exits at once.
            begin_record(&v->out, v->pendingFork); put_byte(&v->out, TAG_EXIT);
            flush(&v->out);
        }
        v->pendingFork = 0;
        pthread_mutex_unlock(&lock);
        return;
    }
    switch (num) {
    case SYS_EXECVE:
    case SYS_EXECVEAT: {
        char message[64];
        snprintf(message, sizeof message, "execve-failed %u", v->thread);
        send_message(message);
        return;
    }
    case SYS_MMAP: case SYS_MUNMAP: case SYS_MPROTECT: case SYS_MREMAP: case SYS_MADVISE: case SYS_BRK:
        break;
    default:
        return;
    }
    if (failed) return;
    close_runs(v);
    struct block *b = &v->out;
    pthread_mutex_lock(&lock);
    if (num == SYS_BRK) {
        uint64_t top = ((uint64_t)ret + 0xFFF) & ~0xFFFull;
        if (brk_top == 0) {
            brk_top = top;
        } else if (top > brk_top) {
            describe(brk_top, top - brk_top);
            put_mmap(b, v->thread, brk_top, top - brk_top, 3, false);
            brk_top = top;
        } else if (top < brk_top) {
            describe(top, brk_top - top);
            begin_record(b, v->thread);
            put_byte(b, TAG_MUNMAP); put_varint(b, top); put_varint(b, brk_top - top);
            brk_top = top;
        }
    } else if (num == SYS_MADVISE && !failed_result(ret) && advice_code(a[2]) < 0) {
        ignored_advice[a[2] < 64 ? a[2] : 63]++;
    } else if (!failed_result(ret)) {
        switch (num) {
        case SYS_MMAP: {
            uint64_t flags = a[3];
            describe((uint64_t)ret, a[1]);
            put_mmap(b, v->thread, (uint64_t)ret, a[1], (uint8_t)(a[2] & 7),
                     (flags & MAP_SHARED_FLAG) && (flags & MAP_ANONYMOUS_FLAG));
            break;
        }
        case SYS_MUNMAP:
            describe(a[0], a[1]);
            begin_record(b, v->thread);
            put_byte(b, TAG_MUNMAP); put_varint(b, a[0]); put_varint(b, a[1]);
            break;
        case SYS_MPROTECT:
            begin_record(b, v->thread);
            put_byte(b, TAG_MPROTECT); put_varint(b, a[0]); put_varint(b, a[1]); put_byte(b, (uint8_t)(a[2] & 7));
            break;
        case SYS_MREMAP:
            describe(a[0], a[1]);
            describe((uint64_t)ret, a[2]);
            begin_record(b, v->thread);
            put_byte(b, TAG_MREMAP); put_varint(b, a[0]); put_varint(b, a[1]); put_varint(b, a[2]);
            put_varint(b, (uint64_t)ret);
            break;
        case SYS_MADVISE:
            begin_record(b, v->thread);
            put_byte(b, TAG_MADVISE); put_varint(b, a[0]); put_varint(b, a[1]); put_byte(b, (uint8_t)advice_code(a[2]));
            break;
        }
    }
    // Out before this thread goes on, so no thread can use the new layout before the stream has it.
    flush(b);
    pthread_mutex_unlock(&lock);
}

static void on_exit_of_qemu(plugin_id id, void *udata) {
    (void)id; (void)udata;
    // The exiting thread's records (a thread killed by a signal ends here too); other threads'
    // last unwritten records are lost with them.
    if (self) { close_runs(self); flush(&self->out); }
    char message[1024];
    snprintf(message, sizeof message, "counts instructions=%llu implicit=%llu",
             (unsigned long long)instructions, (unsigned long long)implicit_pages);
    send_message(message);
    size_t n = (size_t)snprintf(message, sizeof message, "ignored-madvise");
    bool any = false;
    for (int i = 0; i < 64 && n < sizeof message - 32; i++) {
        if (ignored_advice[i]) {
            n += (size_t)snprintf(message + n, sizeof message - n, " %d:%llu", i, (unsigned long long)ignored_advice[i]);
            any = true;
        }
    }
    if (any) send_message(message);
}

// ---- Installation. ----

static bool parse_count(const char *text, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end) return false;
    *out = v;
    return true;
}

#define RESOLVE(field, name) \
    do { *(void **)&api.field = dlsym(RTLD_DEFAULT, name); \
         if (!api.field) { fprintf(stderr, "thpsim capture: this QEMU has no %s\n", name); return -1; } } while (0)

__attribute__((visibility("default")))
int qemu_plugin_install(plugin_id id, const plugin_info *info, int argc, char **argv) {
    if (info->version.cur < 1 || info->version.min > 1) {
        fprintf(stderr, "thpsim capture: needs QEMU plugin API version 1; this QEMU supports %d to %d\n",
                info->version.min, info->version.cur);
        return -1;
    }
    if (info->system_emulation || strcmp(info->target_name, "x86_64") != 0) {
        fprintf(stderr, "thpsim capture: records x86-64 user-mode programs only (this is %s%s)\n",
                info->target_name, info->system_emulation ? ", system emulation" : "");
        return -1;
    }
    uint64_t fetch_flag = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        uint64_t v;
        const char *eq = strchr(a, '=');
        if (!eq || !parse_count(eq + 1, &v)) {
            fprintf(stderr, "thpsim capture: bad argument '%s' (expected fd=N, skip=N, window=N, every=N or fetches=0|1)\n", a);
            return -1;
        }
        size_t k = (size_t)(eq - a);
        if (k == 2 && !strncmp(a, "fd", 2)) out_fd = (int)v;
        else if (k == 4 && !strncmp(a, "skip", 4)) skip = v;
        else if (k == 6 && !strncmp(a, "window", 6)) window = v;
        else if (k == 5 && !strncmp(a, "every", 5)) every = v;
        else if (k == 7 && !strncmp(a, "fetches", 7)) fetch_flag = v;
        else { fprintf(stderr, "thpsim capture: unknown argument '%s'\n", a); return -1; }
    }
    if (out_fd < 0 || fcntl(out_fd, F_GETFD) < 0) {
        fprintf(stderr, "thpsim capture: give fd=N, an open pipe to thpsim (run through thpsim record)\n");
        return -1;
    }
    if (every && every < window) {
        fprintf(stderr, "thpsim capture: every=%llu is shorter than window=%llu\n",
                (unsigned long long)every, (unsigned long long)window);
        return -1;
    }
    sampling = skip || window;
    fetches = fetch_flag != 0;
    // The program must not inherit the pipe across execve (a native program would hold it open).
    fcntl(out_fd, F_SETFD, FD_CLOEXEC);
    shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) { perror("thpsim capture: mmap"); return -1; }
    pthread_mutexattr_t attributes;
    pthread_mutexattr_init(&attributes);
    pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&shared->write_lock, &attributes);
    pthread_mutexattr_destroy(&attributes);
    shared->next_thread = 1;

    RESOLVE(register_tb_trans, "qemu_plugin_register_vcpu_tb_trans_cb");
    RESOLVE(register_tb_exec, "qemu_plugin_register_vcpu_tb_exec_cb");
    RESOLVE(register_tb_inline, "qemu_plugin_register_vcpu_tb_exec_inline");
    RESOLVE(register_mem, "qemu_plugin_register_vcpu_mem_cb");
    RESOLVE(register_syscall, "qemu_plugin_register_vcpu_syscall_cb");
    RESOLVE(register_syscall_ret, "qemu_plugin_register_vcpu_syscall_ret_cb");
    RESOLVE(register_atexit, "qemu_plugin_register_atexit_cb");
    RESOLVE(tb_n_insns, "qemu_plugin_tb_n_insns");
    RESOLVE(tb_vaddr, "qemu_plugin_tb_vaddr");
    RESOLVE(tb_get_insn, "qemu_plugin_tb_get_insn");
    RESOLVE(insn_vaddr, "qemu_plugin_insn_vaddr");
    RESOLVE(insn_size, "qemu_plugin_insn_size");
    RESOLVE(mem_is_store, "qemu_plugin_mem_is_store");
    RESOLVE(mem_size_shift, "qemu_plugin_mem_size_shift");

    for (int bit = 0; bit < 32; bit++) {
        if (api.mem_is_store((plugin_meminfo)1 << bit)) store_bit = store_bit ? 0 : (plugin_meminfo)1 << bit;
    }
    if (api.mem_is_store(0) || (store_bit && !api.mem_is_store(~(plugin_meminfo)0))) store_bit = 0;

    char hello[64];
    snprintf(hello, sizeof hello, "hello 1 %d", info->version.cur);
    send_message(hello);

    api.register_tb_trans(id, on_translate);
    api.register_syscall(id, on_syscall);
    api.register_syscall_ret(id, on_syscall_return);
    api.register_atexit(id, on_exit_of_qemu, NULL);
    return 0;
}

#pragma GCC visibility pop
