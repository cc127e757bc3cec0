/* smtpload_probe.c: the NOOP latency probe (--probe-noop, --probe-only).
 *
 * Owns the probe thread and its one plain session (blocking I/O with poll() deadlines),
 * its latency samples and their JSON/text report, and the --probe-only mode. It runs
 * beside the load of smtpload.c and shares nothing with it but the options and target. */
#include "smtpload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
	struct latbuf lat;
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
	scrub_ctl(P.err);
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
		int code = 0;
		long len = reply_parse(pc->in, pc->inlen, &code);
		if (len < 0) {
			*why = "malformed reply";
			return -1;
		}
		if (len > 0) {
			memmove(pc->in, pc->in + len, pc->inlen - (size_t)len);
			pc->inlen -= (size_t)len;
			return code;
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

/* Sleeps until `t` or until the probe is told to stop. false = stop. */
static bool probe_sleep_until(double t)
{
	for (;;) {
		if (atomic_load(&P.stop))
			return false;
		double left = t - now();
		if (left <= 0)
			return true;
		sleep_s(left > 0.05 ? 0.05 : left);
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
	while ((long)P.lat.n + P.failed < o.probe_max) {
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
			lat_add(&P.lat, (t2 - t) * 1000.0);
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
int probe_start(void)
{
	memset(&P.addr, 0, sizeof P.addr);
	memcpy(&P.addr, &g_addr, g_addrlen);
	P.addrlen = g_addrlen;
	addr_set_port(&P.addr, o.probe_port);
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
	while (atomic_load(&P.ready) == 0)
		sleep_s(0.002);
	if (atomic_load(&P.ready) < 0) {
		pthread_join(P.th, NULL);
		fprintf(stderr, "smtpload: %s\n", P.err);
		return -1;
	}
	return 0;
}

void probe_finish(void)
{
	atomic_store(&P.stop, 1);
	pthread_join(P.th, NULL);
	qsort(P.lat.v, P.lat.n, sizeof *P.lat.v, cmp_double);
}

/* The probe got samples and no NOOP or session set-up failed. */
bool probe_ok(void)
{
	return P.lat.n > 0 && P.failed == 0 && P.setup_failed == 0;
}

void probe_json(void)
{
	const double *v = P.lat.v;
	size_t n = P.lat.n;
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	printf(",\"probe_port\":%d,\"probe_interval_ms\":%.1f,\"probe_per_session\":%ld,"
	       "\"probe_noops\":%zu,\"probe_failed\":%ld,\"probe_sessions\":%ld,"
	       "\"probe_setup_failed\":%ld",
	       o.probe_port, o.probe_interval, o.probe_per_session, n, P.failed, P.sessions,
	       P.setup_failed);
	jnum("probe_reopen_max_ms", P.sessions > 1 ? P.reopen_max_ms : NAN, 3);
	jnum("probe_span_s", P.t_last > P.t_first ? P.t_last - P.t_first : 0, 3);
	jnum("probe_p50_ms", pct(v, n, 0.50), 3);
	jnum("probe_p90_ms", pct(v, n, 0.90), 3);
	jnum("probe_p99_ms", pct(v, n, 0.99), 3);
	jnum("probe_p999_ms", pct(v, n, 0.999), 3);
	jnum("probe_max_ms", n ? v[n - 1] : NAN, 3);
	jnum("probe_mean_ms", n ? sum / (double)n : NAN, 3);
	printf(",\"probe_error\":");
	jstr(P.err);
}

void probe_text(void)
{
	const double *v = P.lat.v;
	size_t n = P.lat.n;
	printf("  NOOP probe  port %d every %.1f ms: %zu ok, %ld failed, %ld sessions\n",
	       o.probe_port, o.probe_interval, n, P.failed, P.sessions);
	printf("              p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms\n",
	       pct(v, n, 0.50), pct(v, n, 0.90), pct(v, n, 0.99), pct(v, n, 0.999),
	       n ? v[n - 1] : NAN);
	if (P.sessions > 1)
		printf("              %ld renewals (every %ld NOOPs or after a failure), slowest "
		       "%.3f ms\n",
		       P.sessions - 1, o.probe_per_session, P.reopen_max_ms);
	if (P.err[0])
		printf("              first error: %s\n", P.err);
}

/* --probe-only: no load, the probe alone for --probe-noop NOOPs (bounded by --duration). */
int run_probe_only(void)
{
	srv_settle(o.settle);
	struct srvsample s0, s1;
	srv_sample(&s0, false);
	if (probe_start() < 0)
		return 1;
	double t0 = now(), end = t0 + o.duration;
	while (!atomic_load(&P.done) && now() < end)
		sleep_s(0.02);
	probe_finish();
	srv_sample(&s1, false);
	double scpu = s0.ok && s1.ok ? ticks_ms(s1.ticks - s0.ticks) : NAN;
	if (o.json) {
		json_begin("probe");
		jnum("elapsed_s", now() - t0, 3);
		jnum("server_cpu_ms", scpu, 0);
		probe_json();
		printf("}\n");
	} else {
		printf("smtpload probe only %s:%d, up to %ld NOOPs, duration <= %.0f s\n", o.host,
		       o.probe_port, o.probe_max, o.duration);
		probe_text();
	}
	return probe_ok() ? 0 : 1;
}
