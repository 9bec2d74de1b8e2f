/* blkbench DEV MIB N: the Linux side of scripts/bench (blk), doing what blktest's bench mode does
 * on a block device with O_DIRECT (no page cache in the guest): MIB MiB written sequentially in
 * 1 MiB pwrites then fsync, read back in 1 MiB preads, then N random 4 KiB preads and N random
 * 4 KiB pwrites + fsync over that range. Prints the same lines as blktest:
 *   BLK MB/s write=W read=R bytes=B
 *   BLK IOPS randread=X randwrite=Y n=N
 * Our own benchmark tool (static, copied into the Linux domU through a second disk). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static uint64_t rng = 1;
static uint64_t next(void) {
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: blkbench DEV MIB N\n"); return 2; }
    int fd = open(argv[1], O_RDWR | O_DIRECT);
    if (fd < 0) { perror(argv[1]); return 1; }
    long mib = atol(argv[2]), n = atol(argv[3]);
    const size_t MB = 1 << 20;
    char *buf;
    if (posix_memalign((void **)&buf, 4096, MB)) return 1;
    for (size_t i = 0; i < MB; i++) buf[i] = (char)(i * 31 + 7);
    double t0 = now();
    for (long i = 0; i < mib; i++)
        if (pwrite(fd, buf, MB, i * MB) != (ssize_t)MB) { perror("pwrite"); return 1; }
    if (fsync(fd)) { perror("fsync"); return 1; }
    double tw = now() - t0;
    t0 = now();
    for (long i = 0; i < mib; i++)
        if (pread(fd, buf, MB, i * MB) != (ssize_t)MB) { perror("pread"); return 1; }
    double tr = now() - t0;
    double bytes = (double)mib * MB;
    printf("BLK MB/s write=%.1f read=%.1f bytes=%.0f\n", bytes / 1e6 / tw, bytes / 1e6 / tr, bytes);
    uint64_t blocks = mib * 256;
    t0 = now();
    for (long i = 0; i < n; i++)
        if (pread(fd, buf, 4096, (off_t)(next() % blocks) * 4096) != 4096) { perror("pread"); return 1; }
    double trr = now() - t0;
    t0 = now();
    for (long i = 0; i < n; i++)
        if (pwrite(fd, buf, 4096, (off_t)(next() % blocks) * 4096) != 4096) { perror("pwrite"); return 1; }
    if (fsync(fd)) { perror("fsync"); return 1; }
    double trw = now() - t0;
    printf("BLK IOPS randread=%.0f randwrite=%.0f n=%ld\n", n / trr, n / trw, n);
    close(fd);
    return 0;
}
