/* kvtear: leaves a torn last frame in apps/kv's log, as a guest stopped in the middle of a write
 * would: a valid frame header for the next batch at the log's head, whose records never landed.
 *
 *   kvtear IMAGE HEAD_BYTE LAST_BATCH
 *       IMAGE is the disk file (the guest must be stopped); HEAD_BYTE and LAST_BATCH are what kv
 *       printed at its clean shutdown ("head at segment S byte B" is HEAD_BYTE = 4096 + S *
 *       segment + B; "batch N"). Writes one sector at HEAD_BYTE: a frame header (magic, CRC-32C
 *       over the volume id and the header, the head segment's sequence number, batch
 *       LAST_BATCH + 1, a payload of 4000 bytes in 1 record) followed by the start of a record
 *       whose checksum cannot match. Prints `kvtear: torn frame of 4032 bytes at byte N`.
 *
 * The on-disk format is apps/kv/src/log.rs's. A lab tool: plain C, `gcc -static`. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc & 1) ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
    }
    return ~crc;
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: kvtear IMAGE HEAD_BYTE LAST_BATCH\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) { perror(argv[1]); return 1; }
    uint64_t head = strtoull(argv[2], 0, 10), batch = strtoull(argv[3], 0, 10);
    uint8_t sb[512], first[32], sec[512];
    if (pread(fd, sb, 512, 0) != 512 || memcmp(sb, "XENRTKV1", 8) != 0) {
        fprintf(stderr, "kvtear: %s has no kv superblock\n", argv[1]);
        return 1;
    }
    uint64_t segment = le64(sb + 16), volume = le64(sb + 32);
    uint64_t seg_start = 4096 + (head - 4096) / segment * segment;
    if (pread(fd, first, 32, seg_start) != 32) { perror("read"); return 1; }
    uint64_t seq = le64(first + 8);
    memset(sec, 0xa5, sizeof sec);
    put32(sec, 0x314b5658u);
    put64(sec + 8, seq);
    put64(sec + 16, batch + 1);
    put32(sec + 24, 4000);
    put32(sec + 28, 1);
    uint8_t vol[8];
    put64(vol, volume);
    put32(sec + 4, crc32c(crc32c(0, vol, 8), sec + 8, 24));
    /* The record's header: a Set of a 10-byte key and 3966-byte value, checksum 0 (wrong). */
    memset(sec + 32, 0, 24);
    sec[36] = 1;
    put32(sec + 40, 10);
    put32(sec + 44, 3966);
    if (pwrite(fd, sec, 512, head) != 512 || fsync(fd) != 0) { perror("write"); return 1; }
    printf("kvtear: torn frame of 4032 bytes at byte %llu (segment seq %llu, batch %llu)\n",
           (unsigned long long)head, (unsigned long long)seq, (unsigned long long)(batch + 1));
    return 0;
}
