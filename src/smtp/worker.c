/* The smtp worker process: accepts on its listening sockets, enforces the connection bounds
 * (total and per client IP, promise 4), runs sessions, group-commits finished messages to the
 * spool, and talks to the lookup and queue processes over IPC. Runs as the unprivileged user.
 * Untrusted input: connections (sessions parse them, see session.c). */
#include "smtp/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "net/ipc.h"
#include "smtp/session.h"
#include "util/log.h"

#define IPTAB_SIZE 4096
#define PENDING_SIZE 4096
#define BATCH_MAX 256

struct ip_count {
	struct ip_count *next;
	int n;
	char ip[64];
};

struct pending {
	uint32_t id;
	struct smtp_session *s;
	enum ipc_type type;
	char *payload; /* kept so the question can be asked again of a new lookup process */
	size_t len;
};

struct commit_item {
	struct smtp_session *s;
	struct spool_msg *m;
	char qid[32];
};

struct worker {
	struct event_base *base;
	const struct conf *conf;
	struct tls_server *tls;
	struct spool *spool;
	int index;
	struct event *accept_ev[CONF_LST__COUNT];
	int nsessions;
	uint64_t next_sid;
	struct ip_count *iptab[IPTAB_SIZE];
	struct bufferevent *lookup;
	struct bufferevent *queue;
	uint32_t next_req;
	struct pending pending[PENDING_SIZE];
	struct commit_item batch[BATCH_MAX];
	int nbatch;
	struct event *commit_ev;
	bool draining;
	struct conn_shared *conns;
	int slot;
	struct event *sigterm_ev, *drain_timer, *sighup_ev;
	/* every live session, for the drain deadline */
	struct smtp_session **live;
	int nlive, caplive;
};

static struct worker W;

const struct conf *worker_conf(struct worker *w)
{
	return w->conf;
}
struct event_base *worker_base(struct worker *w)
{
	return w->base;
}
struct tls_server *worker_tls(struct worker *w)
{
	return w->tls;
}
struct spool *worker_spool(struct worker *w)
{
	return w->spool;
}
uint64_t worker_next_session_id(struct worker *w)
{
	return ((uint64_t)getpid() << 32) | ++w->next_sid;
}

void worker_format_ip(const struct sockaddr_storage *ss, char *buf, size_t n)
{
	snprintf(buf, n, "?");
	if (ss->ss_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, (socklen_t)n);
	} else if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		/* IPv4 on a [::] listener: show and count it as the IPv4 address it is */
		if (IN6_IS_ADDR_V4MAPPED(a))
			inet_ntop(AF_INET, &a->s6_addr[12], buf, (socklen_t)n);
		else
			inet_ntop(AF_INET6, a, buf, (socklen_t)n);
	}
}

/* ---- per-IP connection counts ---- */

static unsigned ip_hash(const char *ip)
{
	unsigned h = 2166136261u;
	for (; *ip; ip++)
		h = (h ^ (unsigned char)*ip) * 16777619u;
	return h % IPTAB_SIZE;
}

static int ip_acquire(struct worker *w, const char *ip)
{
	unsigned h = ip_hash(ip);
	struct ip_count *c;
	for (c = w->iptab[h]; c; c = c->next)
		if (strcmp(c->ip, ip) == 0)
			break;
	if (!c) {
		c = xcalloc(1, sizeof(*c));
		snprintf(c->ip, sizeof(c->ip), "%s", ip);
		c->next = w->iptab[h];
		w->iptab[h] = c;
	}
	return ++c->n;
}

static void ip_release(struct worker *w, const char *ip)
{
	unsigned h = ip_hash(ip);
	for (struct ip_count **pp = &w->iptab[h]; *pp; pp = &(*pp)->next) {
		struct ip_count *c = *pp;
		if (strcmp(c->ip, ip) != 0)
			continue;
		if (--c->n <= 0) {
			*pp = c->next;
			free(c);
		}
		return;
	}
}

/* ---- accept ---- */

static void live_add(struct worker *w, struct smtp_session *s)
{
	if (w->nlive == w->caplive) {
		w->caplive = w->caplive ? w->caplive * 2 : 64;
		w->live = realloc(w->live, (size_t)w->caplive * sizeof(*w->live));
		if (!w->live)
			fatal("out of memory");
	}
	w->live[w->nlive++] = s;
}

static void refuse(int fd, enum conf_listener_kind kind, const char *text)
{
	/* best effort: the socket is fresh, the reply fits in its buffer. Not on the implicit
	 * TLS listener: its client speaks TLS first and would read plaintext as a broken
	 * record; a handshake just to say 421 is what a flood wants, so it is closed. */
	if (kind != CONF_LST_SUBMISSIONS) {
		ssize_t r = write(fd, text, strlen(text));
		(void)r;
	}
	close(fd);
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct worker *w = &W;
	enum conf_listener_kind kind = (enum conf_listener_kind)(intptr_t)arg;
	(void)what;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				log_warn("event=accept_error error=\"%s\"", strerror(errno));
			return;
		}
		char ip[64];
		worker_format_ip(&ss, ip, sizeof(ip));
		char msg[LIM_DOMAIN + 96];
		if (atomic_fetch_add(&w->conns->total, 1) >= w->conf->max_connections) {
			atomic_fetch_sub(&w->conns->total, 1);
			snprintf(msg, sizeof(msg), "421 4.7.0 %s Error: too many connections, try again later\r\n",
				 w->conf->hostname);
			log_warn("event=limit limit=connections ip=%s current=%d max=%d", ip,
				 atomic_load(&w->conns->total), w->conf->max_connections);
			refuse(fd, kind, msg);
			continue;
		}
		if (ip_acquire(w, ip) > w->conf->max_connections_per_ip) {
			ip_release(w, ip);
			atomic_fetch_sub(&w->conns->total, 1);
			snprintf(msg, sizeof(msg),
				 "421 4.7.0 %s Error: too many connections from %s, try again later\r\n",
				 w->conf->hostname, ip);
			log_warn("event=limit limit=connections_per_ip ip=%s max=%d", ip,
				 w->conf->max_connections_per_ip);
			refuse(fd, kind, msg);
			continue;
		}
		w->nsessions++;
		atomic_fetch_add(&w->conns->slot[w->slot], 1);
		struct smtp_session *s = session_start(w, fd, &ss, kind);
		if (s)
			live_add(w, s);
	}
}

void worker_session_closed(struct worker *w, struct smtp_session *s, const char *ip)
{
	ip_release(w, ip);
	w->nsessions--;
	atomic_fetch_sub(&w->conns->slot[w->slot], 1);
	atomic_fetch_sub(&w->conns->total, 1);
	for (int i = 0; i < w->nlive; i++)
		if (w->live[i] == s) {
			w->live[i] = w->live[--w->nlive];
			break;
		}
	if (w->draining && w->nsessions == 0)
		event_base_loopexit(w->base, NULL);
}

/* ---- lookup client ---- */

static void lookup_read_cb(struct bufferevent *bev, void *arg);
static void ipc_event_cb(struct bufferevent *bev, short what, void *arg);

static struct bufferevent *ipc_connect(struct worker *w, const char *name)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/run/%s.sock", w->conf->data_dir, name);
	int fd = ipc_connect_unix(path);
	if (fd < 0) {
		log_warn("event=ipc_error peer=%s path=%s error=\"%s\"", name, path, strerror(errno));
		return NULL;
	}
	struct bufferevent *bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, strcmp(name, "lookup") == 0 ? lookup_read_cb : NULL, NULL,
			  ipc_event_cb, (void *)name);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	return bev;
}

static void pending_clear(struct pending *p)
{
	free(p->payload);
	p->payload = NULL;
	p->s = NULL;
}

/* The lookup process went away (restart on reload, crash): ask the new one the questions
 * still open; answer 451 only when there is none. */
static void retry_pending(struct worker *w)
{
	if (!w->lookup)
		w->lookup = ipc_connect(w, "lookup");
	for (int i = 0; i < PENDING_SIZE; i++) {
		struct pending *p = &w->pending[i];
		if (!p->s)
			continue;
		if (w->lookup) {
			ipc_send(w->lookup, p->type, p->id, p->payload, p->len);
			continue;
		}
		struct smtp_session *s = p->s;
		enum ipc_type type = p->type;
		pending_clear(p);
		if (type == IPC_RCPT_REQ)
			session_lookup_done(s, IPC_RCPT_TEMPFAIL, "", 0);
		else
			session_auth_reply(s, type == IPC_AUTH_REQ ? IPC_AUTH_REP : IPC_SCRAM_REP,
					   IPC_AUTH_TEMPFAIL, "", 0);
	}
}

static void ipc_event_cb(struct bufferevent *bev, short what, void *arg)
{
	const char *name = arg;
	struct worker *w = &W;
	log_info("event=ipc_closed peer=%s", name);
	bufferevent_free(bev);
	if (bev == w->lookup) {
		w->lookup = NULL;
		retry_pending(w);
	} else if (bev == w->queue) {
		w->queue = NULL;
	}
}

static void lookup_read_cb(struct bufferevent *bev, void *arg)
{
	struct worker *w = &W;
	char buf[4096];
	struct ipc_hdr h;
	int r;
	while ((r = ipc_read(bufferevent_get_input(bev), &h, buf, sizeof(buf))) == 1) {
		if (h.len < 1)
			continue;
		struct pending *p = &w->pending[h.id % PENDING_SIZE];
		if (p->id != h.id || !p->s)
			continue; /* the session is gone */
		struct smtp_session *s = p->s;
		pending_clear(p);
		if (h.type == IPC_RCPT_REP)
			session_lookup_done(s, (enum ipc_rcpt_status)(unsigned char)buf[0], buf + 1,
					    h.len - 1);
		else if (h.type == IPC_AUTH_REP || h.type == IPC_SCRAM_REP)
			session_auth_reply(s, (enum ipc_type)h.type,
					   (enum ipc_auth_status)(unsigned char)buf[0], buf + 1, h.len - 1);
	}
	if (r < 0) {
		log_err("event=ipc_error peer=lookup error=\"bad frame\"");
		ipc_event_cb(bev, BEV_EVENT_ERROR, "lookup");
	}
}

bool worker_ask_lookup(struct worker *w, struct smtp_session *s, enum ipc_type type,
		       const char *payload, size_t n)
{
	if (!w->lookup)
		w->lookup = ipc_connect(w, "lookup");
	if (!w->lookup)
		return false;
	uint32_t id = ++w->next_req;
	if (id == 0)
		id = ++w->next_req;
	struct pending *p = &w->pending[id % PENDING_SIZE];
	if (p->s)
		return false; /* 4096 questions in flight: the caller answers 4xx */
	p->id = id;
	p->s = s;
	p->type = type;
	p->payload = xmalloc(n ? n : 1);
	memcpy(p->payload, payload, n);
	p->len = n;
	ipc_send(w->lookup, type, id, payload, n);
	return true;
}

void worker_tell_lookup(struct worker *w, enum ipc_type type, const char *payload, size_t n)
{
	if (!w->lookup)
		w->lookup = ipc_connect(w, "lookup");
	if (w->lookup)
		ipc_send(w->lookup, type, 0, payload, n);
}

bool worker_lookup_rcpt(struct worker *w, struct smtp_session *s, const char *listener,
			const char *addr, const char *account)
{
	char payload[LIM_PATH + 128];
	int n = snprintf(payload, sizeof(payload), "%s%c%s%c%s", listener, '\0', addr, '\0', account);
	if (n < 0 || (size_t)n >= sizeof(payload))
		return false;
	return worker_ask_lookup(w, s, IPC_RCPT_REQ, payload, (size_t)n);
}

void worker_lookup_cancel(struct worker *w, struct smtp_session *s)
{
	for (int i = 0; i < PENDING_SIZE; i++)
		if (w->pending[i].s == s)
			pending_clear(&w->pending[i]);
}

/* ---- group commit ---- */

static void commit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct spool_msg *msgs[BATCH_MAX];
	struct commit_item items[BATCH_MAX];
	int n = w->nbatch;
	(void)fd;
	(void)what;
	memcpy(items, w->batch, sizeof(items[0]) * (size_t)n);
	w->nbatch = 0;
	for (int i = 0; i < n; i++)
		msgs[i] = items[i].m;
	int rc = spool_commit(w->spool, msgs, (size_t)n);
	if (rc != 0)
		log_err("event=spool_error op=commit count=%d error=\"%s\"", n, strerror(errno));
	else if (n > 1)
		log_debug("event=group_commit count=%d", n);
	if (rc == 0 && !w->queue)
		w->queue = ipc_connect(w, "queue");
	for (int i = 0; i < n; i++) {
		if (rc == 0 && w->queue)
			ipc_send(w->queue, IPC_MSG_NEW, 0, items[i].qid, strlen(items[i].qid));
		session_commit_done(items[i].s, rc == 0);
	}
}

void worker_commit_add(struct worker *w, struct smtp_session *s, struct spool_msg *m,
		       const char *qid)
{
	if (w->nbatch == BATCH_MAX)
		commit_cb(-1, 0, w);
	struct commit_item *it = &w->batch[w->nbatch++];
	it->s = s;
	it->m = m;
	snprintf(it->qid, sizeof(it->qid), "%s", qid);
	/* runs after this loop iteration's other callbacks: messages that finish together share
	 * one sync (group commit) */
	if (w->nbatch == 1)
		event_active(w->commit_ev, EV_TIMEOUT, 0);
}

/* ---- life ---- */

static void drain_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	(void)fd;
	(void)what;
	log_info("event=drain_deadline sessions=%d", w->nsessions);
	/* session_shutdown may remove entries from live[]: walk a copy */
	int n = w->nlive;
	struct smtp_session **copy = xcalloc((size_t)n, sizeof(*copy));
	memcpy(copy, w->live, (size_t)n * sizeof(*copy));
	for (int i = 0; i < n; i++)
		session_shutdown(copy[i]);
	free(copy);
	/* give the 421s a moment to leave, then exit */
	struct timeval tv = {1, 0};
	event_base_loopexit(w->base, &tv);
}

static void sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
	struct worker *w = arg;
	(void)sig;
	(void)what;
	if (w->draining)
		return;
	w->draining = true;
	for (int k = 0; k < CONF_LST__COUNT; k++)
		if (w->accept_ev[k])
			event_del(w->accept_ev[k]);
	log_info("event=draining worker=%d sessions=%d grace=%d", w->index, w->nsessions,
		 w->conf->shutdown_grace);
	if (w->nsessions == 0) {
		event_base_loopexit(w->base, NULL);
		return;
	}
	w->drain_timer = evtimer_new(w->base, drain_deadline_cb, w);
	struct timeval tv = {w->conf->shutdown_grace, 0};
	evtimer_add(w->drain_timer, &tv);
}

int worker_main(const struct conf *c, struct tls_server *tls, const struct worker_listen *l,
		int index)
{
	struct worker *w = &W;
	memset(w, 0, sizeof(*w));
	w->conf = c;
	w->tls = tls;
	w->index = index;
	w->conns = l->conns;
	w->slot = l->slot;
	w->base = event_base_new();
	if (!w->base)
		fatal("event_base_new failed");
	w->spool = spool_open(c->data_dir);
	if (!w->spool) {
		log_err("event=spool_error op=open dir=%s error=\"%s\"", c->data_dir, strerror(errno));
		return 75;
	}
	w->commit_ev = event_new(w->base, -1, 0, commit_cb, w);
	for (int k = 0; k < CONF_LST__COUNT; k++) {
		if (l->fds[k] < 0)
			continue;
		w->accept_ev[k] = event_new(w->base, l->fds[k], EV_READ | EV_PERSIST, accept_cb,
					    (void *)(intptr_t)k);
		event_add(w->accept_ev[k], NULL);
	}
	w->sigterm_ev = evsignal_new(w->base, SIGTERM, sigterm_cb, w);
	event_add(w->sigterm_ev, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	log_info("event=worker_ready worker=%d", index);
	event_base_dispatch(w->base);
	/* drain deadline: whatever is still open gets 421 and is closed by the kernel at exit */
	log_info("event=worker_exit worker=%d sessions=%d", index, w->nsessions);
	return 0;
}
