/* The queue process: the owner of committed mail. A FIFO of queue ids fed by smtp workers'
 * IPC notices and by spool scans; each message is delivered recipient by recipient (local
 * mailboxes into Maildir), each done recipient recorded durably, the spool file removed
 * when none is left. Runs as the unprivileged user. Input: spool files (self-checked). */
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
#include "util/log.h"

struct qitem {
	struct qitem *next;
	char qid[32];
};

struct queue {
	const struct conf *conf;
	struct spool *spool;
	struct event_base *base;
	struct qitem *head, *tail;
	int nitems;
	struct event *run_ev, *scan_ev;
	char mail_root[PATH_MAX];
};

static void q_push(struct queue *q, const char *qid)
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

/* Delivers what is left of one message. */
static void deliver(struct queue *q, const char *qid)
{
	struct spool_env env;
	uint64_t off, len;
	if (spool_read(q->spool, qid, &env, &off, &len) != 0) {
		if (errno != ENOENT)
			log_err("event=spool_error qid=%s op=read error=\"%s\"", qid,
				errno == EINVAL ? "corrupt" : strerror(errno));
		return;
	}
	bool *done = xcalloc((size_t)env.nrcpts, sizeof(bool));
	spool_load_done(q->spool, qid, done, env.nrcpts);
	int fd = spool_open_msg(q->spool, qid);
	int left = 0;
	double delay = difftime(time(NULL), env.arrival);
	for (int i = 0; i < env.nrcpts && fd >= 0; i++) {
		struct spool_rcpt *r = &env.rcpts[i];
		if (done[i])
			continue;
		if (!r->mailbox[0]) {
			log_warn("event=deferred qid=%s to=<%s> status=deferred reason=\"remote delivery is not available yet\"",
				 qid, r->addr);
			left++;
			continue;
		}
		char root[PATH_MAX], prefix[2 * LIM_PATH + 64], name[256];
		if (maildir_path(q->mail_root, r->mailbox, root, sizeof(root)) != 0) {
			log_err("event=bounce_needed qid=%s to=<%s> reason=\"mailbox path too long\"", qid,
				r->addr);
			left++;
			continue;
		}
		int pl = snprintf(prefix, sizeof(prefix), "Return-Path: <%s>\r\nDelivered-To: %s\r\n",
				  env.from, r->mailbox);
		if (maildir_deliver(root, prefix, (size_t)pl, fd, off, len, name) != 0) {
			log_warn("event=deferred qid=%s to=<%s> mailbox=%s relay=local status=deferred error=\"%s\"",
				 qid, r->addr, r->mailbox, strerror(errno));
			left++;
			continue;
		}
		if (spool_mark_done(q->spool, qid, i) != 0)
			log_err("event=spool_error qid=%s op=mark_done error=\"%s\"", qid, strerror(errno));
		log_info("event=delivered qid=%s to=<%s> mailbox=%s relay=local delay=%.0f dsn=2.0.0 status=sent file=%s",
			 qid, r->addr, r->mailbox, delay, name);
	}
	if (fd >= 0)
		close(fd);
	if (left == 0) {
		if (spool_remove(q->spool, qid) != 0)
			log_err("event=spool_error qid=%s op=remove error=\"%s\"", qid, strerror(errno));
		else
			log_info("event=removed qid=%s", qid);
	}
	free(done);
	spool_env_free(&env);
}

/* One message per callback, so IPC stays responsive under a backlog. */
static void run_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	(void)fd;
	(void)what;
	struct qitem *it = q->head;
	if (!it)
		return;
	q->head = it->next;
	if (!q->head)
		q->tail = NULL;
	q->nitems--;
	deliver(q, it->qid);
	free(it);
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
	char buf[64];
	struct ipc_hdr h;
	int r;
	while ((r = ipc_read(bufferevent_get_input(bev), &h, buf, sizeof(buf))) == 1) {
		if (h.type == IPC_MSG_NEW && qid_valid(buf))
			q_push(q, buf);
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

static void sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
	struct queue *q = arg;
	(void)sig;
	(void)what;
	event_base_loopexit(q->base, NULL);
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
	event_free(ae);
	event_free(te);
	event_free(q.run_ev);
	event_free(q.scan_ev);
	event_base_free(q.base);
	spool_close(q.spool);
	return 0;
}
