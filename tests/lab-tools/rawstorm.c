/* rawstorm IFACE DSTMAC COUNT [SEED]: sends COUNT malformed Ethernet frames to DSTMAC out of
 * IFACE (an AF_PACKET socket in dom0), to check that a guest survives garbage: random bytes,
 * truncated and lying IPv4/IPv6/ARP/TCP/UDP/ICMP headers, bad lengths, runts, full-size junk.
 * Prints "rawstorm: sent N frames". Exit 1 on setup errors. */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static uint64_t s = 88172645463325252ull;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)s; }

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: rawstorm IFACE DSTMAC COUNT [SEED]\n"); return 1; }
    unsigned m[6];
    if (sscanf(argv[2], "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6) {
        fprintf(stderr, "rawstorm: bad MAC %s\n", argv[2]); return 1;
    }
    long count = atol(argv[3]);
    if (argc > 4) s ^= (uint64_t)atoll(argv[4]) * 2654435761u;
    int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (fd < 0) { perror("rawstorm: socket"); return 1; }
    struct sockaddr_ll a = {0};
    a.sll_family = AF_PACKET;
    a.sll_ifindex = if_nametoindex(argv[1]);
    if (!a.sll_ifindex) { fprintf(stderr, "rawstorm: no interface %s\n", argv[1]); return 1; }
    a.sll_halen = 6;
    for (int i = 0; i < 6; i++) a.sll_addr[i] = (unsigned char)m[i];
    unsigned char f[1514];
    long sent = 0;
    for (long n = 0; n < count; n++) {
        for (size_t i = 0; i < sizeof f; i++) f[i] = (unsigned char)rnd();
        for (int i = 0; i < 6; i++) f[i] = (unsigned char)m[i];
        f[6] = 0x02; /* a locally administered source */
        size_t len = 14 + rnd() % 1500;
        unsigned char *p = f + 14;
        switch (n % 10) {
        case 0: break; /* random ethertype and bytes */
        case 1: len = 14 + rnd() % 20; break; /* runt: shorter than the 60-byte minimum */
        case 2: /* IPv4, random header fields */
            f[12] = 0x08; f[13] = 0x00; break;
        case 3: /* IPv4 with a plausible start and a lying length / IHL */
            f[12] = 0x08; f[13] = 0x00; p[0] = 0x40 | (rnd() % 16); p[2] = rnd(); p[3] = rnd();
            p[9] = (unsigned char[]){1, 6, 17}[rnd() % 3]; len = 14 + rnd() % 60; break;
        case 4: /* IPv4/TCP to port 7, truncated TCP header */
            f[12] = 0x08; f[13] = 0x00; p[0] = 0x45; p[2] = 0; p[3] = 20 + 10; p[9] = 6;
            p[20 + 2] = 0; p[20 + 3] = 7; len = 14 + 20 + 10; break;
        case 5: /* IPv4/TCP SYN to port 7 with garbage options and a wrong checksum */
            f[12] = 0x08; f[13] = 0x00; p[0] = 0x45; p[2] = 0; p[3] = 60; p[6] = 0; p[9] = 6;
            p[20 + 2] = 0; p[20 + 3] = 7; p[20 + 12] = 0xa0; p[20 + 13] = 0x02; len = 14 + 60; break;
        case 6: /* IPv4/UDP to port 7 with a lying UDP length */
            f[12] = 0x08; f[13] = 0x00; p[0] = 0x45; p[2] = 0; p[3] = 28 + 8; p[6] = 0; p[9] = 17;
            p[20 + 2] = 0; p[20 + 3] = 7; p[20 + 4] = 0xff; p[20 + 5] = 0xff; len = 14 + 36; break;
        case 7: /* ARP, random opcode and lengths */
            f[12] = 0x08; f[13] = 0x06; len = 14 + rnd() % 40; break;
        case 8: /* IPv6, random extension headers */
            f[12] = 0x86; f[13] = 0xdd; p[0] = 0x60; p[6] = (unsigned char[]){0, 43, 44, 58, 6, 17, 60}[rnd() % 7];
            break;
        case 9: /* IPv4 fragment pieces */
            f[12] = 0x08; f[13] = 0x00; p[0] = 0x45; p[2] = (len - 14) >> 8; p[3] = (len - 14);
            p[6] = 0x20 | (rnd() % 0x1f); p[9] = 17; break;
        }
        if (len > sizeof f) len = sizeof f;
        if (len == 0) len = 1;
        if (sendto(fd, f, len, 0, (struct sockaddr *)&a, sizeof a) >= 0) sent++;
        else if (n % 1000 == 0) usleep(1000);
    }
    printf("rawstorm: sent %ld frames\n", sent);
    return 0;
}
