/* gapprobe: what a client sees of a guest's pause (xl save/restore, xl migrate), from dom0.
 *
 *   gapprobe http IP PORT SECS [INTERVAL_MS] [STOPFILE]
 *       One keep-alive HTTP/1.1 connection: `GET / ` every INTERVAL_MS (default 10) once the
 *       previous answer is complete (so at most one request is outstanding), for SECS seconds or
 *       until STOPFILE exists and one more answer came (at most 30 s more: a connection still
 *       paused at the stop is measured to the end of its pause). A reset or EOF counts as an error and the probe reconnects (so a
 *       downtime is still measured when a connection does not survive); an answer with
 *       `Connection: close` (nginx closes after keepalive_requests, 1000) is counted in closes
 *       and the probe reconnects without an error. Prints one line: `gapprobe: answers=N
 *       non200=N errors=N reconnects=N closes=N max_gap_ms=G gap_from_s=T
 *        tail_gap_ms=E first_error=...`: G is the longest time between two complete answers
 *       (or from the start to the first one), T when it began (seconds after the start), E the
 *       time from the last answer to the end (a guest that never came back has a long tail).
 *   gapprobe stream IP PORT RATE
 *       Sends stdin to IP:PORT at most RATE bytes/s (0: unpaced) and copies what comes back to
 *       stdout; half-closes after stdin's end and runs until the peer's EOF. Prints to stderr
 *       `gapprobe: sent=N received=N max_gap_ms=G errors=N first_error=...` (G: the longest time
 *       without a received byte). For an echo service: `gapprobe stream ... < f | md5sum`.
 *
 * Exit 0 when there was no error. A lab tool: plain C, `gcc -static` (tests/harness lab::tool). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static struct sockaddr_in addr;
static char first_error[160] = "none";
static long errors;

static void error(const char *what, int e) {
    if (errors++ == 0) snprintf(first_error, sizeof first_error, "%s:%s", what, e ? strerror(e) : "eof");
    for (char *p = first_error; *p; p++) if (*p == ' ') *p = '_';
}

/* A connected non-blocking socket, or -1 (counted as an error). Blocking connect with a 1 s
 * timeout: a guest that is away answers nothing, and the probe tries again. */
static int dial(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) { error("socket", errno); return -1; }
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { .tv_sec = 1 };
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
        error("connect", errno);
        close(s);
        return -1;
    }
    fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
    return s;
}

/* Length of one complete HTTP response at the start of buf[0..n], 0 if incomplete; sets *status
 * and *close (the server said `Connection: close`). */
static size_t response_len(const char *buf, size_t n, int *status, int *close) {
    const char *end = memmem(buf, n, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = end + 4 - buf;
    *status = (n > 12 && memcmp(buf, "HTTP/1.", 7) == 0) ? atoi(buf + 9) : 0;
    size_t body = 0;
    *close = 0;
    for (const char *p = buf; p < end; p++) {
        if (p != buf && p[-1] != '\n') continue;
        if (strncasecmp(p, "content-length:", 15) == 0) body = strtoul(p + 15, NULL, 10);
        if (strncasecmp(p, "connection:", 11) == 0) {
            const char *v = p + 11;
            while (*v == ' ') v++;
            if (strncasecmp(v, "close", 5) == 0) *close = 1;
        }
    }
    return head + body <= n ? head + body : 0;
}

static int http(double secs, double interval, const char *stop) {
    static const char req[] = "GET / HTTP/1.1\r\nHost: probe\r\n\r\n";
    static char buf[1 << 17];
    size_t have = 0;
    long answers = 0, non200 = 0, reconnects = 0, closes = 0;
    double t0 = now(), last = t0, max_gap = 0, gap_from = 0, next_send = t0, stop_at = 0;
    int outstanding = 0, s = dial();
    while (1) {
        double t = now();
        if (t - t0 >= secs) break;
        struct stat st;
        if (stop && !stop_at && stat(stop, &st) == 0) stop_at = t;
        /* Stopping: one more answer (on the connection as it is), so that a pause that is still
         * going on when the stop comes is measured to its end; at most 30 s. */
        if (stop_at && (last >= stop_at || t - stop_at > 30)) break;
        if (s < 0) {
            usleep(10000);
            if ((s = dial()) >= 0) reconnects++;
            have = 0, outstanding = 0;
            continue;
        }
        if (!outstanding && t >= next_send) {
            ssize_t w = send(s, req, sizeof req - 1, MSG_NOSIGNAL);
            if (w != (ssize_t)sizeof req - 1) {
                error("send", w < 0 ? errno : 0);
                close(s), s = -1;
                continue;
            }
            outstanding = 1;
            next_send = t + interval;
        }
        struct pollfd p = { .fd = s, .events = POLLIN };
        double wait = outstanding ? 0.01 : next_send - t;
        poll(&p, 1, wait > 0 ? (int)(wait * 1000) + 1 : 0);
        if (!(p.revents & (POLLIN | POLLERR | POLLHUP))) continue;
        ssize_t r = recv(s, buf + have, sizeof buf - have, 0);
        if (r <= 0) {
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            error("recv", r < 0 ? errno : 0);
            close(s), s = -1;
            continue;
        }
        have += r;
        int status, close_after;
        size_t len = response_len(buf, have, &status, &close_after);
        if (len) {
            double a = now();
            if (a - last > max_gap) max_gap = a - last, gap_from = last - t0;
            last = a;
            answers++;
            if (status != 200) non200++;
            memmove(buf, buf + len, have - len);
            have -= len;
            outstanding = 0;
            if (close_after) { /* e.g. nginx's keepalive_requests: not an error */
                closes++;
                close(s), s = -1;
            }
        } else if (have == sizeof buf) {
            error("response too big", 0);
            close(s), s = -1;
        }
    }
    double end = now();
    printf("gapprobe: answers=%ld non200=%ld errors=%ld reconnects=%ld closes=%ld max_gap_ms=%.1f gap_from_s=%.2f "
           "tail_gap_ms=%.1f first_error=%s\n",
           answers, non200, errors, reconnects, closes, max_gap * 1000, gap_from, (end - last) * 1000, first_error);
    return errors == 0 && non200 == 0 ? 0 : 1;
}

static int stream(double rate) {
    static char out[1 << 16], in[1 << 16];
    size_t pending = 0, off = 0;
    long long sent = 0, received = 0;
    int s = dial(), eof_in = 0, shut = 0;
    if (s < 0) goto done;
    double t0 = now(), last = t0, max_gap = 0;
    while (1) {
        double t = now();
        int may_send = rate <= 0 || sent < (t - t0) * rate;
        if (!eof_in && pending == 0 && may_send) {
            ssize_t r = read(0, out, rate > 0 && rate < sizeof out ? (size_t)rate : sizeof out);
            if (r <= 0) eof_in = 1;
            else pending = r, off = 0;
        }
        if (eof_in && pending == 0 && !shut) shutdown(s, SHUT_WR), shut = 1;
        struct pollfd p = { .fd = s, .events = POLLIN | (pending && may_send ? POLLOUT : 0) };
        poll(&p, 1, 10);
        if (p.revents & POLLOUT) {
            ssize_t w = send(s, out + off, pending, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN && errno != EINTR) { error("send", errno); break; }
            if (w > 0) off += w, pending -= w, sent += w;
        }
        if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
            ssize_t r = recv(s, in, sizeof in, 0);
            if (r == 0) break;
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                error("recv", errno);
                break;
            }
            double a = now();
            if (a - last > max_gap) max_gap = a - last;
            last = a;
            received += r;
            for (ssize_t o = 0; o < r;) {
                ssize_t w = write(1, in + o, r - o);
                if (w <= 0) { error("stdout", errno); goto done; }
                o += w;
            }
        }
    }
    fprintf(stderr, "gapprobe: sent=%lld received=%lld max_gap_ms=%.1f errors=%ld first_error=%s\n", sent,
            received, max_gap * 1000, errors, first_error);
    close(s);
    return errors == 0 ? 0 : 1;
done:
    fprintf(stderr, "gapprobe: sent=%lld received=%lld errors=%ld first_error=%s\n", sent, received, errors,
            first_error);
    return 1;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    int http_mode = argc >= 5 && strcmp(argv[1], "http") == 0;
    if (!(http_mode && argc <= 7) && !(argc == 5 && strcmp(argv[1], "stream") == 0)) {
        fprintf(stderr, "usage: gapprobe http IP PORT SECS [INTERVAL_MS] [STOPFILE]\n"
                        "       gapprobe stream IP PORT RATE < input > output\n");
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1) {
        fprintf(stderr, "gapprobe: bad IP %s\n", argv[2]);
        return 2;
    }
    if (http_mode)
        return http(atof(argv[4]), (argc > 5 ? atof(argv[5]) : 10) / 1000.0, argc > 6 ? argv[6] : NULL);
    return stream(atof(argv[4]));
}
