/* The lookup process: the only process that opens the SQLite store at run time. It answers
 * smtp workers: RCPT (local mailbox, unknown user, not local, relay for an authenticated
 * account within its hourly limit), AUTH (authd.c) and releases of counted recipients
 * (quota.c). Runs as the unprivileged user. Untrusted input: addresses, logins and
 * passwords relayed by workers (bound as SQL parameters, never formatted into SQL). */
#include "lookup/lookup.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lookup/lookup_int.h"
#include "net/ipc.h"
#include "store/store.h"
#include "util/log.h"

int lookup_fields(const char *buf, size_t len, const char **f, int max)
{
	int n = 0;
	size_t i = 0;
	while (n < max && i <= len) {
		f[n++] = buf + i;
		size_t l = strnlen(buf + i, len - i);
		i += l + 1;
		if (i > len)
			break;
	}
	return n;
}

void lookup_client_unref(struct lookup_client *c)
{
	if (--c->refs > 0)
		return;
	bufferevent_free(c->bev);
	free(c);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct lookup_client *c = arg;
	(void)bev;
	(void)what;
	c->dead = true;
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	lookup_client_unref(c);
}

static void answer_rcpt(struct lookup *lk, struct lookup_client *c, uint32_t id, const char *buf,
			size_t len)
{
	char out[LIM_PATH + 128];
	const char *f[3] = {"", "", ""};
	lookup_fields(buf, len, f, 3);
	const char *addr = f[1], *account = f[2];
	char mailbox[STORE_ADDR_MAX] = "";
	enum ipc_rcpt_status st;
	size_t n = 0;

	enum store_res r = store_resolve(lk->store, addr, lk->conf->postmaster, mailbox,
					 sizeof(mailbox));
	switch (r) {
	case STORE_OK:
		st = IPC_RCPT_LOCAL;
		break;
	case STORE_NOTFOUND:
		st = IPC_RCPT_UNKNOWN;
		break;
	case STORE_INVALID:
		/* promise 6: only an authenticated account relays */
		st = account[0] ? IPC_RCPT_REMOTE : IPC_RCPT_NOT_LOCAL;
		break;
	default:
		st = IPC_RCPT_TEMPFAIL;
		break;
	}
	if (account[0] && (st == IPC_RCPT_LOCAL || st == IPC_RCPT_REMOTE)) {
		char plan[64];
		uint32_t limit, retry;
		if (!quota_take(lk->quota, account, plan, sizeof(plan), &limit, &retry)) {
			int k = snprintf(out + 1, sizeof(out) - 1, "%s%c%u%c%u", plan, 0, limit, 0, retry);
			out[0] = (char)IPC_RCPT_RATE;
			ipc_send(c->bev, IPC_RCPT_REP, id, out, (size_t)k + 1);
			return;
		}
	}
	out[0] = (char)st;
	if (st == IPC_RCPT_LOCAL) {
		n = strlen(mailbox);
		memcpy(out + 1, mailbox, n);
	}
	ipc_send(c->bev, IPC_RCPT_REP, id, out, n + 1);
}

static void rate_release(struct lookup *lk, const char *buf, size_t len)
{
	const char *f[3];
	if (lookup_fields(buf, len, f, 3) != 3)
		return;
	char *end;
	unsigned long n = strtoul(f[1], &end, 10);
	long long since = strtoll(f[2], &end, 10);
	if (n == 0 || n > 1000000 || !f[0][0])
		return;
	quota_release(lk->quota, f[0], (uint32_t)n, (time_t)since);
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
	struct lookup_client *c = arg;
	struct lookup *lk = c->lk;
	char buf[2048];
	struct ipc_hdr h;
	int r;
	while ((r = ipc_read(bufferevent_get_input(bev), &h, buf, sizeof(buf))) == 1) {
		switch (h.type) {
		case IPC_RCPT_REQ:
			answer_rcpt(lk, c, h.id, buf, h.len);
			break;
		case IPC_AUTH_REQ:
			authd_plain(lk->authd, c, h.id, buf, h.len);
			break;
		case IPC_SCRAM_REQ:
			authd_scram(lk->authd, c, h.id, buf, h.len);
			break;
		case IPC_AUTH_RESULT:
			authd_result(lk->authd, buf, h.len);
			break;
		case IPC_RATE_RELEASE:
			rate_release(lk, buf, h.len);
			break;
		case IPC_PING:
			ipc_send(bev, IPC_PING, h.id, NULL, 0);
			break;
		default:
			log_warn("event=ipc_error peer=smtp error=\"unexpected type %u\"", h.type);
			break;
		}
	}
	if (r < 0) {
		log_err("event=ipc_error peer=smtp error=\"bad frame\"");
		client_event_cb(bev, BEV_EVENT_ERROR, c);
	}
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct lookup *lk = arg;
	(void)what;
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	struct lookup_client *c = xcalloc(1, sizeof(*c));
	c->lk = lk;
	c->refs = 1;
	c->bev = bufferevent_socket_new(lk->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, client_read_cb, NULL, client_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void sigterm_cb(evutil_socket_t sig, short what, void *arg)
{
	struct lookup *lk = arg;
	(void)sig;
	(void)what;
	/* a newer lookup process already accepts; answer what is in flight, then go (workers
	 * re-ask anything left open of the new one) */
	event_del(lk->accept_ev);
	struct timeval tv = {1, 0};
	event_base_loopexit(lk->base, &tv);
}

int lookup_main(const struct conf *c, int lfd)
{
	struct lookup lk = {.conf = c};
	char err[256];
	lk.store = store_open(c->data_dir, c->seed_localhost, err, sizeof(err));
	if (!lk.store) {
		log_err("event=store_error op=open error=\"%s\"", err);
		return 75;
	}
	store_sync_normal(lk.store);
	lk.base = event_base_new();
	if (!lk.base)
		fatal("event_base_new failed");
	lk.authd = authd_new(&lk);
	lk.quota = quota_new(&lk);
	lk.accept_ev = event_new(lk.base, lfd, EV_READ | EV_PERSIST, accept_cb, &lk);
	event_add(lk.accept_ev, NULL);
	struct event *te = evsignal_new(lk.base, SIGTERM, sigterm_cb, &lk);
	event_add(te, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	log_info("event=lookup_ready");
	event_base_dispatch(lk.base);
	authd_free(lk.authd);
	quota_free(lk.quota);
	event_free(lk.accept_ev);
	event_free(te);
	event_base_free(lk.base);
	store_close(lk.store);
	return 0;
}
