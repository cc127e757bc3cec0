/* smtpload: sealmail's SMTP load generator. Bounded runs against a loopback server only.
 *
 * This file owns the command line (options, usage, checks), the error tally, the shared
 * helpers for JSON and text reports, the load mode (run_load and its report) and main.
 * See smtpload.h for how the other smtpload_*.c files divide the rest. */
#include "smtpload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- options */

struct options o = {
    .host = "127.0.0.1",
    .port = 25,
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

/* One option of the command line: its value goes to *dst, numbers within [lo, hi]. */
enum okind { K_STR, K_FLAG, K_INT, K_LONG, K_DOUBLE, K_PIDS, K_HELP };
static const struct optdef {
	const char *name;
	enum okind kind;
	double lo, hi;
	void *dst;
} optdefs[] = {
    {"host", K_STR, 0, 0, &o.host},
    {"port", K_INT, 1, 65535, &o.port},
    {"conns", K_INT, 1, 100000, &o.conns},
    {"msgs", K_LONG, 1, 100000000, &o.msgs},
    {"duration", K_DOUBLE, 0.1, 86400, &o.duration},
    {"size", K_LONG, 1, 1L << 30, &o.size},
    {"starttls", K_FLAG, 0, 0, &o.starttls},
    {"tls", K_FLAG, 0, 0, &o.tls},
    {"per-conn", K_LONG, 0, 100000000, &o.per_conn},
    {"from", K_STR, 0, 0, &o.from},
    {"to", K_STR, 0, 0, &o.to},
    {"ehlo", K_STR, 0, 0, &o.ehlo},
    {"auth", K_STR, 0, 0, &o.auth},
    {"idle", K_INT, 1, 100000, &o.idle},
    {"idle-secs", K_DOUBLE, 0, 86400, &o.idle_secs},
    {"server-pids", K_PIDS, 1, INT_MAX, NULL},
    {"server-pgrep", K_STR, 0, 0, &o.pgrep},
    {"cpu-settle", K_DOUBLE, 0, 600, &o.settle},
    {"timeout", K_DOUBLE, 0.1, 3600, &o.timeout},
    {"threads", K_INT, 1, 64, &o.threads},
    {"src-addrs", K_INT, 1, 254, &o.src_addrs},
    {"max-per-src", K_INT, 1, 100000, &o.max_per_src},
    {"json", K_FLAG, 0, 0, &o.json},
    {"auth-only", K_FLAG, 0, 0, &o.auth_only},
    {"probe-noop", K_LONG, 1, 100000000, &o.probe_max},
    {"probe-interval", K_DOUBLE, 0, 60000, &o.probe_interval},
    {"probe-port", K_INT, 1, 65535, &o.probe_port},
    {"probe-per-session", K_LONG, 1, 100000000, &o.probe_per_session},
    {"probe-src", K_STR, 0, 0, &o.probe_src},
    {"probe-only", K_FLAG, 0, 0, &o.probe_only},
    {"help", K_HELP, 0, 0, NULL},
};
#define NOPTDEFS (sizeof optdefs / sizeof *optdefs)

/* A decimal number (an integer if `integer`) within [lo, hi]. 0 = ok. */
static int parse_num(const char *s, bool integer, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = integer ? (double)strtol(s, &end, 10) : strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		return -1;
	*out = v;
	return 0;
}

/* Stores the value of one option. 0 = ok, -1 = bad value. */
static int set_option(const struct optdef *d, const char *arg)
{
	double v;
	switch (d->kind) {
	case K_STR:
		*(const char **)d->dst = arg;
		return 0;
	case K_FLAG:
		*(bool *)d->dst = true;
		return 0;
	case K_PIDS: {
		char *s = strdup(arg), *save = NULL;
		int rc = s ? 0 : -1;
		for (char *t = s ? strtok_r(s, ",", &save) : NULL; t;
		     t = strtok_r(NULL, ",", &save)) {
			if (parse_num(t, true, d->lo, d->hi, &v) || o.npids == 64) {
				rc = -1;
				break;
			}
			o.pids[o.npids++] = (pid_t)v;
		}
		free(s);
		return rc;
	}
	case K_HELP:
		usage(stdout);
		exit(0);
	default:
		break;
	}
	if (parse_num(arg, d->kind != K_DOUBLE, d->lo, d->hi, &v))
		return -1;
	if (d->kind == K_INT)
		*(int *)d->dst = (int)v;
	else if (d->kind == K_LONG)
		*(long *)d->dst = (long)v;
	else
		*(double *)d->dst = v;
	return 0;
}

static int parse_args(int argc, char **argv)
{
	static struct option lo[NOPTDEFS + 1];
	for (size_t i = 0; i < NOPTDEFS; i++)
		lo[i] = (struct option){optdefs[i].name,
		                        optdefs[i].kind != K_FLAG && optdefs[i].kind != K_HELP, 0,
		                        256 + (int)i};
	int ch;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		if (ch == 'h')
			ch = 256 + (int)NOPTDEFS - 1; /* --help */
		if (ch < 256 || ch >= 256 + (int)NOPTDEFS) {
			usage(stderr);
			return -1;
		}
		const struct optdef *d = &optdefs[ch - 256];
		if (set_option(d, optarg) < 0) {
			fprintf(stderr, "smtpload: bad value for --%s: %s\n", d->name, optarg);
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
	if (!o.conns)
		o.conns = o.idle ? 50 : 1;
	if (o.idle) {
		if (!o.tls)
			o.starttls = true;
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

/* ---------------------------------------------------------------- target */

struct sockaddr_storage g_addr;
socklen_t g_addrlen;

void addr_set_port(struct sockaddr_storage *a, int port)
{
	if (a->ss_family == AF_INET)
		((struct sockaddr_in *)a)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)a)->sin6_port = htons((uint16_t)port);
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
		g_addrlen = sizeof *a4;
	} else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
			goto refuse;
		a6->sin6_family = AF_INET6;
		g_addrlen = sizeof *a6;
	} else {
		goto refuse;
	}
	addr_set_port(&g_addr, o.port);
	return 0;
refuse:
	fprintf(stderr, "smtpload: refusing --host %s: only 127.0.0.0/8 and ::1 are allowed\n",
	        o.host);
	return -1;
}

/* ---------------------------------------------------------------- errors */

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

void scrub_ctl(char *s)
{
	for (char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
}

/* Counts an error of category cat; keeps the first NSAMPLES distinct texts. */
void verrf(enum errcat cat, const char *fmt, va_list ap)
{
	char buf[200];
	vsnprintf(buf, sizeof buf, fmt, ap);
	scrub_ctl(buf);
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

void errf(enum errcat cat, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verrf(cat, fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- helpers */

double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

void lat_add(struct latbuf *l, double ms)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 1024;
		double *p = realloc(l->v, cap * sizeof *p);
		if (!p)
			return;
		l->v = p;
		l->cap = cap;
	}
	l->v[l->n++] = ms;
}

/* ---------------------------------------------------------------- reporting */

int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

double pct(const double *v, size_t n, double p)
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

void jnum(const char *key, double v, int prec)
{
	if (isnan(v))
		printf(",\"%s\":null", key);
	else
		printf(",\"%s\":%.*f", key, prec, v);
}

void jstr(const char *s)
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

void json_begin(const char *mode)
{
	printf("{\"mode\":\"%s\",\"host\":", mode);
	jstr(o.host);
	printf(",\"port\":%d", o.port);
}

void json_errors(void)
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

void text_errors(void)
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

const char *tls_mode(void)
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

/* ---------------------------------------------------------------- load mode */

/* A run ends when --msgs messages are done or --duration seconds have passed (then
 * in-flight messages get a short grace, then are cut). */
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
	g_grace = quit_timeout();
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
		n += w[t].lat.n;
		if (w[t].last_ok > last_ok)
			last_ok = w[t].last_ok;
	}
	double *lat = malloc((n ? n : 1) * sizeof *lat);
	size_t k = 0;
	double sum = 0;
	for (int t = 0; t < o.threads; t++)
		for (size_t i = 0; i < w[t].lat.n; i++) {
			lat[k++] = w[t].lat.v[i];
			sum += w[t].lat.v[i];
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
		json_begin("load");
		printf(",\"tls_mode\":\"%s\",\"conns\":%d,\"per_conn\":%ld,"
		       "\"size\":%ld,\"msgs_target\":%ld,\"duration_limit_s\":%.1f",
		       tls_mode(), o.conns, o.per_conn, o.size, o.msgs, o.duration);
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
	if (o.probe_max && !probe_ok())
		return 1;
	return ok > 0 && failed == 0 ? 0 : 1;
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
	if (build_message() < 0)
		return 2;
	if (o.auth && make_authcmd() < 0)
		return 2;
	if ((o.tls || o.starttls) && tls_init() < 0)
		return 2;
	if ((o.npids || o.pgrep) && srv_init() < 0)
		return 2;
	if (o.probe_only)
		return run_probe_only();
	return o.idle ? run_idle() : run_load();
}
