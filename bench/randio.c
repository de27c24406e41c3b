/*
 * randio: 4 KiB random I/O with O_DIRECT, one request at a time (queue depth
 * 1, as fio's psync engine with direct=1), timed by CLOCK_MONOTONIC around
 * each request. bench/block.ts runs it inside the guests and on the host.
 *
 *   randio read|write <file or device> <ops> <span MiB> [seed]
 *
 * Offsets are 4 KiB aligned, uniform over the first <span> MiB, from a
 * xorshift generator seeded the same way everywhere. A write run ends with
 * fdatasync, counted in its time. Prints one line:
 *   randio: <mode> ops=N secs=S iops=I p50_us=A p99_us=B
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: randio read|write <file> <ops> <span MiB> [seed]\n");
        return 2;
    }
    int writing = !strcmp(argv[1], "write");
    long ops = atol(argv[3]);
    uint64_t blocks = (uint64_t)atol(argv[4]) * 256; /* 4 KiB blocks in the span */
    uint64_t x = argc > 5 ? strtoull(argv[5], NULL, 0) : 0x9e3779b97f4a7c15ull;
    if (ops <= 0 || blocks == 0) {
        fprintf(stderr, "randio: ops and span must be positive\n");
        return 2;
    }
    int fd = open(argv[2], (writing ? O_WRONLY : O_RDONLY) | O_DIRECT);
    if (fd < 0) {
        perror("randio: open");
        return 1;
    }
    void *buf;
    if (posix_memalign(&buf, 4096, 4096))
        return 1;
    memset(buf, 0x5a, 4096);
    uint64_t *lat = calloc((size_t)ops, sizeof(*lat));
    if (!lat)
        return 1;
    uint64_t t0 = now_ns();
    for (long i = 0; i < ops; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        off_t off = (off_t)((x % blocks) * 4096);
        uint64_t s = now_ns();
        ssize_t n = writing ? pwrite(fd, buf, 4096, off) : pread(fd, buf, 4096, off);
        lat[i] = now_ns() - s;
        if (n != 4096) {
            perror("randio: i/o");
            return 1;
        }
    }
    if (writing && fdatasync(fd)) {
        perror("randio: fdatasync");
        return 1;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    qsort(lat, (size_t)ops, sizeof(*lat), cmp_u64);
    printf("randio: %s ops=%ld secs=%.4f iops=%.0f p50_us=%.1f p99_us=%.1f\n", writing ? "write" : "read", ops, secs,
           (double)ops / secs, (double)lat[ops / 2] / 1e3, (double)lat[(ops * 99) / 100] / 1e3);
    return 0;
}
