/* kvcrash: crash consistency of a Redis-protocol server (apps/kv, or redis-server with an AOF),
 * driven from dom0 while the server is destroyed under load.
 *
 *   kvcrash write HOST PORT LOG SECONDS [CONNS]
 *       CONNS (default 4, at most 64) TCP connections, each sending `SET k<conn>:<i> VALUE` for
 *       i = 0, 1, ..., 63, 0, 1, ... with 8 requests in flight (pipelined). VALUE is
 *       `KEY|COUNTER|PADLEN|PAD`: COUNTER goes up by one for each write of that key, PAD is
 *       PADLEN (16..2000) bytes generated from (KEY, COUNTER), so every value the tool wrote can
 *       be recognised whole. Before sending a request it appends `SENT KEY COUNTER` to LOG, and
 *       for each `+OK` reply `ACK KEY COUNTER` (one write(2) each, O_APPEND: the log holds every
 *       acknowledged write even when the tool is killed or the server vanishes, since an ACK line
 *       is in the kernel before the next reply is read). A LOG from earlier rounds is read first
 *       and each key's counter continues after the highest one SENT, so the next round writes
 *       higher counters. Runs for SECONDS (then waits for the replies in flight), or until every
 *       connection has died: EOF, reset, or no reply for 5 s while requests are in flight (a
 *       destroyed guest sends no reset). Prints `kvcrash: write: sent=N acked=N errors=N
 *       conns=N ended=time|eof|reset|stall|mixed secs=S`. Exit 0 unless it could not connect at
 *       all or the server answered something other than +OK (then 1).
 *   kvcrash check HOST PORT LOG
 *       GETs every key named in LOG (pipelined, 64 at a time; `-LOADING` is retried for up to
 *       120 s) and checks each: a key with an ACK must exist; a value must be one this tool wrote
 *       for that key, whole, with COUNTER >= the highest ACKed and <= the highest SENT counter of
 *       that key. Prints each failure (`kvcrash: LOST ...` / `kvcrash: INVALID ...`, the first 20)
 *       and `kvcrash: checked N keys, A acknowledged writes, L lost, I invalid (U keys hold a
 *       write that was sent but not acknowledged)`. Exit 0 when L and I are 0, else 1.
 *
 * A lab tool: plain C, `gcc -static` (tests/harness lab::tool). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define KEYS 64         /* keys per connection */
#define MAXCONNS 64
#define DEPTH 8         /* requests in flight per connection */
#define STALL_SECS 5.0  /* no reply for this long with requests in flight: the server is gone */
#define MAXVAL 2100

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "kvcrash: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(1);
}

/* ---- keys and values ------------------------------------------------------------------------ */

/* Keys are `k<conn>:<i>`, conn < MAXCONNS, i < KEYS: slot conn * KEYS + i. */
static int key_slot(const char *k) {
    char *end;
    if (k[0] != 'k') return -1;
    long c = strtol(k + 1, &end, 10);
    if (end == k + 1 || *end != ':' || c < 0 || c >= MAXCONNS) return -1;
    const char *p = end + 1;
    long i = strtol(p, &end, 10);
    if (end == p || *end || i < 0 || i >= KEYS) return -1;
    return (int)(c * KEYS + i);
}

static void key_name(int slot, char *out, size_t n) { snprintf(out, n, "k%d:%d", slot / KEYS, slot % KEYS); }

static uint64_t mix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
    return x;
}

/* The value the tool writes for (slot, counter); returns its length. */
static size_t make_value(int slot, long counter, char *out) {
    char key[32];
    key_name(slot, key, sizeof key);
    uint64_t h = mix(((uint64_t)slot << 40) ^ (uint64_t)counter ^ 0x6b7663726173680aULL);
    int pad = 16 + (int)(h % 1985);
    int n = snprintf(out, MAXVAL, "%s|%ld|%d|", key, counter, pad);
    for (int i = 0; i < pad; i++) {
        h = mix(h + (uint64_t)i);
        out[n + i] = (char)('a' + h % 26);
    }
    return (size_t)n + (size_t)pad;
}

/* ---- the log -------------------------------------------------------------------------------- */

static long max_sent[MAXCONNS * KEYS], max_ack[MAXCONNS * KEYS];
static long ack_lines;
static int log_fd = -1;

/* Reads LOG (if it exists): the highest SENT and ACKed counter of each key. Lines that do not
 * parse (a torn last line) are skipped. */
static void read_log(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return;
        die("cannot read %s", path);
    }
    char line[256], what[16], key[64];
    long c;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%15s %63s %ld", what, key, &c) != 3 || !strchr(line, '\n')) continue;
        int s = key_slot(key);
        if (s < 0 || c <= 0) continue;
        if (!strcmp(what, "SENT")) {
            if (c > max_sent[s]) max_sent[s] = c;
        } else if (!strcmp(what, "ACK")) {
            ack_lines++;
            if (c > max_ack[s]) max_ack[s] = c;
        }
    }
    fclose(f);
}

static void log_line(const char *what, int slot, long counter) {
    char line[96], key[32];
    key_name(slot, key, sizeof key);
    int n = snprintf(line, sizeof line, "%s %s %ld\n", what, key, counter);
    if (write(log_fd, line, (size_t)n) != n) die("writing the log failed%s", "");
}

/* ---- connections ---------------------------------------------------------------------------- */

static struct sockaddr_in addr;

static void resolve(const char *host, const char *port) {
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(port));
    if (!strcmp(host, "localhost")) host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("HOST must be an IPv4 address, not %s", host);
}

static int dial(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return -1;
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { .tv_sec = 3 };
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) < 0) { close(s); return -1; }
    return s;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w; n -= (size_t)w;
    }
    return 0;
}

struct conn {
    int fd, id, next_i;
    int inflight[DEPTH];   /* slots of the requests in flight, oldest first */
    long counter[DEPTH];
    int head, count;
    char in[4096];
    size_t have;
    double last;           /* last reply (or the start) */
    const char *ended;
};

/* Sends requests until DEPTH are in flight: each is logged SENT before it goes out. */
static int fill(struct conn *c, long *next, long *sent) {
    static char req[MAXVAL + 256], val[MAXVAL];
    while (c->count < DEPTH) {
        int slot = c->id * KEYS + c->next_i;
        c->next_i = (c->next_i + 1) % KEYS;
        long ctr = ++next[slot];
        char key[32];
        key_name(slot, key, sizeof key);
        size_t vl = make_value(slot, ctr, val);
        int n = snprintf(req, sizeof req, "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(key), key, vl);
        memcpy(req + n, val, vl);
        memcpy(req + n + vl, "\r\n", 2);
        log_line("SENT", slot, ctr);
        int k = (c->head + c->count) % DEPTH;
        c->inflight[k] = slot;
        c->counter[k] = ctr;
        c->count++;
        if (write_all(c->fd, req, (size_t)n + vl + 2) < 0) return -1;
        (*sent)++;
    }
    return 0;
}

static int cmd_write(const char *host, const char *port, const char *logp, double secs, int nconns) {
    if (nconns < 1 || nconns > MAXCONNS) die("CONNS must be 1..64%s", "");
    resolve(host, port);
    read_log(logp);
    log_fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log_fd < 0) die("cannot open %s", logp);
    static long next[MAXCONNS * KEYS];
    memcpy(next, max_sent, sizeof next);
    static struct conn conns[MAXCONNS];
    double t0 = now();
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        memset(c, 0, sizeof *c);
        c->id = i;
        c->last = t0;
        c->fd = dial();
        if (c->fd < 0) {
            fprintf(stderr, "kvcrash: connect %s:%s: %s\n", host, port, strerror(errno));
            return 1;
        }
    }
    long sent = 0, acked = 0, errors = 0;
    int alive = nconns;
    const char *ended = NULL;
    while (alive > 0) {
        double t = now();
        int sending = t - t0 < secs;
        struct pollfd pf[MAXCONNS];
        int map[MAXCONNS], np = 0;
        for (int i = 0; i < nconns; i++) {
            struct conn *c = &conns[i];
            if (c->fd < 0) continue;
            if (sending && c->count < DEPTH && fill(c, next, &sent) < 0) {
                c->ended = errno == ECONNRESET || errno == EPIPE ? "reset" : "stall";
                close(c->fd); c->fd = -1; alive--;
                continue;
            }
            if (c->count == 0) {      /* time is up and nothing in flight: done */
                c->ended = "time";
                close(c->fd); c->fd = -1; alive--;
                continue;
            }
            if (t - c->last > STALL_SECS) {
                c->ended = "stall";
                close(c->fd); c->fd = -1; alive--;
                continue;
            }
            pf[np].fd = c->fd; pf[np].events = POLLIN; map[np++] = i;
        }
        if (np == 0) break;
        int r = poll(pf, (nfds_t)np, 200);
        if (r < 0 && errno != EINTR) die("poll: %s", strerror(errno));
        for (int j = 0; r > 0 && j < np; j++) {
            if (!pf[j].revents) continue;
            struct conn *c = &conns[map[j]];
            ssize_t n = read(c->fd, c->in + c->have, sizeof c->in - c->have);
            if (n <= 0) {
                c->ended = n == 0 ? "eof" : "reset";
                close(c->fd); c->fd = -1; alive--;
                continue;
            }
            c->have += (size_t)n;
            c->last = now();
            /* One reply per line: +OK, or an error (-ERR ..., -OOM ...: not acknowledged). */
            char *p = c->in, *end = c->in + c->have, *nl;
            while (c->count > 0 && (nl = memchr(p, '\n', (size_t)(end - p)))) {
                int slot = c->inflight[c->head];
                long ctr = c->counter[c->head];
                c->head = (c->head + 1) % DEPTH;
                c->count--;
                if (nl - p == 4 && !memcmp(p, "+OK\r", 4)) {
                    log_line("ACK", slot, ctr);
                    acked++;
                } else {
                    char key[32];
                    key_name(slot, key, sizeof key);
                    if (errors++ < 10)
                        fprintf(stderr, "kvcrash: SET %s (counter %ld): %.*s\n", key, ctr, (int)(nl - p), p);
                }
                p = nl + 1;
            }
            c->have = (size_t)(end - p);
            memmove(c->in, p, c->have);
            if (c->have == sizeof c->in) die("reply line too long%s", "");
        }
    }
    for (int i = 0; i < nconns; i++) {
        const char *e = conns[i].ended ? conns[i].ended : "time";
        if (!ended) ended = e;
        else if (strcmp(ended, e)) ended = "mixed";
    }
    printf("kvcrash: write: sent=%ld acked=%ld errors=%ld conns=%d ended=%s secs=%.1f\n", sent, acked,
           errors, nconns, ended ? ended : "time", now() - t0);
    return errors ? 1 : 0;
}

/* ---- check ---------------------------------------------------------------------------------- */

/* Reads exactly one RESP reply into buf (bulk string: its bytes; null: len -1; an error or a
 * status: its line, with *kind '-' or '+'). Returns 0, or -1 on EOF / protocol error. */
static char rbuf[1 << 16];
static size_t rlen, rpos;

static int fill_in(int fd) {
    if (rpos > 0) { memmove(rbuf, rbuf + rpos, rlen - rpos); rlen -= rpos; rpos = 0; }
    if (rlen == sizeof rbuf) return -1;
    ssize_t n = read(fd, rbuf + rlen, sizeof rbuf - rlen);
    if (n <= 0) return -1;
    rlen += (size_t)n;
    return 0;
}

static int read_line(int fd, char *out, size_t n) {
    for (;;) {
        char *nl = memchr(rbuf + rpos, '\n', rlen - rpos);
        if (nl) {
            size_t l = (size_t)(nl - (rbuf + rpos));
            if (l > 0 && rbuf[rpos + l - 1] == '\r') l--;
            if (l >= n) l = n - 1;
            memcpy(out, rbuf + rpos, l);
            out[l] = 0;
            rpos = (size_t)(nl - rbuf) + 1;
            return 0;
        }
        if (fill_in(fd) < 0) return -1;
    }
}

static int read_reply(int fd, char *kind, char *buf, long *len) {
    char line[512];
    if (read_line(fd, line, sizeof line) < 0) return -1;
    *kind = line[0];
    if (line[0] == '$') {
        long l = atol(line + 1);
        *len = l;
        if (l < 0) return 0;
        if (l > MAXVAL * 4) return -1;
        while (rlen - rpos < (size_t)l + 2)
            if (fill_in(fd) < 0) return -1;
        memcpy(buf, rbuf + rpos, (size_t)l);
        rpos += (size_t)l + 2;
        return 0;
    }
    *len = (long)strlen(line);
    memcpy(buf, line, (size_t)*len + 1);
    return 0;
}

static int cmd_check(const char *host, const char *port, const char *logp) {
    resolve(host, port);
    read_log(logp);
    static int slots[MAXCONNS * KEYS];
    int nk = 0;
    for (int s = 0; s < MAXCONNS * KEYS; s++)
        if (max_sent[s] > 0 || max_ack[s] > 0) slots[nk++] = s;
    int fd = dial();
    if (fd < 0) { fprintf(stderr, "kvcrash: connect %s:%s: %s\n", host, port, strerror(errno)); return 1; }
    struct timeval tv = { .tv_sec = 30 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    long lost = 0, invalid = 0, unacked = 0;
    int reported = 0;
    static char want[MAXVAL], req[64 * 64];
    double deadline = now() + 120;
    for (int b = 0; b < nk;) {
        int m = nk - b < 64 ? nk - b : 64, n = 0;
        for (int j = 0; j < m; j++) {
            char key[32];
            key_name(slots[b + j], key, sizeof key);
            n += snprintf(req + n, sizeof req - (size_t)n, "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n", strlen(key), key);
        }
        if (write_all(fd, req, (size_t)n) < 0) { fprintf(stderr, "kvcrash: send failed\n"); return 1; }
        /* All replies of the batch first: while the server loads its data, it answers -LOADING
         * and the batch is asked again (nothing of it counted). */
        static char vals[64][MAXVAL * 4 + 1], kinds[64];
        static long lens[64];
        int loading = 0;
        for (int j = 0; j < m; j++) {
            if (read_reply(fd, &kinds[j], vals[j], &lens[j]) < 0) { fprintf(stderr, "kvcrash: GET: connection lost\n"); return 1; }
            if (kinds[j] == '-' && !strncmp(vals[j], "-LOADING", 8)) loading = 1;
        }
        for (int j = 0; j < m && !loading; j++) {
            int s = slots[b + j];
            char key[32], kind = kinds[j], *val = vals[j];
            long len = lens[j];
            key_name(s, key, sizeof key);
            const char *fail = NULL;
            char why[160] = "";
            long ctr = -1;
            if (kind != '$') {
                fail = "INVALID";
                snprintf(why, sizeof why, "reply %.100s", val);
            } else if (len < 0) {
                if (max_ack[s] > 0) { fail = "LOST"; snprintf(why, sizeof why, "missing, acked up to %ld", max_ack[s]); }
            } else {
                val[len] = 0;
                char vkey[64];
                int pad;
                if (sscanf(val, "%63[^|]|%ld|%d|", vkey, &ctr, &pad) != 3 || strcmp(vkey, key) || ctr <= 0 ||
                    (size_t)len != make_value(s, ctr, want) || memcmp(val, want, (size_t)len)) {
                    fail = "INVALID";
                    snprintf(why, sizeof why, "not a value written for this key (%ld bytes: %.40s)", len, val);
                } else if (ctr > max_sent[s]) {
                    fail = "INVALID";
                    snprintf(why, sizeof why, "counter %ld never sent (highest sent %ld)", ctr, max_sent[s]);
                } else if (ctr < max_ack[s]) {
                    fail = "LOST";
                    snprintf(why, sizeof why, "counter %ld, acked up to %ld (sent up to %ld)", ctr, max_ack[s], max_sent[s]);
                } else if (ctr > max_ack[s]) {
                    unacked++;
                }
            }
            if (fail) {
                if (*fail == 'L') lost++; else invalid++;
                if (reported++ < 20) printf("kvcrash: %s %s: %s\n", fail, key, why);
            }
        }
        if (loading) {
            if (now() > deadline) { fprintf(stderr, "kvcrash: still LOADING after 120 s\n"); return 1; }
            usleep(200000);
            continue; /* the same batch again (nothing of it was counted) */
        }
        b += m;
    }
    close(fd);
    printf("kvcrash: checked %d keys, %ld acknowledged writes, %ld lost, %ld invalid (%ld keys hold a write "
           "that was sent but not acknowledged)\n", nk, ack_lines, lost, invalid, unacked);
    return lost || invalid ? 1 : 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 6 && !strcmp(argv[1], "write"))
        return cmd_write(argv[2], argv[3], argv[4], atof(argv[5]), argc > 6 ? atoi(argv[6]) : 4);
    if (argc == 5 && !strcmp(argv[1], "check")) return cmd_check(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: kvcrash write HOST PORT LOG SECONDS [CONNS]\n       kvcrash check HOST PORT LOG\n");
    return 2;
}
