/* smtpload.h: what the smtpload sources share (internal, bench only).
 * smtpload.c: options, error tally, reporting, load mode, main.
 * smtpload_conn.c: message and AUTH text, TLS, the per-connection SMTP state machine and
 *   the epoll workers. smtpload_server.c: server CPU/memory sampling through /proc.
 * smtpload_probe.c: the NOOP latency probe. smtpload_idle.c: idle-session mode. */
#ifndef SMTPLOAD_H
#define SMTPLOAD_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* ---------------------------------------------------------------- options (smtpload.c) */

struct options {
	const char *host;
	int port;
	int conns; /* 0 until set: then 50 in idle mode, else 1 */
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
};
extern struct options o;

/* loopback target chosen by --host and --port */
extern struct sockaddr_storage g_addr;
extern socklen_t g_addrlen;
void addr_set_port(struct sockaddr_storage *a, int port);

/* ---------------------------------------------------------------- errors (smtpload.c) */

enum errcat { E_CONNECT, E_TLS, E_TIMEOUT, E_REPLY, E_CLOSED, E_IO, E_DEADLINE, E__N };

void errf(enum errcat cat, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void verrf(enum errcat cat, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void scrub_ctl(char *s); /* control characters become spaces */

/* ---------------------------------------------------------------- helpers (smtpload.c) */

double now(void);
void sleep_s(double s);

struct latbuf {
	double *v;
	size_t n, cap;
};
void lat_add(struct latbuf *l, double ms);
int cmp_double(const void *a, const void *b);
double pct(const double *v, size_t n, double p);

void jnum(const char *key, double v, int prec);
void jstr(const char *s);
void json_begin(const char *mode); /* {"mode":…,"host":…,"port":… */
void json_errors(void);
void text_errors(void);
const char *tls_mode(void);

/* ---------------------------------------------------------------- connections (smtpload_conn.c) */

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
extern const char *const step_name[];

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
	struct latbuf lat;
	double last_ok;
	/* idle mode */
	int opening, ready, setup_failed, dropped;
	pthread_t th;
};

extern atomic_long g_ok, g_failed, g_unfinished, g_conns_opened, g_handshakes;
extern double g_t0, g_t_end, g_grace;
extern bool g_idle_mode;
extern char g_tlsinfo[128];

int build_message(void);
int make_authcmd(void);
int tls_init(void);
double quit_timeout(void); /* how long a QUIT may take: --timeout, at most 5 s */
long reply_parse(const char *buf, size_t len, int *code);

struct worker *make_workers(int nthreads, int nconns);
void *worker_load(void *arg);
void worker_poll(struct worker *w, int ms);
void scan_timeouts(struct worker *w, double t);
void conn_open(struct conn *c);
void conn_close(struct conn *c);
void conn_fail(struct conn *c, enum errcat cat, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void send_quit(struct conn *c);
void want(struct conn *c, uint32_t ev);

/* ---------------------------------------------------------------- server (smtpload_server.c) */

struct srvsample {
	long long ticks;
	long long rss_kib, pss_kib;
	int nproc;
	bool ok;
};
int srv_init(void);
void srv_sample(struct srvsample *s, bool mem);
void srv_settle(double max_s);
double ticks_ms(long long t);

/* ---------------------------------------------------------------- modes */

int probe_start(void);  /* smtpload_probe.c */
void probe_finish(void);
void probe_json(void);
void probe_text(void);
bool probe_ok(void);
int run_probe_only(void);
int run_idle(void); /* smtpload_idle.c */

#endif
