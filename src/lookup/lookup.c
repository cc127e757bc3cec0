/* The lookup process: the only process that opens the SQLite store at run time. It answers
 * RCPT questions from smtp workers (local mailbox, unknown user, not local). Runs as the
 * unprivileged user. Untrusted input: recipient addresses relayed by workers (bound as SQL
 * parameters by the store, never formatted into SQL). */
#include "lookup/lookup.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "net/ipc.h"
#include "store/store.h"
#include "util/log.h"

struct lookup {
	const struct conf *conf;
	struct store *store;
	struct event_base *base;
	struct event *accept_ev;
};

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	(void)arg;
	bufferevent_free(bev);
}

static void answer_rcpt(struct lookup *lk, struct bufferevent *bev, uint32_t id, const char *buf,
			size_t len)
{
	char out[LIM_PATH + 2];
	const char *listener = buf;
	size_t ll = strnlen(buf, len);
	const char *addr = ll < len ? buf + ll + 1 : "";
	char mailbox[LIM_PATH + 1] = "";
	enum ipc_rcpt_status st;
	(void)listener; /* relaying rules per listener arrive with the submission service */

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
		st = IPC_RCPT_NOT_LOCAL;
		break;
	default:
		st = IPC_RCPT_TEMPFAIL;
		break;
	}
	out[0] = (char)st;
	size_t ml = st == IPC_RCPT_LOCAL ? strlen(mailbox) : 0;
	memcpy(out + 1, mailbox, ml);
	ipc_send(bev, IPC_RCPT_REP, id, out, ml + 1);
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
	struct lookup *lk = arg;
	char buf[LIM_PATH + 64];
	struct ipc_hdr h;
	int r;
	while ((r = ipc_read(bufferevent_get_input(bev), &h, buf, sizeof(buf))) == 1) {
		switch (h.type) {
		case IPC_RCPT_REQ:
			answer_rcpt(lk, bev, h.id, buf, h.len);
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
		bufferevent_free(bev);
	}
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct lookup *lk = arg;
	(void)what;
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	struct bufferevent *bev = bufferevent_socket_new(lk->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, client_read_cb, NULL, client_event_cb, lk);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
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
	lk.base = event_base_new();
	if (!lk.base)
		fatal("event_base_new failed");
	struct event *ae = event_new(lk.base, lfd, EV_READ | EV_PERSIST, accept_cb, &lk);
	lk.accept_ev = ae;
	event_add(ae, NULL);
	struct event *te = evsignal_new(lk.base, SIGTERM, sigterm_cb, &lk);
	event_add(te, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	log_info("event=lookup_ready");
	event_base_dispatch(lk.base);
	event_free(ae);
	event_free(te);
	event_base_free(lk.base);
	store_close(lk.store);
	return 0;
}
