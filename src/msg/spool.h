/* The durable spool (promise 1: 250 means durable). Files under <data_dir>/spool:
 *   tmp/      messages being received (an smtp worker writes them)
 *   queue/    committed messages, one file per message, named by queue id
 * A spool file is self-checking: envelope records, the body, and an END record carrying the
 * body length and a checksum; a file without a valid END record is not a message.
 * Runs in smtp workers (write, commit) and the queue process (read, recover, remove). */
#ifndef SEALMAIL_MSG_SPOOL_H
#define SEALMAIL_MSG_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "limits.h"

/* One recipient as the envelope keeps it. */
struct spool_rcpt {
	char addr[LIM_PATH + 1];    /* forward-path as given (local@domain, or "Postmaster") */
	char mailbox[LIM_PATH + 1]; /* resolved local mailbox ("user@domain"), "" = remote */
	unsigned notify;            /* SMTP_NOTIFY_* bits */
	char orcpt[LIM_ORCPT + 1];  /* DSN ORCPT as received, "" when absent */
};

/* Envelope: everything about a message except its body. */
struct spool_env {
	char qid[32];
	time_t arrival;
	char from[LIM_PATH + 1];    /* reverse-path, "" for <> */
	char helo[LIM_HELO + 1];
	char client_ip[64];
	char listener[16];          /* mx, submission, submissions */
	char tls[128];              /* "TLSv1.3 TLS_AES_256_GCM_SHA384" or "" */
	int body_type;              /* enum smtp_body_type */
	bool smtputf8;
	int ret;                    /* enum smtp_dsn_ret */
	char envid[LIM_ENVID + 1];
	struct spool_rcpt *rcpts;   /* owned by whoever filled it (spool_read: freed by spool_env_free) */
	int nrcpts;
};

/* Most recipients one spool file may carry (the reader refuses more: a corrupt count must not
 * make it allocate without bound). Well above any configurable per-message limit. */
#define SPOOL_MAX_RCPTS 100000

struct spool; /* a handle on <data_dir>/spool */

/* Opens (creating tmp/ and queue/ as needed) the spool at dir. NULL on error (errno set). */
struct spool *spool_open(const char *data_dir);
void spool_close(struct spool *sp);
const char *spool_queue_dir(const struct spool *sp);

/* A message being written. */
struct spool_msg;

/* Starts a message: creates tmp/<qid>, writes the envelope records. NULL on error. The qid
 * is env->qid when set (it must then be a valid id from spool_new_qid, e.g. one already
 * written into the Received field), else a new one. Every string field must be
 * NUL-terminated within its array; 1 <= nrcpts <= SPOOL_MAX_RCPTS; errno EINVAL if not. */
struct spool_msg *spool_begin(struct spool *sp, const struct spool_env *env);
/* The queue id of a message being written (valid until commit/abort frees it). */
const char *spool_msg_qid(const struct spool_msg *m);
/* Appends body bytes (buffered). -1 on error (the message must then be aborted). */
int spool_write(struct spool_msg *m, const void *p, size_t n);
/* Writes the END record and flushes to the kernel (no fsync yet). -1 on error. */
int spool_finish(struct spool_msg *m);
/* Group commit: makes every finished message in msgs[0..n) durable and visible in queue/:
 * data synced, renamed into queue/, queue/ directory synced — all before returning 0. With
 * several messages the syncs are shared (one syncfs() for the data of all, one sync of the
 * directory). On failure returns -1 and none of the messages may be acknowledged (some
 * may still be in queue/; they are complete and will be delivered, which is allowed: a
 * client that got 451 may send again, at worst a duplicate). Frees every spool_msg. */
int spool_commit(struct spool *sp, struct spool_msg **msgs, size_t n);
/* Drops a message being written (unlinks tmp/<qid>). Accepts NULL. */
void spool_abort(struct spool_msg *m);

/* Reading committed messages (queue process). */
/* Reads the envelope of queue/<qid>; checks the END record. Returns 0, or -1 if the file is
 * missing, truncated or corrupt (errno EINVAL for corrupt). On success *body_off and
 * *body_len locate the body inside the file. */
int spool_read(struct spool *sp, const char *qid, struct spool_env *env, uint64_t *body_off,
	       uint64_t *body_len);
/* The same checks on an already open file (any name; used by fuzzing and tools). */
int spool_read_fd(int fd, struct spool_env *env, uint64_t *body_off, uint64_t *body_len);
/* Frees what spool_read filled (env->rcpts) and zeroes nrcpts. Accepts NULL. After a failed
 * spool_read the env holds nothing that needs freeing (calling this is still harmless). */
void spool_env_free(struct spool_env *env);
/* Opens queue/<qid> read-only (for copying the body). -1 on error. */
int spool_open_msg(struct spool *sp, const char *qid);
/* Removes queue/<qid> (and its state file). Not synced: after a crash the message may be
 * delivered again, never lost. */
int spool_remove(struct spool *sp, const char *qid);

/* Per-recipient delivery state (which recipients are done), kept in queue/<qid>.state,
 * appended and synced per update (the file's directory entry too when it is created). */
int spool_mark_done(struct spool *sp, const char *qid, int rcpt_index);
/* Fills done[0..nrcpts) with true for finished recipients. Missing file = none done. A torn
 * or malformed line counts as not done (at worst a recipient is delivered twice). */
int spool_load_done(struct spool *sp, const char *qid, bool *done, int nrcpts);

/* Recovery at start: removes everything in tmp/ (never acknowledged), moves corrupt files in
 * queue/ to <data_dir>/spool/corrupt/, and calls fn for every valid message id, oldest first.
 * Returns the number of valid messages, -1 on error. Must run before any smtp worker starts
 * writing (it empties tmp/). State files of corrupt messages follow them; orphans go. */
int spool_recover(struct spool *sp, void (*fn)(void *arg, const char *qid), void *arg);

/* New queue id: 16 characters of Crockford base32, time-sortable (48 bits of milliseconds,
 * 32 random bits), NUL-terminated. buf must hold 17 bytes. */
void spool_new_qid(char *buf);
/* Whether qid is exactly 16 characters of the Crockford alphabet (safe as a file name). */
bool spool_qid_valid(const char *qid);

#endif
