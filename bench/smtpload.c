/* smtpload: sealmail's SMTP load generator. Bounded runs against a loopback server only.
 *
 * One epoll loop per thread, non-blocking sockets, OpenSSL 3 on the raw fd. Every
 * connection walks the same lockstep SMTP dialogue (no pipelining):
 *
 *   connect [TLS] banner EHLO [STARTTLS TLS EHLO] [AUTH PLAIN] { MAIL RCPT DATA body . }* QUIT
 *
 * A run ends when --msgs messages are done or --duration seconds have passed (then
 * in-flight messages get a short grace, then are cut). Every wait has a per-step timeout.
 * Idle mode (--idle N) opens N TLS sessions, holds them, reads the servers' memory, quits.
 *
 * Server cost: --server-pids / --server-pgrep name root processes; their whole process tree
 * (found through the ppid field of /proc/PID/stat) is sampled for CPU (utime+stime of the
 * live processes plus cutime+cstime, which holds the children they have reaped) and for
 * memory (VmRSS from /proc/PID/status, Pss from /proc/PID/smaps_rollup). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- options */

static struct {
	const char *host;
	int port;
	int conns;
	bool conns_set;
	long msgs;
	double duration;
	long size;
	bool starttls, tls;
	long per_conn;
	const char *from, *to, *auth, *ehlo;
	int idle;
	double idle_secs;
	pid_t pids[64];
	int npids;
	const char *pgrep;
	double settle;
	double timeout;
	int threads;
	int src_addrs;
	int max_per_src;
	bool json;
	bool auth_only;
	/* NOOP probe: one extra plain session, NOOP every probe_interval ms */
	long probe_max;
	long probe_per_session;
	double probe_interval;
	int probe_port;
	const char *probe_src;
	bool probe_only;
} o = {
    .host = "127.0.0.1",
    .port = 25,
    .conns = 1,
    .msgs = 1000,
    .duration = 60,
    .size = 4096,
    .per_conn = 1,
    .from = "smtpload@load.test",
    .to = "bench@localhost",
    .ehlo = "smtpload.localhost",
    .idle_secs = 10,
    .settle = 0,
    .timeout = 10,
    .threads = 1,
    .src_addrs = 1,
    .probe_interval = 10,
    .probe_per_session = 5000,
};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: smtpload [options]    (targets 127.0.0.0/8 and ::1 only)\n"
	    "  --host ADDR        server address                          [127.0.0.1]\n"
	    "  --port N           server port                             [25]\n"
	    "  --conns C          concurrent connections                  [1]\n"
	    "  --msgs N           messages to send in total               [1000]\n"
	    "  --duration S       hard time bound of the run, seconds     [60]\n"
	    "  --size BYTES       message size, headers + body            [4096]\n"
	    "  --starttls         EHLO, STARTTLS, TLS handshake, EHLO again\n"
	    "  --tls              implicit TLS from the first byte (port 465 style)\n"
	    "  --per-conn K       messages per connection, 0 = reuse for all [1]\n"
	    "  --from ADDR        MAIL FROM                               [smtpload@load.test]\n"
	    "  --to ADDR          RCPT TO                                 [bench@localhost]\n"
	    "  --ehlo NAME        EHLO argument                           [smtpload.localhost]\n"
	    "  --auth USER:PASS   AUTH PLAIN after the (TLS) EHLO\n"
	    "  --auth-only        with --auth: each connection ends after the 235 (QUIT), no\n"
	    "                     message; ok/latency/msgs/s then count logins\n"
	    "  --idle N           idle mode: open N TLS sessions (STARTTLS unless --tls),\n"
	    "                     --conns at a time, hold them, report server memory, QUIT\n"
	    "  --idle-secs S      how long to hold the idle sessions      [10]\n"
	    "  --server-pids P,P  server processes (and their children) to measure\n"
	    "  --server-pgrep RE  same, chosen by a regex on /proc/PID/cmdline\n"
	    "  --cpu-settle S     before and after the run, wait up to S s for the server\n"
	    "                     tree to go quiet (queued delivery finishing)  [0]\n"
	    "  --timeout S        per-step timeout (connect, handshake, each reply) [10]\n"
	    "  --threads T        client threads, each with its own epoll loop [1]\n"
	    "  --src-addrs N      bind connection slot i to source address 127.0.0.(1 + i %% N),\n"
	    "                     to stay under a server's per-IP connection limit  [1]\n"
	    "  --max-per-src K    pick --src-addrs so that at most K slots share an address\n"
	    "                     (note: a server may do PTR lookups for 127.0.0.2 and up)\n"
	    "  --probe-noop N     NOOP probe: one extra plain session (banner, EHLO, set up\n"
	    "                     before the load starts) sends NOOP every --probe-interval\n"
	    "                     ms while the load runs, at most N times; reports the\n"
	    "                     NOOP->reply latency percentiles\n"
	    "  --probe-interval MS  one NOOP every MS ms (at once if a reply was later) [10]\n"
	    "  --probe-port N     port of the probe session                [--port]\n"
	    "  --probe-per-session K  renew the probe session (QUIT, connect, EHLO; not\n"
	    "                     measured) every K NOOPs; Postfix counts NOOP as a junk\n"
	    "                     command and slows down after 100            [5000]\n"
	    "  --probe-src ADDR   source address of the probe session (loopback) [kernel's]\n"
	    "  --probe-only       no load: only the probe, N NOOPs (bounded by --duration)\n"
	    "  --json             one JSON object on stdout instead of text\n");
}

/* ---------------------------------------------------------------- shared state */

enum errcat { E_CONNECT, E_TLS, E_TIMEOUT, E_REPLY, E_CLOSED, E_IO, E_DEADLINE, E__N };
static const char *const errcat_name[E__N] = {"connect", "tls", "timeout", "reply",
                                              "closed",  "io",  "deadline"};

#define NSAMPLES 8
static struct {
	pthread_mutex_t mu;
	long count[E__N];
	struct {
		char text[200];
		long n;
	} sample[NSAMPLES];
	int nsample;
} g_err = {.mu = PTHREAD_MUTEX_INITIALIZER};

static atomic_long g_claimed, g_ok, g_failed, g_unfinished, g_conns_opened, g_handshakes;
static atomic_int g_stop;
static double g_t0, g_t_end, g_grace;
static bool g_idle_mode;
static SSL_CTX *g_ctx;
static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static char *g_body; /* body lines + ".\r\n" terminator */
static size_t g_bodylen;
static int g_hdrlen; /* fixed header length (numbers are fixed width) */
static char g_date[64];
static char g_authcmd[1200];
static pthread_mutex_t g_tlsinfo_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_tlsinfo[128];

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- connections */

enum step {
	S_FREE,
	S_CONNECT,
	S_HANDSHAKE,
	S_BANNER,
	S_EHLO,
	S_STARTTLS,
	S_AUTH,
	S_MAIL,
	S_RCPT,
	S_DATA,
	S_BODY,
	S_IDLE,
	S_QUIT,
};
static const char *const step_name[] = {"free",        "connect", "TLS handshake", "banner", "EHLO",
                                        "STARTTLS",    "AUTH",    "MAIL",          "RCPT",   "DATA",
                                        "end of data", "idle",    "QUIT"};

struct worker;

struct conn {
	struct worker *w;
	int fd;
	SSL *ssl;
	enum step step;
	enum step hs_next; /* step after the TLS handshake: S_BANNER (--tls) or S_EHLO */
	uint32_t ev;       /* events registered with epoll */
	uint32_t io_want;  /* what the last blocked I/O waits for */
	double deadline;   /* per-step timeout, 0 = none */
	double t_msg;      /* latency start of the message in flight */
	bool in_msg;       /* a claimed message is in flight on this slot */
	bool restart;      /* slot waits to be (re)started by its worker */
	bool done;         /* slot will open no more connections */
	bool authed;
	long on_conn; /* messages done on the current connection */
	long msgno;
	int slot; /* global slot number: picks the source address */
	/* pending output: up to 3 segments */
	struct {
		const char *p;
		size_t n;
	} seg[3];
	int nseg, segi;
	size_t segoff;
	char cmd[1300];
	char hdr[600];
	char in[8192];
	size_t inlen;
};

struct worker {
	int id;
	int ep;
	struct conn *c;
	int n;
	int live;     /* slots not done */
	int npending; /* slots with restart set */
	double *lat;
	size_t nlat, caplat;
	double last_ok;
	/* idle mode */
	int opening, ready, setup_failed, dropped;
	pthread_t th;
};

static void errf(enum errcat cat, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void errf(enum errcat cat, const char *fmt, ...)
{
	char buf[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	pthread_mutex_lock(&g_err.mu);
	g_err.count[cat]++;
	int i;
	for (i = 0; i < g_err.nsample; i++)
		if (!strcmp(g_err.sample[i].text, buf))
			break;
	if (i < g_err.nsample) {
		g_err.sample[i].n++;
	} else if (g_err.nsample < NSAMPLES) {
		snprintf(g_err.sample[i].text, sizeof g_err.sample[i].text, "%s", buf);
		g_err.sample[i].n = 1;
		g_err.nsample++;
	}
	pthread_mutex_unlock(&g_err.mu);
}

static const char *ssl_errstr(void)
{
	static _Thread_local char buf[160];
	unsigned long e = ERR_get_error();
	if (!e)
		return errno ? strerror(errno) : "unexpected EOF";
	ERR_error_string_n(e, buf, sizeof buf);
	ERR_clear_error();
	return buf;
}

static void want(struct conn *c, uint32_t ev)
{
	if (ev == c->ev)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = c};
	if (epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &e) == 0)
		c->ev = ev;
}

static void set_deadline(struct conn *c)
{
	c->deadline = now() + o.timeout;
}

/* Closes the connection (not the slot). */
static void conn_close(struct conn *c)
{
	if (c->ssl) {
		if (SSL_is_init_finished(c->ssl))
			SSL_shutdown(c->ssl); /* one close_notify, not waited for */
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		epoll_ctl(c->w->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	c->step = S_FREE;
	c->nseg = c->segi = 0;
	c->segoff = 0;
	c->inlen = 0;
	c->deadline = 0;
	c->ev = 0;
	c->authed = false;
	c->on_conn = 0;
}

/* The connection ended normally (QUIT answered or closed after QUIT). */
static void conn_end(struct conn *c)
{
	conn_close(c);
	if (!g_idle_mode) {
		c->restart = true;
		c->w->npending++;
	}
}

/* The connection failed: the message in flight (if any) is failed, the slot restarts. */
static void conn_fail(struct conn *c, enum errcat cat, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_fail(struct conn *c, enum errcat cat, const char *fmt, ...)
{
	char buf[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	errf(cat, "%s", buf);
	if (g_idle_mode) {
		if (c->step == S_IDLE || c->step == S_QUIT) {
			c->w->dropped++;
		} else {
			c->w->setup_failed++;
			c->w->opening--;
		}
		conn_close(c);
		c->done = true;
		return;
	}
	if (c->in_msg) {
		c->in_msg = false;
		if (cat == E_DEADLINE)
			atomic_fetch_add(&g_unfinished, 1);
		else
			atomic_fetch_add(&g_failed, 1);
	}
	conn_close(c);
	c->restart = true;
	c->w->npending++;
}

static bool claim(struct conn *c)
{
	if (atomic_load(&g_stop))
		return false;
	long k = atomic_fetch_add(&g_claimed, 1);
	if (k >= o.msgs)
		return false;
	c->msgno = k + 1;
	return true;
}

static void queue1(struct conn *c, const char *p, size_t n)
{
	c->seg[0].p = p;
	c->seg[0].n = n;
	c->nseg = 1;
	c->segi = 0;
	c->segoff = 0;
}

static void send_cmd(struct conn *c, enum step next, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_cmd(struct conn *c, enum step next, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(c->cmd, sizeof c->cmd, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof c->cmd)
		n = (int)strlen(c->cmd);
	queue1(c, c->cmd, (size_t)n);
	c->step = next;
	set_deadline(c);
}

static void send_body(struct conn *c)
{
	int n = snprintf(c->hdr, sizeof c->hdr,
	                 "From: <%s>\r\nTo: <%s>\r\nSubject: smtpload message %010ld\r\n"
	                 "Date: %s\r\nMessage-ID: <%010ld.%08x@smtpload.localhost>\r\n"
	                 "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
	                 o.from, o.to, c->msgno, g_date, c->msgno, (unsigned)getpid());
	if (n < 0 || (size_t)n >= sizeof c->hdr)
		n = (int)strlen(c->hdr);
	c->seg[0].p = c->hdr;
	c->seg[0].n = (size_t)n;
	c->seg[1].p = g_body;
	c->seg[1].n = g_bodylen;
	c->nseg = 2;
	c->segi = 0;
	c->segoff = 0;
	c->step = S_BODY;
	set_deadline(c);
}

/* 1 = all written, 0 = blocked (io_want set), -1 = error */
static int out_flush(struct conn *c)
{
	while (c->segi < c->nseg) {
		ssize_t r;
		if (c->ssl) {
			const char *p = c->seg[c->segi].p + c->segoff;
			size_t n = c->seg[c->segi].n - c->segoff;
			ERR_clear_error();
			int k = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
			if (k <= 0) {
				int e = SSL_get_error(c->ssl, k);
				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
					c->io_want = e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
					return 0;
				}
				return -1;
			}
			r = k;
		} else {
			struct iovec iov[3];
			int niov = 0;
			for (int i = c->segi; i < c->nseg; i++) {
				size_t off = i == c->segi ? c->segoff : 0;
				iov[niov].iov_base = (void *)(c->seg[i].p + off);
				iov[niov].iov_len = c->seg[i].n - off;
				niov++;
			}
			struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
			r = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
			if (r < 0) {
				if (errno == EAGAIN || errno == EINTR) {
					c->io_want = EPOLLOUT;
					return 0;
				}
				return -1;
			}
		}
		size_t left = (size_t)r;
		while (left > 0 && c->segi < c->nseg) {
			size_t rest = c->seg[c->segi].n - c->segoff;
			if (left >= rest) {
				left -= rest;
				c->segi++;
				c->segoff = 0;
			} else {
				c->segoff += left;
				left = 0;
			}
		}
	}
	c->nseg = c->segi = 0;
	c->segoff = 0;
	return 1;
}

/* >0 read, 0 blocked (io_want set), -1 closed or error */
static int in_read(struct conn *c)
{
	size_t room = sizeof c->in - c->inlen;
	if (room == 0)
		return -1;
	if (c->ssl) {
		ERR_clear_error();
		int k = SSL_read(c->ssl, c->in + c->inlen, (int)room);
		if (k > 0) {
			c->inlen += (size_t)k;
			return k;
		}
		int e = SSL_get_error(c->ssl, k);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			c->io_want = e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
			return 0;
		}
		return -1;
	}
	ssize_t r = recv(c->fd, c->in + c->inlen, room, 0);
	if (r > 0) {
		c->inlen += (size_t)r;
		return (int)r;
	}
	if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
		c->io_want = EPOLLIN;
		return 0;
	}
	return -1;
}

/* Finds one complete reply at the start of c->in. Returns its length (0 = incomplete,
 * -1 = malformed) and its code. */
static long reply_parse(struct conn *c, int *code)
{
	size_t pos = 0;
	int first = -1;
	while (pos < c->inlen) {
		char *nl = memchr(c->in + pos, '\n', c->inlen - pos);
		if (!nl)
			return 0;
		const char *l = c->in + pos;
		size_t len = (size_t)(nl - l);
		if (len < 3 || !isdigit((unsigned char)l[0]) || !isdigit((unsigned char)l[1]) ||
		    !isdigit((unsigned char)l[2]))
			return -1;
		int k = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
		if (first < 0)
			first = k;
		else if (k != first)
			return -1;
		pos += len + 1;
		if (len == 3 || l[3] != '-') {
			*code = first;
			return (long)pos;
		}
	}
	return 0;
}

/* First line of the reply, for error messages. */
static const char *reply_line(const struct conn *c, long len)
{
	static _Thread_local char buf[120];
	size_t n = 0;
	while (n < (size_t)len && n < sizeof buf - 1 && c->in[n] != '\r' && c->in[n] != '\n') {
		buf[n] = c->in[n];
		n++;
	}
	buf[n] = 0;
	return buf;
}

static bool ehlo_has(const struct conn *c, long len, const char *kw)
{
	size_t kl = strlen(kw), pos = 0;
	while (pos < (size_t)len) {
		const char *l = c->in + pos;
		const char *nl = memchr(l, '\n', (size_t)len - pos);
		size_t ll = (size_t)(nl - l);
		if (ll >= 4 + kl && !strncasecmp(l + 4, kw, kl) &&
		    (ll == 4 + kl || l[4 + kl] == ' ' || l[4 + kl] == '\r'))
			return true;
		pos += ll + 1;
	}
	return false;
}

static void start_tls(struct conn *c, enum step next)
{
	c->ssl = SSL_new(g_ctx);
	if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
		conn_fail(c, E_TLS, "SSL_new: %s", ssl_errstr());
		return;
	}
	SSL_set_connect_state(c->ssl);
	c->step = S_HANDSHAKE;
	c->hs_next = next;
	set_deadline(c);
}

static void record_latency(struct worker *w, double ms)
{
	if (w->nlat == w->caplat) {
		size_t cap = w->caplat ? w->caplat * 2 : 1024;
		double *p = realloc(w->lat, cap * sizeof *p);
		if (!p)
			return;
		w->lat = p;
		w->caplat = cap;
	}
	w->lat[w->nlat++] = ms;
}

static void session_ready(struct conn *c)
{
	if (g_idle_mode) {
		c->step = S_IDLE;
		c->deadline = 0;
		c->w->opening--;
		c->w->ready++;
		return;
	}
	/* the first message of a connection was claimed before connecting */
	send_cmd(c, S_MAIL, "MAIL FROM:<%s>\r\n", o.from);
}

/* Returns true when the connection is gone (closed or failed). */
static bool handle_reply(struct conn *c, int code, long len)
{
	switch (c->step) {
	case S_BANNER:
		if (code != 220)
			break;
		send_cmd(c, S_EHLO, "EHLO %s\r\n", o.ehlo);
		return false;
	case S_EHLO:
		if (code != 250)
			break;
		if (o.starttls && !c->ssl) {
			if (!ehlo_has(c, len, "STARTTLS")) {
				conn_fail(c, E_REPLY, "EHLO: STARTTLS not offered");
				return true;
			}
			send_cmd(c, S_STARTTLS, "STARTTLS\r\n");
			return false;
		}
		if (o.auth && !c->authed) {
			queue1(c, g_authcmd, strlen(g_authcmd));
			c->step = S_AUTH;
			set_deadline(c);
			return false;
		}
		session_ready(c);
		return false;
	case S_STARTTLS:
		if (code != 220)
			break;
		if (c->inlen != (size_t)len) {
			conn_fail(c, E_REPLY, "STARTTLS: data after the 220 reply");
			return true;
		}
		c->inlen = 0;
		start_tls(c, S_EHLO);
		return c->fd < 0;
	case S_AUTH:
		if (code != 235)
			break;
		c->authed = true;
		if (o.auth_only && !g_idle_mode) { /* one login per connection, no message */
			double t = now();
			record_latency(c->w, (t - c->t_msg) * 1000.0);
			c->w->last_ok = t;
			atomic_fetch_add(&g_ok, 1);
			c->in_msg = false;
			c->on_conn++;
			send_cmd(c, S_QUIT, "QUIT\r\n");
			c->deadline = now() + (o.timeout < 5 ? o.timeout : 5);
			return false;
		}
		session_ready(c);
		return false;
	case S_MAIL:
		if (code != 250)
			break;
		send_cmd(c, S_RCPT, "RCPT TO:<%s>\r\n", o.to);
		return false;
	case S_RCPT:
		if (code != 250 && code != 251)
			break;
		send_cmd(c, S_DATA, "DATA\r\n");
		return false;
	case S_DATA:
		if (code != 354)
			break;
		send_body(c);
		return false;
	case S_BODY: {
		if (code != 250)
			break;
		double t = now();
		record_latency(c->w, (t - c->t_msg) * 1000.0);
		c->w->last_ok = t;
		atomic_fetch_add(&g_ok, 1);
		c->in_msg = false;
		c->on_conn++;
		if ((o.per_conn == 0 || c->on_conn < o.per_conn) && claim(c)) {
			c->in_msg = true;
			c->t_msg = t;
			send_cmd(c, S_MAIL, "MAIL FROM:<%s>\r\n", o.from);
		} else {
			send_cmd(c, S_QUIT, "QUIT\r\n");
			double d = now() + (o.timeout < 5 ? o.timeout : 5);
			c->deadline = d;
		}
		return false;
	}
	case S_QUIT:
		conn_end(c);
		return true;
	case S_IDLE:
		conn_fail(c, E_CLOSED, "idle: server sent %.100s", reply_line(c, len));
		return true;
	default:
		break;
	}
	conn_fail(c, E_REPLY, "%s: %.100s", step_name[c->step], reply_line(c, len));
	return true;
}

static void conn_drive(struct conn *c)
{
	for (;;) {
		if (c->fd < 0)
			return;
		if (c->step == S_HANDSHAKE) {
			ERR_clear_error();
			int r = SSL_connect(c->ssl);
			if (r == 1) {
				atomic_fetch_add(&g_handshakes, 1);
				if (!g_tlsinfo[0]) {
					pthread_mutex_lock(&g_tlsinfo_mu);
					snprintf(
					    g_tlsinfo, sizeof g_tlsinfo, "%s %s",
					    SSL_get_version(c->ssl),
					    SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)));
					pthread_mutex_unlock(&g_tlsinfo_mu);
				}
				if (c->hs_next == S_BANNER) {
					c->step = S_BANNER;
					set_deadline(c);
				} else {
					send_cmd(c, S_EHLO, "EHLO %s\r\n", o.ehlo);
				}
				continue;
			}
			int e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ) {
				want(c, EPOLLIN);
				return;
			}
			if (e == SSL_ERROR_WANT_WRITE) {
				want(c, EPOLLOUT);
				return;
			}
			conn_fail(c, E_TLS, "TLS handshake: %s", ssl_errstr());
			return;
		}
		if (c->nseg) {
			int r = out_flush(c);
			if (r < 0) {
				if (c->step == S_QUIT) {
					conn_end(c);
					return;
				}
				conn_fail(c, E_IO, "write in %s: %s", step_name[c->step],
				          c->ssl ? ssl_errstr() : strerror(errno));
				return;
			}
			if (r == 0) {
				want(c, c->io_want);
				return;
			}
		}
		int code = 0;
		long len = reply_parse(c, &code);
		if (len < 0) {
			conn_fail(c, E_REPLY, "%s: malformed reply: %.80s", step_name[c->step],
			          reply_line(c, (long)c->inlen));
			return;
		}
		if (len > 0) {
			if (handle_reply(c, code, len))
				return;
			if (c->step == S_HANDSHAKE)
				continue; /* buffer already emptied by STARTTLS */
			memmove(c->in, c->in + len, c->inlen - (size_t)len);
			c->inlen -= (size_t)len;
			continue;
		}
		int r = in_read(c);
		if (r > 0)
			continue;
		if (r == 0) {
			want(c, c->io_want);
			return;
		}
		if (c->step == S_QUIT) {
			conn_end(c);
			return;
		}
		if (c->inlen == sizeof c->in)
			conn_fail(c, E_REPLY, "%s: reply too long", step_name[c->step]);
		else
			conn_fail(c, E_CLOSED, "connection closed by server in %s",
			          step_name[c->step]);
		return;
	}
}

static void conn_open(struct conn *c)
{
	struct worker *w = c->w;
	int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		conn_fail(c, E_CONNECT, "socket: %s", strerror(errno));
		return;
	}
	c->fd = fd;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (o.src_addrs > 1 && g_addr.ss_family == AF_INET) {
		struct sockaddr_in src = {.sin_family = AF_INET};
		unsigned k = (unsigned)c->slot % (unsigned)o.src_addrs;
		src.sin_addr.s_addr = htonl((127u << 24) | (1u + k));
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
			conn_fail(c, E_CONNECT, "bind source: %s", strerror(errno));
			return;
		}
	}
	c->step = S_CONNECT;
	struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
	if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &e) < 0) {
		conn_fail(c, E_IO, "epoll_ctl: %s", strerror(errno));
		return;
	}
	c->ev = EPOLLOUT;
	set_deadline(c);
	if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) < 0 && errno != EINPROGRESS) {
		conn_fail(c, E_CONNECT, "connect: %s", strerror(errno));
		return;
	}
}

static void on_connected(struct conn *c)
{
	int err = 0;
	socklen_t el = sizeof err;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
		err = errno;
	if (err) {
		conn_fail(c, E_CONNECT, "connect: %s", strerror(err));
		return;
	}
	atomic_fetch_add(&g_conns_opened, 1);
	if (o.tls) {
		start_tls(c, S_BANNER);
	} else {
		c->step = S_BANNER;
		set_deadline(c);
	}
	if (c->fd >= 0)
		conn_drive(c);
}

/* Starts the next message of a free slot on a new connection, or retires the slot. */
static void slot_next(struct conn *c)
{
	if (!claim(c)) {
		c->done = true;
		c->w->live--;
		return;
	}
	c->in_msg = true;
	c->t_msg = now();
	conn_open(c);
}

static void dispatch(struct worker *w, struct epoll_event *ev, int n)
{
	(void)w;
	for (int i = 0; i < n; i++) {
		struct conn *c = ev[i].data.ptr;
		if (c->fd < 0)
			continue;
		if (c->step == S_CONNECT)
			on_connected(c);
		else
			conn_drive(c);
	}
}

static void scan_timeouts(struct worker *w, double t)
{
	for (int i = 0; i < w->n; i++) {
		struct conn *c = &w->c[i];
		if (c->fd < 0 || c->deadline == 0 || t < c->deadline)
			continue;
		if (c->step == S_QUIT)
			conn_end(c);
		else
			conn_fail(c, E_TIMEOUT, "timeout in %s", step_name[c->step]);
	}
}

static void *worker_load(void *arg)
{
	struct worker *w = arg;
	struct epoll_event ev[256];
	for (int i = 0; i < w->n; i++) {
		w->c[i].restart = true;
		w->npending++;
	}
	double last_scan = 0;
	bool cut = false;
	while (w->live > 0) {
		if (w->npending) {
			w->npending = 0;
			for (int i = 0; i < w->n; i++) {
				struct conn *c = &w->c[i];
				if (!c->restart)
					continue;
				c->restart = false;
				if (cut) {
					c->done = true;
					w->live--;
				} else {
					slot_next(c);
				}
			}
			continue;
		}
		int n = epoll_wait(w->ep, ev, 256, 20);
		if (n > 0)
			dispatch(w, ev, n);
		double t = now();
		if (t >= g_t_end)
			atomic_store(&g_stop, 1);
		if (!cut && t >= g_t_end + g_grace) {
			cut = true;
			for (int i = 0; i < w->n; i++) {
				struct conn *c = &w->c[i];
				if (c->fd < 0)
					continue;
				if (c->step == S_QUIT || !c->in_msg)
					conn_end(c);
				else
					conn_fail(c, E_DEADLINE, "cut at the duration bound in %s",
					          step_name[c->step]);
			}
		}
		if (t - last_scan >= 0.05) {
			last_scan = t;
			scan_timeouts(w, t);
		}
	}
	return NULL;
}

/* ---------------------------------------------------------------- server sampling */

static struct {
	bool on;
	pid_t *roots;
	int nroots;
	unsigned char *mark;
	long pid_max;
	long hz;
} S;

struct srvsample {
	long long ticks;
	long long rss_kib, pss_kib;
	int nproc;
	bool ok;
};

static ssize_t read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = 0;
	while (n < cap - 1) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = 0;
	return (ssize_t)n;
}

struct procent {
	pid_t pid, ppid;
	long long ticks;
};

/* All processes: pid, ppid, utime+stime+cutime+cstime. */
static struct procent *proc_list(int *np)
{
	DIR *d = opendir("/proc");
	if (!d)
		return NULL;
	size_t cap = 512, n = 0;
	struct procent *v = malloc(cap * sizeof *v);
	struct dirent *de;
	char path[300], buf[1024];
	while (v && (de = readdir(d))) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
		if (read_small(path, buf, sizeof buf) <= 0)
			continue;
		char *p = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
		if (!p)
			continue;
		/* fields from 3 on: state ppid pgrp session tty tpgid flags minflt cminflt
		 * majflt cmajflt utime stime cutime cstime */
		char state;
		int ppid;
		unsigned long long f[8], ut, st;
		long long cut, cst;
		if (sscanf(p + 2,
		           "%c %d %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %lld %lld",
		           &state, &ppid, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7],
		           &ut, &st, &cut, &cst) != 14)
			continue;
		if (n == cap) {
			cap *= 2;
			struct procent *nv = realloc(v, cap * sizeof *v);
			if (!nv)
				break;
			v = nv;
		}
		v[n].pid = (pid_t)strtol(de->d_name, NULL, 10);
		v[n].ppid = ppid;
		v[n].ticks = (long long)(ut + st) + cut + cst;
		n++;
	}
	closedir(d);
	*np = (int)n;
	return v;
}

static long long status_kib(pid_t pid, const char *file, const char *key)
{
	char path[64], buf[8192];
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
	if (read_small(path, buf, sizeof buf) <= 0)
		return 0;
	char *p = strstr(buf, key);
	if (!p)
		return 0;
	return strtoll(p + strlen(key), NULL, 10);
}

/* The server tree in one /proc snapshot: its pids (ascending, as /proc lists them) into
 * *tree, its summed ticks into *ticks. Returns the number of processes, -1 on error. */
static int srv_tree(pid_t **tree, long long *ticks)
{
	int n = 0;
	struct procent *v = proc_list(&n);
	if (!v)
		return -1;
	memset(S.mark, 0, (size_t)S.pid_max + 1);
	for (int i = 0; i < S.nroots; i++)
		if (S.roots[i] > 0 && S.roots[i] <= S.pid_max)
			S.mark[S.roots[i]] = 2; /* wanted; becomes 1 once seen alive */
	for (int i = 0; i < n; i++)
		if (S.mark[v[i].pid] == 2)
			S.mark[v[i].pid] = 1;
	for (int i = 0; i < S.nroots; i++)
		if (S.roots[i] > 0 && S.roots[i] <= S.pid_max && S.mark[S.roots[i]] == 2)
			S.mark[S.roots[i]] = 0;
	for (bool grew = true; grew;) {
		grew = false;
		for (int i = 0; i < n; i++)
			if (!S.mark[v[i].pid] && v[i].ppid > 0 && v[i].ppid <= S.pid_max &&
			    S.mark[v[i].ppid] == 1) {
				S.mark[v[i].pid] = 1;
				grew = true;
			}
	}
	pid_t *t = malloc(((size_t)n + 1) * sizeof *t);
	int k = 0;
	*ticks = 0;
	for (int i = 0; t && i < n; i++) {
		if (S.mark[v[i].pid] != 1)
			continue;
		t[k++] = v[i].pid;
		*ticks += v[i].ticks;
	}
	free(v);
	if (!t)
		return -1;
	*tree = t;
	return k;
}

/* A process of the tree that exits while /proc is being read is missing from that snapshot
 * and not yet in its parent's cutime: so take snapshots until two in a row hold the same
 * processes, and use the second. */
static void srv_sample(struct srvsample *s, bool mem)
{
	memset(s, 0, sizeof *s);
	if (!S.on)
		return;
	pid_t *a = NULL, *b = NULL;
	long long ta = 0, tb = 0;
	int na = srv_tree(&a, &ta), nb = -1;
	for (int tries = 0; na >= 0 && tries < 20; tries++) {
		nb = srv_tree(&b, &tb);
		if (nb < 0)
			break;
		if (nb == na && !memcmp(a, b, (size_t)na * sizeof *a))
			break;
		free(a);
		a = b;
		na = nb;
		ta = tb;
		b = NULL;
		nb = -1;
	}
	if (nb > 0) {
		s->nproc = nb;
		s->ticks = tb;
		for (int i = 0; mem && i < nb; i++) {
			s->rss_kib += status_kib(b[i], "status", "VmRSS:");
			s->pss_kib += status_kib(b[i], "smaps_rollup", "Pss:");
		}
		s->ok = true;
	}
	free(a);
	free(b);
}

static double ticks_ms(long long t)
{
	return (double)t * 1000.0 / (double)S.hz;
}

/* Waits up to max_s seconds until the server tree uses at most one tick in 300 ms. */
static void srv_settle(double max_s)
{
	if (!S.on || max_s <= 0)
		return;
	double end = now() + max_s;
	struct srvsample a, b;
	srv_sample(&a, false);
	while (now() < end) {
		struct timespec ts = {0, 300 * 1000 * 1000};
		nanosleep(&ts, NULL);
		srv_sample(&b, false);
		if (b.ticks - a.ticks <= 1)
			return;
		a = b;
	}
}

static bool is_ancestor(pid_t pid, const pid_t *anc, int nanc)
{
	for (int i = 0; i < nanc; i++)
		if (anc[i] == pid)
			return true;
	return false;
}

static int srv_init(void)
{
	S.hz = sysconf(_SC_CLK_TCK);
	char buf[64];
	S.pid_max = 4194304;
	if (read_small("/proc/sys/kernel/pid_max", buf, sizeof buf) > 0 && strtol(buf, NULL, 10) > 0)
		S.pid_max = strtol(buf, NULL, 10);
	S.mark = calloc((size_t)S.pid_max + 1, 1);
	S.roots = calloc(4096, sizeof *S.roots);
	if (!S.mark || !S.roots)
		return -1;
	for (int i = 0; i < o.npids; i++)
		S.roots[S.nroots++] = o.pids[i];
	if (o.pgrep) {
		regex_t re;
		if (regcomp(&re, o.pgrep, REG_EXTENDED | REG_NOSUB) != 0) {
			fprintf(stderr, "smtpload: bad --server-pgrep regex\n");
			return -1;
		}
		/* our own ancestors (a shell whose command line holds the pattern) don't count */
		pid_t anc[64];
		int nanc = 0;
		int n = 0;
		struct procent *v = proc_list(&n);
		pid_t p = getpid();
		while (v && p > 1 && nanc < 64) {
			anc[nanc++] = p;
			pid_t pp = 0;
			for (int i = 0; i < n; i++)
				if (v[i].pid == p)
					pp = v[i].ppid;
			p = pp;
		}
		for (int i = 0; v && i < n && S.nroots < 4096; i++) {
			char path[64], cmd[4096];
			snprintf(path, sizeof path, "/proc/%d/cmdline", (int)v[i].pid);
			ssize_t len = read_small(path, cmd, sizeof cmd);
			if (len <= 0)
				continue; /* kernel threads */
			for (ssize_t k = 0; k < len; k++)
				if (cmd[k] == 0)
					cmd[k] = ' ';
			while (len > 0 && cmd[len - 1] == ' ')
				cmd[--len] = 0;
			if (regexec(&re, cmd, 0, NULL, 0) == 0 && !is_ancestor(v[i].pid, anc, nanc))
				S.roots[S.nroots++] = v[i].pid;
		}
		free(v);
		regfree(&re);
		if (S.nroots == 0) {
			fprintf(stderr, "smtpload: --server-pgrep '%s' matches no process\n",
			        o.pgrep);
			return -1;
		}
	}
	S.on = S.nroots > 0;
	if (S.on) {
		struct srvsample s;
		srv_sample(&s, false);
		if (!s.ok) {
			fprintf(stderr, "smtpload: no server process alive among the given pids\n");
			return -1;
		}
	}
	return 0;
}

/* ---------------------------------------------------------------- setup */

static int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		return -1;
	*out = v;
	return 0;
}

static int set_target(void)
{
	const char *h = o.host;
	if (!strcmp(h, "localhost"))
		h = "127.0.0.1";
	memset(&g_addr, 0, sizeof g_addr);
	struct sockaddr_in *a4 = (struct sockaddr_in *)&g_addr;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&g_addr;
	if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
		if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127)
			goto refuse;
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)o.port);
		g_addrlen = sizeof *a4;
		return 0;
	}
	if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
			goto refuse;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)o.port);
		g_addrlen = sizeof *a6;
		return 0;
	}
refuse:
	fprintf(stderr, "smtpload: refusing --host %s: only 127.0.0.0/8 and ::1 are allowed\n",
	        o.host);
	return -1;
}

static int build_message(void)
{
	char hdr[600];
	/* header length with fixed-width numbers */
	g_hdrlen =
	    snprintf(hdr, sizeof hdr,
	             "From: <%s>\r\nTo: <%s>\r\nSubject: smtpload message %010ld\r\n"
	             "Date: %s\r\nMessage-ID: <%010ld.%08x@smtpload.localhost>\r\n"
	             "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
	             o.from, o.to, 0L, g_date, 0L, 0u);
	if (g_hdrlen < 0 || (size_t)g_hdrlen >= sizeof hdr) {
		fprintf(stderr, "smtpload: --from/--to too long\n");
		return -1;
	}
	long body = o.size - g_hdrlen; /* CRLF-terminated lines, none starting with '.' */
	if (body < 3)
		body = 3;
	g_body = malloc((size_t)body + 3);
	if (!g_body)
		return -1;
	/* L lines of 1..76 characters + CRLF that add up to exactly `body` bytes */
	long lines = (body + 77) / 78, chars = body - 2 * lines;
	long base = chars / lines, extra = chars % lines;
	static const char alpha[] =
	    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	size_t n = 0;
	for (long i = 0; i < lines; i++) {
		long len = base + (i < extra);
		for (long j = 0; j < len; j++)
			g_body[n++] = alpha[(size_t)(i * 7 + j) % (sizeof alpha - 1)];
		g_body[n++] = '\r';
		g_body[n++] = '\n';
	}
	memcpy(g_body + n, ".\r\n", 3);
	g_bodylen = n + 3;
	return 0;
}

static int make_authcmd(void)
{
	const char *colon = strchr(o.auth, ':');
	if (!colon) {
		fprintf(stderr, "smtpload: --auth wants USER:PASS\n");
		return -1;
	}
	unsigned char raw[600];
	size_t ul = (size_t)(colon - o.auth), pl = strlen(colon + 1);
	if (ul + pl + 2 > sizeof raw) {
		fprintf(stderr, "smtpload: --auth too long\n");
		return -1;
	}
	raw[0] = 0;
	memcpy(raw + 1, o.auth, ul);
	raw[1 + ul] = 0;
	memcpy(raw + 2 + ul, colon + 1, pl);
	unsigned char b64[900];
	int bl = EVP_EncodeBlock(b64, raw, (int)(ul + pl + 2));
	snprintf(g_authcmd, sizeof g_authcmd, "AUTH PLAIN %.*s\r\n", bl, (char *)b64);
	return 0;
}

static int parse_args(int argc, char **argv)
{
	enum {
		O_HOST = 256,
		O_PORT,
		O_CONNS,
		O_MSGS,
		O_DURATION,
		O_SIZE,
		O_STARTTLS,
		O_TLS,
		O_PERCONN,
		O_FROM,
		O_TO,
		O_EHLO,
		O_AUTH,
		O_IDLE,
		O_IDLESECS,
		O_PIDS,
		O_PGREP,
		O_SETTLE,
		O_TIMEOUT,
		O_THREADS,
		O_SRC,
		O_MAXPERSRC,
		O_JSON,
		O_AUTHONLY,
		O_PROBE,
		O_PROBEINT,
		O_PROBEPORT,
		O_PROBEPERSESS,
		O_PROBESRC,
		O_PROBEONLY,
		O_HELP
	};
	static const struct option lo[] = {
	    {"host", 1, 0, O_HOST},
	    {"port", 1, 0, O_PORT},
	    {"conns", 1, 0, O_CONNS},
	    {"msgs", 1, 0, O_MSGS},
	    {"duration", 1, 0, O_DURATION},
	    {"size", 1, 0, O_SIZE},
	    {"starttls", 0, 0, O_STARTTLS},
	    {"tls", 0, 0, O_TLS},
	    {"per-conn", 1, 0, O_PERCONN},
	    {"from", 1, 0, O_FROM},
	    {"to", 1, 0, O_TO},
	    {"ehlo", 1, 0, O_EHLO},
	    {"auth", 1, 0, O_AUTH},
	    {"idle", 1, 0, O_IDLE},
	    {"idle-secs", 1, 0, O_IDLESECS},
	    {"server-pids", 1, 0, O_PIDS},
	    {"server-pgrep", 1, 0, O_PGREP},
	    {"cpu-settle", 1, 0, O_SETTLE},
	    {"timeout", 1, 0, O_TIMEOUT},
	    {"threads", 1, 0, O_THREADS},
	    {"src-addrs", 1, 0, O_SRC},
	    {"max-per-src", 1, 0, O_MAXPERSRC},
	    {"json", 0, 0, O_JSON},
	    {"auth-only", 0, 0, O_AUTHONLY},
	    {"probe-noop", 1, 0, O_PROBE},
	    {"probe-interval", 1, 0, O_PROBEINT},
	    {"probe-port", 1, 0, O_PROBEPORT},
	    {"probe-per-session", 1, 0, O_PROBEPERSESS},
	    {"probe-src", 1, 0, O_PROBESRC},
	    {"probe-only", 0, 0, O_PROBEONLY},
	    {"help", 0, 0, O_HELP},
	    {0, 0, 0, 0},
	};
	int ch;
	long v;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		const char *bad = NULL;
		switch (ch) {
		case O_HOST:
			o.host = optarg;
			break;
		case O_PORT:
			if (parse_long(optarg, 1, 65535, &v))
				bad = "--port";
			else
				o.port = (int)v;
			break;
		case O_CONNS:
			if (parse_long(optarg, 1, 100000, &v))
				bad = "--conns";
			else {
				o.conns = (int)v;
				o.conns_set = true;
			}
			break;
		case O_MSGS:
			if (parse_long(optarg, 1, 100000000, &v))
				bad = "--msgs";
			else
				o.msgs = v;
			break;
		case O_DURATION:
			if (parse_double(optarg, 0.1, 86400, &o.duration))
				bad = "--duration";
			break;
		case O_SIZE:
			if (parse_long(optarg, 1, 1L << 30, &v))
				bad = "--size";
			else
				o.size = v;
			break;
		case O_STARTTLS:
			o.starttls = true;
			break;
		case O_TLS:
			o.tls = true;
			break;
		case O_PERCONN:
			if (parse_long(optarg, 0, 100000000, &v))
				bad = "--per-conn";
			else
				o.per_conn = v;
			break;
		case O_FROM:
			o.from = optarg;
			break;
		case O_TO:
			o.to = optarg;
			break;
		case O_EHLO:
			o.ehlo = optarg;
			break;
		case O_AUTH:
			o.auth = optarg;
			break;
		case O_IDLE:
			if (parse_long(optarg, 1, 100000, &v))
				bad = "--idle";
			else
				o.idle = (int)v;
			break;
		case O_IDLESECS:
			if (parse_double(optarg, 0, 86400, &o.idle_secs))
				bad = "--idle-secs";
			break;
		case O_PIDS: {
			char *s = strdup(optarg), *save = NULL;
			for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				if (parse_long(t, 1, INT_MAX, &v) || o.npids == 64) {
					bad = "--server-pids";
					break;
				}
				o.pids[o.npids++] = (pid_t)v;
			}
			free(s);
			break;
		}
		case O_PGREP:
			o.pgrep = optarg;
			break;
		case O_SETTLE:
			if (parse_double(optarg, 0, 600, &o.settle))
				bad = "--cpu-settle";
			break;
		case O_TIMEOUT:
			if (parse_double(optarg, 0.1, 3600, &o.timeout))
				bad = "--timeout";
			break;
		case O_THREADS:
			if (parse_long(optarg, 1, 64, &v))
				bad = "--threads";
			else
				o.threads = (int)v;
			break;
		case O_SRC:
			if (parse_long(optarg, 1, 254, &v))
				bad = "--src-addrs";
			else
				o.src_addrs = (int)v;
			break;
		case O_MAXPERSRC:
			if (parse_long(optarg, 1, 100000, &v))
				bad = "--max-per-src";
			else
				o.max_per_src = (int)v;
			break;
		case O_JSON:
			o.json = true;
			break;
		case O_AUTHONLY:
			o.auth_only = true;
			break;
		case O_PROBE:
			if (parse_long(optarg, 1, 100000000, &v))
				bad = "--probe-noop";
			else
				o.probe_max = v;
			break;
		case O_PROBEINT:
			if (parse_double(optarg, 0, 60000, &o.probe_interval))
				bad = "--probe-interval";
			break;
		case O_PROBEPORT:
			if (parse_long(optarg, 1, 65535, &v))
				bad = "--probe-port";
			else
				o.probe_port = (int)v;
			break;
		case O_PROBEPERSESS:
			if (parse_long(optarg, 1, 100000000, &v))
				bad = "--probe-per-session";
			else
				o.probe_per_session = v;
			break;
		case O_PROBESRC:
			o.probe_src = optarg;
			break;
		case O_PROBEONLY:
			o.probe_only = true;
			break;
		case 'h':
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
		if (bad) {
			fprintf(stderr, "smtpload: bad value for %s: %s\n", bad, optarg);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "smtpload: unexpected argument %s\n", argv[optind]);
		return -1;
	}
	if (o.starttls && o.tls) {
		fprintf(stderr, "smtpload: --starttls and --tls exclude each other\n");
		return -1;
	}
	if (strpbrk(o.from, "\r\n<> ") || strpbrk(o.to, "\r\n<> ") || strpbrk(o.ehlo, "\r\n ")) {
		fprintf(stderr, "smtpload: --from/--to/--ehlo must be bare addresses/names\n");
		return -1;
	}
	if (o.auth_only && !o.auth) {
		fprintf(stderr, "smtpload: --auth-only needs --auth\n");
		return -1;
	}
	if (o.probe_only && !o.probe_max) {
		fprintf(stderr, "smtpload: --probe-only needs --probe-noop N\n");
		return -1;
	}
	if (o.probe_max && o.idle) {
		fprintf(stderr, "smtpload: --probe-noop does not combine with --idle\n");
		return -1;
	}
	if (!o.probe_port)
		o.probe_port = o.port;
	if (o.idle) {
		if (!o.tls)
			o.starttls = true;
		if (!o.conns_set)
			o.conns = 50;
		o.threads = 1;
	}
	if (o.threads > o.conns)
		o.threads = o.conns;
	if (o.max_per_src) {
		int slots = o.idle ? o.idle : o.conns;
		o.src_addrs = (slots + o.max_per_src - 1) / o.max_per_src;
		if (o.src_addrs > 254) {
			fprintf(stderr,
			        "smtpload: --max-per-src %d needs more than 254 addresses\n",
			        o.max_per_src);
			return -1;
		}
	}
	if (o.src_addrs > 1 && strchr(o.host, ':'))
		fprintf(stderr, "smtpload: ::1 has one source address, --src-addrs ignored\n");
	return 0;
}

/* ---------------------------------------------------------------- reporting */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
	if (n == 0)
		return NAN;
	size_t k = (size_t)ceil(p * (double)n);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1];
}

static void jnum(const char *key, double v, int prec)
{
	if (isnan(v))
		printf(",\"%s\":null", key);
	else
		printf(",\"%s\":%.*f", key, prec, v);
}

static void jstr(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void json_errors(void)
{
	printf(",\"errors\":{");
	for (int i = 0; i < E__N; i++)
		printf("%s\"%s\":%ld", i ? "," : "", errcat_name[i], g_err.count[i]);
	printf("},\"error_samples\":[");
	for (int i = 0; i < g_err.nsample; i++) {
		printf("%s{\"n\":%ld,\"text\":", i ? "," : "", g_err.sample[i].n);
		jstr(g_err.sample[i].text);
		putchar('}');
	}
	putchar(']');
}

static void text_errors(void)
{
	long total = 0;
	for (int i = 0; i < E__N; i++)
		total += g_err.count[i];
	if (!total) {
		printf("  errors      none\n");
		return;
	}
	printf("  errors     ");
	for (int i = 0; i < E__N; i++)
		if (g_err.count[i])
			printf(" %s %ld", errcat_name[i], g_err.count[i]);
	printf("\n");
	for (int i = 0; i < g_err.nsample; i++)
		printf("    %6ldx  %s\n", g_err.sample[i].n, g_err.sample[i].text);
}

static const char *tls_mode(void)
{
	return o.tls ? "tls" : o.starttls ? "starttls" : "plain";
}

static double cpu_ms_self(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec * 1e3 + (double)ru.ru_utime.tv_usec / 1e3 +
	       (double)ru.ru_stime.tv_sec * 1e3 + (double)ru.ru_stime.tv_usec / 1e3;
}

/* ---------------------------------------------------------------- NOOP probe */

/* One extra plain session on --probe-port, driven by its own thread with blocking I/O and
 * poll() deadlines: banner and EHLO before the load starts, then a NOOP every
 * --probe-interval ms until the load ends (or --probe-noop NOOPs were sent). The latency of
 * a NOOP runs from its send() to the end of its reply. The schedule is fixed-rate: the k-th
 * NOOP is due at start + k * interval; when a reply came later than the next due time, the
 * next NOOP goes at once and the schedule restarts from there (no catch-up burst). The
 * session is renewed (QUIT, new connection, banner, EHLO) every --probe-per-session NOOPs,
 * before the server's per-session command limit (sealmail: 10000 commands; Postfix: 100
 * junk commands, then 1 s pauses and a 421); the renewal is not a NOOP sample, its time is
 * reported apart (probe_reopen_max_ms). */

static struct {
	pthread_t th;
	atomic_int stop;  /* set when the load is over */
	atomic_int ready; /* 1: first session set up, -1: could not set one up */
	atomic_int done;  /* the probe thread has finished */
	double *lat;
	size_t n, cap;
	long failed;   /* NOOPs without a 250 within --timeout (or the session died) */
	long sessions; /* sessions set up */
	long setup_failed;
	double reopen_max_ms; /* slowest renewal: connect + banner + EHLO */
	double t_first, t_last;
	char err[200];
	struct sockaddr_storage addr;
	socklen_t addrlen;
	struct sockaddr_in src;
	bool bind_src;
} P;

static void probe_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void probe_err(const char *fmt, ...)
{
	if (P.err[0])
		return; /* keep the first */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(P.err, sizeof P.err, fmt, ap);
	va_end(ap);
	for (char *p = P.err; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
}

struct pconn {
	int fd;
	char in[4096];
	size_t inlen;
};

/* Waits for fd to be ready for ev until the absolute time `until`. 1 ready, 0 timeout. */
static int probe_wait(int fd, short ev, double until)
{
	for (;;) {
		double left = until - now();
		if (left <= 0)
			return 0;
		struct pollfd pf = {.fd = fd, .events = ev};
		int r = poll(&pf, 1, (int)(left * 1000) + 1);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

static int probe_send(struct pconn *pc, const char *s, double until)
{
	size_t n = strlen(s), off = 0;
	while (off < n) {
		ssize_t r = send(pc->fd, s + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (r > 0) {
			off += (size_t)r;
			continue;
		}
		if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (probe_wait(pc->fd, POLLOUT, until) <= 0)
				return -1;
			continue;
		}
		return -1;
	}
	return 0;
}

/* Reads one complete reply; returns its code, -1 on error/timeout (why in *why). */
static int probe_reply(struct pconn *pc, double until, const char **why)
{
	for (;;) {
		/* a complete reply: lines "DDD-..." then "DDD ..." */
		size_t pos = 0;
		while (pos < pc->inlen) {
			char *nl = memchr(pc->in + pos, '\n', pc->inlen - pos);
			if (!nl)
				break;
			const char *l = pc->in + pos;
			size_t len = (size_t)(nl - l);
			if (len < 3 || !isdigit((unsigned char)l[0]) ||
			    !isdigit((unsigned char)l[1]) || !isdigit((unsigned char)l[2])) {
				*why = "malformed reply";
				return -1;
			}
			pos += len + 1;
			if (len == 3 || l[3] != '-') {
				int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
				memmove(pc->in, pc->in + pos, pc->inlen - pos);
				pc->inlen -= pos;
				return code;
			}
		}
		if (pc->inlen == sizeof pc->in) {
			*why = "reply too long";
			return -1;
		}
		size_t room = sizeof pc->in - pc->inlen;
		ssize_t r = recv(pc->fd, pc->in + pc->inlen, room, MSG_DONTWAIT);
		if (r > 0) {
			pc->inlen += (size_t)r;
			continue;
		}
		if (r == 0) {
			*why = "connection closed by server";
			return -1;
		}
		if (errno != EAGAIN && errno != EINTR) {
			*why = strerror(errno);
			return -1;
		}
		int w = probe_wait(pc->fd, POLLIN, until);
		if (w <= 0) {
			*why = w == 0 ? "timeout" : strerror(errno);
			return -1;
		}
	}
}

static void probe_close(struct pconn *pc, bool quit)
{
	if (pc->fd < 0)
		return;
	if (quit && probe_send(pc, "QUIT\r\n", now() + 1) == 0) {
		const char *why;
		probe_reply(pc, now() + 1, &why);
	}
	close(pc->fd);
	pc->fd = -1;
	pc->inlen = 0;
}

/* connect, banner, EHLO. 0 = ready. */
static int probe_open(struct pconn *pc)
{
	pc->inlen = 0;
	pc->fd = socket(P.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (pc->fd < 0) {
		probe_err("probe socket: %s", strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(pc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (P.bind_src && bind(pc->fd, (struct sockaddr *)&P.src, sizeof P.src) < 0) {
		probe_err("probe bind %s: %s", o.probe_src, strerror(errno));
		goto fail;
	}
	double until = now() + o.timeout;
	if (connect(pc->fd, (struct sockaddr *)&P.addr, P.addrlen) < 0) {
		if (errno != EINPROGRESS) {
			probe_err("probe connect: %s", strerror(errno));
			goto fail;
		}
		if (probe_wait(pc->fd, POLLOUT, until) <= 0) {
			probe_err("probe connect: timeout");
			goto fail;
		}
		int err = 0;
		socklen_t el = sizeof err;
		getsockopt(pc->fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err) {
			probe_err("probe connect: %s", strerror(err));
			goto fail;
		}
	}
	const char *why = "";
	int code = probe_reply(pc, until, &why);
	if (code != 220) {
		probe_err("probe banner: %s", code < 0 ? why : "not 220");
		goto fail;
	}
	char ehlo[300];
	snprintf(ehlo, sizeof ehlo, "EHLO %s\r\n", o.ehlo);
	until = now() + o.timeout;
	if (probe_send(pc, ehlo, until) < 0 || (code = probe_reply(pc, until, &why)) != 250) {
		probe_err("probe EHLO: %s", code < 0 ? why : "not 250");
		goto fail;
	}
	P.sessions++;
	return 0;
fail:
	close(pc->fd);
	pc->fd = -1;
	return -1;
}

static void probe_record(double ms)
{
	if (P.n == P.cap) {
		size_t cap = P.cap ? P.cap * 2 : 4096;
		double *p = realloc(P.lat, cap * sizeof *p);
		if (!p)
			return;
		P.lat = p;
		P.cap = cap;
	}
	P.lat[P.n++] = ms;
}

/* Sleeps until `t` or until the probe is told to stop. false = stop. */
static bool probe_sleep_until(double t)
{
	for (;;) {
		if (atomic_load(&P.stop))
			return false;
		double left = t - now();
		if (left <= 0)
			return true;
		if (left > 0.05)
			left = 0.05;
		struct timespec ts = {0, (long)(left * 1e9)};
		nanosleep(&ts, NULL);
	}
}

static void *probe_main(void *arg)
{
	(void)arg;
	struct pconn pc = {.fd = -1};
	if (probe_open(&pc) < 0) {
		P.setup_failed++;
		atomic_store(&P.ready, -1);
		return NULL;
	}
	atomic_store(&P.ready, 1);
	double iv = o.probe_interval / 1000.0;
	double due = now();
	long on_session = 0;
	P.t_first = due;
	while ((long)P.n + P.failed < o.probe_max) {
		if (!probe_sleep_until(due))
			break;
		if (pc.fd < 0 || on_session >= o.probe_per_session) {
			probe_close(&pc, pc.fd >= 0);
			on_session = 0;
			double t_open = now();
			if (probe_open(&pc) < 0) {
				P.setup_failed++;
				due = now() + (iv > 0.1 ? iv : 0.1);
				continue;
			}
			due = now();
			if ((due - t_open) * 1000.0 > P.reopen_max_ms)
				P.reopen_max_ms = (due - t_open) * 1000.0;
		}
		double t = now();
		double until = t + o.timeout;
		const char *why = "";
		int code = -1;
		if (probe_send(&pc, "NOOP\r\n", until) < 0)
			why = "write failed";
		else
			code = probe_reply(&pc, until, &why);
		double t2 = now();
		on_session++;
		if (code == 250) {
			probe_record((t2 - t) * 1000.0);
		} else {
			P.failed++;
			if (code < 0)
				probe_err("probe NOOP: %s", why);
			else
				probe_err("probe NOOP: reply %d", code);
			probe_close(&pc, false);
		}
		P.t_last = t2;
		due += iv;
		if (due < t2)
			due = t2; /* late reply: next NOOP at once, no burst */
	}
	probe_close(&pc, true);
	atomic_store(&P.done, 1);
	return NULL;
}

/* Starts the probe thread and waits until its session is set up. 0 = ok. */
static int probe_start(void)
{
	memset(&P.addr, 0, sizeof P.addr);
	memcpy(&P.addr, &g_addr, g_addrlen);
	P.addrlen = g_addrlen;
	if (P.addr.ss_family == AF_INET)
		((struct sockaddr_in *)&P.addr)->sin_port = htons((uint16_t)o.probe_port);
	else
		((struct sockaddr_in6 *)&P.addr)->sin6_port = htons((uint16_t)o.probe_port);
	if (o.probe_src) {
		P.src.sin_family = AF_INET;
		if (P.addr.ss_family != AF_INET ||
		    inet_pton(AF_INET, o.probe_src, &P.src.sin_addr) != 1 ||
		    (ntohl(P.src.sin_addr.s_addr) >> 24) != 127) {
			fprintf(stderr, "smtpload: --probe-src wants 127.x.y.z (IPv4 target)\n");
			return -1;
		}
		P.bind_src = true;
	}
	if (pthread_create(&P.th, NULL, probe_main, NULL) != 0) {
		fprintf(stderr, "smtpload: cannot start the probe thread\n");
		return -1;
	}
	while (atomic_load(&P.ready) == 0) {
		struct timespec ts = {0, 2 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	if (atomic_load(&P.ready) < 0) {
		pthread_join(P.th, NULL);
		fprintf(stderr, "smtpload: %s\n", P.err);
		return -1;
	}
	return 0;
}

static void probe_finish(void)
{
	atomic_store(&P.stop, 1);
	pthread_join(P.th, NULL);
	qsort(P.lat, P.n, sizeof *P.lat, cmp_double);
}

static void probe_json(void)
{
	double sum = 0;
	for (size_t i = 0; i < P.n; i++)
		sum += P.lat[i];
	printf(",\"probe_port\":%d,\"probe_interval_ms\":%.1f,\"probe_per_session\":%ld,"
	       "\"probe_noops\":%zu,\"probe_failed\":%ld,\"probe_sessions\":%ld,"
	       "\"probe_setup_failed\":%ld",
	       o.probe_port, o.probe_interval, o.probe_per_session, P.n, P.failed, P.sessions,
	       P.setup_failed);
	jnum("probe_reopen_max_ms", P.sessions > 1 ? P.reopen_max_ms : NAN, 3);
	jnum("probe_span_s", P.t_last > P.t_first ? P.t_last - P.t_first : 0, 3);
	jnum("probe_p50_ms", pct(P.lat, P.n, 0.50), 3);
	jnum("probe_p90_ms", pct(P.lat, P.n, 0.90), 3);
	jnum("probe_p99_ms", pct(P.lat, P.n, 0.99), 3);
	jnum("probe_p999_ms", pct(P.lat, P.n, 0.999), 3);
	jnum("probe_max_ms", P.n ? P.lat[P.n - 1] : NAN, 3);
	jnum("probe_mean_ms", P.n ? sum / (double)P.n : NAN, 3);
	printf(",\"probe_error\":");
	jstr(P.err);
}

static void probe_text(void)
{
	printf("  NOOP probe  port %d every %.1f ms: %zu ok, %ld failed, %ld sessions\n",
	       o.probe_port, o.probe_interval, P.n, P.failed, P.sessions);
	printf("              p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms\n",
	       pct(P.lat, P.n, 0.50), pct(P.lat, P.n, 0.90), pct(P.lat, P.n, 0.99),
	       pct(P.lat, P.n, 0.999), P.n ? P.lat[P.n - 1] : NAN);
	if (P.sessions > 1)
		printf("              %ld renewals (every %ld NOOPs or after a failure), slowest "
		       "%.3f ms\n",
		       P.sessions - 1, o.probe_per_session, P.reopen_max_ms);
	if (P.err[0])
		printf("              first error: %s\n", P.err);
}

/* --probe-only: no load, the probe alone for --probe-noop NOOPs (bounded by --duration). */
static int run_probe_only(void)
{
	srv_settle(o.settle);
	struct srvsample s0, s1;
	srv_sample(&s0, false);
	if (probe_start() < 0)
		return 1;
	double t0 = now(), end = t0 + o.duration;
	while (!atomic_load(&P.done) && now() < end) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	probe_finish();
	srv_sample(&s1, false);
	double scpu = s0.ok && s1.ok ? ticks_ms(s1.ticks - s0.ticks) : NAN;
	if (o.json) {
		printf("{\"mode\":\"probe\",\"host\":");
		jstr(o.host);
		printf(",\"port\":%d", o.port);
		jnum("elapsed_s", now() - t0, 3);
		jnum("server_cpu_ms", scpu, 0);
		probe_json();
		printf("}\n");
	} else {
		printf("smtpload probe only %s:%d, up to %ld NOOPs, duration <= %.0f s\n", o.host,
		       o.probe_port, o.probe_max, o.duration);
		probe_text();
	}
	return P.n > 0 && P.failed == 0 && P.setup_failed == 0 ? 0 : 1;
}

/* ---------------------------------------------------------------- modes */

static struct worker *make_workers(int nthreads, int nconns)
{
	struct worker *w = calloc((size_t)nthreads, sizeof *w);
	if (!w)
		return NULL;
	for (int t = 0; t < nthreads; t++) {
		w[t].id = t;
		w[t].n = nconns / nthreads + (t < nconns % nthreads);
		w[t].live = w[t].n;
		w[t].c = calloc((size_t)w[t].n, sizeof *w[t].c);
		w[t].ep = epoll_create1(EPOLL_CLOEXEC);
		if (!w[t].c || w[t].ep < 0)
			return NULL;
		for (int i = 0; i < w[t].n; i++) {
			w[t].c[i].w = &w[t];
			w[t].c[i].fd = -1;
			w[t].c[i].slot = i * nthreads + t;
		}
	}
	return w;
}

static int run_load(void)
{
	struct worker *w = make_workers(o.threads, o.conns);
	if (!w) {
		fprintf(stderr, "smtpload: out of memory\n");
		return 2;
	}
	srv_settle(o.settle);
	if (o.probe_max && probe_start() < 0)
		return 1;
	struct srvsample s0, s1;
	srv_sample(&s0, false);
	double cpu0 = cpu_ms_self();
	g_t0 = now();
	g_t_end = g_t0 + o.duration;
	g_grace = o.timeout < 5 ? o.timeout : 5;
	for (int t = 1; t < o.threads; t++)
		pthread_create(&w[t].th, NULL, worker_load, &w[t]);
	worker_load(&w[0]);
	for (int t = 1; t < o.threads; t++)
		pthread_join(w[t].th, NULL);
	double t1 = now();
	if (o.probe_max)
		probe_finish();
	double cpu1 = cpu_ms_self();
	srv_settle(o.settle);
	srv_sample(&s1, true);

	size_t n = 0;
	double last_ok = g_t0;
	for (int t = 0; t < o.threads; t++) {
		n += w[t].nlat;
		if (w[t].last_ok > last_ok)
			last_ok = w[t].last_ok;
	}
	double *lat = malloc((n ? n : 1) * sizeof *lat);
	size_t k = 0;
	double sum = 0;
	for (int t = 0; t < o.threads; t++)
		for (size_t i = 0; i < w[t].nlat; i++) {
			lat[k++] = w[t].lat[i];
			sum += w[t].lat[i];
		}
	qsort(lat, n, sizeof *lat, cmp_double);
	long ok = atomic_load(&g_ok), failed = atomic_load(&g_failed);
	long unfinished = atomic_load(&g_unfinished);
	double span = last_ok - g_t0;
	double rate = ok > 0 && span > 0 ? (double)ok / span : 0;
	double p50 = pct(lat, n, 0.50), p99 = pct(lat, n, 0.99), mx = n ? lat[n - 1] : NAN;
	double mean = n ? sum / (double)n : NAN;
	double done = (double)(ok + failed);
	double ccpu = done > 0 ? (cpu1 - cpu0) / done : NAN;
	double scpu = NAN, scpu_msg = NAN;
	if (s0.ok && s1.ok) {
		scpu = ticks_ms(s1.ticks - s0.ticks);
		scpu_msg = ok > 0 ? scpu / (double)ok : NAN;
	}
	if (o.json) {
		printf("{\"mode\":\"load\",\"host\":");
		jstr(o.host);
		printf(",\"port\":%d,\"tls_mode\":\"%s\",\"conns\":%d,\"per_conn\":%ld,"
		       "\"size\":%ld,\"msgs_target\":%ld,\"duration_limit_s\":%.1f",
		       o.port, tls_mode(), o.conns, o.per_conn, o.size, o.msgs, o.duration);
		printf(",\"auth\":%s,\"auth_only\":%s", o.auth ? "true" : "false",
		       o.auth_only ? "true" : "false");
		printf(",\"ok\":%ld,\"failed\":%ld,\"unfinished\":%ld", ok, failed, unfinished);
		jnum("elapsed_s", t1 - g_t0, 3);
		jnum("msgs_per_s", rate, 1);
		jnum("lat_p50_ms", p50, 2);
		jnum("lat_p99_ms", p99, 2);
		jnum("lat_max_ms", mx, 2);
		jnum("lat_mean_ms", mean, 2);
		printf(",\"connections\":%ld,\"tls_handshakes\":%ld,\"tls\":",
		       atomic_load(&g_conns_opened), atomic_load(&g_handshakes));
		jstr(g_tlsinfo);
		jnum("client_cpu_ms_per_msg", ccpu, 3);
		printf(",\"server_procs\":%d", s1.nproc);
		jnum("server_cpu_ms", scpu, 0);
		jnum("server_cpu_ms_per_msg", scpu_msg, 3);
		jnum("server_rss_kib", s1.ok ? (double)s1.rss_kib : NAN, 0);
		jnum("server_pss_kib", s1.ok ? (double)s1.pss_kib : NAN, 0);
		if (o.probe_max)
			probe_json();
		json_errors();
		printf("}\n");
	} else {
		const char *auth = o.auth_only ? " + AUTH only (counts are logins)"
		                   : o.auth    ? " + AUTH"
		                               : "";
		printf("smtpload %s:%d %s%s, c=%d, per-conn %ld, ", o.host, o.port, tls_mode(),
		       auth, o.conns, o.per_conn);
		printf("%ld B, %ld msgs, duration <= %.0f s\n", o.size, o.msgs, o.duration);
		printf(
		    "  messages    ok %ld  failed %ld  unfinished %ld  in %.2f s  => %.1f msgs/s\n",
		    ok, failed, unfinished, t1 - g_t0, rate);
		printf("  latency     p50 %.2f ms  p99 %.2f ms  max %.2f ms  mean %.2f ms\n", p50,
		       p99, mx, mean);
		printf("  connections %ld opened, %ld TLS handshakes%s%s%s\n",
		       atomic_load(&g_conns_opened), atomic_load(&g_handshakes),
		       g_tlsinfo[0] ? " (" : "", g_tlsinfo, g_tlsinfo[0] ? ")" : "");
		printf("  client CPU  %.3f ms/msg\n", ccpu);
		if (s0.ok && s1.ok)
			printf(
			    "  server      %d procs, CPU %.0f ms = %.3f ms/msg, RSS %lld KiB, PSS "
			    "%lld KiB\n",
			    s1.nproc, scpu, scpu_msg, s1.rss_kib, s1.pss_kib);
		if (o.probe_max)
			probe_text();
		text_errors();
	}
	if (o.probe_max && (P.failed || P.setup_failed || P.n == 0))
		return 1;
	return ok > 0 && failed == 0 ? 0 : 1;
}

static int run_idle(void)
{
	g_idle_mode = true;
	struct worker *w = make_workers(1, o.idle);
	if (!w) {
		fprintf(stderr, "smtpload: out of memory\n");
		return 2;
	}
	srv_settle(o.settle);
	struct srvsample m0, m1;
	srv_sample(&m0, true);
	struct epoll_event ev[256];
	g_t0 = now();
	double setup_end = g_t0 + o.duration, last_scan = 0;
	int next = 0;
	while (w->ready + w->setup_failed < w->n && now() < setup_end) {
		while (w->opening < o.conns && next < w->n) {
			struct conn *c = &w->c[next++];
			w->opening++;
			conn_open(c);
		}
		int n = epoll_wait(w->ep, ev, 256, 20);
		if (n > 0)
			dispatch(w, ev, n);
		double t = now();
		if (t - last_scan >= 0.05) {
			last_scan = t;
			scan_timeouts(w, t);
		}
	}
	double t_ready = now();
	for (int i = 0; i < w->n; i++) { /* setup bound reached: drop the stragglers */
		struct conn *c = &w->c[i];
		if (c->fd >= 0 && c->step != S_IDLE)
			conn_fail(c, E_DEADLINE, "setup not finished within --duration (%s)",
			          step_name[c->step]);
	}
	int never = w->n - next;
	double hold_end = now() + o.idle_secs;
	while (now() < hold_end) {
		double left = (hold_end - now()) * 1000;
		int n = epoll_wait(w->ep, ev, 256, left > 100 ? 100 : (int)left + 1);
		if (n > 0)
			dispatch(w, ev, n);
	}
	srv_sample(&m1, true);
	int held = 0;
	for (int i = 0; i < w->n; i++)
		if (w->c[i].fd >= 0 && w->c[i].step == S_IDLE)
			held++;
	double t_hold = now();
	for (int i = 0; i < w->n; i++) {
		struct conn *c = &w->c[i];
		if (c->fd < 0)
			continue;
		send_cmd(c, S_QUIT, "QUIT\r\n");
		want(c, EPOLLIN | EPOLLOUT);
	}
	double quit_end = now() + (o.timeout < 5 ? o.timeout : 5);
	for (;;) {
		int open_n = 0;
		for (int i = 0; i < w->n; i++)
			open_n += w->c[i].fd >= 0;
		if (!open_n || now() >= quit_end)
			break;
		int n = epoll_wait(w->ep, ev, 256, 50);
		if (n > 0)
			dispatch(w, ev, n);
	}
	for (int i = 0; i < w->n; i++)
		if (w->c[i].fd >= 0)
			conn_close(&w->c[i]);
	srv_settle(o.settle);

	double setup_s = t_ready - g_t0;
	double rss_per = NAN, pss_per = NAN, cpu_ms = NAN, cpu_per = NAN;
	if (m0.ok && m1.ok) {
		if (held > 0) {
			rss_per = (double)(m1.rss_kib - m0.rss_kib) / held;
			pss_per = (double)(m1.pss_kib - m0.pss_kib) / held;
		}
		cpu_ms = ticks_ms(m1.ticks - m0.ticks);
		if (w->ready > 0)
			cpu_per = cpu_ms / w->ready;
	}
	if (o.json) {
		printf("{\"mode\":\"idle\",\"host\":");
		jstr(o.host);
		printf(",\"port\":%d,\"tls_mode\":\"%s\",\"sessions_target\":%d,"
		       "\"sessions_ready\":%d,\"sessions_failed\":%d,\"sessions_not_started\":%d,"
		       "\"sessions_dropped\":%d,\"sessions_held\":%d",
		       o.port, tls_mode(), w->n, w->ready, w->setup_failed, never, w->dropped,
		       held);
		jnum("setup_s", setup_s, 3);
		jnum("hold_s", t_hold - t_ready, 3);
		printf(",\"tls\":");
		jstr(g_tlsinfo);
		printf(",\"server_procs_before\":%d,\"server_procs_held\":%d", m0.nproc, m1.nproc);
		jnum("server_rss_before_kib", m0.ok ? (double)m0.rss_kib : NAN, 0);
		jnum("server_rss_held_kib", m1.ok ? (double)m1.rss_kib : NAN, 0);
		jnum("server_rss_per_session_kib", rss_per, 1);
		jnum("server_pss_before_kib", m0.ok ? (double)m0.pss_kib : NAN, 0);
		jnum("server_pss_held_kib", m1.ok ? (double)m1.pss_kib : NAN, 0);
		jnum("server_pss_per_session_kib", pss_per, 1);
		jnum("server_cpu_ms", cpu_ms, 0);
		jnum("server_cpu_ms_per_session", cpu_per, 3);
		json_errors();
		printf("}\n");
	} else {
		printf("smtpload idle %s:%d %s: %d sessions, %d at a time, hold %.0f s\n", o.host,
		       o.port, tls_mode(), w->n, o.conns, o.idle_secs);
		printf("  sessions    ready %d  failed %d  not started %d  dropped while held %d  "
		       "held at the end %d  (setup %.2f s%s%s)\n",
		       w->ready, w->setup_failed, never, w->dropped, held, setup_s,
		       g_tlsinfo[0] ? ", " : "", g_tlsinfo);
		if (m0.ok && m1.ok) {
			printf(
			    "  server RSS  before %lld KiB (%d procs), held %lld KiB (%d procs): "
			    "%.1f KiB/session\n",
			    m0.rss_kib, m0.nproc, m1.rss_kib, m1.nproc, rss_per);
			printf("  server PSS  before %lld KiB, held %lld KiB: %.1f KiB/session\n",
			       m0.pss_kib, m1.pss_kib, pss_per);
			printf("  server CPU  %.0f ms = %.3f ms/session (setup and hold)\n", cpu_ms,
			       cpu_per);
		}
		text_errors();
	}
	return w->ready == w->n && w->dropped == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (parse_args(argc, argv) < 0)
		return 2;
	if (set_target() < 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	time_t tt = time(NULL);
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(g_date, sizeof g_date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	if (build_message() < 0)
		return 2;
	if (o.auth && make_authcmd() < 0)
		return 2;
	if (o.tls || o.starttls) {
		g_ctx = SSL_CTX_new(TLS_client_method());
		if (!g_ctx) {
			fprintf(stderr, "smtpload: SSL_CTX_new: %s\n", ssl_errstr());
			return 2;
		}
		SSL_CTX_set_min_proto_version(g_ctx, TLS1_2_VERSION);
		SSL_CTX_set_verify(g_ctx, SSL_VERIFY_NONE, NULL); /* loopback, self-signed */
		SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_mode(g_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
		                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
		                            SSL_MODE_RELEASE_BUFFERS);
	}
	if ((o.npids || o.pgrep) && srv_init() < 0)
		return 2;
	if (o.probe_only)
		return run_probe_only();
	return o.idle ? run_idle() : run_load();
}
