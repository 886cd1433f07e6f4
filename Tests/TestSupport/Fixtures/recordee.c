// A program whose memory behaviour the recording tests know: it maps, advises, touches, protects,
// unmaps, starts a thread and forks once, and writes the addresses it got to the file argv[1].
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define A_BYTES (8u << 20)
#define B_BYTES (1u << 20)
#define C_BYTES (256u << 10)

static volatile char *c;

static void *toucher(void *unused) {
    (void)unused;
    for (unsigned i = 0; i < C_BYTES; i += 4096) c[i] = 3;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char *a = mmap(NULL, A_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *b = mmap(NULL, B_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    c = mmap(NULL, C_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED || b == MAP_FAILED || c == MAP_FAILED) return 3;
    if (madvise(a, A_BYTES, MADV_HUGEPAGE) != 0) return 4;
    for (unsigned i = 0; i < A_BYTES; i += 4096) a[i] = 1;              // 2,048 pages written
    for (unsigned i = 0; i < B_BYTES; i += 4096) b[i] = 2;              // 256 pages written
    if (mprotect(b, B_BYTES, PROT_READ) != 0) return 5;
    pthread_t t;
    if (pthread_create(&t, NULL, toucher, NULL) != 0) return 6;
    pthread_join(t, NULL);
    pid_t child = fork();
    if (child == 0) {
        for (unsigned i = 0; i < 16 * 4096; i += 4096) a[i] = 9;        // 16 copy-on-write pages
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    if (munmap(a, 2u << 20) != 0) return 7;                              // the first 2 MiB of A
    FILE *f = fopen(argv[1], "w");
    if (!f) return 8;
    fprintf(f, "%lx %lx %lx\n", (unsigned long)a, (unsigned long)b, (unsigned long)c);
    fclose(f);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 9;
}
