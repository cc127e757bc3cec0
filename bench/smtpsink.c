/* smtpsink: a fast SMTP sink for sealmail's end-to-end benchmark. Loopback only, bounded.
 *
 * One thread, one epoll loop, non-blocking sockets, plain SMTP (no TLS). EHLO offers
 * PIPELINING, 8BITMIME, SIZE, DSN and ENHANCEDSTATUSCODES; MAIL, RCPT, DATA, RSET, NOOP,
 * HELO, VRFY, HELP and QUIT are understood. Input is handled strictly in order, so the
 * replies to a pipelined group come back in the order of its commands. Every message with at
 * least one recipient is accepted with a 250 and thrown away; the sink only counts them and
 * notes when the first and the last one arrived (the end of their DATA).
 *
 * --status FILE gets "count first_arrival last_arrival" (epoch seconds with microseconds,
 * 0 before the first message), written to FILE.tmp and renamed over FILE: at start, at most
 * every 100 ms while the count changes, and on exit. The run ends after --expect messages
 * (when given), after --timeout seconds, or on SIGINT/SIGTERM, whichever comes first.
 *
 * Bounds: command lines up to LINE_MAX_ bytes (longer ones get 500 and are skipped),
 * --max-conns connections (more are told 421 and closed), 10 bad commands per connection,
 * --idle-timeout seconds without input per connection, replies pending per connection at
 * most OUT_MAX_ bytes before the sink stops reading from it. Message bodies are not stored
 * at all: DATA is scanned for the terminating "." line and dropped. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_ 4096          /* one command line, CRLF included */
#define READ_CHUNK 16384        /* bytes read per wakeup and connection */
#define OUT_MAX_ (64 * 1024)    /* pending replies before reading stops */
#define MAX_ERRORS 10           /* bad commands before 421 */
#define MAX_RCPTS 1000          /* recipients per transaction */
#define STATUS_EVERY_MS 100

static struct {
	const char *addr;
	int port;
	const char *status;
	long expect;
	double timeout;
	int max_conns;
	double idle_timeout;
	long long max_size;
	const char *name;
	bool quiet;
} o = {
    .addr = "127.0.0.1",
    .port = 0,
    .status = NULL,
    .expect = 0,
    .timeout = 3600,
    .max_conns = 1000,
    .idle_timeout = 300,
    .max_size = 100LL * 1024 * 1024,
    .name = "sink.localhost",
    .quiet = false,
};

enum cstate { C_CMD, C_DATA, C_CLOSING };
/* DATA scanner: at the beginning of a line, after a "." there, after ".\r", mid-line */
enum dstate { D_BOL, D_DOT, D_DOTCR, D_MID };

struct conn {
	int fd;
	enum cstate st;
	enum dstate ds;
	bool helo, mail, skipping, reading;
	int rcpts, errors;
	double last_in;
	size_t inlen;
	char in[LINE_MAX_];
	char *out;
	size_t outlen, outoff, outcap;
};

static struct {
	int ep, lfd, sfd;
	struct conn **conns; /* by fd */
	int nfd;             /* size of conns */
	int open;
	unsigned long count, conns_total, refused, rejected_cmds;
	double first, last;
	bool dirty;
	double last_status;
	bool stop;
	int exit_code;
} G;

static double now_real(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: smtpsink --port N [options]    (listens on loopback only)\n"
	        "  --addr ADDR         listen address, 127.0.0.0/8 or ::1       [127.0.0.1]\n"
	        "  --port N            listen port (required)\n"
	        "  --status FILE       write \"count first_arrival last_arrival\" (epoch s) to\n"
	        "                      FILE atomically: at start, at most every 100 ms, at exit\n"
	        "  --expect N          exit after N messages                     [0 = no]\n"
	        "  --timeout S         exit after S seconds at the latest (1..86400) [3600]\n"
	        "  --max-conns N       open connections; more get 421              [1000]\n"
	        "  --idle-timeout S    close a connection idle for S seconds      [300]\n"
	        "  --max-size BYTES    SIZE advertised in EHLO and checked on MAIL  [104857600]\n"
	        "  --name NAME         host name in the banner and EHLO reply [sink.localhost]\n"
	        "  --quiet             no summary on stderr at exit\n"
	        "Exit status: 0 after --expect messages, after --timeout without --expect, or\n"
	        "on SIGINT/SIGTERM; 1 when --timeout ends the run before --expect; 2 usage or\n"
	        "setup error.\n");
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = (long)v;
	return true;
}

static bool parse_double(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		return false;
	*out = v;
	return true;
}

/* ---------------------------------------------------------------- status file */

static void write_status(void)
{
	if (!o.status)
		return;
	char tmp[4096], buf[128];
	int n = snprintf(tmp, sizeof tmp, "%s.tmp", o.status);
	if (n < 0 || (size_t)n >= sizeof tmp)
		return;
	int len = snprintf(buf, sizeof buf, "%lu %.6f %.6f\n", G.count, G.first, G.last);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "smtpsink: %s: %s\n", tmp, strerror(errno));
		return;
	}
	bool ok = write(fd, buf, (size_t)len) == len;
	if (close(fd) != 0)
		ok = false;
	if (!ok || rename(tmp, o.status) != 0) {
		fprintf(stderr, "smtpsink: writing %s failed: %s\n", o.status, strerror(errno));
		unlink(tmp);
		return;
	}
	G.dirty = false;
	G.last_status = now_mono();
}

/* ---------------------------------------------------------------- connections */

static void conn_close(struct conn *c)
{
	epoll_ctl(G.ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	G.conns[c->fd] = NULL;
	G.open--;
	free(c->out);
	free(c);
}

static void conn_events(struct conn *c)
{
	uint32_t ev = 0;
	c->reading = c->st != C_CLOSING && c->outlen - c->outoff < OUT_MAX_;
	if (c->reading)
		ev |= EPOLLIN;
	if (c->outlen > c->outoff)
		ev |= EPOLLOUT;
	struct epoll_event e = {.events = ev, .data.fd = c->fd};
	epoll_ctl(G.ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void reply(struct conn *c, const char *s)
{
	size_t n = strlen(s);
	if (c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	if (c->outlen + n > c->outcap) {
		size_t cap = c->outcap ? c->outcap : 512;
		while (cap < c->outlen + n)
			cap *= 2;
		char *p = realloc(c->out, cap);
		if (!p) {
			c->st = C_CLOSING;
			return;
		}
		c->out = p;
		c->outcap = cap;
	}
	memcpy(c->out + c->outlen, s, n);
	c->outlen += n;
}

/* Writes what it can; returns false when the connection is gone. */
static bool flush_out(struct conn *c)
{
	while (c->outoff < c->outlen) {
		ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
		if (w > 0) {
			c->outoff += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		conn_close(c);
		return false;
	}
	if (c->outoff == c->outlen) {
		c->outoff = c->outlen = 0;
		if (c->st == C_CLOSING) {
			conn_close(c);
			return false;
		}
	}
	conn_events(c);
	return true;
}

static void bad(struct conn *c, const char *msg)
{
	G.rejected_cmds++;
	if (++c->errors >= MAX_ERRORS) {
		reply(c, "421 4.7.0 Too many errors, closing\r\n");
		c->st = C_CLOSING;
		return;
	}
	reply(c, msg);
}

static void reset_tx(struct conn *c)
{
	c->mail = false;
	c->rcpts = 0;
}

static void message_done(struct conn *c)
{
	double t = now_real();
	G.count++;
	if (G.count == 1)
		G.first = t;
	G.last = t;
	G.dirty = true;
	char buf[80];
	snprintf(buf, sizeof buf, "250 2.0.0 Ok: queued as S%08lX\r\n", G.count);
	reply(c, buf);
	reset_tx(c);
	c->st = C_CMD;
	if (o.expect > 0 && (long)G.count >= o.expect)
		G.stop = true;
}

/* verb match: "MAIL" followed by space, end, or ':' handled by callers */
static bool verb(const char *line, size_t len, const char *v)
{
	size_t n = strlen(v);
	if (len < n || strncasecmp(line, v, n) != 0)
		return false;
	return len == n || line[n] == ' ';
}

/* the SIZE= parameter of MAIL, -1 when absent */
static long long size_param(const char *line)
{
	const char *p = line;
	while ((p = strchr(p, ' ')) != NULL) {
		p++;
		if (strncasecmp(p, "SIZE=", 5) == 0) {
			char *end;
			errno = 0;
			long long v = strtoll(p + 5, &end, 10);
			if (errno || end == p + 5)
				return -1;
			return v;
		}
	}
	return -1;
}

static void command(struct conn *c, char *line, size_t len)
{
	/* strip CRLF / LF */
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	line[len] = '\0';
	if (len == 0) {
		bad(c, "500 5.5.2 Error: bad syntax\r\n");
		return;
	}
	if (verb(line, len, "EHLO")) {
		if (len < 6) {
			bad(c, "501 5.5.4 Syntax: EHLO hostname\r\n");
			return;
		}
		reset_tx(c);
		c->helo = true;
		char buf[512];
		snprintf(buf, sizeof buf,
		         "250-%s\r\n250-PIPELINING\r\n250-SIZE %lld\r\n250-8BITMIME\r\n"
		         "250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n",
		         o.name, o.max_size);
		reply(c, buf);
	} else if (verb(line, len, "HELO")) {
		if (len < 6) {
			bad(c, "501 5.5.4 Syntax: HELO hostname\r\n");
			return;
		}
		reset_tx(c);
		c->helo = true;
		char buf[300];
		snprintf(buf, sizeof buf, "250 %s\r\n", o.name);
		reply(c, buf);
	} else if (len >= 10 && strncasecmp(line, "MAIL FROM:", 10) == 0) {
		if (!c->helo)
			bad(c, "503 5.5.1 Error: send HELO/EHLO first\r\n");
		else if (c->mail)
			bad(c, "503 5.5.1 Error: nested MAIL command\r\n");
		else if (size_param(line) > o.max_size)
			reply(c, "552 5.3.4 Message size exceeds fixed limit\r\n");
		else {
			c->mail = true;
			c->rcpts = 0;
			reply(c, "250 2.1.0 Ok\r\n");
		}
	} else if (len >= 8 && strncasecmp(line, "RCPT TO:", 8) == 0) {
		if (!c->mail)
			bad(c, "503 5.5.1 Error: need MAIL command\r\n");
		else if (c->rcpts >= MAX_RCPTS)
			reply(c, "452 4.5.3 Error: too many recipients\r\n");
		else {
			c->rcpts++;
			reply(c, "250 2.1.5 Ok\r\n");
		}
	} else if (verb(line, len, "DATA")) {
		if (len != 4)
			bad(c, "501 5.5.4 Syntax: DATA\r\n");
		else if (!c->mail)
			bad(c, "503 5.5.1 Error: need MAIL command\r\n");
		else if (c->rcpts == 0)
			bad(c, "554 5.5.1 Error: no valid recipients\r\n");
		else {
			c->st = C_DATA;
			c->ds = D_BOL;
			reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
		}
	} else if (verb(line, len, "RSET")) {
		reset_tx(c);
		reply(c, "250 2.0.0 Ok\r\n");
	} else if (verb(line, len, "NOOP")) {
		reply(c, "250 2.0.0 Ok\r\n");
	} else if (verb(line, len, "QUIT")) {
		reply(c, "221 2.0.0 Bye\r\n");
		c->st = C_CLOSING;
	} else if (verb(line, len, "VRFY")) {
		reply(c, "252 2.0.0 Send some mail, I'll try my best\r\n");
	} else if (verb(line, len, "HELP")) {
		reply(c, "214 2.0.0 smtpsink: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY QUIT\r\n");
	} else {
		bad(c, "502 5.5.2 Error: command not recognized\r\n");
	}
}

/* Scans DATA input; returns the bytes consumed (up to and including the "." line). */
static size_t scan_data(struct conn *c, const char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		switch (c->ds) {
		case D_MID: {
			const char *nl = memchr(p + i, '\n', n - i);
			if (!nl)
				return n;
			i = (size_t)(nl - p) + 1;
			c->ds = D_BOL;
			break;
		}
		case D_BOL:
			c->ds = p[i] == '.' ? D_DOT : p[i] == '\n' ? D_BOL : D_MID;
			i++;
			break;
		case D_DOT:
			if (p[i] == '\r')
				c->ds = D_DOTCR;
			else if (p[i] == '\n') {
				message_done(c);
				return i + 1;
			} else
				c->ds = D_MID;
			i++;
			break;
		case D_DOTCR:
			if (p[i] == '\n') {
				message_done(c);
				return i + 1;
			}
			c->ds = D_MID;
			i++;
			break;
		}
	}
	return n;
}

/* Handles one chunk of input in order: commands, DATA, the next commands. */
static void input(struct conn *c, const char *p, size_t n)
{
	size_t i = 0;
	while (i < n && c->st != C_CLOSING && !G.stop) {
		if (c->st == C_DATA) {
			i += scan_data(c, p + i, n - i);
			continue;
		}
		const char *nl = memchr(p + i, '\n', n - i);
		size_t take = nl ? (size_t)(nl - (p + i)) + 1 : n - i;
		if (c->skipping) {
			/* the rest of an overlong line: drop it, answer at its end */
			if (nl) {
				c->skipping = false;
				bad(c, "500 5.5.2 Error: line too long\r\n");
			}
			i += take;
			continue;
		}
		if (c->inlen + take > LINE_MAX_ - 1) {
			c->inlen = 0;
			if (nl)
				bad(c, "500 5.5.2 Error: line too long\r\n");
			else
				c->skipping = true;
			i += take;
			continue;
		}
		memcpy(c->in + c->inlen, p + i, take);
		c->inlen += take;
		i += take;
		if (nl) {
			size_t len = c->inlen;
			c->inlen = 0;
			command(c, c->in, len);
		}
	}
}

static void on_read(struct conn *c)
{
	static char buf[READ_CHUNK];
	ssize_t r = recv(c->fd, buf, sizeof buf, 0);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (r <= 0) {
		conn_close(c);
		return;
	}
	c->last_in = now_mono();
	input(c, buf, (size_t)r);
	flush_out(c);
}

static void on_accept(void)
{
	for (int k = 0; k < 64; k++) {
		int fd = accept4(G.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				fprintf(stderr, "smtpsink: accept: %s\n", strerror(errno));
			return;
		}
		if (G.open >= o.max_conns || fd >= G.nfd) {
			static const char msg[] = "421 4.7.0 Too many connections\r\n";
			ssize_t w = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL);
			(void)w;
			close(fd);
			G.refused++;
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct conn *c = calloc(1, sizeof *c);
		if (!c) {
			close(fd);
			G.refused++;
			continue;
		}
		c->fd = fd;
		c->st = C_CMD;
		c->last_in = now_mono();
		G.conns[fd] = c;
		G.open++;
		G.conns_total++;
		struct epoll_event e = {.events = EPOLLIN, .data.fd = fd};
		if (epoll_ctl(G.ep, EPOLL_CTL_ADD, fd, &e) != 0) {
			G.conns[fd] = NULL;
			G.open--;
			close(fd);
			free(c);
			continue;
		}
		char banner[300];
		snprintf(banner, sizeof banner, "220 %s ESMTP smtpsink\r\n", o.name);
		reply(c, banner);
		flush_out(c);
	}
}

static void sweep_idle(double t)
{
	for (int fd = 0; fd < G.nfd; fd++) {
		struct conn *c = G.conns[fd];
		if (c && t - c->last_in > o.idle_timeout) {
			if (c->st != C_CLOSING) {
				reply(c, "421 4.4.2 Idle timeout, closing\r\n");
				c->st = C_CLOSING;
			}
			flush_out(c);
			/* a client that does not read: drop it outright */
			if (G.conns[fd] == c && t - c->last_in > o.idle_timeout + 10)
				conn_close(c);
		}
	}
}

/* ---------------------------------------------------------------- setup */

static int listen_on(void)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, o.addr, &s4->sin_addr) == 1) {
		if ((ntohl(s4->sin_addr.s_addr) >> 24) != 127) {
			fprintf(stderr, "smtpsink: %s is not a loopback address\n", o.addr);
			return -1;
		}
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)o.port);
		sl = sizeof *s4;
	} else if (inet_pton(AF_INET6, o.addr, &s6->sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr)) {
			fprintf(stderr, "smtpsink: %s is not a loopback address\n", o.addr);
			return -1;
		}
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)o.port);
		sl = sizeof *s6;
	} else {
		fprintf(stderr, "smtpsink: --addr %s: not a numeric address\n", o.addr);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("smtpsink: socket");
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 1024) != 0) {
		fprintf(stderr, "smtpsink: %s port %d: %s\n", o.addr, o.port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	enum { O_ADDR = 1, O_PORT, O_STATUS, O_EXPECT, O_TIMEOUT, O_MAXC, O_IDLE, O_SIZE,
	       O_NAME, O_QUIET, O_HELP };
	static const struct option lo[] = {
	    {"addr", 1, 0, O_ADDR},        {"port", 1, 0, O_PORT},
	    {"status", 1, 0, O_STATUS},    {"expect", 1, 0, O_EXPECT},
	    {"timeout", 1, 0, O_TIMEOUT},  {"max-conns", 1, 0, O_MAXC},
	    {"idle-timeout", 1, 0, O_IDLE}, {"max-size", 1, 0, O_SIZE},
	    {"name", 1, 0, O_NAME},        {"quiet", 0, 0, O_QUIET},
	    {"help", 0, 0, O_HELP},        {0, 0, 0, 0},
	};
	int opt;
	const char *bad_opt = NULL;
	long v;
	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (opt) {
		case O_ADDR: o.addr = optarg; break;
		case O_PORT:
			if (parse_long(optarg, 1, 65535, &v))
				o.port = (int)v;
			else
				bad_opt = "--port";
			break;
		case O_STATUS: o.status = optarg; break;
		case O_EXPECT:
			if (!parse_long(optarg, 0, 1000000000L, &o.expect))
				bad_opt = "--expect";
			break;
		case O_TIMEOUT:
			if (!parse_double(optarg, 0.1, 86400, &o.timeout))
				bad_opt = "--timeout";
			break;
		case O_MAXC:
			if (parse_long(optarg, 1, 100000, &v))
				o.max_conns = (int)v;
			else
				bad_opt = "--max-conns";
			break;
		case O_IDLE:
			if (!parse_double(optarg, 1, 86400, &o.idle_timeout))
				bad_opt = "--idle-timeout";
			break;
		case O_SIZE:
			if (parse_long(optarg, 1024, 1L << 40, &v))
				o.max_size = v;
			else
				bad_opt = "--max-size";
			break;
		case O_NAME:
			if (strlen(optarg) == 0 || strlen(optarg) > 255 || strpbrk(optarg, " \r\n"))
				bad_opt = "--name";
			else
				o.name = optarg;
			break;
		case O_QUIET: o.quiet = true; break;
		case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (bad_opt || optind != argc || o.port == 0) {
		if (bad_opt)
			fprintf(stderr, "smtpsink: bad value for %s\n", bad_opt);
		else if (o.port == 0)
			fprintf(stderr, "smtpsink: --port is required\n");
		usage(stderr);
		return 2;
	}

	/* room for --max-conns descriptors */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)o.max_conns + 64) {
		rl.rlim_cur = rl.rlim_max < (rlim_t)o.max_conns + 64 ? rl.rlim_max
		                                                      : (rlim_t)o.max_conns + 64;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	G.nfd = o.max_conns + 64;
	G.conns = calloc((size_t)G.nfd, sizeof *G.conns);
	G.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!G.conns || G.ep < 0) {
		fprintf(stderr, "smtpsink: setup failed\n");
		return 2;
	}
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGTERM);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	signal(SIGPIPE, SIG_IGN);
	G.sfd = signalfd(-1, &ss, SFD_NONBLOCK | SFD_CLOEXEC);
	G.lfd = listen_on();
	if (G.lfd < 0 || G.sfd < 0)
		return 2;
	struct epoll_event e = {.events = EPOLLIN, .data.fd = G.lfd};
	epoll_ctl(G.ep, EPOLL_CTL_ADD, G.lfd, &e);
	e.data.fd = G.sfd;
	epoll_ctl(G.ep, EPOLL_CTL_ADD, G.sfd, &e);
	write_status();

	double t0 = now_mono(), end = t0 + o.timeout, last_sweep = t0;
	bool timed_out = false;
	struct epoll_event evs[256];
	while (!G.stop) {
		double t = now_mono();
		if (t >= end) {
			timed_out = true;
			break;
		}
		double wait = end - t;
		if (wait > 1.0)
			wait = 1.0;
		if (G.dirty) {
			double due = G.last_status + STATUS_EVERY_MS / 1000.0 - t;
			if (due < wait)
				wait = due < 0 ? 0 : due;
		}
		int n = epoll_wait(G.ep, evs, 256, (int)(wait * 1000.0 + 0.999));
		if (n < 0 && errno != EINTR) {
			perror("smtpsink: epoll_wait");
			G.exit_code = 2;
			break;
		}
		for (int k = 0; k < n && !G.stop; k++) {
			int fd = evs[k].data.fd;
			if (fd == G.lfd) {
				on_accept();
				continue;
			}
			if (fd == G.sfd) {
				struct signalfd_siginfo si;
				while (read(G.sfd, &si, sizeof si) == (ssize_t)sizeof si)
					G.stop = true;
				continue;
			}
			struct conn *c = fd < G.nfd ? G.conns[fd] : NULL;
			if (!c)
				continue;
			if (evs[k].events & EPOLLOUT) {
				if (!flush_out(c))
					continue;
			}
			if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
				if (c->reading || (evs[k].events & (EPOLLHUP | EPOLLERR)))
					on_read(c);
			}
		}
		t = now_mono();
		if (G.dirty && t - G.last_status >= STATUS_EVERY_MS / 1000.0)
			write_status();
		if (t - last_sweep >= 1.0) {
			sweep_idle(t);
			last_sweep = t;
		}
	}
	/* last replies (the 250 of the message that reached --expect), best effort */
	for (int fd = 0; fd < G.nfd; fd++)
		if (G.conns[fd] && G.conns[fd]->outlen > G.conns[fd]->outoff)
			flush_out(G.conns[fd]);
	write_status();
	if (!o.quiet)
		fprintf(stderr,
		        "smtpsink: %lu messages, %lu connections (%lu refused), %lu bad commands, "
		        "first %.6f last %.6f%s\n",
		        G.count, G.conns_total, G.refused, G.rejected_cmds, G.first, G.last,
		        timed_out ? " (timeout)" : "");
	if (G.exit_code)
		return G.exit_code;
	if (timed_out && o.expect > 0 && (long)G.count < o.expect)
		return 1;
	return 0;
}
