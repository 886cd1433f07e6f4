// thpsim's capture plugin for QEMU user-mode emulation (`qemu-x86_64 -plugin`).
//
// It turns a guest program's memory behaviour into thpsim trace blocks (docs/trace-format.md) and
// writes them to a pipe that `thpsim record` reads:
//
//   pipe   := chunk*
//   chunk  := block                  a trace block, method 0 (stored), at most 4,096 bytes, so
//                                    that one write(2) to a pipe is atomic (PIPE_BUF) and blocks
//                                    of forked children interleave whole with their parent's
//           | 'M' length:u16le text  a message for thpsim (execve attempts, errors), ≤ 4,096 bytes
//
// What it records, per guest thread (a QEMU vCPU):
// - data accesses as page runs: consecutive loads (or stores) of one thread to one 4 KiB page are
//   one record; an access straddling two pages touches both;
// - instruction fetches per executed translation block: a fetch run of the block's instruction
//   count on the block's page (and one fetch on the next page when the block crosses into it);
// - memory system calls with their results: mmap, munmap, mprotect, mremap, madvise (every advice,
//   by number), brk (as mappings of the heap's growth, like thpsim's lackey converter), clone of a
//   thread, fork/vfork/clone of a process, exit_group; execve is reported as a message.
//
// Accesses of one thread are ordered with the system calls of every thread: a memory system call
// first closes every thread's open run (under the process's lock), then appends its record.
// Thread ids come from a counter in memory shared with forked children, so they are unique in the
// whole recorded process tree.
//
// Sampling (architecture-simulator style): `skip=N` instructions are not traced, then `window=N`
// instructions are, every `every=N` instructions (0: one window). System calls are always
// recorded, and so is the first touch of every page outside the windows, so the address space and
// resident memory stay right; only repeated accesses are left out.
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

#define CHUNK_BYTES 4096
#define HEADER_ROOM 16
#define PAYLOAD_LIMIT (CHUNK_BYTES - HEADER_ROOM - 64)
#define MAX_VCPUS 4096
#define THREAD_LIMIT 65536

// One guest thread's open runs. `count` is written by its thread without the lock (relaxed atomics)
// and read and reset by a thread making a memory system call, under the lock.
struct vcpu {
    uint32_t thread;
    uint64_t page, count;      // the open data run
    uint32_t kind;
    uint64_t fetchPage, fetchCount;
    uint64_t instructions;     // for sampling windows
    bool tracing;              // inside a sampling window
    uint32_t pendingFork;      // child thread id reserved at a fork's entry
    uint32_t call;             // what the system call in flight is (CALL_…)
};

enum { CALL_OTHER = 0, CALL_THREAD = 1, CALL_FORK = 2 };

static struct vcpu *vcpus[MAX_VCPUS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int out_fd = -1;
static bool failed;
// Shared with forked children (MAP_SHARED): the next thread id.
static uint32_t *next_thread;
// Threads announced by clone(CLONE_VM) entries, taken by the next new vCPU, which writes the spawn
// record on its parent's behalf (so a clone that fails leaves no record).
static struct { uint32_t parent, child; } spawn_queue[256];
static unsigned spawn_head, spawn_tail;
static uint64_t brk_top;       // the heap's top, page-aligned (0: not known yet)
static uint64_t skip, window, every;
static bool sampling;

// The block being filled (under the lock).
static uint8_t payload[CHUNK_BYTES];
static size_t payload_len;
static uint32_t block_records, block_thread;
static uint64_t block_page;

// Pages touched so far in this process: an open-addressing set.
static uint64_t *seen;
static size_t seen_capacity, seen_count;
// The union of the ranges traced system calls mapped or unmapped (sorted, disjoint, page-aligned):
// a page outside it that the program uses was mapped before tracing began (by exec: the program,
// the loader, the stack) and is mapped in the trace just before its first use.
static struct range { uint64_t start, end; } *described;
static size_t described_count, described_capacity;
static uint64_t implicit_pages;

static void put_varint(uint64_t v) {
    while (v >= 0x80) { payload[payload_len++] = (uint8_t)(v | 0x80); v >>= 7; }
    payload[payload_len++] = (uint8_t)v;
}

static size_t varint_into(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) { p[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    p[n++] = (uint8_t)v;
    return n;
}

static void write_all(const uint8_t *p, size_t n) {
    if (failed) return;
    while (n > 0) {
        ssize_t w = write(out_fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { failed = true; return; }   // thpsim went away: stop tracing, let the program run
        p += w; n -= (size_t)w;
    }
}

static uint32_t fnv1a(const uint8_t *p, size_t n) {
    uint32_t h = 0x811C9DC5u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x01000193u;
    return h;
}

// Writes the block being filled as one chunk. Lock held.
static void flush_block(void) {
    if (payload_len == 0) return;
    uint8_t chunk[CHUNK_BYTES];
    size_t h = 0;
    chunk[h++] = 'B';
    h += varint_into(chunk + h, payload_len);
    h += varint_into(chunk + h, payload_len);
    h += varint_into(chunk + h, block_records);
    chunk[h++] = 0;
    uint32_t sum = fnv1a(payload, payload_len);
    for (int i = 0; i < 4; i++) chunk[h++] = (uint8_t)(sum >> (8 * i));
    memcpy(chunk + h, payload, payload_len);
    write_all(chunk, h + payload_len);
    payload_len = 0; block_records = 0; block_thread = 0; block_page = 0;
}

// Makes room for a record of up to 48 bytes by `thread`. Lock held.
static void begin_record(uint32_t thread) {
    if (payload_len > PAYLOAD_LIMIT) flush_block();
    if (thread != block_thread) {
        payload[payload_len++] = TAG_THREAD;
        put_varint(thread);
        block_thread = thread;
        block_records++;
    }
}

static void end_record(void) { block_records++; }

static void emit_run(uint32_t thread, uint32_t kind, uint64_t page, uint64_t count) {
    begin_record(thread);
    payload[payload_len++] = (uint8_t)(kind + 1);
    int64_t delta = (int64_t)(page - block_page);
    put_varint((uint64_t)((delta << 1) ^ (delta >> 63)));
    put_varint(count - 1);
    block_page = page;
    end_record();
}

static void send_message(const char *text) {
    size_t n = strlen(text);
    if (n > CHUNK_BYTES - 3) n = CHUNK_BYTES - 3;
    uint8_t chunk[CHUNK_BYTES];
    chunk[0] = 'M'; chunk[1] = (uint8_t)n; chunk[2] = (uint8_t)(n >> 8);
    memcpy(chunk + 3, text, n);
    write_all(chunk, n + 3);
}

// ---- The set of touched pages. Lock held. ----

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

// ---- Described ranges. Lock held. ----

static void describe(uint64_t start, uint64_t length) {
    uint64_t end = (start + length + 0xFFF) & ~0xFFFull;
    start &= ~0xFFFull;
    if (end <= start) return;
    // Find the first range that ends at or after `start`; merge every range that touches [start, end).
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

// Before `thread`'s first use of `page`: maps it if no traced call described it. Returns whether
// this is the page's first use in the process. Lock held.
static bool first_use(uint32_t thread, uint64_t page) {
    if (!seen_insert(page)) return false;
    if (!is_described(page << 12)) {
        begin_record(thread);
        payload[payload_len++] = TAG_MMAP; put_varint(page << 12); put_varint(4096);
        payload[payload_len++] = 7; payload[payload_len++] = 0;
        end_record();
        implicit_pages++;
    }
    return true;
}

// ---- Threads. ----


// A thread id unique in the recorded process tree; past the trace format's limit, tracing stops.
static uint32_t new_thread_id(void) {
    uint32_t t = __atomic_fetch_add(next_thread, 1, __ATOMIC_RELAXED);
    if (t >= THREAD_LIMIT && !failed) {
        send_message("error more than 65536 threads and processes: the trace format's limit");
        failed = true;
    }
    return t & (THREAD_LIMIT - 1);
}

// The state of `index`, made on its first use (in its own thread). Lock not held.
static struct vcpu *vcpu_of(unsigned int index) {
    if (index >= MAX_VCPUS) {
        fprintf(stderr, "thpsim capture: more than %d guest threads at once\n", MAX_VCPUS);
        abort();
    }
    struct vcpu *v = vcpus[index];
    if (v) return v;
    v = calloc(1, sizeof *v);
    pthread_mutex_lock(&lock);
    if (index == 0 && spawn_head == spawn_tail) {
        v->thread = 0;
    } else if (spawn_head != spawn_tail) {
        unsigned slot = spawn_head++ % 256;
        v->thread = spawn_queue[slot].child;
        begin_record(spawn_queue[slot].parent);
        payload[payload_len++] = TAG_SPAWN; put_varint(v->thread); end_record();
    } else {
        v->thread = new_thread_id();   // a vCPU nobody announced: give it an id of its own
        begin_record(0);
        payload[payload_len++] = TAG_SPAWN; put_varint(v->thread); end_record();
    }
    v->tracing = !sampling || skip == 0;
    v->page = UINT64_MAX;
    v->fetchPage = UINT64_MAX;
    __atomic_store_n(&vcpus[index], v, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&lock);
    return v;
}

// Closes every thread's open runs. Lock held.
static void drain_all(void) {
    for (unsigned i = 0; i < MAX_VCPUS; i++) {
        struct vcpu *v = __atomic_load_n(&vcpus[i], __ATOMIC_ACQUIRE);
        if (!v) continue;
        uint64_t c = __atomic_load_n(&v->count, __ATOMIC_RELAXED);
        if (c) { emit_run(v->thread, v->kind, v->page, c); __atomic_store_n(&v->count, 0, __ATOMIC_RELAXED); }
        uint64_t f = __atomic_load_n(&v->fetchCount, __ATOMIC_RELAXED);
        if (f) { emit_run(v->thread, KIND_FETCH, v->fetchPage, f); __atomic_store_n(&v->fetchCount, 0, __ATOMIC_RELAXED); }
    }
}

// ---- Accesses. ----

// A new page (or kind) for `v`'s data run. Lock not held.
static void data_slow(struct vcpu *v, uint64_t page, uint32_t kind) {
    pthread_mutex_lock(&lock);
    uint64_t c = __atomic_load_n(&v->count, __ATOMIC_RELAXED);
    if (c) emit_run(v->thread, v->kind, v->page, c);
    v->page = page; v->kind = kind;
    uint64_t start = 1;
    bool fresh = first_use(v->thread, page);
    if (!v->tracing) {
        // Outside a sampling window only a page's first touch is kept.
        if (fresh) emit_run(v->thread, kind, page, 1);
        start = 0;
    }
    __atomic_store_n(&v->count, start, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&lock);
}

static inline void data_access(struct vcpu *v, uint64_t page, uint32_t kind) {
    if (page == v->page && kind == v->kind) {
        if (v->tracing) __atomic_store_n(&v->count, __atomic_load_n(&v->count, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
        return;
    }
    data_slow(v, page, kind);
}

static void on_memory(unsigned int index, plugin_meminfo info, uint64_t vaddr, void *udata) {
    (void)udata;
    struct vcpu *v = vcpu_of(index);
    if (failed) return;
    uint32_t kind = api.mem_is_store(info) ? KIND_STORE : KIND_LOAD;
    uint64_t page = vaddr >> 12;
    data_access(v, page, kind);
    uint64_t size = 1ull << api.mem_size_shift(info);
    if ((vaddr & 0xFFF) + size > 0x1000) data_access(v, page + 1, kind);
}

// The block's page (bits 12…), whether it crosses into the next page (bit 11) and its instruction
// count (bits 0…10) are packed into the callback's user data, so translation allocates nothing.
static void on_block(unsigned int index, void *udata) {
    struct vcpu *v = vcpu_of(index);
    if (failed) return;
    uint64_t packed = (uint64_t)(uintptr_t)udata;
    uint64_t n = packed & 0x7FF, page = packed >> 12;
    bool crosses = packed & 0x800;
    if (sampling) {
        uint64_t before = v->instructions;
        v->instructions += n;
        bool in;
        if (v->instructions <= skip) in = false;
        else if (window == 0) in = true;
        else {
            uint64_t t = v->instructions - skip - 1;
            in = every ? (t % every) < window : t < window;
        }
        if (in != v->tracing) {
            pthread_mutex_lock(&lock);
            if (in && before <= skip) {   // the first window: the measured phase begins
                begin_record(v->thread); payload[payload_len++] = TAG_BEGIN; end_record();
            }
            v->tracing = in;
            pthread_mutex_unlock(&lock);
        }
        if (!in) {
            if (page != v->fetchPage) {
                pthread_mutex_lock(&lock);
                if (first_use(v->thread, page)) emit_run(v->thread, KIND_FETCH, page, 1);
                v->fetchPage = page;
                pthread_mutex_unlock(&lock);
            }
            return;
        }
    }
    if (page == v->fetchPage) {
        __atomic_store_n(&v->fetchCount, __atomic_load_n(&v->fetchCount, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
    } else {
        pthread_mutex_lock(&lock);
        uint64_t f = __atomic_load_n(&v->fetchCount, __ATOMIC_RELAXED);
        if (f) emit_run(v->thread, KIND_FETCH, v->fetchPage, f);
        first_use(v->thread, page);
        v->fetchPage = page;
        __atomic_store_n(&v->fetchCount, n, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&lock);
    }
    if (crosses) {
        pthread_mutex_lock(&lock);
        first_use(v->thread, page + 1);
        emit_run(v->thread, KIND_FETCH, page + 1, 1);
        pthread_mutex_unlock(&lock);
    }
}

static void on_translate(plugin_id id, struct plugin_tb *tb) {
    (void)id;
    size_t n = api.tb_n_insns(tb);
    if (n == 0) return;
    uint64_t start = api.tb_vaddr(tb);
    struct plugin_insn *last = api.tb_get_insn(tb, n - 1);
    uint64_t end = api.insn_vaddr(last) + api.insn_size(last) - 1;
    uint64_t packed = (start >> 12) << 12 | ((end >> 12) != (start >> 12) ? 0x800 : 0) | (n > 0x7FF ? 0x7FF : n);
    api.register_tb_exec(tb, on_block, CB_NO_REGS, (void *)(uintptr_t)packed);
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

// Up to 8 system-call arguments of the calls in flight, per vCPU (the return callback has none).
static uint64_t args[MAX_VCPUS][4];

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
    args[index][0] = a1; args[index][1] = a2; args[index][2] = a3; args[index][3] = a4;
    v->call = CALL_OTHER;
    if (failed) return;
    switch (num) {
    case SYS_CLONE:
    case SYS_CLONE3:
        if (clone_makes_thread(num, a1)) {
            pthread_mutex_lock(&lock);
            drain_all();
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
        // The lock is held across the fork, so the child inherits no half-written block and no
        // lock taken by another thread; both processes release it when the call returns.
        pthread_mutex_lock(&lock);
        drain_all();
        v->pendingFork = new_thread_id();
        begin_record(v->thread); payload[payload_len++] = TAG_FORK; put_varint(v->pendingFork); end_record();
        flush_block();
        v->call = CALL_FORK;
        break;
    case SYS_MUNMAP: case SYS_MPROTECT: case SYS_MREMAP: case SYS_MADVISE: case SYS_BRK:
        pthread_mutex_lock(&lock);
        drain_all();
        pthread_mutex_unlock(&lock);
        break;
    case SYS_EXIT:
        // This thread ends; QEMU may give its vCPU index to the next new thread.
        pthread_mutex_lock(&lock);
        drain_all();
        __atomic_store_n(&vcpus[index], NULL, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&lock);
        break;
    case SYS_EXIT_GROUP:
        pthread_mutex_lock(&lock);
        drain_all();
        begin_record(v->thread); payload[payload_len++] = TAG_EXIT; end_record();
        flush_block();
        pthread_mutex_unlock(&lock);
        break;
    case SYS_EXECVE:
    case SYS_EXECVEAT: {
        char path[1024], message[1200];
        read_guest_string(num == SYS_EXECVE ? a1 : a2, path, sizeof path);
        pthread_mutex_lock(&lock);
        drain_all();
        flush_block();
        snprintf(message, sizeof message, "execve %u %s", v->thread, path);
        send_message(message);
        pthread_mutex_unlock(&lock);
        break;
    }
    default:
        break;
    }
}

static void on_syscall_return(plugin_id id, unsigned int index, int64_t num, int64_t ret) {
    (void)id;
    struct vcpu *v = vcpu_of(index);
    uint64_t *a = args[index];
    if (v->call == CALL_THREAD) {
        v->call = CALL_OTHER;
        if (failed_result(ret)) {
            // No thread: take back the id no vCPU will claim.
            pthread_mutex_lock(&lock);
            if (spawn_tail != spawn_head) spawn_tail--;
            pthread_mutex_unlock(&lock);
        }
        return;
    }
    if (v->call == CALL_FORK) {
        v->call = CALL_OTHER;
        if (ret == 0) {
            // The child: a new process whose only thread is this one. The other vCPUs were the
            // parent's threads, drained before the fork.
            pthread_mutex_init(&lock, NULL);
            for (unsigned i = 0; i < MAX_VCPUS; i++) if (i != index) vcpus[i] = NULL;
            spawn_head = spawn_tail = 0;
            implicit_pages = 0;
            memset(ignored_advice, 0, sizeof ignored_advice);
            v->thread = v->pendingFork;
            v->pendingFork = 0;
            __atomic_store_n(&v->count, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&v->fetchCount, 0, __ATOMIC_RELAXED);
            return;
        }
        if (failed_result(ret)) {
            // No child: the process the fork record announced exits at once.
            begin_record(v->pendingFork); payload[payload_len++] = TAG_EXIT; end_record();
        }
        v->pendingFork = 0;
        pthread_mutex_unlock(&lock);
        return;
    }
    switch (num) {
    case SYS_EXECVE:
    case SYS_EXECVEAT: {
        char message[64];
        pthread_mutex_lock(&lock);
        snprintf(message, sizeof message, "execve-failed %u", v->thread);
        send_message(message);
        pthread_mutex_unlock(&lock);
        return;
    }
    case SYS_MMAP: case SYS_MUNMAP: case SYS_MPROTECT: case SYS_MREMAP: case SYS_MADVISE: case SYS_BRK:
        break;
    default:
        return;
    }
    if (failed) return;
    pthread_mutex_lock(&lock);
    drain_all();
    if (num == SYS_BRK) {
        uint64_t top = ((uint64_t)ret + 0xFFF) & ~0xFFFull;
        if (brk_top == 0) {
            brk_top = top;
        } else if (top > brk_top) {
            describe(brk_top, top - brk_top);
            begin_record(v->thread);
            payload[payload_len++] = TAG_MMAP; put_varint(brk_top); put_varint(top - brk_top);
            payload[payload_len++] = 3; payload[payload_len++] = 0;
            end_record();
            brk_top = top;
        } else if (top < brk_top) {
            describe(top, brk_top - top);
            begin_record(v->thread);
            payload[payload_len++] = TAG_MUNMAP; put_varint(top); put_varint(brk_top - top);
            end_record();
            brk_top = top;
        }
    } else if (num == SYS_MADVISE && !failed_result(ret) && advice_code(a[2]) < 0) {
        ignored_advice[a[2] < 64 ? a[2] : 63]++;
    } else if (!failed_result(ret)) {
        begin_record(v->thread);
        switch (num) {
        case SYS_MMAP: {
            uint64_t flags = a[3];
            bool shared = (flags & MAP_SHARED_FLAG) && (flags & MAP_ANONYMOUS_FLAG);
            describe((uint64_t)ret, a[1]);
            payload[payload_len++] = TAG_MMAP; put_varint((uint64_t)ret); put_varint(a[1]);
            payload[payload_len++] = (uint8_t)(a[2] & 7); payload[payload_len++] = shared ? 1 : 0;
            break;
        }
        case SYS_MUNMAP:
            describe(a[0], a[1]);
            payload[payload_len++] = TAG_MUNMAP; put_varint(a[0]); put_varint(a[1]);
            break;
        case SYS_MPROTECT:
            payload[payload_len++] = TAG_MPROTECT; put_varint(a[0]); put_varint(a[1]);
            payload[payload_len++] = (uint8_t)(a[2] & 7);
            break;
        case SYS_MREMAP:
            describe(a[0], a[1]);
            describe((uint64_t)ret, a[2]);
            payload[payload_len++] = TAG_MREMAP; put_varint(a[0]); put_varint(a[1]); put_varint(a[2]);
            put_varint((uint64_t)ret);
            break;
        case SYS_MADVISE:
            payload[payload_len++] = TAG_MADVISE; put_varint(a[0]); put_varint(a[1]);
            payload[payload_len++] = (uint8_t)advice_code(a[2]);
            break;
        }
        end_record();
    }
    pthread_mutex_unlock(&lock);
}

static void on_exit_of_qemu(plugin_id id, void *udata) {
    (void)id; (void)udata;
    pthread_mutex_lock(&lock);
    drain_all();
    flush_block();
    char message[1024];
    snprintf(message, sizeof message, "implicit %llu", (unsigned long long)implicit_pages);
    send_message(message);
    size_t n = (size_t)snprintf(message, sizeof message, "ignored-madvise");
    bool any = false;
    for (int i = 0; i < 64 && n < sizeof message - 32; i++) {
        if (ignored_advice[i]) { n += (size_t)snprintf(message + n, sizeof message - n, " %d:%llu", i, (unsigned long long)ignored_advice[i]); any = true; }
    }
    if (any) send_message(message);
    pthread_mutex_unlock(&lock);
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
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        uint64_t v;
        const char *eq = strchr(a, '=');
        if (!eq || !parse_count(eq + 1, &v)) {
            fprintf(stderr, "thpsim capture: bad argument '%s' (expected fd=N, skip=N, window=N or every=N)\n", a);
            return -1;
        }
        size_t k = (size_t)(eq - a);
        if (k == 2 && !strncmp(a, "fd", 2)) out_fd = (int)v;
        else if (k == 4 && !strncmp(a, "skip", 4)) skip = v;
        else if (k == 6 && !strncmp(a, "window", 6)) window = v;
        else if (k == 5 && !strncmp(a, "every", 5)) every = v;
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
    // The program must not inherit the pipe across execve (a native program would hold it open).
    fcntl(out_fd, F_SETFD, FD_CLOEXEC);
    next_thread = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (next_thread == MAP_FAILED) { perror("thpsim capture: mmap"); return -1; }
    *next_thread = 1;

    RESOLVE(register_tb_trans, "qemu_plugin_register_vcpu_tb_trans_cb");
    RESOLVE(register_tb_exec, "qemu_plugin_register_vcpu_tb_exec_cb");
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

    char hello[64];
    snprintf(hello, sizeof hello, "hello 1 %d", info->version.cur);
    send_message(hello);

    api.register_tb_trans(id, on_translate);
    api.register_syscall(id, on_syscall);
    api.register_syscall_ret(id, on_syscall_return);
    api.register_atexit(id, on_exit_of_qemu, NULL);
    return 0;
}
