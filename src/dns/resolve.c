/* The asynchronous resolver of dns/resolve.h: libunbound on the caller's libevent loop, the
 * mail route of a domain (MX, null MX, implicit MX, CNAMEs, A/AAAA of every host) and the
 * addresses of one host, each with its DNSSEC status. Runs in the queue process and in
 * `sealmail check route`. Untrusted input: DNS answer packets, read through dns/dnsmsg.c
 * (every offset, count, compression pointer and name length bounded there); what it returns
 * is used here. */
#include "dns/resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>
#include <unbound.h>
#include <unbound-event.h>

#include "dns/dnsmsg.h"
#include "util/log.h"

#define DNS_TIMEOUT_DEFAULT 30

/* What became of one libunbound lookup. */
enum job_out {
	JOB_DATA = 0, /* records of the type asked for */
	JOB_NODATA,   /* the name exists, no records of that type */
	JOB_NXDOMAIN, /* the name does not exist */
	JOB_TEMP,     /* SERVFAIL, other rcodes, malformed answer, resolver error */
	JOB_BOGUS,    /* DNSSEC validation failed: nothing in it is used */
	JOB_TIMEOUT,  /* the route's timer ran out first */
};

enum job_state { JOB_IDLE = 0, JOB_PENDING, JOB_DONE };

struct dns_query;

/* One libunbound lookup; its address is the callback argument, valid until it has answered
 * or was cancelled (a cancelled lookup never calls back). */
struct dns_job {
	struct dns_query *q;
	int host;   /* index in route.hosts; -1 for the MX lookup */
	int rrtype; /* DNSMSG_T_MX, DNSMSG_T_A, DNSMSG_T_AAAA */
	enum job_state state;
	int async_id;
	enum job_out out;
	enum dns_sec sec;
	char why[256];
	int naddrs;
	uint8_t addr[DNS_MAX_ADDRS][16];
};

enum query_phase { QP_MX = 0, QP_ADDR, QP_DONE };

struct dns_query {
	struct dns_resolver *r;
	struct dns_query *prev, *next; /* the resolver's live queries */
	dns_route_cb cb;
	void *arg;
	enum query_phase phase;
	bool starting; /* lookups are being started: completion is checked once they all are */
	bool delivering;
	int npending;
	struct event *timer;   /* the whole route */
	struct event *deliver; /* the callback always runs from here, never inside dns_*() */
	struct dns_job mx;
	struct dns_job addr[DNS_MAX_HOSTS][2]; /* [0] AAAA, [1] A */
	struct dns_route route;
};

struct dns_resolver {
	struct event_base *base;
	struct ub_ctx *ctx;
	enum dns_family family;
	int timeout;
	struct dns_query *queries;
};

static unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* ---- words ---------------------------------------------------------------------------- */

static const char *rrtype_name(int t)
{
	return t == DNSMSG_T_MX ? "MX" : t == DNSMSG_T_A ? "A" : t == DNSMSG_T_AAAA ? "AAAA" : "?";
}

static const char *rcode_name(int rc)
{
	static const char *names[] = {"NOERROR",  "FORMERR", "SERVFAIL",
	                              "NXDOMAIN", "NOTIMP",  "REFUSED"};
	if (rc >= 0 && rc < (int)(sizeof(names) / sizeof(names[0])))
		return names[rc];
	return "error rcode";
}

/* snprintf through a buffer of its own: texts in the route quote other fields of the same
 * query (names), and GCC's -Wrestrict cannot always tell that they never overlap. */
static void text_set(char *dst, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void text_set(char *dst, size_t n, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	snprintf(dst, n, "%s", buf);
}

/* bogus < insecure < secure: a route is as trustworthy as its weakest answer */
static int sec_rank(enum dns_sec s)
{
	return s == DNS_SEC_SECURE ? 2 : s == DNS_SEC_INSECURE ? 1 : 0;
}

static enum dns_sec sec_weaker(enum dns_sec a, enum dns_sec b)
{
	return sec_rank(a) <= sec_rank(b) ? a : b;
}

static bool job_temporary(const struct dns_job *j)
{
	return j->out == JOB_TEMP || j->out == JOB_BOGUS || j->out == JOB_TIMEOUT;
}

const char *dns_sec_name(enum dns_sec s)
{
	switch (s) {
	case DNS_SEC_INSECURE:
		return "insecure";
	case DNS_SEC_SECURE:
		return "secure";
	case DNS_SEC_BOGUS:
		return "bogus";
	}
	return "?";
}

const char *dns_status_name(enum dns_status s)
{
	switch (s) {
	case DNS_OK:
		return "ok";
	case DNS_NXDOMAIN:
		return "nxdomain";
	case DNS_NULL_MX:
		return "null-mx";
	case DNS_NO_ADDRESS:
		return "no-address";
	case DNS_TEMPFAIL:
		return "tempfail";
	}
	return "?";
}

void dns_addr_str(const struct sockaddr_storage *ss, char *buf, size_t n)
{
	if (n == 0)
		return;
	buf[0] = '\0';
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		if (inet_ntop(AF_INET, &s4->sin_addr, buf, (socklen_t)n) == NULL)
			snprintf(buf, n, "?");
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		if (inet_ntop(AF_INET6, &s6->sin6_addr, buf, (socklen_t)n) == NULL)
			snprintf(buf, n, "?");
	} else {
		snprintf(buf, n, "?");
	}
}

static void set_addr(struct sockaddr_storage *ss, int family, const uint8_t *a)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a, 16);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a, 4);
	}
}

/* ---- lookups -------------------------------------------------------------------------- */

static void query_step(struct dns_query *q);
static void query_finish(struct dns_query *q);

static const char *job_name(const struct dns_job *j)
{
	return j->host < 0 ? j->q->route.domain : j->q->route.hosts[j->host].name;
}

/* The parts common to every answer: errors, bogus, rcode. Returns true when j is settled. */
static bool job_settle_failure(struct dns_job *j, int rcode, const struct dnsmsg *k, int parsed,
                               int sec, const char *why_bogus)
{
	const char *t = rrtype_name(j->rrtype), *name = job_name(j);

	if (sec == 1) {
		/* RFC 4035 5.5: bogus data must not be used; the route waits */
		char safe[160] = "";
		if (why_bogus != NULL)
			log_safe(safe, sizeof(safe), why_bogus, strlen(why_bogus));
		j->out = JOB_BOGUS;
		j->sec = DNS_SEC_BOGUS;
		text_set(j->why, sizeof(j->why), "%s lookup for %s: DNSSEC validation failure%s%s",
		         t, name, safe[0] ? ": " : "", safe);
		return true;
	}
	if (rcode == DNSMSG_RCODE_NOERROR && parsed == 0)
		rcode = k->rcode;
	if (rcode == DNSMSG_RCODE_NXDOMAIN) {
		j->out = JOB_NXDOMAIN;
		text_set(j->why, sizeof(j->why), "%s lookup for %s: NXDOMAIN (no such name)", t,
		         name);
		return true;
	}
	if (rcode != DNSMSG_RCODE_NOERROR) {
		j->out = JOB_TEMP;
		text_set(j->why, sizeof(j->why), "%s lookup for %s: %s", t, name,
		         rcode_name(rcode));
		return true;
	}
	if (parsed < 0) {
		j->out = JOB_TEMP;
		text_set(j->why, sizeof(j->why), "%s lookup for %s: malformed answer", t, name);
		return true;
	}
	return false;
}

/* RFC 5321 5.1: lowest preference first; equal preferences in random order. */
static void mx_order(struct dnsmsg_mx *c, int n)
{
	for (int i = 1; i < n; i++) {
		struct dnsmsg_mx v = c[i];
		int k = i - 1;
		while (k >= 0 && c[k].pref > v.pref) {
			c[k + 1] = c[k];
			k--;
		}
		c[k + 1] = v;
	}
	for (int lo = 0; lo < n;) {
		int hi = lo + 1;
		while (hi < n && c[hi].pref == c[lo].pref)
			hi++;
		for (int i = hi - 1; i > lo; i--) { /* Fisher-Yates within [lo, hi) */
			int k = lo + (int)randombytes_uniform((uint32_t)(i - lo + 1));
			struct dnsmsg_mx t = c[i];
			c[i] = c[k];
			c[k] = t;
		}
		lo = hi;
	}
}

static void mx_answer(struct dns_job *j, const struct dnsmsg *k)
{
	struct dns_route *rt = &j->q->route;
	char final[LIM_DNS_NAME + 1];
	struct dnsmsg_mx cand[LIM_DNS_ANSWER_RRS];
	int ncand, nroot = 0;

	if (dnsmsg_chase(k, rt->domain, final, sizeof(final)))
		text_set(rt->canonical, sizeof(rt->canonical), "%s", final);
	ncand = dnsmsg_mx(k, final, cand, LIM_DNS_ANSWER_RRS);
	if (ncand == 0) {
		j->out = JOB_NODATA;
		return;
	}
	j->out = JOB_DATA;
	mx_order(cand, ncand);
	for (int i = 0; i < ncand && rt->nhosts < DNS_MAX_HOSTS; i++) {
		char name[LIM_DNS_NAME + 1];
		if (!dnsmsg_mx_target(k, &cand[i], name, sizeof(name)))
			continue; /* not a host name: unusable */
		if (name[0] == '\0') {
			nroot++;
			continue;
		}
		bool dup = false;
		for (int h = 0; h < rt->nhosts && !dup; h++)
			dup = strcmp(rt->hosts[h].name, name) == 0;
		if (dup)
			continue; /* the first (best) preference stays */
		struct dns_host *host = &rt->hosts[rt->nhosts++];
		snprintf(host->name, sizeof(host->name), "%s", name);
		host->pref = cand[i].pref;
	}
	if (rt->nhosts == 0 && nroot > 0) {
		/* RFC 7505 3: MX 0 "." says the domain takes no mail; a set of only "." targets
		 * says the same, whatever its preferences */
		rt->status = DNS_NULL_MX;
		text_set(rt->why, sizeof(rt->why),
		         "MX lookup for %s: null MX, the domain accepts no mail (RFC 7505)",
		         rt->domain);
	} else if (rt->nhosts == 0) {
		rt->status = DNS_NO_ADDRESS;
		text_set(rt->why, sizeof(rt->why), "MX lookup for %s: no usable MX host name",
		         rt->domain);
	}
}

static void addr_answer(struct dns_job *j, const struct dnsmsg *k)
{
	struct dns_route *rt = &j->q->route;
	const char *name = job_name(j);
	char final[LIM_DNS_NAME + 1];
	int want = j->rrtype;

	/* a route's canonical name comes from its MX answer; dns_host's from here */
	if (dnsmsg_chase(k, name, final, sizeof(final)) && j->q->mx.rrtype == 0 &&
	    rt->canonical[0] == '\0')
		text_set(rt->canonical, sizeof(rt->canonical), "%s", final);
	j->naddrs = dnsmsg_addrs(k, final, want, j->addr, DNS_MAX_ADDRS);
	j->out = j->naddrs > 0 ? JOB_DATA : JOB_NODATA;
	if (j->out == JOB_NODATA)
		text_set(j->why, sizeof(j->why), "%s lookup for %s: no records", rrtype_name(want),
		         name);
}

/* libunbound's answer (ub_resolve_event): packet valid only during this call. */
static void job_answer(void *arg, int rcode, void *packet, int len, int sec, char *why_bogus,
                       int was_ratelimited)
{
	struct dns_job *j = arg;
	struct dns_query *q = j->q;
	struct dnsmsg k;
	int parsed = -1;

	(void)was_ratelimited;
	if (j->state != JOB_PENDING)
		return;
	j->state = JOB_DONE;
	q->npending--;
	j->sec = sec == 2 ? DNS_SEC_SECURE : DNS_SEC_INSECURE;
	if (rcode == DNSMSG_RCODE_NOERROR && packet != NULL && len >= 0)
		parsed = dnsmsg_parse(&k, packet, (size_t)len);
	if (!job_settle_failure(j, rcode, &k, parsed, sec, why_bogus)) {
		if (j->rrtype == DNSMSG_T_MX)
			mx_answer(j, &k);
		else
			addr_answer(j, &k);
	}
	if (!q->starting && q->npending == 0)
		query_step(q);
}

static void job_start(struct dns_query *q, struct dns_job *j, int host, int rrtype)
{
	int id = 0, rc;

	memset(j, 0, sizeof(*j));
	j->q = q;
	j->host = host;
	j->rrtype = rrtype;
	j->state = JOB_PENDING;
	q->npending++;
	rc = ub_resolve_event(q->r->ctx, job_name(j), rrtype, DNSMSG_C_IN, j, job_answer, &id);
	if (rc != 0 && j->state == JOB_PENDING) {
		j->state = JOB_DONE;
		q->npending--;
		j->out = JOB_TEMP;
		text_set(j->why, sizeof(j->why), "%s lookup for %s: resolver error: %s",
		         rrtype_name(rrtype), job_name(j), ub_strerror(rc));
	} else if (j->state == JOB_PENDING) {
		j->async_id = id;
	}
	/* else: answered before ub_resolve_event() returned (local data, cache) */
}

static void job_cancel(struct dns_query *q, struct dns_job *j)
{
	if (j->state != JOB_PENDING)
		return;
	(void)ub_cancel(q->r->ctx, j->async_id);
	j->state = JOB_DONE;
	q->npending--;
}

static void query_cancel_jobs(struct dns_query *q)
{
	job_cancel(q, &q->mx);
	for (int h = 0; h < DNS_MAX_HOSTS; h++)
		for (int f = 0; f < 2; f++)
			job_cancel(q, &q->addr[h][f]);
}

static void query_start_addrs(struct dns_query *q)
{
	enum dns_family fam = q->r->family;

	q->phase = QP_ADDR;
	q->starting = true;
	for (int h = 0; h < q->route.nhosts; h++) {
		if (fam != DNS_FAMILY_IPV4)
			job_start(q, &q->addr[h][0], h, DNSMSG_T_AAAA);
		if (fam != DNS_FAMILY_IPV6)
			job_start(q, &q->addr[h][1], h, DNSMSG_T_A);
	}
	q->starting = false;
	if (q->npending == 0)
		query_step(q);
}

/* One host from its two answers: IPv6 first, then IPv4. When both families have more than
 * fit, each keeps at least half, so a host whose IPv6 is unreachable still has IPv4. */
static void host_compose(struct dns_query *q, int h)
{
	struct dns_host *host = &q->route.hosts[h];
	struct dns_job *six = &q->addr[h][0], *four = &q->addr[h][1];
	int n6 = six->out == JOB_DATA ? six->naddrs : 0,
	    n4 = four->out == JOB_DATA ? four->naddrs : 0;
	int take6 = n6, take4;
	enum dns_sec sec = DNS_SEC_SECURE;
	bool asked = false;

	if (take6 > DNS_MAX_ADDRS - n4)
		take6 =
		    DNS_MAX_ADDRS - n4 > DNS_MAX_ADDRS / 2 ? DNS_MAX_ADDRS - n4 : DNS_MAX_ADDRS / 2;
	if (take6 > n6)
		take6 = n6;
	take4 = n4 < DNS_MAX_ADDRS - take6 ? n4 : DNS_MAX_ADDRS - take6;
	host->naddrs = 0;
	for (int i = 0; i < take6; i++)
		set_addr(&host->addrs[host->naddrs++], AF_INET6, six->addr[i]);
	for (int i = 0; i < take4; i++)
		set_addr(&host->addrs[host->naddrs++], AF_INET, four->addr[i]);

	for (int f = 0; f < 2; f++) {
		struct dns_job *j = &q->addr[h][f];
		if (j->rrtype == 0)
			continue; /* family not asked for */
		asked = true;
		sec = sec_weaker(sec, job_temporary(j) && j->out != JOB_BOGUS ? DNS_SEC_INSECURE
		                                                              : j->sec);
	}
	host->sec = asked ? sec : DNS_SEC_INSECURE;
	host->why[0] = '\0';
	if (host->naddrs > 0)
		return;
	/* the most telling reason: a failure, then NXDOMAIN, then "no records" */
	const char *types = q->r->family == DNS_FAMILY_IPV4   ? "A"
	                    : q->r->family == DNS_FAMILY_IPV6 ? "AAAA"
	                                                      : "A/AAAA";
	const struct dns_job *fail = NULL;
	bool nx = false;
	for (int f = 0; f < 2; f++) {
		const struct dns_job *j = &q->addr[h][f];
		if (j->rrtype != 0 && job_temporary(j) && fail == NULL)
			fail = j;
		nx |= j->rrtype != 0 && j->out == JOB_NXDOMAIN;
	}
	if (fail != NULL)
		text_set(host->why, sizeof(host->why), "%s", fail->why);
	else if (!asked)
		text_set(host->why, sizeof(host->why), "no address family enabled");
	else if (nx)
		text_set(host->why, sizeof(host->why), "%s lookup for %s: NXDOMAIN (no such host)",
		         types, host->name);
	else
		text_set(host->why, sizeof(host->why), "no %s records for %s", types, host->name);
}

static void route_compose(struct dns_query *q)
{
	struct dns_route *rt = &q->route;
	int usable = 0, temp = -1;

	for (int h = 0; h < rt->nhosts; h++) {
		host_compose(q, h);
		if (rt->hosts[h].naddrs > 0)
			usable++;
		for (int f = 0; f < 2 && temp < 0; f++)
			if (q->addr[h][f].rrtype != 0 && job_temporary(&q->addr[h][f]))
				temp = h;
	}
	if (q->mx.rrtype == 0)
		rt->mx_sec = rt->nhosts > 0 ? rt->hosts[0].sec : DNS_SEC_INSECURE; /* dns_host */
	else if (rt->implicit) /* the "no MX" answer counts as much as the addresses */
		rt->mx_sec = sec_weaker(q->mx.sec, rt->hosts[0].sec);
	if (usable > 0) {
		rt->status = DNS_OK;
		rt->why[0] = '\0';
	} else if (temp >= 0) {
		rt->status = DNS_TEMPFAIL;
		if (rt->implicit || q->mx.rrtype == 0)
			text_set(rt->why, sizeof(rt->why), "%s", rt->hosts[temp].why);
		else
			text_set(rt->why, sizeof(rt->why), "no MX host of %s has an address (%s)",
			         rt->domain, rt->hosts[temp].why);
	} else {
		rt->status = DNS_NO_ADDRESS;
		if (rt->implicit)
			text_set(rt->why, sizeof(rt->why), "%s has no MX and %s", rt->domain,
			         rt->hosts[0].why);
		else if (q->mx.rrtype == 0)
			text_set(rt->why, sizeof(rt->why), "%s", rt->hosts[0].why);
		else
			text_set(rt->why, sizeof(rt->why), "no MX host of %s has an address (%s)",
			         rt->domain, rt->hosts[0].why);
	}
}

/* All lookups of the current phase have answered. */
static void query_step(struct dns_query *q)
{
	struct dns_route *rt = &q->route;

	if (q->phase == QP_MX) {
		struct dns_job *j = &q->mx;
		rt->mx_sec = j->sec;
		switch (j->out) {
		case JOB_DATA:
			if (rt->nhosts == 0) { /* null MX or nothing usable: decided */
				query_finish(q);
				return;
			}
			break;
		case JOB_NODATA: /* RFC 5321 5.1: the domain itself, as if MX 0 */
			rt->implicit = true;
			rt->nhosts = 1;
			text_set(rt->hosts[0].name, sizeof(rt->hosts[0].name), "%s", rt->domain);
			rt->hosts[0].pref = 0;
			break;
		case JOB_NXDOMAIN:
			rt->status = DNS_NXDOMAIN;
			text_set(rt->why, sizeof(rt->why), "%s", j->why);
			query_finish(q);
			return;
		default:
			rt->status = DNS_TEMPFAIL;
			text_set(rt->why, sizeof(rt->why), "%s", j->why);
			query_finish(q);
			return;
		}
		query_start_addrs(q);
		return;
	}
	if (q->phase == QP_ADDR) {
		route_compose(q);
		query_finish(q);
	}
}

static void query_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;
	struct dns_route *rt = &q->route;

	(void)fd;
	(void)what;
	if (q->phase == QP_MX) {
		query_cancel_jobs(q);
		rt->status = DNS_TEMPFAIL;
		text_set(rt->why, sizeof(rt->why), "MX lookup for %s: DNS timeout after %d s",
		         rt->domain, q->r->timeout);
		query_finish(q);
		return;
	}
	if (q->phase != QP_ADDR)
		return;
	/* hosts that have answered are used; the others fail with the timeout */
	for (int h = 0; h < rt->nhosts; h++) {
		for (int f = 0; f < 2; f++) {
			struct dns_job *j = &q->addr[h][f];
			if (j->state != JOB_PENDING)
				continue;
			job_cancel(q, j);
			j->out = JOB_TIMEOUT;
			text_set(j->why, sizeof(j->why), "%s lookup for %s: DNS timeout after %d s",
			         rrtype_name(j->rrtype), rt->hosts[h].name, q->r->timeout);
		}
	}
	route_compose(q);
	query_finish(q);
}

static void query_unlink(struct dns_query *q)
{
	if (q->prev != NULL)
		q->prev->next = q->next;
	else if (q->r->queries == q)
		q->r->queries = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
}

static void query_free(struct dns_query *q)
{
	query_cancel_jobs(q);
	query_unlink(q);
	if (q->timer != NULL)
		event_free(q->timer);
	if (q->deliver != NULL)
		event_free(q->deliver);
	free(q);
}

static void query_deliver(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;

	(void)fd;
	(void)what;
	/* out of the resolver before the callback: it may cancel, free the resolver or start
	 * new queries */
	query_unlink(q);
	event_free(q->timer);
	event_free(q->deliver);
	q->timer = q->deliver = NULL;
	q->delivering = true;
	q->cb(q->arg, &q->route);
	free(q);
}

static void query_finish(struct dns_query *q)
{
	if (q->phase == QP_DONE)
		return;
	q->phase = QP_DONE;
	query_cancel_jobs(q);
	event_del(q->timer);
	event_active(q->deliver, EV_TIMEOUT, 1);
}

static struct dns_query *query_new(struct dns_resolver *r, dns_route_cb cb, void *arg)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));
	struct timeval tv = {.tv_sec = r->timeout, .tv_usec = 0};

	q->r = r;
	q->cb = cb;
	q->arg = arg;
	q->timer = evtimer_new(r->base, query_timeout, q);
	q->deliver = event_new(r->base, -1, 0, query_deliver, q);
	if (q->timer == NULL || q->deliver == NULL)
		fatal("dns: out of memory for events");
	event_add(q->timer, &tv);
	q->next = r->queries;
	if (r->queries != NULL)
		r->queries->prev = q;
	r->queries = q;
	return q;
}

/* "[192.0.2.1]" or "[IPv6:2001:db8::1]" (RFC 5321 4.1.3): family and 4 or 16 bytes. */
static int parse_literal(const char *s, uint8_t *a)
{
	char in[INET6_ADDRSTRLEN + 8];
	size_t n = strlen(s);

	if (n < 3 || s[0] != '[' || s[n - 1] != ']' || n - 2 >= sizeof(in))
		return 0;
	memcpy(in, s + 1, n - 2);
	in[n - 2] = '\0';
	if (strncasecmp(in, "ipv6:", 5) == 0)
		return inet_pton(AF_INET6, in + 5, a) == 1 ? AF_INET6 : 0;
	return inet_pton(AF_INET, in, a) == 1 ? AF_INET : 0;
}

/* A route of one address, delivered from the loop like any other. */
static struct dns_query *route_address(struct dns_resolver *r, const char *domain,
                                       const char *hostname, int family, const uint8_t *a,
                                       dns_route_cb cb, void *arg)
{
	struct dns_query *q = query_new(r, cb, arg);
	struct dns_route *rt = &q->route;
	struct dns_host *h = &rt->hosts[0];
	size_t i;

	for (i = 0; domain[i] != '\0' && i + 1 < sizeof(rt->domain); i++)
		rt->domain[i] = (char)lower((unsigned char)domain[i]);
	rt->domain[i] = '\0';
	rt->nhosts = 1;
	snprintf(h->name, sizeof(h->name), "%s", hostname);
	for (i = 0; h->name[i] != '\0'; i++)
		h->name[i] = (char)lower((unsigned char)h->name[i]);
	if ((family == AF_INET && r->family == DNS_FAMILY_IPV6) ||
	    (family == AF_INET6 && r->family == DNS_FAMILY_IPV4)) {
		rt->status = DNS_NO_ADDRESS;
		text_set(h->why, sizeof(h->why), "%s address, but that family is disabled",
		         family == AF_INET ? "IPv4" : "IPv6");
		text_set(rt->why, sizeof(rt->why), "%s: %s", rt->domain, h->why);
	} else {
		rt->status = DNS_OK;
		set_addr(&h->addrs[0], family, a);
		h->naddrs = 1;
	}
	query_finish(q);
	return q;
}

struct dns_query *dns_route(struct dns_resolver *r, const char *domain, dns_route_cb cb, void *arg)
{
	char name[LIM_DNS_NAME + 1];
	uint8_t a[16];
	int family;

	if (r == NULL || domain == NULL || cb == NULL)
		return NULL;
	if (domain[0] == '[') {
		if ((family = parse_literal(domain, a)) == 0)
			return NULL;
		return route_address(r, domain, domain, family, a, cb, arg);
	}
	if (!dnsmsg_name_from_text(domain, name, sizeof(name)))
		return NULL;
	struct dns_query *q = query_new(r, cb, arg);
	snprintf(q->route.domain, sizeof(q->route.domain), "%s", name);
	q->phase = QP_MX;
	q->starting = true;
	job_start(q, &q->mx, -1, DNSMSG_T_MX);
	q->starting = false;
	if (q->npending == 0)
		query_step(q);
	return q;
}

struct dns_query *dns_host(struct dns_resolver *r, const char *host, dns_route_cb cb, void *arg)
{
	char name[LIM_DNS_NAME + 1];
	uint8_t a[16];
	int family = 0;

	if (r == NULL || host == NULL || cb == NULL)
		return NULL;
	if (inet_pton(AF_INET, host, a) == 1)
		family = AF_INET;
	else if (inet_pton(AF_INET6, host, a) == 1)
		family = AF_INET6;
	else if (host[0] == '[')
		family = parse_literal(host, a);
	if (family != 0)
		return route_address(r, host, host, family, a, cb, arg);
	if (!dnsmsg_name_from_text(host, name, sizeof(name)))
		return NULL;
	struct dns_query *q = query_new(r, cb, arg);
	snprintf(q->route.domain, sizeof(q->route.domain), "%s", name);
	snprintf(q->route.hosts[0].name, sizeof(q->route.hosts[0].name), "%s", name);
	q->route.nhosts = 1;
	query_start_addrs(q);
	return q;
}

void dns_cancel(struct dns_query *q)
{
	if (q == NULL || q->delivering)
		return;
	query_free(q);
}

/* ---- the resolver --------------------------------------------------------------------- */

/* "IP" or "IP@port", checked here so the error names it (libunbound only says "syntax"). */
static bool forwarder_ok(const char *tok, char *err, size_t errsz)
{
	char ip[INET6_ADDRSTRLEN], safe[64];
	uint8_t a[16];
	const char *at = strchr(tok, '@');
	size_t iplen = at != NULL ? (size_t)(at - tok) : strlen(tok);

	log_safe(safe, sizeof(safe), tok, strlen(tok));
	if (iplen == 0 || iplen >= sizeof(ip)) {
		snprintf(err, errsz, "bad forwarder \"%s\": not an IP address", safe);
		return false;
	}
	memcpy(ip, tok, iplen);
	ip[iplen] = '\0';
	if (inet_pton(AF_INET, ip, a) != 1 && inet_pton(AF_INET6, ip, a) != 1) {
		snprintf(err, errsz, "bad forwarder \"%s\": not an IP address", safe);
		return false;
	}
	if (at != NULL) {
		char *end;
		errno = 0;
		long port = strtol(at + 1, &end, 10);
		if (at[1] < '0' || at[1] > '9' || *end != '\0' || errno != 0 || port < 1 ||
		    port > 65535) {
			snprintf(err, errsz, "bad forwarder \"%s\": port must be 1-65535", safe);
			return false;
		}
	}
	return true;
}

static bool set_forwarders(struct ub_ctx *ctx, const char *list, char *err, size_t errsz)
{
	char tok[128];
	const char *p = list;
	int n = 0;

	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		size_t len = strcspn(p, " \t,");
		if (len >= sizeof(tok)) {
			snprintf(err, errsz, "bad forwarder: too long");
			return false;
		}
		memcpy(tok, p, len);
		tok[len] = '\0';
		p += len;
		if (++n > LIM_DNS_FORWARDERS) {
			snprintf(err, errsz, "more than %d forwarders", LIM_DNS_FORWARDERS);
			return false;
		}
		if (!forwarder_ok(tok, err, errsz))
			return false;
		int rc = ub_ctx_set_fwd(ctx, tok);
		if (rc != 0) {
			char safe[64];
			log_safe(safe, sizeof(safe), tok, len);
			snprintf(err, errsz, "bad forwarder \"%s\": %s", safe, ub_strerror(rc));
			return false;
		}
	}
	return true;
}

/* libunbound would quietly fall back to 127.0.0.1 when resolv.conf has no nameserver. */
static bool set_resolv_conf(struct ub_ctx *ctx, const char *path, char *err, size_t errsz)
{
	FILE *f = fopen(path, "r");
	char line[512];
	bool found = false;

	if (f == NULL) {
		snprintf(err, errsz, "cannot read %s: %s", path, strerror(errno));
		return false;
	}
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		const char *s = line + strspn(line, " \t");
		if (strncmp(s, "nameserver", 10) == 0 && (s[10] == ' ' || s[10] == '\t'))
			found = s[10 + strspn(s + 10, " \t")] != '\0';
	}
	fclose(f);
	if (!found) {
		snprintf(err, errsz, "%s has no nameserver line", path);
		return false;
	}
	int rc = ub_ctx_resolvconf(ctx, path);
	if (rc != 0) {
		snprintf(err, errsz, "%s: %s", path, ub_strerror(rc));
		return false;
	}
	return true;
}

static bool configure(struct dns_resolver *r, const struct dns_config *cfg, char *err, size_t errsz)
{
	const char *resolv = cfg->resolv_conf != NULL ? cfg->resolv_conf : "/etc/resolv.conf";
	const char *fwd = cfg->forwarders != NULL ? cfg->forwarders : "";
	const char *ta = cfg->trust_anchor != NULL ? cfg->trust_anchor : "";
	int rc;

	/* Test servers live on loopback, and RFC 6761 6.2 would answer test. NXDOMAIN locally.
	 * Keep probing servers that timed out: otherwise a short outage of the only forwarder
	 * makes every lookup SERVFAIL for up to infra-host-ttl (15 minutes). */
	if ((rc = ub_ctx_set_option(r->ctx, "do-not-query-localhost:", "no")) != 0 ||
	    (rc = ub_ctx_set_option(r->ctx, "local-zone:", "test. transparent")) != 0 ||
	    (rc = ub_ctx_set_option(r->ctx, "infra-keep-probing:", "yes")) != 0) {
		snprintf(err, errsz, "libunbound options: %s", ub_strerror(rc));
		return false;
	}
	if (fwd[strspn(fwd, " \t,")] != '\0') {
		if (!set_forwarders(r->ctx, fwd, err, errsz))
			return false;
	} else if (resolv[0] != '\0') {
		if (!set_resolv_conf(r->ctx, resolv, err, errsz))
			return false;
	} /* else: full recursion from the root hints */
	if (ta[0] != '\0') {
		FILE *f = fopen(ta, "r");
		if (f == NULL) {
			snprintf(err, errsz, "cannot read trust anchor %s: %s", ta,
			         strerror(errno));
			return false;
		}
		fclose(f);
		if ((rc = ub_ctx_add_ta_file(r->ctx, ta)) != 0) {
			snprintf(err, errsz, "trust anchor %s: %s", ta, ub_strerror(rc));
			return false;
		}
	}
	/* Adding a zone finalizes the context now, so a bad trust anchor file is reported here
	 * rather than as SERVFAIL on every later lookup. The zone is the one set above. */
	if ((rc = ub_ctx_zone_add(r->ctx, "test.", "transparent")) != 0) {
		if (ta[0] != '\0')
			snprintf(err, errsz, "libunbound setup failed (trust anchor %s?): %s", ta,
			         ub_strerror(rc));
		else
			snprintf(err, errsz, "libunbound setup failed: %s", ub_strerror(rc));
		return false;
	}
	return true;
}

struct dns_resolver *dns_new(struct event_base *base, const struct dns_config *cfg, char *err,
                             size_t errsz)
{
	static const struct dns_config defaults = {.resolv_conf = "/etc/resolv.conf"};
	struct dns_resolver *r;

	if (errsz > 0)
		err[0] = '\0';
	if (cfg == NULL)
		cfg = &defaults;
	if (base == NULL || cfg->family < DNS_FAMILY_ALL || cfg->family > DNS_FAMILY_IPV6) {
		snprintf(err, errsz, "bad resolver arguments");
		return NULL;
	}
	r = xcalloc(1, sizeof(*r));
	r->base = base;
	r->family = cfg->family;
	r->timeout = cfg->timeout > 0 ? cfg->timeout : DNS_TIMEOUT_DEFAULT;
	r->ctx = ub_ctx_create_event(base);
	if (r->ctx == NULL) {
		snprintf(err, errsz, "libunbound: cannot create a context on this event base");
		free(r);
		return NULL;
	}
	if (!configure(r, cfg, err, errsz)) {
		ub_ctx_delete(r->ctx);
		free(r);
		return NULL;
	}
	return r;
}

void dns_free(struct dns_resolver *r)
{
	if (r == NULL)
		return;
	/* cancelled first: ub_ctx_delete() would call back the pending ones with SERVFAIL */
	while (r->queries != NULL)
		query_free(r->queries);
	ub_ctx_delete(r->ctx);
	free(r);
}
