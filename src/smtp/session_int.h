/* Inside an SMTP server session: the structs shared by session.c (commands, TLS, DATA)
 * and session_auth.c (AUTH, sender checks). Runs in smtp workers. */
#ifndef SEALMAIL_SMTP_SESSION_INT_H
#define SEALMAIL_SMTP_SESSION_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "auth/scram.h"
#include "conf/conf.h"
#include "limits.h"
#include "msg/spool.h"
#include "net/ipc.h"
#include "smtp/body.h"
#include "smtp/parse.h"
#include "smtp/session.h"

enum smtp_state {
	SMTP_ST_TLS_WAIT = 0, /* implicit TLS handshake before the greeting */
	SMTP_ST_CMD,          /* reading commands */
	SMTP_ST_WAIT,         /* waiting for lookup or commit: input paused */
	SMTP_ST_DATA,         /* reading a DATA body */
	SMTP_ST_BDAT,         /* reading a BDAT chunk */
	SMTP_ST_STARTTLS,     /* 220 sent, waiting for it to flush before the handshake */
	SMTP_ST_HANDSHAKE,    /* STARTTLS handshake running */
	SMTP_ST_AUTH,         /* AUTH exchange: lines are SASL responses, not commands */
	SMTP_ST_CLOSING,      /* final reply flushing */
};

/* The mail transaction: MAIL to end of data. Freed by tx_reset(). */
struct smtp_tx {
	struct smtp_mail_args mail;
	struct spool_rcpt *rcpts;
	int nrcpts, cap;
	int rcpt_attempts;       /* RCPTs asked, for the recipients bound */
	struct smtp_rcpt_args pending; /* RCPT waiting for lookup */
	struct spool_msg *msg;
	char qid[32];
	struct body_reader body;
	bool bdat;               /* BDAT seen in this transaction */
	uint64_t bdat_left;      /* bytes of the current chunk still to read */
	bool bdat_last;
	bool write_failed;
	uint32_t counted;        /* recipients counted against the account's hourly limit */
	time_t counted_since;
	bool accepted;           /* 250 given: the counted recipients stay counted */
	char *headers;           /* the header section as received (From: check), capped */
	size_t headers_len;
	bool headers_done;
};

/* TLS facts of the connection. */
struct smtp_tls {
	bool active;
	char version[16];
	char cipher[64];
	int bits;
};

/* AUTH (RFC 4954): the exchange in progress and, once done, who the client is. */
struct smtp_auth {
	bool done;                /* authenticated */
	char account[64];
	char plan[64];
	uint32_t limit;
	char *domains;            /* the account's sending domains, comma-separated */
	int attempts;
	int mech;                 /* enum in session_auth.c */
	int step;
	char login[SASL_USER_MAX + 1];
	struct scram_server *scram;
	struct scram_creds *creds;
	int lookup_status;        /* enum ipc_auth_status of the SCRAM credentials */
	size_t info_len;
	struct event *delay_ev;   /* the pause before 535 */
};

struct smtp_session {
	struct worker *w;
	uint64_t id;
	int fd;
	struct bufferevent *bev;
	enum conf_listener_kind kind;
	enum smtp_state state;
	char ip[64];
	char helo[LIM_HELO + 1];
	bool ehlo;               /* EHLO (not HELO) given: extensions allowed */
	bool greeted;
	struct smtp_tls tls;
	struct smtp_tx *tx;
	struct smtp_auth auth;
	int errors;
	unsigned commands;
	unsigned messages;
	bool waiting_lookup;
	bool in_commit;
	bool dead;               /* peer gone while in a group commit */
	bool close_after_flush;
	bool bev_owns_fd;        /* the TLS bufferevent closes fd; the plaintext one does not */
	struct event *data_timer; /* bounds the whole DATA/BDAT phase */
	struct event *close_ev;   /* deferred free after session_close */
	char sid[20];
};

/* session.c */
struct event_base *worker_base_of(struct smtp_session *s);
void session_reply(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const struct conf *session_conf(struct smtp_session *s);
void session_close(struct smtp_session *s, const char *why);
bool session_error(struct smtp_session *s);
void session_process(struct smtp_session *s);
/* Pauses reading (waiting for another process or a timer) / resumes command reading. */
void session_pause(struct smtp_session *s);
void session_resume(struct smtp_session *s);

/* session_auth.c */
void auth_command(struct smtp_session *s, const char *arg, size_t len);
void auth_line(struct smtp_session *s, char *line, size_t len);
void auth_reset(struct smtp_session *s); /* frees the exchange and identity */
/* EHLO: the AUTH line (e.g. "AUTH PLAIN LOGIN SCRAM-SHA-256") or NULL when not offered. */
const char *auth_ehlo_line(struct smtp_session *s);
/* MAIL: NULL when the sender is allowed, else the 5xx reply text. */
const char *auth_check_sender(struct smtp_session *s, const struct smtp_addr *from);
/* End of data: NULL when every From: header address is the account's, else reply text. */
const char *auth_check_from_header(struct smtp_session *s);
/* Transaction ends without 250: give back counted recipients. */
void auth_release_counted(struct smtp_session *s);

#endif
