/* Private to smtpc.c, smtpc_tls.c and smtpc_tx.c: the connection struct and the functions
 * the three share. Nothing outside src/queue/smtpc*.c includes it; the API is smtpc.h.
 * Runs in the queue process. Untrusted input: none here (the struct holds bounded copies of
 * what the server sent). */
#ifndef SEALMAIL_QUEUE_SMTPC_INT_H
#define SEALMAIL_QUEUE_SMTPC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "limits.h"
#include "queue/smtpc.h"
#include "queue/smtpc_reply.h"

/* What the connection waits for. */
enum smtpc_state {
	SMTPC_S_CONNECTING = 0,
	SMTPC_S_GREETING,
	SMTPC_S_EHLO,
	SMTPC_S_HELO,
	SMTPC_S_STARTTLS,
	SMTPC_S_HANDSHAKE,
	SMTPC_S_AUTH,      /* 235 after AUTH PLAIN or the LOGIN password */
	SMTPC_S_AUTH_USER, /* 334 after AUTH LOGIN */
	SMTPC_S_AUTH_PASS, /* 334 after the LOGIN user name */
	SMTPC_S_IDLE,
	SMTPC_S_TXCHECK, /* a transaction refused before sending: callback pending */
	SMTPC_S_MAIL,
	SMTPC_S_RCPT,
	SMTPC_S_DATA,
	SMTPC_S_BODY,
	SMTPC_S_DOT,
	SMTPC_S_DOT_DISCARD, /* "." after a 354 with no recipient taken */
	SMTPC_S_RSET,
	SMTPC_S_QUIT,
	SMTPC_S_CLOSED,
};

struct smtpc {
	struct event_base *base;
	struct bufferevent *bev;
	int fd;              /* -1 when closed */
	bool bev_owns_fd;    /* the TLS bufferevent closes it */
	struct event *tmo;   /* connect, handshake and reply timeouts */
	struct event *defer; /* callbacks that must not run inside an API call */
	enum smtpc_state st;
	int busy;  /* depth of our libevent callbacks on the stack */
	bool dead; /* free when the outermost callback returns */

	/* parameters (copied) */
	char *host, *domain, *helo, *auth_user, *auth_pass;
	bool host_is_ip;
	char host_ip[64];
	enum tls_level level;
	enum smtpc_tls_mode mode;
	SSL_CTX *ctx;

	/* connection */
	struct smtpc_info info;
	struct smtpc_caps caps;
	struct smtpc_reader rd; /* the reply being read */
	bool starttls_refused; /* level may: continue in plaintext */
	int verify_err;        /* first certificate error the verify callback saw */
	smtpc_open_cb open_cb;
	void *open_arg;
	struct smtpc_result open_res; /* a failure found inside smtpc_open */

	/* transaction */
	struct smtpc_tx *tx;
	smtpc_tx_cb tx_cb;
	void *tx_arg;
	bool pipelined, bdat, mail_failed;
	int rcpt_i; /* next RCPT reply expected */
	uint64_t body_pos;
	bool bol, filling;
	char last2[2];
	char *ibuf, *obuf; /* spool chunk and its dot-stuffed copy */
};

/* smtpc.c */
void smtpc_timer_arm(struct smtpc *c, int secs);
void smtpc_timer_stop(struct smtpc *c);
/* Appends to buf[*n..sz); false (buf unchanged past *n) when it does not fit. */
bool smtpc_buf_add(char *buf, size_t sz, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A failure of ours (no reply): code 0, enh, a reason. */
void smtpc_res_reason(struct smtpc_result *r, enum smtpc_stage st, const char *enh, bool perm,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The server's reply as the outcome of stage st. */
void smtpc_res_reply(struct smtpc_result *r, enum smtpc_stage st, const struct smtpc_reply *rep);
/* One command line, CRLF added; secret: not logged (AUTH). */
void smtpc_cmd_send(struct smtpc *c, bool secret, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Frees the bufferevent and the socket; c stays, in SMTPC_S_CLOSED. */
void smtpc_conn_close(struct smtpc *c);
/* Opening failed: closes, calls the open callback, marks c to be freed on the way out. */
void smtpc_open_fail(struct smtpc *c, const struct smtpc_result *r);
void smtpc_ehlo_send(struct smtpc *c);
void smtpc_greeting_wait(struct smtpc *c);
/* Installs our callbacks and timeouts on c->bev (a new one after STARTTLS). */
void smtpc_setcb(struct smtpc *c);
/* An envelope address or name we put on a command line: no controls, no '<' '>'. */
bool smtpc_addr_ok(const char *s, bool allow_empty);

/* smtpc_tls.c */
/* Replaces the plaintext bufferevent by a TLS one on the same socket; starts the handshake. */
void smtpc_tls_start(struct smtpc *c);
/* Handshake done: the certificate verdict, the level's decision, then EHLO or greeting. */
void smtpc_tls_done(struct smtpc *c);
void smtpc_tls_failed(struct smtpc *c, struct bufferevent *bev, short what, int err);

/* smtpc_tx.c */
/* A reply in one of the transaction states. */
void smtpc_tx_reply(struct smtpc *c, const struct smtpc_reply *rep);
/* The output drained below the low watermark while sending the body. */
void smtpc_body_fill(struct smtpc *c);
/* The connection broke during a transaction: r for the transaction, close, callback. */
void smtpc_tx_abort(struct smtpc *c, const struct smtpc_result *r);
/* Calls the transaction callback (c is idle again unless closed). */
void smtpc_tx_finish(struct smtpc *c);

#endif
