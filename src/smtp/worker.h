/* The smtp worker process: one libevent loop that accepts connections on its share of the
 * listening sockets, runs SMTP sessions, commits mail to the spool in groups, and talks to
 * the lookup and queue processes. Untrusted input: everything from clients (in session.c). */
#ifndef SEALMAIL_SMTP_WORKER_H
#define SEALMAIL_SMTP_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "msg/spool.h"
#include "net/ipc.h"
#include "net/tls.h"

struct smtp_session;

/* Counts of open connections shared by every worker, so limits.connections holds for the
 * server as a whole. The master maps it before forking (MAP_SHARED); each worker adds to
 * `total` (exactly, by fetch-add and undo) and mirrors its own count in its slot, so the
 * master can take back the count of a worker that died. Lock-free, one writer per slot. */
struct conn_shared {
	_Atomic int total;
	_Atomic int slot[];
};

/* What the master hands a worker: listening sockets fds[kind] (-1 when disabled) and the
 * shared connection count with this worker's slot. */
struct worker_listen {
	int fds[CONF_LST__COUNT];
	struct conn_shared *conns;
	int slot;
};

/* Runs a worker until it has drained after SIGTERM. Returns the exit code. Takes ownership of
 * tls. `index` is the worker's number (for logs). */
int worker_main(const struct conf *c, struct tls_server *tls, const struct worker_listen *l,
		int index);

/* --- used by session.c --- */
#include <sys/socket.h>
/* The client address as logs, limits and Received show it (IPv4-mapped IPv6 as IPv4). */
void worker_format_ip(const struct sockaddr_storage *ss, char *buf, size_t n);

struct worker;
const struct conf *worker_conf(struct worker *w);
struct event_base *worker_base(struct worker *w);
struct tls_server *worker_tls(struct worker *w);
struct spool *worker_spool(struct worker *w);
uint64_t worker_next_session_id(struct worker *w);

/* Asks the lookup process about one recipient (account: the authenticated account, or "");
 * the answer arrives by session_lookup_done(). False when the lookup process is
 * unreachable. */
bool worker_lookup_rcpt(struct worker *w, struct smtp_session *s, const char *listener,
			const char *addr, const char *account);
/* Any question whose answer goes to the session (IPC_AUTH_REQ, IPC_SCRAM_REQ). */
bool worker_ask_lookup(struct worker *w, struct smtp_session *s, enum ipc_type type,
		       const char *payload, size_t n);
/* A notice that needs no answer (IPC_AUTH_RESULT, IPC_RATE_RELEASE). */
void worker_tell_lookup(struct worker *w, enum ipc_type type, const char *payload, size_t n);
/* Forgets any lookup the session is waiting for (session closing). */
void worker_lookup_cancel(struct worker *w, struct smtp_session *s);
/* Adds a finished message to this loop iteration's group commit; the session hears
 * session_commit_done() after the group is durable (or failed). */
void worker_commit_add(struct worker *w, struct smtp_session *s, struct spool_msg *m,
		       const char *qid);
/* Session ended: bookkeeping (connection counts, drain). */
void worker_session_closed(struct worker *w, struct smtp_session *s, const char *ip);

#endif
