/* Remote delivery for the queue process: destinations (a recipient domain or the relayhost)
 * with their connection limits, idle connections and waiting deliveries; one delivery per
 * (message, destination) walks the route's hosts and addresses until a server gives an
 * answer for its recipients. Every attempt is recorded and logged with its TLS facts.
 * Untrusted input: DNS answers and SMTP replies (bounded by dns and smtpc). */
#include "queue/remote.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "conf/conf_int.h"
#include "dns/resolve.h"
#include "queue/smtpc.h"
#include "smtp/parse.h"
#include "util/log.h"

struct dest;
struct dlv;

/* One outbound connection: opening, in use by a delivery, or idle in its destination. */
struct conn {
	struct conn *next;          /* in dest->idle */
	struct conn *all_next, *all_prev; /* every connection of the remote */
	struct remote *rm;
	struct dest *d;
	struct smtpc *c;            /* NULL once closed */
	struct dlv *dlv;            /* the delivery using it (or waiting for its opening) */
	struct event *idle_ev;
	char host[LIM_DOMAIN + 1];
	char ip[64];
	int port;
	enum tls_level level;       /* as opened (none after a plaintext fallback) */
	bool fallback;              /* plaintext after a failed handshake at may */
	struct smtpc_info info;
};

/* A recipient domain (or the relayhost): what its connections are and who waits for one. */
struct dest {
	struct dest *next;
	char name[LIM_DOMAIN + 3];
	int nconn;                  /* opening + busy + idle */
	int refs;                   /* deliveries pointing here */
	struct conn *idle;
	struct dlv *wait_head, *wait_tail;
};

/* One message's recipients for one destination. */
struct dlv {
	struct dlv *next;           /* in dest wait list */
	struct dlv *all_next, *all_prev; /* every delivery of the remote */
	struct remote *rm;
	struct remote_job *job;
	struct dest *d;
	char domain[LIM_DOMAIN + 1];
	enum tls_level level;
	enum tls_policy_source src;
	int *js;                    /* positions in job->idx/res */
	int n;
	struct dns_query *dq;
	struct dns_route *route;
	int host_i, addr_i;
	bool plain;                 /* the next connection is the plaintext retry (may) */
	bool waiting;
	int tx_first, tx_n;         /* recipients of the transaction in flight (js[]) */
	int done_upto;              /* js[0..done_upto) have a final answer from a server */
	struct smtpc_tx tx;
	struct smtpc_rcpt *trc;
	struct conn *conn;
};

struct remote {
	const struct conf *conf;
	struct event_base *base;
	struct records *rec;
	struct dns_resolver *dns;
	SSL_CTX *ctx;
	struct tls_policy_map *map;
	struct dest *dests;
	struct conn *conns;
	struct dlv *dlvs;
	struct remote_job *jobs;
	int total;                  /* connections in all */
	int busy;                   /* jobs in flight */
	bool relay;
	char relay_host[LIM_DOMAIN + 1];
	int relay_port;
	struct sockaddr_storage src4, src6;
	bool has_src4, has_src6;
};

static void dlv_next(struct dlv *v);
static void dlv_send(struct dlv *v, struct conn *cn);

static void conn_link(struct remote *rm, struct conn *cn)
{
	cn->all_next = rm->conns;
	if (rm->conns)
		rm->conns->all_prev = cn;
	rm->conns = cn;
}

static void conn_unlink(struct conn *cn)
{
	if (cn->all_prev)
		cn->all_prev->all_next = cn->all_next;
	else
		cn->rm->conns = cn->all_next;
	if (cn->all_next)
		cn->all_next->all_prev = cn->all_prev;
	cn->all_next = cn->all_prev = NULL;
}

static void dlv_link(struct remote *rm, struct dlv *v)
{
	v->all_next = rm->dlvs;
	if (rm->dlvs)
		rm->dlvs->all_prev = v;
	rm->dlvs = v;
}

/* Frees a delivery's memory and unlinks it (not its destination bookkeeping). */
static void dlv_free(struct dlv *v)
{
	if (v->all_prev)
		v->all_prev->all_next = v->all_next;
	else
		v->rm->dlvs = v->all_next;
	if (v->all_next)
		v->all_next->all_prev = v->all_prev;
	if (v->dq)
		dns_cancel(v->dq);
	free(v->route);
	free(v->js);
	free(v->trc);
	free(v);
}

static double now_f(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* ---- destinations and connections ---- */

static struct dest *dest_get(struct remote *rm, const char *name)
{
	for (struct dest *d = rm->dests; d; d = d->next)
		if (strcmp(d->name, name) == 0)
			return d;
	struct dest *d = xcalloc(1, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->next = rm->dests;
	rm->dests = d;
	return d;
}

static void dest_maybe_free(struct remote *rm, struct dest *d)
{
	if (d->nconn || d->refs || d->idle || d->wait_head)
		return;
	for (struct dest **pp = &rm->dests; *pp; pp = &(*pp)->next)
		if (*pp == d) {
			*pp = d->next;
			free(d);
			return;
		}
}

static void dest_unwait(struct dest *d, struct dlv *v)
{
	struct dlv *prev = NULL;
	for (struct dlv *w = d->wait_head; w; prev = w, w = w->next)
		if (w == v) {
			if (prev)
				prev->next = w->next;
			else
				d->wait_head = w->next;
			if (d->wait_tail == w)
				d->wait_tail = prev;
			v->next = NULL;
			v->waiting = false;
			return;
		}
}

/* A place became free (in this destination or in all): give it to a waiting delivery. */
static void kick_waiters(struct remote *rm, struct dest *first)
{
	if (first && first->wait_head) {
		struct dlv *v = first->wait_head;
		dest_unwait(first, v);
		dlv_next(v);
		return;
	}
	for (struct dest *d = rm->dests; d && rm->total < rm->conf->delivery_connections;
	     d = d->next)
		if (d->wait_head && d->nconn < rm->conf->delivery_connections_per_dest) {
			struct dlv *v = d->wait_head;
			dest_unwait(d, v);
			dlv_next(v);
			return;
		}
}

/* The connection is gone (smtpc freed or about to be): release its places. */
static void conn_gone(struct conn *cn)
{
	struct remote *rm = cn->rm;
	struct dest *d = cn->d;
	if (cn->idle_ev)
		event_free(cn->idle_ev);
	d->nconn--;
	rm->total--;
	conn_unlink(cn);
	free(cn);
	kick_waiters(rm, d);
	dest_maybe_free(rm, d);
}

static void idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *cn = arg;
	struct dest *d = cn->d;
	(void)fd;
	(void)what;
	for (struct conn **pp = &d->idle; *pp; pp = &(*pp)->next)
		if (*pp == cn) {
			*pp = cn->next;
			break;
		}
	smtpc_quit(cn->c);
	cn->c = NULL;
	conn_gone(cn);
}

/* Closes one idle connection of a destination other than `except` (its place goes to a
 * waiting delivery through conn_gone). */
static void close_one_idle(struct remote *rm, struct dest *except)
{
	for (struct dest *d = rm->dests; d; d = d->next) {
		if (d == except || !d->idle)
			continue;
		struct conn *cn = d->idle;
		d->idle = cn->next;
		smtpc_quit(cn->c);
		cn->c = NULL;
		conn_gone(cn);
		return;
	}
}

/* A delivery is done with a connection: hand it on, keep it idle, or close it. */
static void conn_release(struct conn *cn)
{
	struct dest *d = cn->d;
	cn->dlv = NULL;
	if (!cn->c || !smtpc_usable(cn->c)) {
		smtpc_free(cn->c);
		cn->c = NULL;
		conn_gone(cn);
		return;
	}
	for (struct dlv *v = d->wait_head; v; v = v->next)
		if (!v->plain && v->level <= cn->level) {
			dest_unwait(d, v);
			dlv_send(v, cn);
			return;
		}
	if (!cn->idle_ev)
		cn->idle_ev = evtimer_new(cn->rm->base, idle_cb, cn);
	struct timeval tv = {REMOTE_IDLE_SECONDS, 0};
	evtimer_add(cn->idle_ev, &tv);
	cn->next = d->idle;
	d->idle = cn;
}

/* ---- outcomes ---- */

static void set_res(struct remote_res *r, enum remote_outcome out, const char *enh,
		    const char *diag, const char *reason, const char *mx)
{
	r->out = out;
	snprintf(r->enh, sizeof(r->enh), "%s", enh ? enh : "");
	/* callers may pass r's own strings back: copying a buffer onto itself is undefined */
	if (diag != r->diag)
		snprintf(r->diag, sizeof(r->diag), "%s", diag ? diag : "");
	if (reason != r->reason)
		snprintf(r->reason, sizeof(r->reason), "%s", reason ? reason : "");
	if (mx)
		snprintf(r->mx, sizeof(r->mx), "%s", mx);
}

static const char *out_status(enum remote_outcome o)
{
	return o == REMOTE_SENT ? "sent" : o == REMOTE_BOUNCE ? "bounced" : "deferred";
}

/* Records and logs one attempt for recipient position j of v on connection cn (the one
 * tried, opened or not); NULL when no connection was tried (DNS said no). */
static void note(struct dlv *v, int j, const struct conn *cn, const struct smtpc_result *sr,
		 const struct smtpc_info *info)
{
	struct remote_job *job = v->job;
	struct remote_res *r = &job->res[j];
	const struct spool_rcpt *rc = &job->env->rcpts[job->idx[j]];
	struct attempt a;
	memset(&a, 0, sizeof(a));
	snprintf(a.qid, sizeof(a.qid), "%s", job->qid);
	a.rcpt = job->idx[j];
	snprintf(a.rcpt_addr, sizeof(a.rcpt_addr), "%s", rc->addr);
	a.time = now_f();
	snprintf(a.status, sizeof(a.status), "%s", out_status(r->out));
	if (cn) {
		snprintf(a.mx, sizeof(a.mx), "%s", cn->host);
		snprintf(a.ip, sizeof(a.ip), "%s", cn->ip);
		a.port = cn->port;
		a.fallback = cn->fallback;
	}
	a.code = sr ? sr->code : 0;
	snprintf(a.enh, sizeof(a.enh), "%s", r->enh);
	snprintf(a.reply, sizeof(a.reply), "%s", r->diag);
	snprintf(a.reason, sizeof(a.reason), "%s", r->reason);
	snprintf(a.stage, sizeof(a.stage), "%s", sr ? smtpc_stage_name(sr->stage) : "dns");
	snprintf(a.tls_policy, sizeof(a.tls_policy), "%s", tls_level_name(v->level));
	snprintf(a.policy_source, sizeof(a.policy_source), "%s", tls_policy_source_name(v->src));
	if (info && info->tls) {
		snprintf(a.tls_version, sizeof(a.tls_version), "%s", info->tls_version);
		snprintf(a.tls_cipher, sizeof(a.tls_cipher), "%s", info->tls_cipher);
	}
	snprintf(a.cert, sizeof(a.cert), "%s", smtpc_cert_name(info ? info->cert : SMTPC_CERT_NONE));
	if (info)
		snprintf(a.cert_error, sizeof(a.cert_error), "%s", info->cert_error);
	if (v->route && !v->rm->relay)
		snprintf(a.dnssec, sizeof(a.dnssec), "%s", dns_sec_name(v->route->mx_sec));
	a.attempt_no = job->attempt_no;
	a.delay = a.time - (double)job->env->arrival;
	if (v->rm->rec && records_add(v->rm->rec, &a) != 0)
		log_err("event=records_error qid=%s op=add", job->qid);

	char relay[LIM_DOMAIN + 96];
	if (cn)
		snprintf(relay, sizeof(relay), "%s[%s]:%d", a.mx, a.ip, a.port);
	else
		snprintf(relay, sizeof(relay), "none");
	log_msg(r->out == REMOTE_SENT ? LOG_LV_INFO : LOG_LV_WARN,
	    "event=delivery qid=%s to=<%s> relay=%s delay=%.2f dsn=%s status=%s tls=%s "
	     "tls_source=%s tls_version=%s tls_cipher=%s tls_verified=%s%s%s%s dnssec=%s%s "
	     "attempt=%d (%s)",
	     a.qid, a.rcpt_addr, relay, a.delay, a.enh[0] ? a.enh : "-", a.status, a.tls_policy,
	     a.policy_source, a.tls_version[0] ? a.tls_version : "none",
	     a.tls_cipher[0] ? a.tls_cipher : "none", a.cert, a.cert_error[0] ? " cert_error=\"" : "",
	     a.cert_error, a.cert_error[0] ? "\"" : "", a.dnssec[0] ? a.dnssec : "none",
	     a.fallback ? " fallback=plaintext" : "", a.attempt_no, a.reply[0] ? a.reply : a.reason);
}

static void job_finish(struct remote_job *job);

/* The delivery has answers (or gave up) for all its recipients. */
static void dlv_done(struct dlv *v)
{
	struct remote *rm = v->rm;
	struct remote_job *job = v->job;
	if (v->waiting)
		dest_unwait(v->d, v);
	v->d->refs--;
	dest_maybe_free(rm, v->d);
	dlv_free(v);
	if (--job->pending == 0)
		job_finish(job);
}

/* Every recipient not yet answered gets this outcome (DNS failures, all hosts failed). */
static void dlv_fail_rest(struct dlv *v, enum remote_outcome out, const char *enh,
			  const char *reason, bool record)
{
	for (int k = v->done_upto; k < v->n; k++) {
		int j = v->js[k];
		struct remote_res *r = &v->job->res[j];
		if (record) {
			set_res(r, out, enh, NULL, reason, NULL);
			note(v, j, NULL, NULL, NULL);
		} else if (out == REMOTE_BOUNCE || r->enh[0] == '\0') {
			set_res(r, out, enh, r->diag, r->reason[0] ? r->reason : reason, NULL);
		}
	}
	dlv_done(v);
}

/* ---- the walk over hosts and addresses ---- */

static const struct sockaddr_storage *cur_addr(struct dlv *v, const char **host)
{
	struct dns_route *rt = v->route;
	while (v->host_i < rt->nhosts) {
		struct dns_host *h = &rt->hosts[v->host_i];
		if (v->addr_i < h->naddrs) {
			*host = h->name;
			return &h->addrs[v->addr_i];
		}
		v->host_i++;
		v->addr_i = 0;
	}
	return NULL;
}

static void advance(struct dlv *v)
{
	v->plain = false;
	v->addr_i++;
}

static bool rm_implicit(const struct remote *rm)
{
	return rm->relay && rm->conf->relayhost_tls == 1;
}

static void open_cb(struct smtpc *c, void *arg, const struct smtpc_result *fail,
		    const struct smtpc_info *info)
{
	struct conn *cn = arg;
	struct dlv *v = cn->dlv;
	if (!fail) {
		cn->info = *info;
		dlv_send(v, cn);
		return;
	}
	/* smtpc frees c after this callback */
	cn->c = NULL;
	(void)c;
	/* level may: a failed handshake is retried in plaintext, to this host only (never
	 * where TLS comes first: an implicit-TLS relayhost has no plaintext) */
	bool implicit = rm_implicit(cn->rm);
	bool retry_plain = fail->tls_failed && v->level == TLS_LEVEL_MAY && !cn->fallback &&
			   !implicit;
	for (int k = v->done_upto; k < v->n; k++) {
		int j = v->js[k];
		char reason[512];
		snprintf(reason, sizeof(reason), "%s%s", fail->reason,
			 retry_plain ? " (trying again without TLS, as level may allows)" : "");
		set_res(&v->job->res[j], REMOTE_DEFER, fail->enh[0] ? fail->enh : "4.4.1",
			fail->reply, reason, cn->host);
		note(v, j, cn, fail, info);
	}
	if (retry_plain)
		v->plain = true;
	else
		advance(v);
	cn->dlv = NULL;
	v->conn = NULL;
	conn_gone(cn);
	dlv_next(v);
}

static void conn_open(struct dlv *v, const char *host, const struct sockaddr_storage *ss)
{
	struct remote *rm = v->rm;
	struct conn *cn = xcalloc(1, sizeof(*cn));
	cn->rm = rm;
	conn_link(rm, cn);
	cn->d = v->d;
	cn->dlv = v;
	snprintf(cn->host, sizeof(cn->host), "%s", host);
	dns_addr_str(ss, cn->ip, sizeof(cn->ip));
	cn->port = rm->relay ? rm->relay_port : rm->conf->delivery_port;
	cn->fallback = v->plain;
	cn->level = v->plain ? TLS_LEVEL_NONE : v->level;
	struct smtpc_params p;
	memset(&p, 0, sizeof(p));
	p.addr = *ss;
	p.port = cn->port;
	p.host = cn->host;
	p.domain = v->domain;
	p.helo = rm->conf->hostname;
	p.level = cn->level;
	p.mode = rm_implicit(rm) ? SMTPC_IMPLICIT : SMTPC_STARTTLS;
	p.ctx = rm->ctx;
	if (ss->ss_family == AF_INET && rm->has_src4)
		p.source = &rm->src4;
	else if (ss->ss_family == AF_INET6 && rm->has_src6)
		p.source = &rm->src6;
	if (rm->relay && rm->conf->relayhost_user[0]) {
		p.auth_user = rm->conf->relayhost_user;
		p.auth_pass = rm->conf->relayhost_password;
	}
	p.connect_timeout = rm->conf->delivery_connect_timeout;
	v->d->nconn++;
	rm->total++;
	v->conn = cn;
	cn->c = smtpc_open(rm->base, &p, open_cb, cn);
	if (!cn->c) {
		struct smtpc_result r;
		memset(&r, 0, sizeof(r));
		snprintf(r.enh, sizeof(r.enh), "4.3.0");
		snprintf(r.reason, sizeof(r.reason), "cannot start a connection to %s[%s]", host,
			 cn->ip);
		/* same path as a failed open, but later: never recurse from here */
		cn->dlv = v;
		open_cb(NULL, cn, &r, &cn->info);
	}
}

/* Find a connection for v: an idle one of its destination, a new one to the next address,
 * or a place in the wait list. Gives up when the route is exhausted. */
static void dlv_next(struct dlv *v)
{
	struct remote *rm = v->rm;
	struct dest *d = v->d;
	const char *host = NULL;
	const struct sockaddr_storage *ss = cur_addr(v, &host);
	if (!ss) {
		dlv_fail_rest(v, REMOTE_DEFER, "4.4.1",
			      "no host of the route accepted a connection", false);
		return;
	}
	/* an idle connection of the destination, opened at a level at least as strict (a
	 * plaintext fallback never carries mail that did not allow one) */
	for (struct conn **pp = &d->idle; !v->plain && *pp; pp = &(*pp)->next) {
		struct conn *cn = *pp;
		if (cn->level < v->level)
			continue;
		*pp = cn->next;
		cn->next = NULL;
		evtimer_del(cn->idle_ev);
		dlv_send(v, cn);
		return;
	}
	if (d->nconn >= rm->conf->delivery_connections_per_dest ||
	    rm->total >= rm->conf->delivery_connections) {
		v->waiting = true;
		v->next = NULL;
		if (d->wait_tail)
			d->wait_tail->next = v;
		else
			d->wait_head = v;
		d->wait_tail = v;
		/* all places taken in all: an idle connection elsewhere gives its place up */
		if (rm->total >= rm->conf->delivery_connections)
			close_one_idle(rm, d);
		return;
	}
	conn_open(v, host, ss);
}

static void tx_cb(struct smtpc *c, void *arg, struct smtpc_tx *tx);

/* Runs the next transaction of v (at most limits.recipients recipients) on cn. */
static void dlv_send(struct dlv *v, struct conn *cn)
{
	struct remote_job *job = v->job;
	const struct spool_env *env = job->env;
	v->conn = cn;
	cn->dlv = v;
	int max = v->rm->conf->max_recipients > 0 ? v->rm->conf->max_recipients : 100;
	v->tx_first = v->done_upto;
	v->tx_n = v->n - v->done_upto < max ? v->n - v->done_upto : max;
	memset(&v->tx, 0, sizeof(v->tx));
	memset(v->trc, 0, (size_t)v->n * sizeof(*v->trc));
	for (int k = 0; k < v->tx_n; k++) {
		const struct spool_rcpt *rc = &env->rcpts[job->idx[v->js[v->tx_first + k]]];
		v->trc[k].addr = rc->addr;
		v->trc[k].notify = rc->notify;
		v->trc[k].orcpt = rc->orcpt;
	}
	v->tx.from = env->from;
	v->tx.body_type = env->body_type;
	v->tx.smtputf8 = env->smtputf8;
	v->tx.ret = env->ret;
	v->tx.envid = env->envid;
	v->tx.rcpts = v->trc;
	v->tx.nrcpts = v->tx_n;
	v->tx.fd = job->fd;
	v->tx.off = job->off;
	v->tx.len = job->len;
	if (smtpc_send(cn->c, &v->tx, tx_cb, v) != 0) {
		/* the connection went bad while idle: drop it, try again */
		smtpc_free(cn->c);
		cn->c = NULL;
		v->conn = NULL;
		cn->dlv = NULL;
		conn_gone(cn);
		dlv_next(v);
	}
}

static bool is_perm(const struct smtpc_result *r)
{
	return r->permanent || (r->code >= 500 && r->code < 600);
}

static void tx_cb(struct smtpc *c, void *arg, struct smtpc_tx *tx)
{
	struct dlv *v = arg;
	struct conn *cn = v->conn;
	(void)c;
	/* A failure before any recipient got an answer, with no reply or a 4xx (the server
	 * went away, or MAIL was refused for now): another host may do better. */
	bool rcpt_answered = false;
	for (int k = 0; k < v->tx_n; k++)
		rcpt_answered |= v->trc[k].res.stage >= SMTPC_ST_RCPT && v->trc[k].res.code > 0;
	bool next_host = tx->res.code != 250 && !rcpt_answered && !is_perm(&tx->res) &&
			 tx->res.stage <= SMTPC_ST_MAIL;
	for (int k = 0; k < v->tx_n; k++) {
		int j = v->js[v->tx_first + k];
		struct smtpc_rcpt *tr = &v->trc[k];
		const struct smtpc_result *r = tr->res.stage || tr->res.code || tr->res.reason[0]
						   ? &tr->res
						   : &tx->res;
		enum remote_outcome out = tr->ok ? REMOTE_SENT
					  : is_perm(r) ? REMOTE_BOUNCE
						       : REMOTE_DEFER;
		const struct smtpc_result *shown = tr->ok ? &tx->res : r;
		const char *enh = shown->enh[0]          ? shown->enh
				  : out == REMOTE_SENT   ? "2.0.0"
				  : out == REMOTE_BOUNCE ? "5.0.0"
							 : "4.0.0";
		set_res(&v->job->res[j], out, enh, shown->reply, shown->reason, cn->host);
		v->job->res[j].dsn_passed = tx->dsn_passed;
		note(v, j, cn, shown, &cn->info);
	}
	if (next_host) {
		/* keep these recipients open for the next host; this one is not asked again */
		v->conn = NULL;
		cn->dlv = NULL;
		if (cn->c)
			smtpc_quit(cn->c);
		cn->c = NULL;
		conn_gone(cn);
		advance(v);
		dlv_next(v);
		return;
	}
	v->done_upto = v->tx_first + v->tx_n;
	v->conn = NULL;
	if (v->done_upto < v->n && cn->c && smtpc_usable(cn->c)) {
		dlv_send(v, cn);
		return;
	}
	conn_release(cn);
	if (v->done_upto < v->n) {
		dlv_next(v);
		return;
	}
	dlv_done(v);
}

/* ---- routes ---- */

static void route_cb(void *arg, const struct dns_route *route)
{
	struct dlv *v = arg;
	v->dq = NULL;
	v->route = xmalloc(sizeof(*v->route));
	*v->route = *route;
	char reason[600];
	switch (route->status) {
	case DNS_OK:
		dlv_next(v);
		return;
	case DNS_NXDOMAIN:
		snprintf(reason, sizeof(reason), "%s: domain not found (%s)", v->domain, route->why);
		dlv_fail_rest(v, REMOTE_BOUNCE, "5.1.2", reason, true);
		return;
	case DNS_NULL_MX:
		snprintf(reason, sizeof(reason),
			 "%s does not accept mail (null MX, RFC 7505)", v->domain);
		dlv_fail_rest(v, REMOTE_BOUNCE, "5.1.10", reason, true);
		return;
	case DNS_NO_ADDRESS:
		snprintf(reason, sizeof(reason), "no address for the mail hosts of %s: %s", v->domain,
			 route->why);
		dlv_fail_rest(v, REMOTE_DEFER, "4.4.4", reason, true);
		return;
	case DNS_TEMPFAIL:
	default:
		snprintf(reason, sizeof(reason), "DNS lookup failed for %s: %s", v->domain, route->why);
		dlv_fail_rest(v, REMOTE_DEFER, "4.4.3", reason, true);
		return;
	}
}

/* ---- jobs ---- */

static void finish_ev(evutil_socket_t fd, short what, void *arg)
{
	struct remote_job *job = arg;
	struct remote *rm = job->rm;
	(void)fd;
	(void)what;
	if (job->all_prev)
		job->all_prev->all_next = job->all_next;
	else
		rm->jobs = job->all_next;
	if (job->all_next)
		job->all_next->all_prev = job->all_prev;
	job->all_next = job->all_prev = NULL;
	rm->busy--;
	event_free(job->done_ev);
	job->done_ev = NULL;
	job->cb(job->cb_arg, job);
}

static void job_finish(struct remote_job *job)
{
	/* always from the loop, never from inside remote_deliver */
	event_active(job->done_ev, EV_TIMEOUT, 0);
}

static void domain_of(const char *addr, char *out, size_t n)
{
	const char *at = strrchr(addr, '@');
	snprintf(out, n, "%s", at ? at + 1 : "");
	for (char *p = out; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	size_t l = strlen(out);
	if (l && out[l - 1] == '.')
		out[l - 1] = '\0';
}

void remote_deliver(struct remote *rm, struct remote_job *job, remote_done_cb cb, void *arg)
{
	job->rm = rm;
	job->cb = cb;
	job->cb_arg = arg;
	job->done_ev = event_new(rm->base, -1, 0, finish_ev, job);
	job->all_prev = NULL;
	job->all_next = rm->jobs;
	if (rm->jobs)
		rm->jobs->all_prev = job;
	rm->jobs = job;
	rm->busy++;
	job->pending = 1; /* held until every delivery has started */
	bool *seen = xcalloc((size_t)job->n, sizeof(bool));
	for (int j = 0; j < job->n; j++) {
		if (seen[j])
			continue;
		char dom[LIM_DOMAIN + 1], other[LIM_DOMAIN + 1];
		domain_of(job->env->rcpts[job->idx[j]].addr, dom, sizeof(dom));
		struct dlv *v = xcalloc(1, sizeof(*v));
		v->rm = rm;
		v->job = job;
		dlv_link(rm, v);
		snprintf(v->domain, sizeof(v->domain), "%s", dom);
		v->js = xcalloc((size_t)job->n, sizeof(int));
		for (int k = j; k < job->n; k++) {
			if (seen[k])
				continue;
			domain_of(job->env->rcpts[job->idx[k]].addr, other, sizeof(other));
			if (rm->relay || strcmp(other, dom) == 0) {
				seen[k] = true;
				v->js[v->n++] = k;
			}
		}
		v->trc = xcalloc((size_t)v->n, sizeof(*v->trc));
		if (rm->relay) {
			v->level = (enum tls_level)rm->conf->relayhost_tls_policy;
			v->src = TLS_SRC_RELAYHOST;
			if (job->msg_min > v->level) {
				v->level = job->msg_min;
				v->src = TLS_SRC_MESSAGE;
			}
			char name[LIM_DOMAIN + 3];
			snprintf(name, sizeof(name), "[%s]", rm->relay_host);
			v->d = dest_get(rm, name);
		} else {
			v->level = tls_policy_decide(rm->map,
						     (enum tls_level)rm->conf->delivery_tls_policy,
						     dom, job->msg_min, &v->src);
			v->d = dest_get(rm, dom);
		}
		v->d->refs++;
		job->pending++;
		v->dq = rm->relay ? dns_host(rm->dns, rm->relay_host, route_cb, v)
				  : dns_route(rm->dns, dom, route_cb, v);
		if (!v->dq) {
			char reason[600];
			snprintf(reason, sizeof(reason), "\"%s\" is not a valid domain name",
				 rm->relay ? rm->relay_host : dom);
			dlv_fail_rest(v, REMOTE_BOUNCE, "5.1.2", reason, true);
		}
	}
	free(seen);
	if (--job->pending == 0)
		job_finish(job);
}

int remote_busy(const struct remote *rm)
{
	return rm ? rm->busy : 0;
}

static int tls_min(int v)
{
	static const int vers[] = {TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION};
	return v >= 0 && v < 4 ? vers[v] : TLS1_2_VERSION;
}

struct remote *remote_new(struct event_base *base, const struct conf *c, struct records *rec,
			  char *err, size_t errsz)
{
	struct remote *rm = xcalloc(1, sizeof(*rm));
	rm->conf = c;
	rm->base = base;
	rm->rec = rec;
	if (c->delivery_tls_min_version < 2)
		log_warn("event=tls_config side=client min_version=%s note=\"TLS older than 1.2 "
			 "is allowed for outbound mail because delivery.tls_min_version says so\"",
			 c->delivery_tls_min_version == 0 ? "TLSv1" : "TLSv1.1");
	rm->ctx = smtpc_tls_ctx_new(c->delivery_ca_file, tls_min(c->delivery_tls_min_version), err,
				    errsz);
	if (!rm->ctx)
		goto fail;
	if (c->delivery_tls_policy_file[0]) {
		rm->map = tls_policy_load(c->delivery_tls_policy_file, err, errsz);
		if (!rm->map)
			goto fail;
	}
	struct dns_config dc = {.resolv_conf = c->dns_resolv_conf,
				.forwarders = c->dns_forwarders,
				.trust_anchor = c->dns_trust_anchor,
				.family = (enum dns_family)c->delivery_family};
	rm->dns = dns_new(base, &dc, err, errsz);
	if (!rm->dns)
		goto fail;
	if (c->relayhost[0]) {
		if (conf_relayhost_split(c->relayhost, rm->relay_host, sizeof(rm->relay_host),
					 &rm->relay_port) != 0) {
			snprintf(err, errsz, "delivery.relayhost: cannot parse \"%s\"", c->relayhost);
			goto fail;
		}
		rm->relay = true;
	}
	if (c->delivery_source4[0]) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&rm->src4;
		s4->sin_family = AF_INET;
		rm->has_src4 = inet_pton(AF_INET, c->delivery_source4, &s4->sin_addr) == 1;
	}
	if (c->delivery_source6[0]) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&rm->src6;
		s6->sin6_family = AF_INET6;
		rm->has_src6 = inet_pton(AF_INET6, c->delivery_source6, &s6->sin6_addr) == 1;
	}
	return rm;
fail:
	remote_free(rm);
	return NULL;
}

void remote_free(struct remote *rm)
{
	if (!rm)
		return;
	/* idle connections: close; busy ones belong to deliveries that never call back now */
	while (rm->dests) {
		struct dest *d = rm->dests;
		rm->dests = d->next;
		free(d);
	}
	while (rm->dlvs)
		dlv_free(rm->dlvs);
	while (rm->conns) {
		struct conn *cn = rm->conns;
		conn_unlink(cn);
		smtpc_free(cn->c);
		if (cn->idle_ev)
			event_free(cn->idle_ev);
		free(cn);
	}
	for (struct remote_job *j = rm->jobs; j; j = j->all_next)
		if (j->done_ev)
			event_free(j->done_ev);
	dns_free(rm->dns);
	tls_policy_free(rm->map);
	if (rm->ctx)
		SSL_CTX_free(rm->ctx);
	free(rm);
}
