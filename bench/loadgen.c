/*
 * loadgen: a small epoll IMAP load generator for bench/ (one process, one core).
 *
 * Modes (-m):
 *   login    connect [TLS], greeting, "a1 LOGIN u p" (expect -e, default
 *            "NO [REFERRAL"), "a2 LOGOUT", wait for the server's EOF, close.
 *   mailbox  connect [TLS], greeting, "a1 LOGIN" (expect -e, e.g. "a1 OK"),
 *            "a2 SELECT <-b>" (expect -E), "a3 LOGOUT", EOF, close.
 *   noop     -c connections: greeting, optional LOGIN (-L), then NOOP in a
 *            tight loop for -d seconds; reports the longest gap between two
 *            consecutive responses on any connection (and when it was).
 *   idle     open -c connections (at most -B opening at once), read the
 *            greeting, print a JSON line, hold them until stdin reaches EOF
 *            (or -T seconds), close, exit.
 *
 * Closed loop: every one of the -c slots starts a new session as soon as the
 * previous one ends. The measurement window starts once -w seconds have
 * passed AND every slot has completed a session on average (so the queue is
 * in steady state even when one session takes seconds, as BLF-CRYPT at
 * c=256 does); it lasts at least -d seconds and until -q sessions completed
 * in it, but never past -T seconds since the start (hard cap) nor past -n
 * sessions in all. Then no new session starts; those in flight get -g
 * seconds to finish, then they are cut.
 *
 * The client waits for the server's FIN after LOGOUT before it closes, so
 * TIME_WAIT lands on the server's side and the client's ephemeral ports do
 * not run out at tens of thousands of sessions per second.
 *
 * With -r R the sessions are paced instead: R per second in all, each slot
 * waiting for its turn (at most -c in flight).
 *
 * With -S, stdin reaching EOF ends the run too (as the time limits do).
 *
 * Output: one JSON object on stdout (the per-session latency histogram in
 * 2 % log buckets so several processes can be merged, percentiles, error
 * counts by kind, the first unexpected response, own CPU time).
 *
 * Build: cc -O2 -o loadgen loadgen.c -lssl -lcrypto   (bench/run does it)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { M_LOGIN, M_MAILBOX, M_NOOP, M_IDLE };
enum {
    S_FREE,
    S_SLEEP,
    S_CONNECT,
    S_HANDSHAKE,
    S_GREETING,
    S_LOGIN,
    S_SELECT,
    S_LOGOUT,
    S_EOF,
    S_HOLD,
    S_NOOP,
};
enum { E_CONNECT, E_TLS, E_GREETING, E_LOGIN, E_SELECT, E_LOGOUT, E_EOF, E_TIMEOUT, E_IO, E_CUT, E_N };
static const char *E_NAMES[E_N] = {"connect", "tls", "greeting", "login", "select",
                                   "logout", "early_eof", "timeout", "io", "cut_at_end"};

#define RBUF 16384
#define NBUCKET 1400 /* 1.02^1400 us ~ 1e12 us */

typedef struct {
    int fd;
    SSL *ssl;
    int state;
    int events;
    double t_start; /* session start */
    double t_last;  /* noop: last response */
    double wake;    /* S_SLEEP until */
    unsigned long user;
    char rbuf[RBUF];
    int rlen;
    char wbuf[512];
    int wlen, woff;
    unsigned long noop_n;
    int due_ok; /* -r pacing: this start already has its slot in the schedule */
} conn_t;

/* options */
static const char *opt_host = "127.0.0.1";
static int opt_port = 143;
static int opt_mode = M_LOGIN;
static int opt_conc = 1;
static double opt_dur = 5, opt_warm = 1, opt_cap = 30, opt_grace = 5, opt_sess_timeout = 60;
static long opt_max_sessions = 100000000L;
static long opt_min_samples = 100;
static int opt_tls = 0;
static const char *opt_prefix = "plain-";
static unsigned long opt_nusers = 1000, opt_offset = 0;
static const char *opt_pass = "secret";
static const char *opt_expect1 = NULL, *opt_expect2 = "NO";
static const char *opt_mbox = "Shared/x";
static int opt_noop_login = 0;
static int opt_batch = 64;
static double opt_rate = 0; /* -r: sessions per second in all (0: closed loop) */
static long paced;
static int opt_stdin_stop = 0; /* -S: also stop when stdin reaches EOF */

static SSL_CTX *ctx;
static int ep;
static conn_t *conns;
static struct sockaddr_in addr;

static long completed_total, completed_window, started_total;
static long errors[E_N];
static char first_bad[256];
static unsigned long hist[NBUCKET];
static double lat_max;
static double t0, t_window = -1, t_stop = -1;
static int stopping;
static int active; /* slots not FREE */
static unsigned long next_user;

/* noop */
static double gap_max, gap_max_at;
static unsigned long gap_hist[NBUCKET];
static long gap_over[4]; /* >10, >50, >100, >500 ms */
static long noops;
/* idle */
static long held, dropped;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bucket(double seconds) {
    double us = seconds * 1e6;
    if (us < 1) return 0;
    int b = (int)(log(us) / log(1.02));
    return b >= NBUCKET ? NBUCKET - 1 : b;
}

static void set_events(conn_t *c, int ev) {
    if (c->events == ev) return;
    struct epoll_event e = {.events = (uint32_t)ev, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
    c->events = ev;
}

static void close_conn(conn_t *c) {
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from epoll */
        c->fd = -1;
    }
    c->rlen = 0;
    c->wlen = c->woff = 0;
}

static void start_session(conn_t *c);

static void slot_done(conn_t *c) {
    /* the slot's session is over (well or not): start the next one or go free */
    close_conn(c);
    if (stopping || started_total >= opt_max_sessions || opt_mode == M_IDLE || opt_mode == M_NOOP) {
        if (c->state != S_FREE) active--;
        c->state = S_FREE;
        return;
    }
    start_session(c);
}

static void fail(conn_t *c, int kind, const char *resp) {
    errors[kind]++;
    if (resp && !first_bad[0]) snprintf(first_bad, sizeof first_bad, "%s: %.200s", E_NAMES[kind], resp);
    if (kind == E_CONNECT && !stopping) {
        /* back off a little: a refused or exhausted connect would spin */
        close_conn(c);
        c->state = S_SLEEP;
        c->wake = now() + 0.01;
        return;
    }
    if (opt_mode == M_IDLE && c->state == S_HOLD) held--;
    slot_done(c);
}

static void session_ok(conn_t *c) {
    double t = now();
    completed_total++;
    if (t_window >= 0 && !stopping) {
        double lat = t - c->t_start;
        completed_window++;
        hist[bucket(lat)]++;
        if (lat > lat_max) lat_max = lat;
    }
    slot_done(c);
}

/* write (all of) a command; small writes, so a pending remainder is rare */
static int flush_out(conn_t *c) {
    while (c->woff < c->wlen) {
        int n;
        if (c->ssl) {
            n = SSL_write(c->ssl, c->wbuf + c->woff, c->wlen - c->woff);
            if (n <= 0) {
                int e = SSL_get_error(c->ssl, n);
                if (e == SSL_ERROR_WANT_WRITE) {
                    set_events(c, EPOLLIN | EPOLLOUT);
                    return 0;
                }
                if (e == SSL_ERROR_WANT_READ) return 0;
                return -1;
            }
        } else {
            n = (int)send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN) {
                    set_events(c, EPOLLIN | EPOLLOUT);
                    return 0;
                }
                return -1;
            }
        }
        c->woff += n;
    }
    c->wlen = c->woff = 0;
    set_events(c, EPOLLIN);
    return 0;
}

static int send_cmd(conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int send_cmd(conn_t *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    c->wlen = vsnprintf(c->wbuf, sizeof c->wbuf, fmt, ap);
    va_end(ap);
    c->woff = 0;
    return flush_out(c);
}

static int send_login(conn_t *c) {
    if (send_cmd(c, "a1 LOGIN %s%06lu %s\r\n", opt_prefix, c->user, opt_pass) < 0) {
        fail(c, E_IO, NULL);
        return -1;
    }
    return 0;
}

static void start_session(conn_t *c) {
    c->rlen = 0;
    c->wlen = c->woff = 0;
    c->ssl = NULL;
    c->noop_n = 0;
    if (c->state == S_FREE) active++;
    if (opt_rate > 0 && !c->due_ok) {
        double due = t0 + (double)paced++ / opt_rate;
        if (due > now()) {
            c->state = S_SLEEP;
            c->wake = due;
            c->due_ok = 1;
            return;
        }
    }
    c->due_ok = 0;
    c->t_start = now();
    c->user = opt_offset + (next_user++ % opt_nusers);
    started_total++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        c->state = S_CONNECT;
        fail(c, E_CONNECT, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = S_CONNECT;
    c->events = EPOLLOUT;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        fail(c, E_CONNECT, strerror(errno));
    }
}

static void do_handshake(conn_t *c) {
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->state = S_GREETING;
        set_events(c, EPOLLIN);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        set_events(c, EPOLLIN);
    else if (e == SSL_ERROR_WANT_WRITE)
        set_events(c, EPOLLOUT);
    else {
        char msg[160];
        ERR_error_string_n(ERR_get_error(), msg, sizeof msg);
        fail(c, E_TLS, msg);
    }
}

static void on_connected(conn_t *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        fail(c, E_CONNECT, strerror(err));
        return;
    }
    if (opt_tls) {
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_connect_state(c->ssl);
        c->state = S_HANDSHAKE;
        do_handshake(c);
    } else {
        c->state = S_GREETING;
        set_events(c, EPOLLIN);
    }
}

static int starts(const char *line, const char *p) { return strncmp(line, p, strlen(p)) == 0; }

/* one complete response line (CRLF stripped); returns -1 if the conn is gone */
static int on_line(conn_t *c, char *line) {
    switch (c->state) {
    case S_GREETING:
        if (!starts(line, "* OK")) {
            fail(c, E_GREETING, line);
            return -1;
        }
        if (opt_mode == M_IDLE) {
            c->state = S_HOLD;
            held++;
            return 0;
        }
        if (opt_mode == M_NOOP && !opt_noop_login) {
            c->state = S_NOOP;
            c->t_last = now();
            if (send_cmd(c, "n%lu NOOP\r\n", ++c->noop_n) < 0) return fail(c, E_IO, NULL), -1;
            return 0;
        }
        c->state = S_LOGIN;
        return send_login(c);
    case S_LOGIN:
        if (!starts(line, "a1 ")) return 0;
        if (!strstr(line, opt_expect1)) {
            fail(c, E_LOGIN, line);
            return -1;
        }
        if (opt_mode == M_MAILBOX) {
            c->state = S_SELECT;
            if (send_cmd(c, "a2 SELECT %s\r\n", opt_mbox) < 0) return fail(c, E_IO, NULL), -1;
        } else if (opt_mode == M_NOOP) {
            c->state = S_NOOP;
            c->t_last = now();
            if (send_cmd(c, "n%lu NOOP\r\n", ++c->noop_n) < 0) return fail(c, E_IO, NULL), -1;
        } else {
            c->state = S_LOGOUT;
            if (send_cmd(c, "a2 LOGOUT\r\n") < 0) return fail(c, E_IO, NULL), -1;
        }
        return 0;
    case S_SELECT:
        if (!starts(line, "a2 ")) return 0;
        if (!strstr(line, opt_expect2)) {
            fail(c, E_SELECT, line);
            return -1;
        }
        c->state = S_LOGOUT;
        if (send_cmd(c, "a3 LOGOUT\r\n") < 0) return fail(c, E_IO, NULL), -1;
        return 0;
    case S_LOGOUT:
        if (line[0] == '*') return 0;
        if (!strstr(line, " OK")) {
            fail(c, E_LOGOUT, line);
            return -1;
        }
        c->state = S_EOF;
        return 0;
    case S_NOOP: {
        if (line[0] != 'n') return 0;
        double t = now();
        double gap = t - c->t_last;
        c->t_last = t;
        noops++;
        gap_hist[bucket(gap)]++;
        if (gap > 0.010) gap_over[0]++;
        if (gap > 0.050) gap_over[1]++;
        if (gap > 0.100) gap_over[2]++;
        if (gap > 0.500) gap_over[3]++;
        if (gap > gap_max) {
            gap_max = gap;
            gap_max_at = wall() - gap; /* when the gap began (epoch seconds) */
        }
        if (stopping) {
            c->state = S_LOGOUT;
            if (send_cmd(c, "a9 LOGOUT\r\n") < 0) return fail(c, E_IO, NULL), -1;
            return 0;
        }
        if (send_cmd(c, "n%lu NOOP\r\n", ++c->noop_n) < 0) return fail(c, E_IO, NULL), -1;
        return 0;
    }
    default:
        return 0;
    }
}

static void on_eof(conn_t *c) {
    if (c->state == S_EOF || (c->state == S_LOGOUT && opt_mode == M_NOOP)) {
        if (opt_mode == M_NOOP) {
            slot_done(c);
            return;
        }
        session_ok(c);
    } else if (c->state == S_HOLD) {
        dropped++;
        held--;
        slot_done(c);
    } else {
        fail(c, E_EOF, c->rlen ? c->rbuf : "(eof)");
    }
}

static void on_readable(conn_t *c) {
    for (;;) {
        if (c->rlen >= RBUF - 1) {
            c->rbuf[RBUF - 1] = 0;
            fail(c, E_IO, "line too long");
            return;
        }
        int n;
        if (c->ssl) {
            n = SSL_read(c->ssl, c->rbuf + c->rlen, RBUF - 1 - c->rlen);
            if (n <= 0) {
                int e = SSL_get_error(c->ssl, n);
                if (e == SSL_ERROR_WANT_READ) break;
                if (e == SSL_ERROR_WANT_WRITE) {
                    set_events(c, EPOLLIN | EPOLLOUT);
                    break;
                }
                ERR_clear_error();
                on_eof(c); /* ZERO_RETURN, SYSCALL (EOF or reset) */
                return;
            }
        } else {
            n = (int)recv(c->fd, c->rbuf + c->rlen, RBUF - 1 - c->rlen, 0);
            if (n < 0) {
                if (errno == EAGAIN) break;
                on_eof(c);
                return;
            }
            if (n == 0) {
                on_eof(c);
                return;
            }
        }
        c->rlen += n;
        c->rbuf[c->rlen] = 0;
        char *p = c->rbuf, *nl;
        while ((nl = memchr(p, '\n', c->rbuf + c->rlen - p)) != NULL) {
            *nl = 0;
            if (nl > p && nl[-1] == '\r') nl[-1] = 0;
            if (on_line(c, p) < 0) return; /* conn gone or restarted */
            p = nl + 1;
        }
        int rest = (int)(c->rbuf + c->rlen - p);
        memmove(c->rbuf, p, rest);
        c->rlen = rest;
        c->rbuf[rest] = 0;
        if (!c->ssl) break; /* level-triggered: epoll tells us again */
    }
}

static void on_event(conn_t *c, uint32_t ev) {
    if (c->fd < 0) return;
    switch (c->state) {
    case S_CONNECT:
        on_connected(c);
        return;
    case S_HANDSHAKE:
        do_handshake(c);
        if (c->fd >= 0 && c->state == S_GREETING) on_readable(c);
        return;
    default:
        if ((ev & EPOLLOUT) && c->wlen) {
            if (flush_out(c) < 0) {
                fail(c, E_IO, NULL);
                return;
            }
        } else if ((ev & EPOLLOUT) && !c->wlen && c->events != EPOLLIN) {
            set_events(c, EPOLLIN); /* an SSL_read wanted to write */
        }
        if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen -p PORT [-H host] [-m login|mailbox|noop|idle] [-c conc] [-d window_s]\n"
            "  [-w warmup_s] [-T cap_s] [-n max_sessions] [-q min_samples] [-g grace_s] [-s (TLS)]\n"
            "  [-u user_prefix] [-N nusers] [-o user_offset] [-x password] [-e login_expect]\n"
            "  [-b mailbox] [-E select_expect] [-L (noop: log in first)] [-B idle_batch]\n"
            "  [-r sessions_per_s (paced instead of closed loop)] [-S (stop at stdin EOF too)]\n");
    exit(2);
}

static void print_hist(const char *name, unsigned long *h) {
    printf("\"%s\":[", name);
    int first = 1;
    for (int i = 0; i < NBUCKET; i++)
        if (h[i]) {
            printf("%s[%d,%lu]", first ? "" : ",", i, h[i]);
            first = 0;
        }
    printf("]");
}

static double pct(unsigned long *h, double q) {
    unsigned long total = 0, acc = 0;
    for (int i = 0; i < NBUCKET; i++) total += h[i];
    if (!total) return -1;
    unsigned long want = (unsigned long)ceil(q * total);
    if (want < 1) want = 1;
    for (int i = 0; i < NBUCKET; i++) {
        acc += h[i];
        if (acc >= want) return pow(1.02, i + 0.5) * 1e-6; /* bucket middle, seconds */
    }
    return -1;
}

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

int main(int argc, char **argv) {
    int o;
    while ((o = getopt(argc, argv, "H:p:m:c:d:w:T:n:q:g:t:su:N:o:x:e:b:E:LB:r:S")) != -1) {
        switch (o) {
        case 'H': opt_host = optarg; break;
        case 'p': opt_port = atoi(optarg); break;
        case 'm':
            if (!strcmp(optarg, "login")) opt_mode = M_LOGIN;
            else if (!strcmp(optarg, "mailbox")) opt_mode = M_MAILBOX;
            else if (!strcmp(optarg, "noop")) opt_mode = M_NOOP;
            else if (!strcmp(optarg, "idle")) opt_mode = M_IDLE;
            else usage();
            break;
        case 'c': opt_conc = atoi(optarg); break;
        case 'd': opt_dur = atof(optarg); break;
        case 'w': opt_warm = atof(optarg); break;
        case 'T': opt_cap = atof(optarg); break;
        case 'n': opt_max_sessions = atol(optarg); break;
        case 'q': opt_min_samples = atol(optarg); break;
        case 'g': opt_grace = atof(optarg); break;
        case 't': opt_sess_timeout = atof(optarg); break;
        case 's': opt_tls = 1; break;
        case 'u': opt_prefix = optarg; break;
        case 'N': opt_nusers = strtoul(optarg, NULL, 10); break;
        case 'o': opt_offset = strtoul(optarg, NULL, 10); break;
        case 'x': opt_pass = optarg; break;
        case 'e': opt_expect1 = optarg; break;
        case 'b': opt_mbox = optarg; break;
        case 'E': opt_expect2 = optarg; break;
        case 'L': opt_noop_login = 1; break;
        case 'B': opt_batch = atoi(optarg); break;
        case 'r': opt_rate = atof(optarg); break;
        case 'S': opt_stdin_stop = 1; break;
        default: usage();
        }
    }
    if (opt_conc < 1 || opt_nusers < 1) usage();
    if (!opt_expect1) opt_expect1 = opt_mode == M_LOGIN ? "NO [REFERRAL" : "OK";
    signal(SIGPIPE, SIG_IGN);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opt_port);
    if (inet_pton(AF_INET, opt_host, &addr.sin_addr) != 1) usage();

    if (opt_tls) {
        ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* full handshakes only */
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc((size_t)opt_conc, sizeof *conns);
    for (int i = 0; i < opt_conc; i++) {
        conns[i].fd = -1;
        conns[i].state = S_FREE;
    }
    if (opt_mode == M_IDLE || opt_stdin_stop) {
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(ep, EPOLL_CTL_ADD, 0, &e);
    }

    t0 = now();
    int opened = 0;
    if (opt_mode != M_IDLE) {
        for (int i = 0; i < opt_conc; i++) start_session(&conns[i]);
        opened = opt_conc;
    }
    double t_grace_end = -1, t_held = -1, last_scan = t0;
    int stdin_eof = 0;
    struct epoll_event evs[512];
    for (;;) {
        double t = now();
        /* idle: keep -B opens in flight until all -c are open */
        if (opt_mode == M_IDLE && !stopping) {
            int opening = active - (int)held;
            while (opened < opt_conc && opening < opt_batch) {
                start_session(&conns[opened++]);
                opening++;
            }
            if (t_held < 0 && opened == opt_conc && active - held == 0) {
                t_held = t;
                printf("{\"event\":\"held\",\"held\":%ld,\"failed\":%ld,\"open_s\":%.3f}\n", held,
                       errors[E_CONNECT] + errors[E_TLS] + errors[E_GREETING] + errors[E_EOF], t - t0);
                fflush(stdout);
            }
            if (stdin_eof || t - t0 > opt_cap) stopping = 1;
        }
        /* window bookkeeping (login, mailbox) */
        if (opt_mode == M_LOGIN || opt_mode == M_MAILBOX) {
            if (t_window < 0 && t - t0 >= opt_warm &&
                (completed_total >= opt_conc || t - t0 >= opt_cap / 2)) {
                t_window = t;
            }
            if (!stopping &&
                ((t_window >= 0 && t - t_window >= opt_dur && completed_window >= opt_min_samples) ||
                 t - t0 >= opt_cap || started_total >= opt_max_sessions || stdin_eof)) {
                stopping = 1;
                t_stop = t;
                if (t_window < 0) t_window = t; /* never reached steady state */
                t_grace_end = t + opt_grace;
            }
        }
        if (opt_mode == M_NOOP && !stopping && (t - t0 >= opt_dur || stdin_eof)) {
            stopping = 1;
            t_stop = t;
            t_grace_end = t + opt_grace;
        }
        if (stopping && (active == 0 || (t_grace_end >= 0 && t >= t_grace_end))) break;
        if (opt_mode == M_IDLE && stopping) break;
        /* timeouts and sleepers, every 10 ms */
        if (t - last_scan >= 0.01) {
            last_scan = t;
            for (int i = 0; i < opt_conc; i++) {
                conn_t *c = &conns[i];
                if (c->state == S_SLEEP && t >= c->wake) {
                    if (stopping) {
                        c->state = S_FREE;
                        active--;
                    } else
                        start_session(c);
                } else if (c->state != S_FREE && c->state != S_SLEEP && c->state != S_HOLD &&
                           c->state != S_NOOP && t - c->t_start > opt_sess_timeout) {
                    fail(c, E_TIMEOUT, NULL);
                }
            }
        }
        int n = epoll_wait(ep, evs, 512, 10);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c == NULL) { /* stdin */
                char b[256];
                if (read(0, b, sizeof b) <= 0) {
                    stdin_eof = 1;
                    epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
                }
                continue;
            }
            on_event(c, evs[i].events);
        }
    }
    double t_end = now();
    long cut = 0;
    for (int i = 0; i < opt_conc; i++)
        if (conns[i].state != S_FREE && conns[i].state != S_SLEEP && conns[i].fd >= 0) {
            if (opt_mode != M_IDLE) cut++;
            close_conn(&conns[i]);
        }
    errors[E_CUT] = cut;

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6;
    double cpu_sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    double window = (t_stop > 0 ? t_stop : t_end) - (t_window >= 0 ? t_window : t0);
    printf("{\"event\":\"done\",\"mode\":%d,\"conc\":%d,\"tls\":%d,", opt_mode, opt_conc, opt_tls);
    printf("\"elapsed_s\":%.4f,\"warmup_s\":%.4f,\"window_s\":%.4f,", t_end - t0,
           (t_window >= 0 ? t_window : t0) - t0, window);
    printf("\"started\":%ld,\"completed\":%ld,\"window_completed\":%ld,", started_total, completed_total,
           completed_window);
    printf("\"rate\":%.3f,", window > 0 ? completed_window / window : 0.0);
    printf("\"p50_s\":%.6f,\"p90_s\":%.6f,\"p99_s\":%.6f,\"max_s\":%.6f,", pct(hist, 0.5), pct(hist, 0.9),
           pct(hist, 0.99), lat_max);
    printf("\"cpu_user_s\":%.4f,\"cpu_sys_s\":%.4f,", cpu_user, cpu_sys);
    printf("\"errors\":{");
    for (int i = 0; i < E_N; i++) printf("%s\"%s\":%ld", i ? "," : "", E_NAMES[i], errors[i]);
    printf("},\"first_bad\":");
    json_str(first_bad);
    printf(",");
    if (opt_mode == M_NOOP) {
        printf("\"noops\":%ld,\"gap_max_s\":%.6f,\"gap_max_at\":%.6f,\"gap_p999_s\":%.6f,", noops, gap_max,
               gap_max_at, pct(gap_hist, 0.999));
        printf("\"gaps_over_10ms\":%ld,\"gaps_over_50ms\":%ld,\"gaps_over_100ms\":%ld,\"gaps_over_500ms\":%ld,",
               gap_over[0], gap_over[1], gap_over[2], gap_over[3]);
    }
    if (opt_mode == M_IDLE) printf("\"held_at_end\":%ld,\"dropped\":%ld,", held, dropped);
    print_hist("hist", hist);
    printf("}\n");
    return 0;
}
