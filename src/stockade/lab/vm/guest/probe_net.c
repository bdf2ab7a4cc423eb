/* probe_net: the guest's half of `stockade probe`, compiled statically when the image is built.
 *
 *   probe_net serve tcp|udp PORT
 *       One dual-stack socket on [::]:PORT. TCP: accept, send "stockade-probe ok\n", close.
 *       UDP: echo every datagram to its sender. Prints "READY" once listening.
 *   probe_net connect tcp|udp|icmp IP PORT TIMEOUT_MS [SRC_IP]
 *       One exchange; prints one line "VERDICT DETAIL" and exits 0 (2 on bad usage).
 *
 * Verdicts mirror stockade/lab/probe_client.py (TCP, UDP) and probe.py's ping (ICMP):
 *   allowed | denied (nothing in time, or EPERM) | rejected (RST, port unreachable,
 *   administratively prohibited for ICMP) | unreachable (host/net unreachable) | error.
 * Busybox has no UDP client or server and its ping ignores ICMP errors, hence this program.
 * A source address the guest does not have is bound with IP_TRANSPARENT, as the namespace
 * probe does, so a spoofed source can be sent without adding the address.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char REPLY[] = "stockade-probe ok\n";

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int verdict(const char *v, const char *detail) {
    printf("%s %s\n", v, detail);
    return 0;
}

/* Same mapping as probe_client._classify. */
static int classify(int err, const char *prefix) {
    char buf[160];
    const char *v;
    switch (err) {
    case ETIMEDOUT: case EAGAIN: v = "denied"; snprintf(buf, sizeof buf, "%sno answer before the timeout", prefix); break;
    case ECONNREFUSED: v = "rejected"; snprintf(buf, sizeof buf, "%sconnection refused (RST or ICMP port unreachable)", prefix); break;
    case ECONNRESET: v = "rejected"; snprintf(buf, sizeof buf, "%sconnection reset", prefix); break;
    case EHOSTUNREACH: case ENETUNREACH: v = "unreachable"; snprintf(buf, sizeof buf, "%s%s", prefix, strerror(err)); break;
    case EPERM: case EACCES: v = "denied"; snprintf(buf, sizeof buf, "%sdropped locally: %s", prefix, strerror(err)); break;
    default: v = "error"; snprintf(buf, sizeof buf, "%serrno %d: %s", prefix, err, strerror(err)); break;
    }
    return verdict(v, buf);
}

struct target {
    int family;
    struct sockaddr_storage dst, src;
    socklen_t len;
    int has_src;
};

static int parse_addr(const char *ip, int port, struct sockaddr_storage *out, int *family, socklen_t *len) {
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET; v4->sin_port = htons(port);
        *family = AF_INET; *len = sizeof *v4;
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6; v6->sin6_port = htons(port);
        *family = AF_INET6; *len = sizeof *v6;
        return 0;
    }
    return -1;
}

static int open_socket(const struct target *t, int type, int proto) {
    int fd = socket(t->family, type, proto);
    if (fd < 0) return -1;
    if (t->has_src) {
        int one = 1;
        if (t->family == AF_INET) setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one);
        else setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&t->src, t->len) < 0) { int e = errno; close(fd); errno = e; return -1; }
    }
    return fd;
}

/* Wait for fd to become readable (or writable) until the deadline; 0 on time-out. */
static int wait_fd(int fd, short events, long deadline) {
    struct pollfd p = {.fd = fd, .events = events};
    long left = deadline - now_ms();
    if (left <= 0) return 0;
    int r = poll(&p, 1, (int)left);
    return r < 0 ? -1 : r;
}

static int probe_tcp(const struct target *t, long deadline) {
    int fd = open_socket(t, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return classify(errno, "");
    if (connect(fd, (struct sockaddr *)&t->dst, t->len) < 0 && errno != EINPROGRESS) return classify(errno, "");
    if (wait_fd(fd, POLLOUT, deadline) == 0) return classify(ETIMEDOUT, "");
    int err = 0; socklen_t el = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) return classify(err, "");
    /* Connected: the server speaks first, as the namespace probe expects. */
    if (wait_fd(fd, POLLIN, deadline < now_ms() + 50 ? now_ms() + 50 : deadline) == 0)
        return classify(ETIMEDOUT, "connected, then ");
    char buf[65];
    ssize_t n = recv(fd, buf, 64, 0);
    if (n < 0) return classify(errno, "connected, then ");
    if (n == 0) return verdict("rejected", "connected, closed without a reply");
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = 0;
    char detail[128];
    snprintf(detail, sizeof detail, "connected, got '%s'", buf);
    return verdict("allowed", detail);
}

static int probe_udp(const struct target *t, long deadline) {
    int fd = open_socket(t, SOCK_DGRAM, 0);
    if (fd < 0) return classify(errno, "");
    char nonce[17];
    snprintf(nonce, sizeof nonce, "%08lx%08x", (unsigned long)now_ms(), (unsigned)getpid());
    /* Connected, so that ICMP errors come back as errno. */
    if (connect(fd, (struct sockaddr *)&t->dst, t->len) < 0) return classify(errno, "");
    if (send(fd, nonce, 16, 0) < 0) return classify(errno, "");
    for (;;) {
        int r = wait_fd(fd, POLLIN, deadline);
        if (r == 0) return verdict("denied", "no echo before the timeout");
        char buf[2048];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) return classify(errno, "");
        if (n == 16 && memcmp(buf, nonce, 16) == 0) return verdict("allowed", "echo received");
    }
}

/* An ICMP error from the error queue, as probe.py reads iputils ping's text. */
static int icmp_error_verdict(int fd, int family) {
    char data[256], ctrl[512];
    struct iovec iov = {data, sizeof data};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl, .msg_controllen = sizeof ctrl};
    if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (!((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
              (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR))) continue;
        struct sock_extended_err *ee = (struct sock_extended_err *)CMSG_DATA(c);
        char detail[96];
        const char *v = "unreachable";
        if (ee->ee_origin == SO_EE_ORIGIN_ICMP) {
            if (ee->ee_type == ICMP_DEST_UNREACH &&
                (ee->ee_code == ICMP_PORT_UNREACH || ee->ee_code == ICMP_PKT_FILTERED ||
                 ee->ee_code == ICMP_NET_ANO || ee->ee_code == ICMP_HOST_ANO)) v = "rejected";
            snprintf(detail, sizeof detail, "ICMP error: type %u code %u", ee->ee_type, ee->ee_code);
        } else if (ee->ee_origin == SO_EE_ORIGIN_ICMP6) {
            if (ee->ee_type == ICMP6_DST_UNREACH &&
                (ee->ee_code == ICMP6_DST_UNREACH_ADMIN || ee->ee_code == ICMP6_DST_UNREACH_NOPORT ||
                 ee->ee_code == 5 /* source address failed policy */ || ee->ee_code == 6 /* reject route */)) v = "rejected";
            snprintf(detail, sizeof detail, "ICMPv6 error: type %u code %u", ee->ee_type, ee->ee_code);
        } else {
            return classify(ee->ee_errno, "");
        }
        (void)family;
        return verdict(v, detail);
    }
    return -1;
}

static int probe_icmp(const struct target *t, long deadline) {
    int v6 = t->family == AF_INET6;
    int fd = open_socket(t, SOCK_DGRAM, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
    if (fd < 0) return classify(errno, "");
    int one = 1;
    if (v6) setsockopt(fd, SOL_IPV6, IPV6_RECVERR, &one, sizeof one);
    else setsockopt(fd, SOL_IP, IP_RECVERR, &one, sizeof one);
    unsigned char pkt[16] = {0};
    pkt[0] = v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO;  /* the kernel fills id and checksum */
    pkt[7] = 1;
    if (sendto(fd, pkt, sizeof pkt, 0, (struct sockaddr *)&t->dst, t->len) < 0) {
        if (errno == EPERM || errno == EACCES) return classify(errno, "");
        return classify(errno, "");
    }
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        long left = deadline - now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) == 0) return verdict("denied", "no echo reply before the timeout");
        if (p.revents & POLLERR) {
            if (icmp_error_verdict(fd, t->family) == 0) return 0;
            continue;
        }
        unsigned char buf[2048];
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN) continue;
            if (icmp_error_verdict(fd, t->family) == 0) return 0;
            return classify(errno, "");
        }
        if (n >= 1 && buf[0] == (v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY))
            return verdict("allowed", "echo reply received");
    }
}

static int serve(const char *proto, int port) {
    int udp = strcmp(proto, "udp") == 0;
    int fd = socket(AF_INET6, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || (!udp && listen(fd, 64) < 0)) {
        fprintf(stderr, "cannot serve %s/%d: %s\n", proto, port, strerror(errno));
        return 1;
    }
    printf("READY %s %d\n", proto, port);
    fflush(stdout);
    for (;;) {
        if (udp) {
            char buf[2048];
            struct sockaddr_storage peer;
            socklen_t pl = sizeof peer;
            ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &pl);
            if (n >= 0) sendto(fd, buf, n, 0, (struct sockaddr *)&peer, pl);
        } else {
            int c = accept(fd, NULL, NULL);
            if (c < 0) continue;
            send(c, REPLY, sizeof REPLY - 1, MSG_NOSIGNAL);
            close(c);
        }
    }
}

static int usage(void) {
    fprintf(stderr, "usage: probe_net serve tcp|udp PORT | connect tcp|udp|icmp IP PORT TIMEOUT_MS [SRC_IP]\n");
    return 2;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && strcmp(argv[1], "serve") == 0 && (!strcmp(argv[2], "tcp") || !strcmp(argv[2], "udp")))
        return serve(argv[2], atoi(argv[3]));
    if ((argc == 6 || argc == 7) && strcmp(argv[1], "connect") == 0) {
        struct target t = {0};
        int port = atoi(argv[4]);
        long timeout = atol(argv[5]);
        if (parse_addr(argv[3], port, &t.dst, &t.family, &t.len) < 0) return usage();
        if (argc == 7) {
            int fam; socklen_t l;
            if (parse_addr(argv[6], 0, &t.src, &fam, &l) < 0 || fam != t.family) return usage();
            t.has_src = 1;
        }
        long deadline = now_ms() + (timeout > 0 ? timeout : 1000);
        if (!strcmp(argv[2], "tcp")) return probe_tcp(&t, deadline);
        if (!strcmp(argv[2], "udp")) return probe_udp(&t, deadline);
        if (!strcmp(argv[2], "icmp")) return probe_icmp(&t, deadline);
    }
    return usage();
}
