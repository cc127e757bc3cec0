/* The queue process: the owner of committed mail. A FIFO of queue ids fed by smtp workers'
 * IPC notices, spool scans and `sealmail queue`; each due message has its local recipients
 * delivered into Maildir here (batched syncs) and its remote ones handed to remote.c
 * (finish.c settles the outcome), each done recipient recorded durably, the spool file
 * removed when none is left. Runs as the unprivileged user. Input: spool files
 * (self-checked), IPC frames (checked). */
#include "queue/queue.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "msg/spool.h"
#include "net/ipc.h"
#include "queue/maildir.h"
#include "queue/queue_int.h"
#include "util/log.h"

static unsigned qhash(const char *qid)
{
	unsigned h = 2166136261u;
	for (; *qid; qid++)
		h = (h ^ (unsigned char)*qid) * 16777619u;
	return h % QMSG_BUCKETS;
}

struct qmsg *qmsg_find(struct queue *q, const char *qid)
{
	for (struct qmsg *m = q->msgs[qhash(qid)]; m; m = m->hnext)
		if (strcmp(m->qid, qid) == 0)
			return m;
	return NULL;
}

struct qmsg *qmsg_get(struct queue *q, const char *qid)
{
	struct qmsg *m = qmsg_find(q, qid);
	if (m)
		return m;
	m = xcalloc(1, sizeof(*m));
	snprintf(m->qid, sizeof(m->qid), "%s", qid);
	if (q->rec && records_state_get(q->rec, qid, &m->st) < 0)
		log_err("event=records_error qid=%s op=state_get", qid);
	unsigned h = qhash(qid);
	m->hnext = q->msgs[h];
	q->msgs[h] = m;
	q->nmsgs++;
	return m;
}

void qmsg_forget(struct queue *q, const char *qid)
{
	for (struct qmsg **pp = &q->msgs[qhash(qid)]; *pp; pp = &(*pp)->hnext)
		if (strcmp((*pp)->qid, qid) == 0) {
			struct qmsg *m = *pp;
			*pp = m->hnext;
			free(m);
			q->nmsgs--;
			break;
		}
	if (q->rec && records_state_del(q->rec, qid) != 0)
		log_err("event=records_error qid=%s op=state_del", qid);
}

void q_remove(struct queue *q, const char *qid, const char *why)
{
	if (spool_remove(q->spool, qid) != 0 && errno != ENOENT)
		log_err("event=spool_error qid=%s op=remove error=\"%s\"", qid, strerror(errno));
	else
		log_info("event=removed qid=%s%s%s", qid, why ? " reason=" : "", why ? why : "");
	qmsg_forget(q, qid);
}

void q_push(struct queue *q, const char *qid)
{
	struct qitem *it = xcalloc(1, sizeof(*it));
	snprintf(it->qid, sizeof(it->qid), "%s", qid);
	if (q->tail)
		q->tail->next = it;
	else
		q->head = it;
	q->tail = it;
	q->nitems++;
	event_active(q->run_ev, EV_TIMEOUT, 0);
}

static bool qid_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n >= 32)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
			return false;
	return true;
}

#define BATCH_MSGS 64

/* One local copy staged in a batch. */
struct copy {
	int msg;                       /* index into the batch's messages */
	int rcpt;                      /* recipient index in that message */
	char root[PATH_MAX];
	char name[MAILDIR_NAME_MAX];
	bool staged, published;
};

struct bmsg {
	char qid[32];
	struct spool_env env;
	bool *done;
	int left;                      /* recipients not delivered after this batch */
	int remote;                    /* of them, remote ones (remote.c's round comes next) */
	uint64_t off, len;             /* the body in the spool file */
	bool loaded;
};

/* Delivers up to BATCH_MSGS queued messages with two syncs in all: every copy is written to
 * its Maildir's tmp/, one sync makes them durable, each is linked into new/, a second sync
 * makes the links durable, and only then are the spool files removed. */
static void deliver_batch(struct queue *q)
{
	struct bmsg *msgs = xcalloc(BATCH_MSGS, sizeof(*msgs));
	struct copy *copies = NULL;
	int nmsgs = 0, ncopies = 0, capcopies = 0;

	while (q->head && nmsgs < BATCH_MSGS) {
		struct qitem *it = q->head;
		q->head = it->next;
		if (!q->head)
			q->tail = NULL;
		q->nitems--;
		struct bmsg *m = &msgs[nmsgs];
		snprintf(m->qid, sizeof(m->qid), "%s", it->qid);
		free(it);
		bool dup = false;
		for (int i = 0; i < nmsgs; i++)
			dup |= strcmp(msgs[i].qid, m->qid) == 0;
		if (dup)
			continue;
		/* not due: running, held, or waiting for its next try */
		struct qmsg *qm = qmsg_get(q, m->qid);
		if (qm->active || qm->st.held || qm->st.next_try > time(NULL))
			continue;
		if (spool_read(q->spool, m->qid, &m->env, &m->off, &m->len) != 0) {
			if (errno != ENOENT)
				log_err("event=spool_error qid=%s op=read error=\"%s\"", m->qid,
					errno == EINVAL ? "corrupt" : strerror(errno));
			continue;
		}
		m->loaded = true;
		nmsgs++;
		m->done = xcalloc((size_t)m->env.nrcpts, sizeof(bool));
		spool_load_done(q->spool, m->qid, m->done, m->env.nrcpts);
		int fd = spool_open_msg(q->spool, m->qid);
		for (int r = 0; r < m->env.nrcpts; r++) {
			struct spool_rcpt *rc = &m->env.rcpts[r];
			if (m->done[r])
				continue;
			m->left++;
			if (fd < 0)
				continue;
			if (!rc->mailbox[0]) {
				m->remote++;
				continue;
			}
			if (ncopies == capcopies) {
				capcopies = capcopies ? capcopies * 2 : 64;
				copies = realloc(copies, (size_t)capcopies * sizeof(*copies));
				if (!copies)
					fatal("out of memory");
			}
			struct copy *c = &copies[ncopies];
			memset(c, 0, sizeof(*c));
			c->msg = nmsgs - 1;
			c->rcpt = r;
			if (maildir_path(q->mail_root, rc->mailbox, c->root, sizeof(c->root)) != 0) {
				log_err("event=deferred qid=%s to=<%s> status=deferred reason=\"mailbox path too long\"",
					m->qid, rc->addr);
				continue;
			}
			char prefix[2 * LIM_PATH + 64];
			int pl = snprintf(prefix, sizeof(prefix),
					  "Return-Path: <%s>\r\nDelivered-To: %s\r\n", m->env.from,
					  rc->mailbox);
			if (maildir_stage(c->root, prefix, (size_t)pl, fd, m->off, m->len, c->name) != 0) {
				log_warn("event=deferred qid=%s to=<%s> mailbox=%s relay=local status=deferred error=\"%s\"",
					 m->qid, rc->addr, rc->mailbox, strerror(errno));
				continue;
			}
			c->staged = true;
			ncopies++;
		}
		if (fd >= 0)
			close(fd);
	}
	/* 1. every staged copy durable in tmp/: one copy, its fdatasync; several, one syncfs()
	 * of the mail file system (one device flush for all) */
	bool group_ok = ncopies > 1 && maildir_sync_fs(copies[0].root) == 0;
	for (int i = 0; i < ncopies && !group_ok; i++) {
		struct copy *c = &copies[i];
		if (maildir_sync_staged(c->root, c->name, false) != 0) {
			log_warn("event=deferred qid=%s to=<%s> relay=local status=deferred error=\"%s\"",
				 msgs[c->msg].qid, msgs[c->msg].env.rcpts[c->rcpt].addr, strerror(errno));
			maildir_unstage(c->root, c->name);
			c->staged = false;
		}
	}
	/* 2. linked into new/ */
	for (int i = 0; i < ncopies; i++) {
		struct copy *c = &copies[i];
		if (!c->staged)
			continue;
		if (maildir_publish(c->root, c->name) != 0) {
			log_warn("event=deferred qid=%s to=<%s> relay=local status=deferred error=\"%s\"",
				 msgs[c->msg].qid, msgs[c->msg].env.rcpts[c->rcpt].addr, strerror(errno));
			maildir_unstage(c->root, c->name);
			continue;
		}
		c->published = true;
	}
	/* 3. the new/ entries durable, one sync per Maildir: now the copies are delivered */
	for (int i = 0; i < ncopies; i++) {
		struct copy *c = &copies[i];
		if (!c->published)
			continue;
		bool seen = false;
		for (int k = 0; k < i && !seen; k++)
			seen = copies[k].published && strcmp(copies[k].root, c->root) == 0;
		if (seen)
			continue;
		if (maildir_sync_new(c->root) != 0) {
			log_err("event=maildir_error op=sync root=%s error=\"%s\"", c->root, strerror(errno));
			/* not known durable: none of this Maildir's copies count as delivered */
			for (int k = i; k < ncopies; k++)
				if (strcmp(copies[k].root, c->root) == 0)
					copies[k].published = false;
		}
	}
	for (int i = 0; i < ncopies; i++) {
		struct copy *c = &copies[i];
		if (!c->published)
			continue;
		struct bmsg *m = &msgs[c->msg];
		struct spool_rcpt *rc = &m->env.rcpts[c->rcpt];
		m->done[c->rcpt] = true;
		m->left--;
		log_info("event=delivered qid=%s to=<%s> mailbox=%s relay=local delay=%.0f dsn=2.0.0 status=sent file=%s",
			 m->qid, rc->addr, rc->mailbox, difftime(time(NULL), m->env.arrival), c->name);
	}
	/* 4. finished messages leave the spool; partly delivered ones record who is done */
	for (int i = 0; i < nmsgs; i++) {
		struct bmsg *m = &msgs[i];
		if (m->left == 0) {
			q_remove(q, m->qid, NULL);
		} else {
			for (int k = 0; k < ncopies; k++)
				if (copies[k].msg == i && copies[k].published &&
				    spool_mark_done(q->spool, m->qid, copies[k].rcpt) != 0)
					log_err("event=spool_error qid=%s op=mark_done error=\"%s\"", m->qid,
						strerror(errno));
		}
		/* 5. what is left: remote recipients go to remote.c (which takes the envelope
		 * read above); local failures wait */
		if (m->left > 0) {
			struct qmsg *qm = qmsg_get(q, m->qid);
			if (m->remote > 0) {
				q_start_remote(q, qm, &m->env, m->done, m->off, m->len);
			} else {
				qm->st.attempts++;
				q_defer(q, qm, "local delivery failed");
			}
		}
		free(m->done);
		spool_env_free(&m->env);
	}
	free(copies);
	free(msgs);
}

/* One batch per callback, so IPC stays responsive under a backlog. */
static void run_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	(void)fd;
	(void)what;
	if (!q->head || q->stopping)
		return;
	deliver_batch(q);
	if (q->head)
		event_active(q->run_ev, EV_TIMEOUT, 0);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Everything in queue/ (oldest first). tmp/ is left alone: workers may be writing there. */
static void scan(struct queue *q)
{
	DIR *d = opendir(spool_queue_dir(q->spool));
	if (!d) {
		log_err("event=spool_error op=scan error=\"%s\"", strerror(errno));
		return;
	}
	char **names = NULL;
	int n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!qid_valid(de->d_name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, (size_t)cap * sizeof(*names));
			if (!names)
				fatal("out of memory");
		}
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (n > 1)
		qsort(names, (size_t)n, sizeof(*names), cmp_str);
	for (int i = 0; i < n; i++) {
		q_push(q, names[i]);
		free(names[i]);
	}
	free(names);
	if (n)
		log_info("event=queue_scan messages=%d", n);
}

static void scan_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	(void)fd;
	(void)what;
	if (q->nitems == 0)
		scan(q);
	/* delivery records are kept RECORDS_KEEP_DAYS; pruned at most once an hour */
	time_t now = time(NULL);
	if (q->rec && now - q->pruned >= 3600) {
		q->pruned = now;
		int n = records_prune(q->rec, now - (time_t)RECORDS_KEEP_DAYS * 86400);
		if (n > 0)
			log_info("event=records_pruned rows=%d older_than_days=%d", n, RECORDS_KEEP_DAYS);
	}
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	(void)arg;
	bufferevent_free(bev);
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
	struct queue *q = arg;
	char buf[1024];
	struct ipc_hdr h;
	int r;
	while ((r = ipc_read(bufferevent_get_input(bev), &h, buf, sizeof(buf))) == 1) {
		if (h.type == IPC_MSG_NEW && qid_valid(buf))
			q_push(q, buf);
		else if (h.type == IPC_QUEUE_REQ)
			admin_handle(q, bev, h.id, buf, h.len);
		else if (h.type == IPC_PING)
			ipc_send(bev, IPC_PING, h.id, NULL, 0);
		else
			log_warn("event=ipc_error peer=smtp error=\"unexpected frame type %u\"", h.type);
	}
	if (r < 0) {
		log_err("event=ipc_error peer=smtp error=\"bad frame\"");
		bufferevent_free(bev);
	}
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct queue *q = arg;
	(void)what;
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	struct bufferevent *bev = bufferevent_socket_new(q->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, client_read_cb, NULL, client_event_cb, q);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* SIGTERM: no new rounds; rounds in flight may finish (so nothing is sent twice) for up to
 * limits.shutdown_grace seconds. */
static void stop_check_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	(void)fd;
	(void)what;
	if (remote_busy(q->remote) == 0)
		event_base_loopexit(q->base, NULL);
}

static void sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
	struct queue *q = arg;
	(void)sig;
	(void)what;
	if (q->stopping)
		return;
	q->stopping = true;
	int busy = remote_busy(q->remote);
	if (busy == 0) {
		event_base_loopexit(q->base, NULL);
		return;
	}
	log_info("event=queue_stopping deliveries_in_flight=%d grace=%d", busy,
		 q->conf->shutdown_grace);
	struct timeval grace = {q->conf->shutdown_grace, 0}, tick = {0, 100000};
	event_base_loopexit(q->base, &grace);
	q->stop_ev = event_new(q->base, -1, EV_PERSIST, stop_check_cb, q);
	event_add(q->stop_ev, &tick);
}

int queue_main(const struct conf *c, int lfd)
{
	struct queue q = {.conf = c};
	q.spool = spool_open(c->data_dir);
	if (!q.spool) {
		log_err("event=spool_error op=open dir=%s error=\"%s\"", c->data_dir, strerror(errno));
		return 75;
	}
	snprintf(q.mail_root, sizeof(q.mail_root), "%s/mail", c->data_dir);
	q.base = event_base_new();
	if (!q.base)
		fatal("event_base_new failed");
	char err[512];
	q.rec = records_open(c->data_dir, err, sizeof(err));
	if (!q.rec) {
		log_err("event=records_error op=open error=\"%s\"", err);
		return 75;
	}
	records_batch(q.rec, q.base);
	q.store = store_open(c->data_dir, false, err, sizeof(err));
	if (!q.store) {
		log_err("event=store_error op=open error=\"%s\"", err);
		return 75;
	}
	q.remote = remote_new(q.base, c, q.rec, err, sizeof(err));
	if (!q.remote) {
		log_err("event=delivery_config_error error=\"%s\"", err);
		return 78;
	}
	q.run_ev = event_new(q.base, -1, 0, run_cb, &q);
	q.scan_ev = event_new(q.base, -1, EV_PERSIST, scan_cb, &q);
	struct timeval iv = {c->queue_scan_interval, 0};
	event_add(q.scan_ev, &iv);
	struct event *ae = event_new(q.base, lfd, EV_READ | EV_PERSIST, accept_cb, &q);
	event_add(ae, NULL);
	struct event *te = evsignal_new(q.base, SIGTERM, sigterm_cb, &q);
	event_add(te, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	log_info("event=queue_ready");
	scan(&q);
	event_base_dispatch(q.base);
	while (q.head) {
		struct qitem *it = q.head;
		q.head = it->next;
		free(it);
	}
	remote_free(q.remote);
	q_free_rounds(&q);
	for (int i = 0; i < QMSG_BUCKETS; i++)
		while (q.msgs[i]) {
			struct qmsg *m = q.msgs[i];
			q.msgs[i] = m->hnext;
			free(m);
		}
	if (q.stop_ev)
		event_free(q.stop_ev);
	records_close(q.rec);
	store_close(q.store);
	event_free(ae);
	event_free(te);
	event_free(q.run_ev);
	event_free(q.scan_ev);
	event_base_free(q.base);
	spool_close(q.spool);
	return 0;
}
