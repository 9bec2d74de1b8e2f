/* streamdiff SENT < GOT: where a byte stream that came back (stdin) differs from the file sent.
 *
 * Reads the stream as it arrives (nothing is stored), prints "streamdiff: identical" and exits 0
 * when it equals SENT byte for byte. Otherwise it prints the differing ranges (differences closer
 * than 64 bytes are one range), the first 12 with their offset in a 4 KiB page, the first bytes
 * of each side and where else in SENT the received bytes occur: their distance from where they
 * belong (positive: data sent later, negative: sent earlier) or "nowhere" (never sent); then the
 * totals and the lengths, and exits 1.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROBE 32
#define GAP 64
#define WINDOW (16u << 20)

static const unsigned char *s;
static size_t ns;

struct range {
    size_t start, last;
    unsigned char got[PROBE];
    size_t have;
};

static void hex(const char *what, const unsigned char *p, size_t n) {
    printf("    %s", what);
    for (size_t i = 0; i < n; i++)
        printf(" %02x", p[i]);
    printf("\n");
}

static void report(const struct range *r) {
    size_t len = r->last + 1 - r->start;
    printf("  range at %zu (page offset %zu), %zu bytes\n", r->start, r->start % 4096, len);
    size_t k = r->have < 16 ? r->have : 16;
    /* A stream longer than the file differs past the file's end: nothing was sent there. */
    size_t ks = r->start < ns ? (ns - r->start < k ? ns - r->start : k) : 0;
    hex("sent", s + (r->start < ns ? r->start : 0), ks);
    hex("got ", r->got, k);
    if (r->have >= 8) {
        size_t lo = r->start > WINDOW ? r->start - WINDOW : 0;
        size_t hi = r->start + WINDOW < ns ? r->start + WINDOW : ns;
        const unsigned char *at = memmem(s + lo, hi - lo, r->got, r->have);
        if (at)
            printf("    got's bytes were sent at %zu (distance %+lld)\n", (size_t)(at - s),
                   (long long)(at - s) - (long long)r->start);
        else
            printf("    got's bytes occur nowhere within 16 MiB of the sent stream\n");
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: streamdiff SENT < GOT\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        perror(argv[1]);
        return 2;
    }
    ns = st.st_size;
    s = ns ? mmap(0, ns, PROT_READ, MAP_PRIVATE, fd, 0) : (const unsigned char *)"";
    if (s == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    static unsigned char buf[1 << 16];
    size_t pos = 0, diff = 0, ranges = 0;
    int open_range = 0;
    struct range r;
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0) {
        for (ssize_t j = 0; j < n; j++, pos++) {
            unsigned char g = buf[j];
            int differs = pos >= ns || s[pos] != g;
            if (open_range && pos > r.last + GAP) {
                if (ranges <= 12)
                    report(&r);
                open_range = 0;
            }
            if (differs) {
                diff++;
                if (!open_range) {
                    open_range = 1;
                    ranges++;
                    r.start = pos;
                    r.have = 0;
                }
                r.last = pos;
            }
            if (open_range && r.have < PROBE && pos == r.start + r.have)
                r.got[r.have++] = g;
        }
    }
    if (open_range && ranges <= 12)
        report(&r);
    if (!diff && pos == ns) {
        printf("streamdiff: identical (%zu bytes)\n", pos);
        return 0;
    }
    printf("streamdiff: %zu of %zu bytes differ in %zu ranges; sent %zu bytes, got %zu\n", diff,
           pos, ranges, ns, pos);
    return 1;
}
