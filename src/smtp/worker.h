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
#include "net/tls.h"

struct smtp_session;

/* Listening sockets the master hands a worker: fds[kind], -1 when disabled. */
struct worker_listen {
	int fds[CONF_LST__COUNT];
};

/* Runs a worker until it has drained after SIGTERM. Returns the exit code. Takes ownership of
 * tls. `index` is the worker's number (for logs). */
int worker_main(const struct conf *c, struct tls_server *tls, const struct worker_listen *l,
		int index);

/* --- used by session.c --- */
struct worker;
const struct conf *worker_conf(struct worker *w);
struct event_base *worker_base(struct worker *w);
struct tls_server *worker_tls(struct worker *w);
struct spool *worker_spool(struct worker *w);
uint64_t worker_next_session_id(struct worker *w);

/* Asks the lookup process about one recipient; the answer arrives by
 * session_lookup_done(). Returns false when the lookup process is unreachable. */
bool worker_lookup_rcpt(struct worker *w, struct smtp_session *s, const char *listener,
			const char *addr);
/* Forgets any lookup the session is waiting for (session closing). */
void worker_lookup_cancel(struct worker *w, struct smtp_session *s);
/* Adds a finished message to this loop iteration's group commit; the session hears
 * session_commit_done() after the group is durable (or failed). */
void worker_commit_add(struct worker *w, struct smtp_session *s, struct spool_msg *m,
		       const char *qid);
/* Session ended: bookkeeping (connection counts, drain). */
void worker_session_closed(struct worker *w, struct smtp_session *s, const char *ip);

#endif
