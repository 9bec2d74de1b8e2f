/* gntshare DOMID [SECS]: the dom0 side of the grant-copy lab test. Through Linux's gntalloc it
 * allocates two pages and grants them to domain DOMID, one writable and one read-only, fills
 * both with the dom0 pattern (byte i = i*31+7), publishes "RW RO" (the two grant references) in
 * /local/domain/DOMID/data/share-gref, and waits (up to SECS, default 60) for the guest to write
 * data/share-done. Then it checks that the guest's GNTTABOP_copy filled the writable page with
 * the guest pattern (byte i = (i*13+5)^0x5a) and left the read-only one untouched. Prints
 * "gntshare: PASS ..." and exits 0, or says what differs and exits 1. Our own test tool. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/types.h>
#include <xen/gntalloc.h>

static int grant_page(int fd, int domid, int writable, uint32_t *gref, uint64_t *index,
                      unsigned char **page) {
    struct ioctl_gntalloc_alloc_gref a = {0};
    a.domid = domid;
    a.flags = writable ? GNTALLOC_FLAG_WRITABLE : 0;
    a.count = 1;
    if (ioctl(fd, IOCTL_GNTALLOC_ALLOC_GREF, &a)) { perror("gntalloc alloc"); return -1; }
    *gref = a.gref_ids[0];
    *index = a.index;
    *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, a.index);
    if (*page == MAP_FAILED) { perror("mmap gntalloc page"); return -1; }
    for (int i = 0; i < 4096; i++) (*page)[i] = (unsigned char)(i * 31 + 7);
    return 0;
}

static int read_done(int domid) {
    char cmd[128], buf[64] = "";
    snprintf(cmd, sizeof cmd, "xenstore-read /local/domain/%d/data/share-done 2>/dev/null", domid);
    FILE *p = popen(cmd, "r");
    if (!p) return 0;
    int got = fgets(buf, sizeof buf, p) != NULL && buf[0] != '\n' && buf[0] != 0;
    pclose(p);
    return got;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: gntshare DOMID [SECS]\n"); return 2; }
    int domid = atoi(argv[1]);
    int secs = argc > 2 ? atoi(argv[2]) : 60;
    int fd = open("/dev/xen/gntalloc", O_RDWR);
    if (fd < 0) { perror("open /dev/xen/gntalloc"); return 1; }
    uint32_t rw, ro;
    uint64_t rw_index, ro_index;
    unsigned char *rw_page, *ro_page;
    if (grant_page(fd, domid, 1, &rw, &rw_index, &rw_page)) return 1;
    if (grant_page(fd, domid, 0, &ro, &ro_index, &ro_page)) return 1;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "xenstore-write /local/domain/%d/data/share-gref '%u %u'", domid,
             rw, ro);
    if (system(cmd) != 0) { fprintf(stderr, "gntshare: %s failed\n", cmd); return 1; }
    printf("gntshare: granted rw=%u ro=%u to domain %d\n", rw, ro, domid);
    fflush(stdout);
    time_t end = time(NULL) + secs;
    while (!read_done(domid)) {
        if (time(NULL) > end) { printf("gntshare: FAIL guest never wrote data/share-done\n"); return 1; }
        usleep(200 * 1000);
    }
    int bad_rw = 0, bad_ro = 0;
    for (int i = 0; i < 4096; i++) {
        bad_rw += rw_page[i] != (unsigned char)((i * 13 + 5) ^ 0x5a);
        bad_ro += ro_page[i] != (unsigned char)(i * 31 + 7);
    }
    munmap(rw_page, 4096);
    munmap(ro_page, 4096);
    struct ioctl_gntalloc_dealloc_gref d1 = { .index = rw_index, .count = 1 };
    struct ioctl_gntalloc_dealloc_gref d2 = { .index = ro_index, .count = 1 };
    ioctl(fd, IOCTL_GNTALLOC_DEALLOC_GREF, &d1);
    ioctl(fd, IOCTL_GNTALLOC_DEALLOC_GREF, &d2);
    close(fd);
    if (bad_rw || bad_ro) {
        printf("gntshare: FAIL %d bytes of the writable page are not the guest's, %d of the "
               "read-only page changed\n", bad_rw, bad_ro);
        return 1;
    }
    printf("gntshare: PASS the guest's copy-out filled the writable page; the read-only page is intact\n");
    return 0;
}
