/* Remote delivery: takes the remote recipients of one message, groups them by destination
 * (recipient domain, or the relayhost), resolves each destination (dns/resolve.h), decides
 * its TLS level (policy/tlspolicy.h), and delivers over smtpc connections: hosts in MX
 * order, every address of a host, a plaintext retry of the same host after a failed
 * handshake at level may, connections reused across messages and limited per destination
 * and in all. Every attempt is recorded (records.h) and logged. Runs in the queue process.
 * Untrusted input: DNS answers and SMTP replies (through dns and smtpc, which bound them). */
#ifndef SEALMAIL_QUEUE_REMOTE_H
#define SEALMAIL_QUEUE_REMOTE_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "msg/spool.h"
#include "policy/tlspolicy.h"
#include "queue/records.h"

/* Seconds an idle outbound connection waits for the next message to its destination. */
#define REMOTE_IDLE_SECONDS 5

enum remote_outcome {
	REMOTE_DEFER = 0, /* try again later (res.reason/diag say why) */
	REMOTE_SENT,      /* the next hop took it (250) */
	REMOTE_BOUNCE,    /* permanent failure: return to sender */
};

/* The outcome of one recipient. */
struct remote_res {
	enum remote_outcome out;
	char enh[16];          /* "2.0.0", "5.1.1", "4.7.5" */
	char diag[512];        /* the remote reply ("550 5.1.1 ... "), "" when none */
	char reason[512];      /* our words when there was no reply, "" otherwise */
	char mx[256];          /* the host that answered or was tried last */
	bool dsn_passed;       /* sent: the next hop took the DSN parameters */
};

struct remote_job {
	/* in (owned by the caller, valid until the callback) */
	const char *qid;
	const struct spool_env *env;
	int fd;                /* the spool file; body at [off, off+len) */
	uint64_t off, len;
	const int *idx;        /* recipient indexes into env->rcpts */
	int n;
	int attempt_no;        /* 1 for the first round of this message */
	enum tls_level msg_min; /* the message asks for at least this (REQUIRETLS later) */
	/* out */
	struct remote_res *res; /* n entries, allocated by the caller */
	/* private to remote.c */
	int pending;
	struct remote *rm;
	void (*cb)(void *arg, struct remote_job *job);
	void *cb_arg;
	struct event *done_ev;
	struct remote_job *all_next, *all_prev; /* jobs in flight */
};

typedef void (*remote_done_cb)(void *arg, struct remote_job *job);

struct remote;

/* Builds the client TLS context, the resolver and the policy map from c. NULL with err on
 * failure (bad CA file, policy file error, resolver setup). */
struct remote *remote_new(struct event_base *base, const struct conf *c, struct records *rec,
			  char *err, size_t errsz);
/* Closes every connection and cancels lookups; jobs in flight never call back. NULL ok. */
void remote_free(struct remote *rm);

/* Starts delivering; cb is called once when every recipient has an outcome (never from
 * inside remote_deliver). */
void remote_deliver(struct remote *rm, struct remote_job *job, remote_done_cb cb, void *arg);
/* Jobs in flight (for a graceful stop). */
int remote_busy(const struct remote *rm);

#endif
