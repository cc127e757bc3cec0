/* The queue process's shared state, for its own files (queue.c: the scheduler and local
 * delivery; finish.c: outcomes, retries, notices; admin.c: `sealmail queue` requests).
 * Runs in the queue process only. */
#ifndef SEALMAIL_QUEUE_QUEUE_INT_H
#define SEALMAIL_QUEUE_QUEUE_INT_H

#include <stdbool.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "msg/spool.h"
#include "queue/records.h"
#include "queue/remote.h"
#include "store/store.h"

#define QMSG_BUCKETS 4096

struct round;

/* What the scheduler knows of one queued message. */
struct qmsg {
	struct qmsg *hnext;
	char qid[32];
	struct msgstate st;         /* persisted in records (attempts, next try, hold) */
	bool active;                /* a remote delivery round is running */
	bool deleted;               /* `queue delete` while active: remove when it ends */
};

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
	struct event *run_ev, *scan_ev, *stop_ev;
	char mail_root[PATH_MAX];
	struct records *rec;
	struct remote *remote;
	struct store *store;        /* read-only use: where a notice's recipient lives */
	struct qmsg *msgs[QMSG_BUCKETS];
	int nmsgs;
	bool stopping;
	time_t pruned;              /* last records_prune */
	struct round *rounds;       /* remote rounds in flight (finish.c) */
};

/* Queues qid for a delivery round (when it is due). */
void q_push(struct queue *q, const char *qid);
/* The scheduler entry of qid: found, or created from the records. */
struct qmsg *qmsg_get(struct queue *q, const char *qid);
struct qmsg *qmsg_find(struct queue *q, const char *qid);
/* Forgets qid (its records state too). */
void qmsg_forget(struct queue *q, const char *qid);
/* Removes a message from the queue for good: spool file, state, scheduler entry. */
void q_remove(struct queue *q, const char *qid, const char *why);

/* finish.c: starts the remote round of a message whose local recipients were handled: env
 * (read by the caller; the round takes it over and leaves *env empty), done[] (recipients
 * finished so far), the body at [off, off+len) of the spool file. */
void q_start_remote(struct queue *q, struct qmsg *m, struct spool_env *env, const bool *done,
		    uint64_t off, uint64_t len);
/* finish.c: frees the rounds that were in flight at exit (their callbacks never come). */
void q_free_rounds(struct queue *q);
/* finish.c: a message still has recipients after a round: schedule the next one. */
void q_defer(struct queue *q, struct qmsg *m, const char *reason);

/* admin.c: answers one IPC_QUEUE_REQ on bev. */
void admin_handle(struct queue *q, struct bufferevent *bev, uint32_t id, const char *payload,
		  size_t len);

#endif
