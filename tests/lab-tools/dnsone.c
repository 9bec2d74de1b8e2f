/* dnsone NAME A.B.C.D SECS: a DNS server for one name, in dom0: listens on UDP port 53 for
 * SECS seconds and answers A queries for NAME with A.B.C.D, anything else with NXDOMAIN.
 * Prints "dnsone: answered N" when done. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: dnsone NAME A.B.C.D SECS\n"); return 1; }
    struct in_addr ans;
    if (!inet_aton(argv[2], &ans)) { fprintf(stderr, "dnsone: bad address %s\n", argv[2]); return 1; }
    time_t end = time(NULL) + atoi(argv[3]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(53) };
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("dnsone: bind"); return 1; }
    struct timeval tv = { .tv_sec = 1 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    printf("dnsone: ready\n"); fflush(stdout);
    int answered = 0;
    while (time(NULL) < end) {
        unsigned char q[512], r[600];
        struct sockaddr_in from; socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
        if (n < 17) continue;
        /* The question name, as dotted text. */
        char name[256]; size_t at = 12, nl = 0;
        while (at < (size_t)n && q[at] && nl < sizeof name - 64) {
            size_t l = q[at];
            if (at + 1 + l > (size_t)n) break;
            if (nl) name[nl++] = '.';
            memcpy(name + nl, q + at + 1, l); nl += l; at += 1 + l;
        }
        name[nl] = 0;
        size_t qend = at + 5;
        if (qend > (size_t)n) continue;
        int found = strcmp(name, argv[1]) == 0 && q[at + 2] == 1;
        memcpy(r, q, qend);
        r[2] = 0x81; r[3] = found ? 0x80 : 0x83;
        r[6] = 0; r[7] = found; r[8] = r[9] = r[10] = r[11] = 0;
        size_t len = qend;
        if (found) {
            unsigned char rr[] = {0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4};
            memcpy(r + len, rr, sizeof rr); len += sizeof rr;
            memcpy(r + len, &ans, 4); len += 4;
        }
        if (sendto(fd, r, len, 0, (struct sockaddr *)&from, fl) >= 0) answered++;
    }
    printf("dnsone: answered %d\n", answered);
    return 0;
}
