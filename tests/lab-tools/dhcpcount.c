/* dhcpcount IFACE SECS: counts the DHCP messages on IFACE (dom0's bridge) for SECS seconds (or
 * until SIGTERM/SIGINT) and prints what the clients and the server did:
 *   dhcpcount: DISCOVER=N OFFER=N REQUEST=N ACK=N NAK=N other=N clients=N
 *   dhcpcount: offers answered a DISCOVER after p50=Xms max=Yms; stale=N (the client had sent
 *              a DISCOVER with another xid by then); acks after their REQUEST p50=Xms max=Yms
 * A tcpdump stand-in for the lab's dom0 (which has none): an AF_PACKET socket, our own tool. */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAXC 1024
struct client { uint8_t mac[6]; uint32_t xid; double disc_at, req_at; };
static struct client cl[MAXC];
static int ncl;
static double offer_lat[8192], ack_lat[8192];
static int noffer_lat, nack_lat, stale;
static long count[9];
static volatile sig_atomic_t stop;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
static struct client *find(const uint8_t *mac) {
    for (int i = 0; i < ncl; i++) if (!memcmp(cl[i].mac, mac, 6)) return &cl[i];
    if (ncl == MAXC) return NULL;
    memcpy(cl[ncl].mac, mac, 6);
    cl[ncl].xid = 0; cl[ncl].disc_at = cl[ncl].req_at = -1;
    return &cl[ncl++];
}
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static void stats(const char *what, double *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    if (n) printf("%s p50=%.0fms max=%.0fms n=%d", what, v[n / 2] * 1e3, v[n - 1] * 1e3, n);
    else printf("%s n=0", what);
}
static void on_sig(int s) { (void)s; stop = 1; }

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: dhcpcount IFACE SECS\n"); return 1; }
    /* ETH_P_ALL: only those taps see what dom0 itself sends (udhcpd's replies). */
    int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (fd < 0) { perror("dhcpcount: socket"); return 1; }
    struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                               .sll_ifindex = (int)if_nametoindex(argv[1]) };
    if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
        perror("dhcpcount: bind"); return 1;
    }
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    signal(SIGTERM, on_sig); signal(SIGINT, on_sig);
    printf("dhcpcount: listening on %s\n", argv[1]); fflush(stdout);
    double end = now() + atof(argv[2]);
    uint8_t f[2048];
    while (!stop && now() < end) {
        ssize_t n = recv(fd, f, sizeof f, 0);
        if (n < 14 + 20 + 8 + 240 || f[12] != 0x08 || f[13] != 0x00) continue;
        uint8_t *ip = f + 14;
        if ((ip[0] >> 4) != 4 || ip[9] != 17) continue;
        uint8_t *udp = ip + (ip[0] & 15) * 4;
        if (udp + 8 + 240 > f + n) continue;
        unsigned sp = udp[0] << 8 | udp[1], dp = udp[2] << 8 | udp[3];
        if (!((sp == 68 && dp == 67) || (sp == 67 && dp == 68))) continue;
        uint8_t *d = udp + 8;
        if (memcmp(d + 236, "\x63\x82\x53\x63", 4)) continue;
        uint32_t xid; memcpy(&xid, d + 4, 4);
        int type = 0;
        for (uint8_t *o = d + 240; o + 2 <= f + n && *o != 255;) {
            if (*o == 0) { o++; continue; }
            if (o[0] == 53 && o[1] >= 1 && o + 3 <= f + n) { type = o[2]; break; }
            o += 2 + o[1];
        }
        if (type < 1 || type > 8) { count[0]++; continue; }
        count[type]++;
        struct client *c = find(d + 28);
        if (!c) continue;
        double t = now();
        switch (type) {
        case 1: /* DISCOVER */
            if (c->xid != xid || c->disc_at < 0) { c->xid = xid; c->disc_at = t; }
            break;
        case 2: /* OFFER */
            if (xid != c->xid) stale++;
            else if (c->disc_at >= 0 && noffer_lat < 8192) offer_lat[noffer_lat++] = t - c->disc_at;
            break;
        case 3: /* REQUEST */
            if (c->req_at < 0 || c->xid != xid) c->req_at = t;
            c->xid = xid;
            break;
        case 5: /* ACK */
            if (c->req_at >= 0 && nack_lat < 8192) ack_lat[nack_lat++] = t - c->req_at;
            c->req_at = -1;
            break;
        }
    }
    printf("dhcpcount: DISCOVER=%ld OFFER=%ld REQUEST=%ld ACK=%ld NAK=%ld other=%ld clients=%d\n",
           count[1], count[2], count[3], count[5], count[6], count[0] + count[4] + count[7] + count[8],
           ncl);
    printf("dhcpcount: ");
    stats("offer-after-its-discover", offer_lat, noffer_lat);
    printf(" stale-offers=%d ", stale);
    stats("ack-after-first-request", ack_lat, nack_lat);
    printf("\n");
    return 0;
}
