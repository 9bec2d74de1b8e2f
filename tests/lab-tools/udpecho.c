/* udpecho IP PORT COUNT: a UDP echo client, in dom0. Sends COUNT datagrams to IP:PORT, 16 at a
 * time, each a different size (8 to 1472 bytes: what one frame carries) and content (its
 * number, then bytes derived from it), and checks every echo is byte-exact. A datagram whose
 * echo has not come after 300 ms is sent again (UDP may lose it), at most 5 times.
 * Prints "udpecho: N/COUNT exact, R resent, B bad in MS ms" (B: echoes that differ from every
 * datagram sent) and exits 0 only when all came back exact.
 *
 * udpecho -s PORT SECS: a UDP echo server instead, for SECS seconds (for a guest's own client
 * checks): every datagram goes back to its sender. Prints "udpecho: echoed N" at the end. */
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WINDOW 16
#define MAXLEN 1472

static size_t len_of(unsigned i) { return 8 + (i * 131u) % (MAXLEN - 7); }

static void fill(unsigned char *b, unsigned i) {
    size_t n = len_of(i);
    memcpy(b, &i, 4);
    unsigned x = i * 2654435761u + 1;
    for (size_t k = 4; k < n; k++) { x = x * 1103515245u + 12345u; b[k] = x >> 16; }
}

static int serve(int port, int secs) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("udpecho: bind"); return 1; }
    printf("udpecho: serving on %d\n", port); fflush(stdout);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned echoed = 0;
    unsigned char b[65536];
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec >= secs) break;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 200) <= 0) continue;
        struct sockaddr_in from; socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, b, sizeof b, 0, (struct sockaddr *)&from, &fl);
        if (n >= 0 && sendto(fd, b, n, 0, (struct sockaddr *)&from, fl) >= 0) echoed++;
    }
    printf("udpecho: echoed %u\n", echoed);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "-s") == 0) return serve(atoi(argv[2]), atoi(argv[3]));
    if (argc != 4) { fprintf(stderr, "usage: udpecho IP PORT COUNT\n"); return 2; }
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
    if (!inet_aton(argv[1], &to.sin_addr)) { fprintf(stderr, "udpecho: bad address\n"); return 2; }
    unsigned count = atoi(argv[3]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) < 0) { perror("udpecho"); return 1; }
    unsigned char *done = calloc(count, 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned ok = 0, resent = 0, bad = 0;
    unsigned char out[MAXLEN], in[MAXLEN + 64];
    for (unsigned base = 0; base < count; base += WINDOW) {
        unsigned end = base + WINDOW < count ? base + WINDOW : count;
        for (int round = 0; round < 6; round++) {
            unsigned missing = 0;
            for (unsigned i = base; i < end; i++) {
                if (done[i]) continue;
                missing++;
                if (round > 0) resent++;
                fill(out, i);
                if (send(fd, out, len_of(i), 0) < 0) perror("udpecho: send");
            }
            if (!missing) break;
            struct pollfd p = { .fd = fd, .events = POLLIN };
            while (missing && poll(&p, 1, 300) > 0) {
                ssize_t n = recv(fd, in, sizeof in, 0);
                if (n < 4) { bad++; continue; }
                unsigned i; memcpy(&i, in, 4);
                if (i >= count) { bad++; continue; }
                fill(out, i);
                if ((size_t)n != len_of(i) || memcmp(in, out, n)) { bad++; continue; }
                if (i >= base && i < end && !done[i]) { done[i] = 1; ok++; missing--; }
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    printf("udpecho: %u/%u exact, %u resent, %u bad in %ld ms\n", ok, count, resent, bad, ms);
    return ok == count && bad == 0 ? 0 : 1;
}
