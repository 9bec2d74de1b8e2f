/* seqconn IP PORT N: N TCP connections to IP:PORT one after another (an echo service), each
 * sending "conn-I", half-closing and reading the echo back to EOF; prints "ok=K" with K the
 * connections whose echo matched. One process for all of them: the lab's emulated dom0 spends
 * ~0.2 s forking a client per connection, which is not what a test of the guest should time. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: seqconn IP PORT N\n"); return 2; }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) { fprintf(stderr, "seqconn: bad IP %s\n", argv[1]); return 2; }
    long n = atol(argv[3]), ok = 0;
    for (long i = 0; i < n; i++) {
        char want[32], got[64];
        int len = snprintf(want, sizeof want, "conn-%ld", i), have = 0;
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
            fprintf(stderr, "seqconn: connection %ld: connect failed\n", i);
            if (s >= 0) close(s);
            continue;
        }
        if (write(s, want, len) == len) {
            shutdown(s, SHUT_WR);
            ssize_t r;
            while (have < (int)sizeof got && (r = read(s, got + have, sizeof got - have)) > 0) have += r;
        }
        close(s);
        if (have == len && memcmp(got, want, len) == 0) ok++;
        else fprintf(stderr, "seqconn: connection %ld: got %d bytes back, want %d\n", i, have, len);
    }
    printf("ok=%ld\n", ok);
    return ok == n ? 0 : 1;
}
