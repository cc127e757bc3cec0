/* One SMTP server session (RFC 5321) on an accepted connection: the command table, TLS
 * (STARTTLS and implicit), the mail transaction, DATA/BDAT into the spool. Runs in smtp
 * workers. Untrusted input: every byte the client sends. */
#ifndef SEALMAIL_SMTP_SESSION_H
#define SEALMAIL_SMTP_SESSION_H

#include <stdbool.h>
#include <sys/socket.h>

#include "conf/conf.h"
#include "net/ipc.h"

struct worker;
struct smtp_session;

/* Starts a session on fd (non-blocking, accepted on a listener of `kind`). Owns fd. Returns
 * the session, or NULL when it already ended (worker_session_closed was called). */
struct smtp_session *session_start(struct worker *w, int fd, const struct sockaddr_storage *peer,
		   enum conf_listener_kind kind);

/* The lookup process answered the session's pending RCPT: payload is the mailbox (LOCAL)
 * or "plan\0limit\0retry" (RATE), len bytes. */
void session_lookup_done(struct smtp_session *s, enum ipc_rcpt_status st, const char *mailbox,
			 size_t len);

/* The lookup process answered an AUTH question (IPC_AUTH_REP or IPC_SCRAM_REP). */
void session_auth_reply(struct smtp_session *s, enum ipc_type type, enum ipc_auth_status st,
			const char *payload, size_t len);

/* The group commit holding the session's message finished (ok: durable in queue/). */
void session_commit_done(struct smtp_session *s, bool ok);

/* Drain deadline passed: say 421 and close. */
void session_shutdown(struct smtp_session *s);

/* Listener names as logs and Received use them. */
const char *session_listener_name(enum conf_listener_kind kind);

#endif
