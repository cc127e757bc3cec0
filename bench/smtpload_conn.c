/* smtpload_conn.c: the client side of the load, one connection at a time.
 *
 * Owns the message text (headers + generated body) and the AUTH PLAIN line, the TLS
 * context, the lockstep SMTP state machine of a connection (non-blocking, OpenSSL on the
 * raw fd) and the per-thread epoll workers that run load-mode slots. */
#include "smtpload.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

/* Every connection walks the same lockstep SMTP dialogue (no pipelining):
 *
 *   connect [TLS] banner EHLO [STARTTLS TLS EHLO] [AUTH PLAIN] { MAIL RCPT DATA body . }* QUIT
 *
 * Every wait has a per-step timeout (--timeout). */

/* ---------------------------------------------------------------- shared state */

atomic_long g_ok, g_failed, g_unfinished, g_conns_opened, g_handshakes;
static atomic_long g_claimed;
static atomic_int g_stop;
double g_t0, g_t_end, g_grace;
bool g_idle_mode;
static SSL_CTX *g_ctx;
static char *g_body; /* body lines + ".\r\n" terminator */
static size_t g_bodylen;
static char g_date[64];
static char g_authcmd[1200];
static pthread_mutex_t g_tlsinfo_mu = PTHREAD_MUTEX_INITIALIZER;
char g_tlsinfo[128];

const char *const step_name[] = {"free",        "connect", "TLS handshake", "banner", "EHLO",
                                        "STARTTLS",    "AUTH",    "MAIL",          "RCPT",   "DATA",
                                        "end of data", "idle",    "QUIT"};

/* ---------------------------------------------------------------- message and AUTH */

/* The header block of message msgno; numbers are fixed width, so its length does not
 * depend on them. Returns what snprintf returns. */
static int format_header(char *buf, size_t cap, long msgno, unsigned id)
{
	return snprintf(buf, cap,
	                "From: <%s>\r\nTo: <%s>\r\nSubject: smtpload message %010ld\r\n"
	                "Date: %s\r\nMessage-ID: <%010ld.%08x@smtpload.localhost>\r\n"
	                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
	                o.from, o.to, msgno, g_date, msgno, id);
}

/* The Date header and the body shared by all messages: --size minus the header length. */
int build_message(void)
{
	time_t tt = time(NULL);
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(g_date, sizeof g_date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	char hdr[600];
	int hdrlen = format_header(hdr, sizeof hdr, 0, 0);
	if (hdrlen < 0 || (size_t)hdrlen >= sizeof hdr) {
		fprintf(stderr, "smtpload: --from/--to too long\n");
		return -1;
	}
	long body = o.size - hdrlen; /* CRLF-terminated lines, none starting with '.' */
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

int make_authcmd(void)
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

/* ---------------------------------------------------------------- TLS */

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

int tls_init(void)
{
	g_ctx = SSL_CTX_new(TLS_client_method());
	if (!g_ctx) {
		fprintf(stderr, "smtpload: SSL_CTX_new: %s\n", ssl_errstr());
		return -1;
	}
	SSL_CTX_set_min_proto_version(g_ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(g_ctx, SSL_VERIFY_NONE, NULL); /* loopback, self-signed */
	SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_mode(g_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                            SSL_MODE_RELEASE_BUFFERS);
	return 0;
}

/* ---------------------------------------------------------------- connections */

void want(struct conn *c, uint32_t ev)
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
void conn_close(struct conn *c)
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
void conn_fail(struct conn *c, enum errcat cat, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verrf(cat, fmt, ap);
	va_end(ap);
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

/* Queues n bytes at p as the next command; its reply moves the connection to `next`. */
static void send_raw(struct conn *c, enum step next, const char *p, size_t n)
{
	queue1(c, p, n);
	c->step = next;
	set_deadline(c);
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
	send_raw(c, next, c->cmd, (size_t)n);
}

static void send_body(struct conn *c)
{
	int n = format_header(c->hdr, sizeof c->hdr, c->msgno, (unsigned)getpid());
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

/* After an SSL call of c that returned r <= 0: 0 = it would block (io_want set), -1 = error. */
static int ssl_blocked(struct conn *c, int r)
{
	int e = SSL_get_error(c->ssl, r);
	if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
		return -1;
	c->io_want = e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN;
	return 0;
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
			if (k <= 0)
				return ssl_blocked(c, k);
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
		return ssl_blocked(c, k);
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

/* Finds one complete reply ("DDD-..." lines, then "DDD ...") at the start of buf. Returns
 * its length (0 = incomplete, -1 = malformed) and its code. */
long reply_parse(const char *buf, size_t buflen, int *code)
{
	size_t pos = 0;
	int first = -1;
	while (pos < buflen) {
		const char *nl = memchr(buf + pos, '\n', buflen - pos);
		if (!nl)
			return 0;
		const char *l = buf + pos;
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

double quit_timeout(void)
{
	return o.timeout < 5 ? o.timeout : 5;
}

void send_quit(struct conn *c)
{
	send_cmd(c, S_QUIT, "QUIT\r\n");
	c->deadline = now() + quit_timeout();
}

/* The message in flight (with --auth-only: the login) got its final reply at t. */
static void msg_ok(struct conn *c, double t)
{
	lat_add(&c->w->lat, (t - c->t_msg) * 1000.0);
	c->w->last_ok = t;
	atomic_fetch_add(&g_ok, 1);
	c->in_msg = false;
	c->on_conn++;
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
			send_raw(c, S_AUTH, g_authcmd, strlen(g_authcmd));
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
			msg_ok(c, now());
			send_quit(c);
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
		msg_ok(c, t);
		if ((o.per_conn == 0 || c->on_conn < o.per_conn) && claim(c)) {
			c->in_msg = true;
			c->t_msg = t;
			send_cmd(c, S_MAIL, "MAIL FROM:<%s>\r\n", o.from);
		} else {
			send_quit(c);
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
			if (ssl_blocked(c, r) == 0) {
				want(c, c->io_want);
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
		long len = reply_parse(c->in, c->inlen, &code);
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

void conn_open(struct conn *c)
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

/* One epoll_wait of up to ms milliseconds, and the events it returns. */
void worker_poll(struct worker *w, int ms)
{
	struct epoll_event ev[256];
	int n = epoll_wait(w->ep, ev, 256, ms);
	if (n > 0)
		dispatch(w, ev, n);
}

void scan_timeouts(struct worker *w, double t)
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

void *worker_load(void *arg)
{
	struct worker *w = arg;
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
		worker_poll(w, 20);
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

struct worker *make_workers(int nthreads, int nconns)
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
