/* The end of a delivery round in the queue process: a message's remote recipients are handed
 * to remote.c, and when the round ends each recipient is settled: delivered ones marked done,
 * permanent failures and expired ones returned to the sender in one RFC 3464 notice, delay
 * notices after queue.delay_warning, the rest scheduled with exponential backoff and jitter.
 * Untrusted input: remote replies inside outcomes (passed to dsn.c, which sanitises them). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "queue/dsn.h"
#include "queue/queue_int.h"
#include "smtp/parse.h"
#include "util/log.h"

/* One remote round of one message. */
struct round {
	struct round *next, *prev;  /* q->rounds */
	struct queue *q;
	char qid[32];
	struct spool_env env;
	int fd;
	uint64_t off, len;
	int *idx;
	struct remote_res *res;
	struct remote_job job;
};

static void round_free(struct round *r)
{
	if (r->fd >= 0)
		close(r->fd);
	spool_env_free(&r->env);
	free(r->idx);
	free(r->res);
	free(r);
}

void q_free_rounds(struct queue *q)
{
	while (q->rounds) {
		struct round *r = q->rounds;
		q->rounds = r->next;
		round_free(r);
	}
}

/* RFC 5321 4.5.4.1: retry intervals grow; Postfix doubles from minimal_backoff_time up to
 * maximal_backoff_time. Jitter of +-20% keeps a burst of deferrals from retrying in step. */
static time_t backoff(const struct conf *c, int attempts)
{
	double wait = c->queue_retry_interval;
	for (int i = 1; i < attempts && wait < c->queue_retry_max; i++)
		wait *= 2;
	if (wait > c->queue_retry_max)
		wait = c->queue_retry_max;
	wait *= 0.8 + 0.4 * (double)randombytes_uniform(1001) / 1000.0;
	return wait < 1 ? 1 : (time_t)wait;
}

void q_defer(struct queue *q, struct qmsg *m, const char *reason)
{
	if (m->st.attempts < 1)
		m->st.attempts = 1;
	m->st.next_try = time(NULL) + backoff(q->conf, m->st.attempts);
	if (reason)
		snprintf(m->st.last_reason, sizeof(m->st.last_reason), "%s", reason);
	if (q->rec && records_state_put(q->rec, m->qid, &m->st) != 0)
		log_err("event=records_error qid=%s op=state_put", m->qid);
	log_info("event=deferred qid=%s attempts=%d next_try_in=%lds", m->qid, m->st.attempts,
		 (long)(m->st.next_try - time(NULL)));
}

/* ---- notices to the sender ---- */

static int spool_wr(void *arg, const void *p, size_t n)
{
	return spool_write(arg, p, n);
}

/* Whether recipient rc wants a notice of this kind (RFC 3461 4.1: no NOTIFY means failure
 * and, at the MTA's discretion, delay notices; NEVER means none). */
static bool wants(const struct spool_rcpt *rc, enum dsn_action a)
{
	if (rc->notify & SMTP_NOTIFY_NEVER)
		return false;
	if (a == DSN_FAILED)
		return rc->notify == 0 || (rc->notify & SMTP_NOTIFY_FAILURE);
	if (a == DSN_DELAYED)
		return rc->notify == 0 || (rc->notify & SMTP_NOTIFY_DELAY);
	return (rc->notify & SMTP_NOTIFY_SUCCESS) != 0;
}

/* Writes one notice about dr[0..n) of r's message to its sender, spooled from <>. */
static void send_notice(struct queue *q, struct round *r, struct dsn_rcpt *dr, int n,
			time_t give_up)
{
	const struct spool_env *env = &r->env;
	const char *kind = dr[0].action == DSN_FAILED    ? "bounce"
			   : dr[0].action == DSN_DELAYED ? "delay"
							 : "success";
	if (!env->from[0]) {
		/* RFC 5321 6.1: never a notice about a notice */
		log_info("event=notice_dropped qid=%s kind=%s reason=\"null sender\"", r->qid, kind);
		return;
	}
	struct spool_rcpt to;
	memset(&to, 0, sizeof(to));
	snprintf(to.addr, sizeof(to.addr), "%s", env->from);
	to.notify = SMTP_NOTIFY_NEVER;
	char mailbox[STORE_ADDR_MAX];
	enum store_res sr = store_resolve(q->store, env->from, q->conf->postmaster, mailbox,
					  sizeof(mailbox));
	if (sr == STORE_OK) {
		snprintf(to.mailbox, sizeof(to.mailbox), "%s", mailbox);
	} else if (sr == STORE_NOTFOUND) {
		log_warn("event=notice_dropped qid=%s kind=%s to=<%s> reason=\"no such local mailbox\"",
			 r->qid, kind, env->from);
		return;
	} else if (sr != STORE_INVALID) {
		log_err("event=notice_error qid=%s kind=%s error=\"store lookup failed\"", r->qid,
			kind);
		return;
	}
	struct spool_env ne;
	memset(&ne, 0, sizeof(ne));
	ne.arrival = time(NULL);
	snprintf(ne.helo, sizeof(ne.helo), "%s", q->conf->hostname);
	snprintf(ne.client_ip, sizeof(ne.client_ip), "127.0.0.1");
	snprintf(ne.listener, sizeof(ne.listener), "local");
	/* the original rides along: 8-bit when it was */
	ne.body_type = env->body_type == SMTP_BODY_7BIT || env->body_type == SMTP_BODY_NONE
			   ? SMTP_BODY_7BIT
			   : SMTP_BODY_8BITMIME;
	ne.smtputf8 = env->smtputf8;
	ne.rcpts = &to;
	ne.nrcpts = 1;
	struct dsn_report rep = {.reporting_mta = q->conf->hostname,
				 .qid = r->qid,
				 .from = env->from,
				 .envid = env->envid,
				 .ret = env->ret,
				 .arrival = env->arrival,
				 .now = time(NULL),
				 .give_up = give_up,
				 .rcpts = dr,
				 .nrcpts = n,
				 .smtputf8 = env->smtputf8};
	struct spool_msg *sm = spool_begin(q->spool, &ne);
	if (!sm) {
		log_err("event=notice_error qid=%s kind=%s error=\"%s\"", r->qid, kind,
			strerror(errno));
		return;
	}
	char nqid[32];
	snprintf(nqid, sizeof(nqid), "%s", spool_msg_qid(sm));
	if (dsn_write(&rep, r->fd, r->off, r->len, q->conf->max_message_size / 2, spool_wr, sm) !=
		0 ||
	    spool_finish(sm) != 0) {
		log_err("event=notice_error qid=%s kind=%s error=\"cannot write the notice\"", r->qid,
			kind);
		spool_abort(sm);
		return;
	}
	if (spool_commit(q->spool, &sm, 1) != 0) {
		log_err("event=notice_error qid=%s kind=%s error=\"cannot commit the notice\"",
			r->qid, kind);
		return;
	}
	log_info("event=notice qid=%s kind=%s notice_qid=%s to=<%s> recipients=%d", r->qid, kind,
		 nqid, env->from, n);
	q_push(q, nqid);
}

/* ---- the end of a round ---- */

/* "5d", "4h", "90m" or "30s": the largest unit that divides it. */
static void fmt_duration(int secs, char *buf, size_t n)
{
	if (secs >= 86400 && secs % 86400 == 0)
		snprintf(buf, n, "%dd", secs / 86400);
	else if (secs >= 3600 && secs % 3600 == 0)
		snprintf(buf, n, "%dh", secs / 3600);
	else if (secs >= 60 && secs % 60 == 0)
		snprintf(buf, n, "%dm", secs / 60);
	else
		snprintf(buf, n, "%ds", secs);
}

static void round_done(void *arg, struct remote_job *job)
{
	struct round *r = arg;
	struct queue *q = r->q;
	const struct conf *c = q->conf;
	time_t now = time(NULL);
	(void)job;
	if (r->prev)
		r->prev->next = r->next;
	else
		q->rounds = r->next;
	if (r->next)
		r->next->prev = r->prev;
	struct qmsg *m = qmsg_get(q, r->qid);
	m->active = false;
	bool expired = now - r->env.arrival >= c->queue_lifetime;
	struct dsn_rcpt *fail = xcalloc((size_t)r->job.n, sizeof(*fail));
	struct dsn_rcpt *delay = xcalloc((size_t)r->job.n, sizeof(*delay));
	struct dsn_rcpt *okn = xcalloc((size_t)r->job.n, sizeof(*okn));
	char (*why)[600] = xcalloc((size_t)r->job.n, sizeof(*why));
	int nfail = 0, ndelay = 0, nok = 0;
	const char *last_reason = NULL;
	for (int j = 0; j < r->job.n; j++) {
		struct remote_res *res = &r->res[j];
		const struct spool_rcpt *rc = &r->env.rcpts[r->idx[j]];
		struct dsn_rcpt d = {.addr = rc->addr,
				     .orcpt = rc->orcpt,
				     .status = res->enh,
				     .remote_mta = res->mx,
				     .diag = res->diag,
				     .reason = res->reason,
				     .last_attempt = now};
		if (res->out == REMOTE_SENT) {
			/* RFC 3461 5.2.2: the next hop without DSN cannot report success: we do */
			if (!res->dsn_passed && wants(rc, DSN_RELAYED)) {
				d.action = DSN_RELAYED;
				okn[nok++] = d;
			}
		} else if (res->out == REMOTE_BOUNCE || expired) {
			if (res->out != REMOTE_BOUNCE) {
				char life[32];
				fmt_duration(c->queue_lifetime, life, sizeof(life));
				snprintf(why[j], sizeof(why[j]),
					 "delivery time expired (queue.lifetime %s); last error: %s", life,
					 res->diag[0] ? res->diag : res->reason);
				d.reason = why[j];
				d.status = "4.4.7";
				d.diag = "";
				log_warn("event=expired qid=%s to=<%s> dsn=4.4.7 status=expired", r->qid,
					 rc->addr);
				struct attempt a;
				memset(&a, 0, sizeof(a));
				snprintf(a.qid, sizeof(a.qid), "%s", r->qid);
				a.rcpt = r->idx[j];
				snprintf(a.rcpt_addr, sizeof(a.rcpt_addr), "%s", rc->addr);
				struct timespec ts;
				clock_gettime(CLOCK_REALTIME, &ts);
				a.time = (double)ts.tv_sec + ts.tv_nsec / 1e9;
				snprintf(a.status, sizeof(a.status), "expired");
				snprintf(a.enh, sizeof(a.enh), "4.4.7");
				snprintf(a.reason, sizeof(a.reason), "%s", why[j]);
				snprintf(a.stage, sizeof(a.stage), "queue");
				a.attempt_no = m->st.attempts;
				a.delay = (double)(now - r->env.arrival);
				records_add(q->rec, &a);
			}
			if (wants(rc, DSN_FAILED)) {
				d.action = DSN_FAILED;
				fail[nfail++] = d;
			}
		} else {
			last_reason = res->diag[0] ? res->diag : res->reason;
			if (!m->st.warned && c->queue_delay_warning > 0 &&
			    now - r->env.arrival >= c->queue_delay_warning && wants(rc, DSN_DELAYED)) {
				d.action = DSN_DELAYED;
				delay[ndelay++] = d;
			}
		}
	}
	if (nfail)
		send_notice(q, r, fail, nfail, 0);
	if (ndelay) {
		send_notice(q, r, delay, ndelay, r->env.arrival + c->queue_lifetime);
		m->st.warned = true;
	}
	if (nok)
		send_notice(q, r, okn, nok, 0);
	free(fail);
	free(delay);
	free(okn);
	free(why);

	/* Who is done now: delivered, and returned (their notice is spooled above). When that
	 * is everyone, the spool file goes at once; only a message that stays records its done
	 * recipients (one synced append each). */
	bool *done = xcalloc((size_t)r->env.nrcpts, sizeof(bool));
	bool *now_done = xcalloc((size_t)r->job.n, sizeof(bool));
	spool_load_done(q->spool, r->qid, done, r->env.nrcpts);
	for (int j = 0; j < r->job.n; j++) {
		enum remote_outcome o = r->res[j].out;
		now_done[j] = o == REMOTE_SENT || o == REMOTE_BOUNCE || expired;
		done[r->idx[j]] |= now_done[j];
	}
	int pending = 0;
	for (int i = 0; i < r->env.nrcpts; i++)
		pending += !done[i];
	for (int j = 0; j < r->job.n && pending > 0 && !m->deleted; j++)
		if (now_done[j] && spool_mark_done(q->spool, r->qid, r->idx[j]) != 0)
			log_err("event=spool_error qid=%s op=mark_done error=\"%s\"", r->qid,
				strerror(errno));
	free(now_done);
	free(done);
	if (m->deleted || pending == 0)
		q_remove(q, r->qid, m->deleted ? "deleted" : NULL);
	else
		q_defer(q, m, last_reason ? last_reason : "local delivery failed");
	round_free(r);
}

void q_start_remote(struct queue *q, struct qmsg *m, struct spool_env *env, const bool *done,
		    uint64_t off, uint64_t len)
{
	struct round *r = xcalloc(1, sizeof(*r));
	r->q = q;
	snprintf(r->qid, sizeof(r->qid), "%s", m->qid);
	r->env = *env;
	memset(env, 0, sizeof(*env)); /* the round owns rcpts now */
	r->off = off;
	r->len = len;
	r->fd = spool_open_msg(q->spool, m->qid);
	if (r->fd < 0) {
		log_err("event=spool_error qid=%s op=open error=\"%s\"", m->qid, strerror(errno));
		round_free(r);
		return;
	}
	r->idx = xcalloc((size_t)r->env.nrcpts, sizeof(int));
	int n = 0;
	for (int i = 0; i < r->env.nrcpts; i++)
		if (!done[i] && !r->env.rcpts[i].mailbox[0])
			r->idx[n++] = i;
	if (n == 0) {
		round_free(r);
		return;
	}
	r->res = xcalloc((size_t)n, sizeof(*r->res));
	m->active = true;
	m->st.attempts++;
	r->job.qid = r->qid;
	r->job.env = &r->env;
	r->job.fd = r->fd;
	r->job.off = r->off;
	r->job.len = r->len;
	r->job.idx = r->idx;
	r->job.n = n;
	r->job.attempt_no = m->st.attempts;
	r->job.msg_min = TLS_LEVEL_NONE;
	r->job.res = r->res;
	r->next = q->rounds;
	if (q->rounds)
		q->rounds->prev = r;
	q->rounds = r;
	remote_deliver(q->remote, &r->job, round_done, r);
}
