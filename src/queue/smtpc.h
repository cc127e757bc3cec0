/* The outbound SMTP client: one connection to one host, driven on a libevent loop. Opens
 * (connect, greeting, EHLO or HELO, STARTTLS or implicit TLS as the TLS level allows or
 * demands, EHLO again, AUTH PLAIN/LOGIN for a relayhost), then runs transactions one after
 * another on the same connection (PIPELINING when offered; SIZE, 8BITMIME, SMTPUTF8, DSN
 * parameters), then QUIT. RFC 5321 4.5.3.2 timeouts on every step. Policy decisions about
 * TLS are made here from the level given (tlspolicy.h); which level applies, which hosts to
 * try and what to do with a failure is the caller's. Runs in the queue process. Untrusted
 * input: every byte from the server (reply lines bounded, counts bounded, TLS facts copied
 * into fixed buffers). */
#ifndef SEALMAIL_QUEUE_SMTPC_H
#define SEALMAIL_QUEUE_SMTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "policy/tlspolicy.h"

/* RFC 5321 4.5.3.2 (seconds). */
#define SMTPC_T_GREETING 300
#define SMTPC_T_MAIL 300
#define SMTPC_T_RCPT 300
#define SMTPC_T_DATA_INIT 120
#define SMTPC_T_DATA_BLOCK 180
#define SMTPC_T_DATA_END 600
/* Not in the RFC: EHLO, STARTTLS, AUTH, RSET, QUIT replies; the TLS handshake. */
#define SMTPC_T_OTHER 300
#define SMTPC_T_QUIT 10
/* A reply line longer than this, or a reply of more lines, ends the connection. */
#define SMTPC_MAX_LINE 4096
#define SMTPC_MAX_LINES 100

enum smtpc_tls_mode {
	SMTPC_STARTTLS = 0, /* plain connect, STARTTLS as the level says (port 25, 587) */
	SMTPC_IMPLICIT,     /* TLS from the first byte (port 465); any level but none */
};

enum smtpc_stage {
	SMTPC_ST_CONNECT = 0, SMTPC_ST_GREETING, SMTPC_ST_EHLO, SMTPC_ST_STARTTLS, SMTPC_ST_TLS,
	SMTPC_ST_AUTH, SMTPC_ST_MAIL, SMTPC_ST_RCPT, SMTPC_ST_DATA, SMTPC_ST_DOT, SMTPC_ST_RSET,
	SMTPC_ST_QUIT,
};
/* "connect", "greeting", "EHLO", "STARTTLS", "TLS handshake", "AUTH", "MAIL FROM",
 * "RCPT TO", "DATA", "end of data", "RSET", "QUIT" (for "... in reply to RCPT TO"). */
const char *smtpc_stage_name(enum smtpc_stage s);

/* Certificate verdict of a connection. */
enum smtpc_cert {
	SMTPC_CERT_NONE = 0,   /* no TLS */
	SMTPC_CERT_VERIFIED,   /* chains to a trusted CA and matches the host name */
	SMTPC_CERT_UNVERIFIED, /* TLS, but the certificate did not verify (level allowed it);
				* cert_error says why */
	SMTPC_CERT_FAILED,     /* level verify and verification failed: no mail was sent */
};
const char *smtpc_cert_name(enum smtpc_cert v); /* "none", "verified", "unverified", "failed" */

struct smtpc_params {
	struct sockaddr_storage addr; /* where to connect (port ignored) */
	int port;
	const char *host;      /* the server's name: SNI and the certificate name check (never
				* the IP); may be an IP literal (then no SNI, and only verify
				* against an IP SAN) */
	const char *domain;    /* what the level was decided for, for reasons: "example.com" */
	const char *helo;      /* our name in EHLO/HELO */
	enum tls_level level;
	enum smtpc_tls_mode mode;
	SSL_CTX *ctx;          /* from tls_client_ctx_new; needed unless level is none */
	const struct sockaddr_storage *source; /* bind before connect; NULL = kernel's choice */
	const char *auth_user; /* AUTH (PLAIN, else LOGIN) after TLS; NULL = no AUTH. Sent
				* only over TLS unless level is none. */
	const char *auth_pass;
	int connect_timeout;   /* seconds; 0 = 30 */
};

/* What the server offers and what the connection is (valid once open). */
struct smtpc_info {
	char ip[64];
	int port;
	char greeting[512];
	bool esmtp;            /* EHLO worked (else HELO) */
	bool starttls, pipelining, eightbitmime, smtputf8, dsn, chunking, binarymime;
	bool auth_plain, auth_login;
	bool size;             /* SIZE advertised; max_size 0 = no fixed limit */
	uint64_t max_size;
	bool tls;
	char tls_version[16];  /* "TLSv1.3" */
	char tls_cipher[64];   /* "TLS_AES_256_GCM_SHA384" */
	int tls_bits;
	enum smtpc_cert cert;
	char cert_error[160];  /* unverified/failed: "certificate has expired", "hostname
				* mismatch (certificate is for wrong.example.test)" */
};

/* A failure, or the outcome of one step. */
struct smtpc_result {
	enum smtpc_stage stage;
	int code;              /* SMTP reply code; 0 when there was no reply (connect error,
				* timeout, lost connection, TLS failure, policy refusal) */
	char enh[16];          /* enhanced status from the reply, or one we chose ("4.4.1"
				* connect failure, "4.4.2" lost connection/timeout, "4.7.5"
				* certificate, "4.7.4"/"5.7.4" TLS policy, "5.3.4" too big,
				* "5.6.7" SMTPUTF8 not offered) */
	char reply[512];       /* the reply, lines joined with a space ("550 5.1.1 <b@x> no such
				* user"), printable ASCII only; "" when none */
	char reason[512];      /* code 0: what happened, in words ("connect to 127.0.0.2:25:
				* Connection refused", "TLS required by policy for example.com but
				* mx1.example.com did not offer STARTTLS", "certificate
				* verification failed for mx1.example.com: certificate has
				* expired"); else "" */
	bool permanent;        /* 5xx, or a permanent reason (too big, SMTPUTF8) */
	bool tls_failed;       /* the TLS handshake or verification failed (at level may the
				* caller may try this host again in plaintext) */
	bool policy;           /* refused by the TLS level (no STARTTLS offered, handshake or
				* verification failed where TLS is required) */
};

struct smtpc;

/* Opening finished: fail == NULL when the connection is ready for smtpc_send; otherwise the
 * connection is already closed and c is freed when the callback returns (do not use it
 * after). info is valid during the call either way (how far it got). */
typedef void (*smtpc_open_cb)(struct smtpc *c, void *arg, const struct smtpc_result *fail,
			      const struct smtpc_info *info);

/* Starts a connection; the callback comes later (never from inside smtpc_open). NULL only
 * when the parameters are unusable (then no callback). */
struct smtpc *smtpc_open(struct event_base *base, const struct smtpc_params *p, smtpc_open_cb cb,
			 void *arg);
const struct smtpc_info *smtpc_info(const struct smtpc *c);

struct smtpc_rcpt {
	const char *addr;      /* forward-path without <> */
	unsigned notify;       /* SMTP_NOTIFY_* (parse.h), passed on only if the server has DSN */
	const char *orcpt;     /* "rfc822;xtext" or "" */
	struct smtpc_result res; /* out: the RCPT reply (code 250/251 = accepted), or the
				  * transaction's failure when it failed before or after RCPT */
	bool ok;               /* out: the server took the message for this recipient */
};

struct smtpc_tx {
	const char *from;      /* reverse-path without <>, "" for the null sender */
	int body_type;         /* enum smtp_body_type: 8BITMIME sends BODY=8BITMIME when the
				* server offers it (sent as is when it does not, as Postfix does);
				* BINARYMIME needs CHUNKING+BINARYMIME (else permanent 5.6.3) and is
				* sent with BDAT */
	bool smtputf8;         /* needs SMTPUTF8: a server without it is a permanent 5.6.7 */
	int ret;               /* enum smtp_dsn_ret, passed on when the server has DSN */
	const char *envid;     /* xtext, "" none */
	struct smtpc_rcpt *rcpts;
	int nrcpts;            /* 1..LIM_RCPTS_DEFAULT or more; the caller sizes batches */
	int fd;                /* the message: bytes [off, off+len) of fd (CRLF lines, not
				* dot-stuffed; smtpc stuffs); read with pread */
	uint64_t off, len;
	/* out */
	struct smtpc_result res; /* code 250 after the final dot: accepted for the ok rcpts;
				  * else the failure (stage says where) */
	bool dsn_passed;       /* NOTIFY/ORCPT/RET/ENVID went to the server */
};

/* The transaction finished (tx->res and tx->rcpts[].res filled). Whether the connection can
 * take another transaction: smtpc_usable(c). */
typedef void (*smtpc_tx_cb)(struct smtpc *c, void *arg, struct smtpc_tx *tx);

/* Runs one transaction on an open, idle connection. Checks first (no bytes sent when they
 * fail: tx->res permanent): SIZE over the server's max_size (5.3.4), SMTPUTF8 needed but not
 * offered (5.6.7), BINARYMIME not possible (5.6.3). A failed MAIL or all recipients refused
 * ends the transaction with RSET. -1 when c is busy or not usable (no callback). */
int smtpc_send(struct smtpc *c, struct smtpc_tx *tx, smtpc_tx_cb cb, void *arg);
/* True when the connection is open and idle (the last transaction left it in a state where
 * MAIL may be sent). */
bool smtpc_usable(const struct smtpc *c);
/* Sends QUIT, waits for the reply at most SMTPC_T_QUIT seconds, closes and frees (no
 * callback). */
void smtpc_quit(struct smtpc *c);
/* Closes at once and frees; no callback. Accepts NULL. */
void smtpc_free(struct smtpc *c);

/* Client TLS context: TLS min_version (TLS1_2_VERSION by default; lower only when the admin
 * insists) up to 1.3, the CA bundle ca_file ("" = OpenSSL's default paths, i.e. Debian's
 * /etc/ssl/certs), peer verification done per connection as the level asks. NULL with a
 * reason on error. */
SSL_CTX *smtpc_tls_ctx_new(const char *ca_file, int min_version, char *err, size_t errsz);

#endif
