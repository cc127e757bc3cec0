/* Delivery status notifications (RFC 3464 multipart/report; RFC 3461 DSN parameters; RFC 6522):
 * the failure bounce, the delay notice and the success ("relayed"/"delivered") notice that
 * the queue writes back to a message's envelope sender. Pure: writes bytes through a
 * callback; the caller spools them as a new message from <> . Runs in the queue process.
 * Untrusted input: the original message's header bytes (copied, never interpreted beyond
 * finding where the header ends) and remote SMTP replies (sanitised before quoting). */
#ifndef SEALMAIL_QUEUE_DSN_H
#define SEALMAIL_QUEUE_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum dsn_action { DSN_FAILED = 0, DSN_DELAYED, DSN_DELIVERED, DSN_RELAYED };

struct dsn_rcpt {
	const char *addr;       /* the recipient as given in RCPT TO (Final-Recipient: rfc822;addr) */
	const char *orcpt;      /* ORCPT as received ("rfc822;xtext..."), "" or NULL when absent */
	enum dsn_action action;
	const char *status;     /* enhanced status "5.1.1", "4.4.1", "2.0.0" */
	const char *remote_mta; /* MX host name that answered, "" or NULL when none did */
	const char *diag;       /* the remote reply as one line ("550 5.1.1 <bob@x>: no such
				 * user"), "" or NULL when the failure is ours (then `reason`) */
	const char *reason;     /* human explanation ("TLS required by policy for example.com but
				 * mx1.example.com did not offer STARTTLS"); "" or NULL */
	time_t last_attempt;    /* 0 = never attempted */
};

struct dsn_report {
	const char *reporting_mta; /* our hostname */
	const char *qid;           /* original queue id (named in the human part) */
	const char *from;          /* original envelope sender (the notice goes to it) */
	const char *envid;         /* ENVID as received (xtext), "" or NULL */
	int ret;                   /* enum smtp_dsn_ret of the original: FULL, HDRS or NONE */
	time_t arrival;
	time_t now;                /* Date: of the notice */
	time_t give_up;            /* for delay notices: when we stop trying (0: not said) */
	const struct dsn_rcpt *rcpts;
	int nrcpts;                /* >= 1; all of one kind is usual but mixing is allowed */
	bool smtputf8;             /* original used SMTPUTF8: addresses may be UTF-8
				    * (utf-8 address type, RFC 6533) */
};

/* The subject a notice of this kind carries (for logs/tests): by the first recipient's
 * action: "Undelivered Mail Returned to Sender", "Delayed Mail (still being retried)",
 * "Successful Mail Delivery Report". */
const char *dsn_subject(const struct dsn_report *r);

/* Writes the whole notice, headers and body, with CRLF line ends and no line over 998
 * octets, through wr(arg, p, n) (which returns 0, or -1 to stop: dsn_write then returns
 * -1). Headers: From: MAILER-DAEMON@<reporting_mta> (Mail Delivery System), To: <from>,
 * Subject, Date, Message-ID (<qid.random@reporting_mta>), MIME-Version, Auto-Submitted:
 * auto-replied, Content-Type: multipart/report; report-type=delivery-status; boundary=...
 * Parts: 1. text/plain human explanation ("This is the mail system at host H." ..., per
 * recipient the address and the remote reply or reason); 2. message/delivery-status
 * (Reporting-MTA: dns; H, Original-Envelope-Id when envid set, Arrival-Date; per
 * recipient Original-Recipient when orcpt set, Final-Recipient, Action, Status,
 * Remote-MTA: dns; ..., Diagnostic-Code: smtp; ..., Last-Attempt-Date, Will-Retry-Until for
 * delayed); 3. the original: text/rfc822-headers (its header only) when ret is HDRS, or for
 * a delay/success notice, or when the original is larger than max_full bytes; otherwise
 * message/rfc822 (the whole original) for failures. The original is read from fd at
 * [off, off+len) with pread (no file position change); its bytes are copied as they are
 * (CRLF lines). Returns 0, or -1 on a read or write error. */
int dsn_write(const struct dsn_report *r, int fd, uint64_t off, uint64_t len, uint64_t max_full,
	      int (*wr)(void *arg, const void *p, size_t n), void *arg);

#endif
