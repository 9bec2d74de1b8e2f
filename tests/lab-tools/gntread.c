/* gntread DOMID GREF LEN: maps grant GREF of domain DOMID read-only through Linux's gntdev (in
 * the lab's dom0) and prints its first LEN bytes as text. Our own test tool for the lab tier:
 * it proves a page a guest granted is readable by the backend domain. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdint.h>
#include <linux/types.h>
typedef uint32_t grant_ref_t;
typedef uint16_t domid_t;
#include <xen/gntdev.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: gntread DOMID GREF LEN\n"); return 2; }
    int fd = open("/dev/xen/gntdev", O_RDWR);
    if (fd < 0) { perror("open /dev/xen/gntdev"); return 1; }
    struct ioctl_gntdev_map_grant_ref map = { .count = 1 };
    map.refs[0].domid = atoi(argv[1]);
    map.refs[0].ref = atoi(argv[2]);
    if (ioctl(fd, IOCTL_GNTDEV_MAP_GRANT_REF, &map)) { perror("map grant"); return 1; }
    char *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, map.index);
    if (p == MAP_FAILED) { perror("mmap grant"); return 1; }
    int len = atoi(argv[3]);
    fwrite(p, 1, len > 4096 ? 4096 : len, stdout);
    putchar('\n');
    munmap(p, 4096);
    struct ioctl_gntdev_unmap_grant_ref unmap = { .index = map.index, .count = 1 };
    if (ioctl(fd, IOCTL_GNTDEV_UNMAP_GRANT_REF, &unmap)) { perror("unmap grant"); return 1; }
    close(fd);
    return 0;
}
