/* Delivery records and queue schedule state in SQLite (<data_dir>/queue.db, owned by the
 * queue process; WAL, synchronous=NORMAL: a record lost in a power cut costs at most an
 * earlier retry, never mail). Every delivery attempt is one row: which message and
 * recipient, where it went, the reply, and the TLS facts and policy. Runs in the queue
 * process (and read-only in tools). Untrusted input: remote replies and certificate errors
 * (stored as text through bound parameters, never interpreted). */
#ifndef SEALMAIL_QUEUE_RECORDS_H
#define SEALMAIL_QUEUE_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Rows older than this are pruned (records_prune). */
#define RECORDS_KEEP_DAYS 30

struct records;

/* One delivery attempt for one recipient. Strings may be "" but not NULL. */
struct attempt {
	char qid[32];
	int rcpt;               /* recipient index in the message */
	char rcpt_addr[257];
	double time;            /* seconds since the epoch, with fraction */
	char status[16];        /* "sent", "deferred", "bounced", "expired" */
	char mx[256];           /* host name that answered (or was tried), "" none */
	char ip[64];            /* its address, "" none */
	int port;
	int code;               /* SMTP reply code, 0 none */
	char enh[16];           /* "2.0.0", "4.7.5" */
	char reply[512];        /* remote reply as one line */
	char reason[512];       /* our words when there was no reply (or why we acted) */
	char stage[24];         /* smtpc_stage_name of the step that decided */
	char tls_policy[16];    /* level that applied: none/may/encrypt/verify */
	char policy_source[16]; /* default/domain/message/relayhost */
	char tls_version[16];   /* "" = no TLS */
	char tls_cipher[64];
	char cert[16];          /* none/verified/unverified/failed */
	char cert_error[160];
	char dnssec[16];        /* of the MX answer: secure/insecure/bogus, "" when no DNS */
	bool fallback;          /* sent in plaintext after a failed handshake (level may) */
	int attempt_no;         /* 1 = first attempt of this message */
	double delay;           /* seconds since arrival */
};

/* Schedule state of a queued message (kept while it is queued). */
struct msgstate {
	int attempts;           /* delivery rounds tried */
	time_t next_try;        /* not before this (0 = now) */
	bool held;              /* `sealmail queue hold`: not tried until released */
	bool warned;            /* delay notice sent */
	char last_reason[512];  /* of the last deferral, for `queue list` */
};

/* Opens (creating tables when missing) <data_dir>/queue.db. NULL with err on failure. */
struct records *records_open(const char *data_dir, char *err, size_t errsz);
void records_close(struct records *r); /* accepts NULL */

struct event_base;
/* Batches writes: from now on the writes of one loop iteration of base share one
 * transaction, committed later in the same iteration (and by records_close). */
void records_batch(struct records *r, struct event_base *base);

/* Stores one attempt. 0, or -1 (logged by the caller). */
int records_add(struct records *r, const struct attempt *a);
/* Calls fn for every attempt of qid, oldest first. Returns rows seen, -1 on error. */
int records_history(struct records *r, const char *qid,
		    void (*fn)(void *arg, const struct attempt *a), void *arg);

/* 0 and *st filled when qid has state, 1 when none (st zeroed), -1 on error. */
int records_state_get(struct records *r, const char *qid, struct msgstate *st);
int records_state_put(struct records *r, const char *qid, const struct msgstate *st);
/* Forgets the state of a message that left the queue (history stays). */
int records_state_del(struct records *r, const char *qid);

/* Deletes attempts older than `before` (epoch seconds); returns rows removed or -1. */
int records_prune(struct records *r, time_t before);

#endif
