/* SMTP command and address parsing (RFC 5321 4.1, RFC 1870, RFC 6152, RFC 6531, RFC 3461).
 * Pure functions, no I/O, no allocation: they read bytes a client sent and fill caller-owned
 * structs. Fuzzed by tests/fuzz/fuzz_parse.c. */
#ifndef SEALMAIL_SMTP_PARSE_H
#define SEALMAIL_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "limits.h"

enum smtp_verb {
	SMTP_V_UNKNOWN = 0,
	SMTP_V_HELO,
	SMTP_V_EHLO,
	SMTP_V_MAIL,
	SMTP_V_RCPT,
	SMTP_V_DATA,
	SMTP_V_BDAT,
	SMTP_V_RSET,
	SMTP_V_NOOP,
	SMTP_V_QUIT,
	SMTP_V_VRFY,
	SMTP_V_EXPN,
	SMTP_V_HELP,
	SMTP_V_STARTTLS,
	SMTP_V_AUTH,
	SMTP_V__COUNT
};

/* Result vocabulary of every parser here. The session maps each to a reply. */
enum smtp_perr {
	SMTP_P_OK = 0,
	SMTP_P_SYNTAX,       /* 501 5.5.2 generic syntax error in arguments */
	SMTP_P_BAD_ADDR,     /* 501 5.1.7 (MAIL) / 501 5.1.3 (RCPT): malformed address */
	SMTP_P_TOO_LONG,     /* 501 5.5.4 / 5.1.x: a part exceeds RFC 5321 4.5.3.1 limits */
	SMTP_P_UNKNOWN_PARAM,/* 555 5.5.4 unrecognised MAIL/RCPT parameter */
	SMTP_P_BAD_PARAM,    /* 501 5.5.4 known parameter with invalid value or given twice */
	SMTP_P_UTF8_NEEDS_SMTPUTF8, /* 553 5.6.7 non-ASCII address without SMTPUTF8 */
	SMTP_P_NUL,          /* NUL byte in a command: 500 5.5.2 */
	SMTP_P_NON_ASCII,    /* 8-bit byte in a command where not allowed: 500 5.5.2 */
};

/* A parsed command line. `arg` points into the caller's buffer just past the verb and the
 * single separating space (or at "" when there is none); trailing spaces are not part of it. */
struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg;
	size_t arg_len;
};

/* Parse one command line. `line` is the bytes before CRLF (CRLF removed), `len` its length;
 * line[len] must be '\0'. Verbs are case-insensitive (RFC 5321 2.4). An unrecognised verb
 * gives SMTP_P_OK with verb == SMTP_V_UNKNOWN. NUL inside [0,len) gives SMTP_P_NUL.
 * A line longer than RFC 5321 4.5.3.1.4 allows (LIM_CMD_LINE - 2 without CRLF; for MAIL, RCPT
 * and AUTH LIM_CMD_LINE_EXT - 2) gives SMTP_P_TOO_LONG, with `out` still filled in. */
enum smtp_perr smtp_parse_cmd(const char *line, size_t len, struct smtp_cmd *out);

/* A mailbox address split in two. Both NUL-terminated. For the null reverse-path "<>" both
 * are empty. For RCPT TO:<Postmaster> (no domain, RFC 5321 4.1.1.3) local = "Postmaster",
 * domain = "". The local part keeps its quoting exactly as sent ("a b"@x stays quoted). */
struct smtp_addr {
	char local[LIM_LOCAL_PART * 2 + 3]; /* quoted forms may be longer than 64 unquoted */
	char domain[LIM_DOMAIN + 1];        /* lower-cased; address literals kept as "[...]" */
	bool is_null;                       /* "<>" */
	bool utf8;                          /* contains non-ASCII (needs SMTPUTF8) */
};

enum smtp_body_type { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };
enum smtp_dsn_ret { SMTP_RET_NONE = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

#define SMTP_NOTIFY_NEVER 0x1
#define SMTP_NOTIFY_SUCCESS 0x2
#define SMTP_NOTIFY_FAILURE 0x4
#define SMTP_NOTIFY_DELAY 0x8

/* MAIL FROM:<reverse-path> [SP params] — RFC 5321 4.1.1.2, SIZE (RFC 1870), BODY (RFC 6152,
 * RFC 3030 BINARYMIME), SMTPUTF8 (RFC 6531), RET/ENVID (RFC 3461). */
struct smtp_mail_args {
	struct smtp_addr from;
	uint64_t size;              /* SIZE=, 0 when absent */
	bool has_size;
	enum smtp_body_type body;
	bool smtputf8;
	enum smtp_dsn_ret ret;
	char envid[LIM_ENVID + 1];  /* kept xtext-encoded as received; "" when absent */
};

/* RCPT TO:<forward-path> [SP params] — NOTIFY, ORCPT (RFC 3461). */
struct smtp_rcpt_args {
	struct smtp_addr to;
	unsigned notify;            /* SMTP_NOTIFY_* bits, 0 when absent */
	char orcpt[LIM_ORCPT + 1];  /* "rfc822;xtext" as received; "" when absent */
};

/* `arg` is the text after "MAIL " (e.g. "FROM:<a@b.example> SIZE=10"); "FROM:" is matched
 * case-insensitively, a space after the colon is tolerated. Whether the session may accept
 * SMTPUTF8 / BINARYMIME at all (advertised) is the caller's check on out->smtputf8 / out->body.
 * Non-ASCII in the address is accepted only when the SMTPUTF8 parameter is present.
 * RFC 4954 5 AUTH=<mailbox-xtext> / AUTH=<> is accepted (validated) and ignored.
 * For MAIL and RCPT: an 8-bit byte in the parameters gives SMTP_P_NON_ASCII; a duplicate
 * parameter SMTP_P_BAD_PARAM; a malformed keyword or bytes glued to '>' SMTP_P_SYNTAX. */
enum smtp_perr smtp_parse_mail(const char *arg, size_t len, struct smtp_mail_args *out);

/* `arg` is the text after "RCPT " (e.g. "TO:<b@c.example> NOTIFY=FAILURE"). `smtputf8` says
 * whether the transaction's MAIL carried SMTPUTF8 (non-ASCII allowed then). "<Postmaster>" in
 * any case gives local = "Postmaster" exactly; the null path "<>" is SMTP_P_BAD_ADDR. */
enum smtp_perr smtp_parse_rcpt(const char *arg, size_t len, bool smtputf8, struct smtp_rcpt_args *out);

/* Parse "<path>" or a bare address (without brackets when `need_brackets` is false, used by
 * the CLI). Source routes "<@a,@b:u@d>" are accepted and the route dropped (RFC 5321 4.1.2 /
 * appendix C). Enforces RFC 5321 4.1.2 syntax: dot-string or quoted-string local part,
 * domain of LDH labels or an address literal ([IPv4] or [IPv6:...]). `utf8_ok` allows UTF-8
 * (RFC 6531 U-label domains and local parts; the bytes must be valid UTF-8). Returns the
 * number of bytes of `s` consumed in *used (when not NULL); when `used` is NULL the path must
 * fill all of `s`. Malformed UTF-8 is SMTP_P_BAD_ADDR whatever utf8_ok says; well-formed UTF-8
 * without utf8_ok is SMTP_P_UTF8_NEEDS_SMTPUTF8. */
enum smtp_perr smtp_parse_path(const char *s, size_t len, bool need_brackets, bool utf8_ok,
			       struct smtp_addr *out, size_t *used);

/* BDAT <size> [LAST] (RFC 3030). Size is decimal, at most 20 digits, no sign; anything else
 * is SMTP_P_SYNTAX (SMTP_P_NON_ASCII for an 8-bit byte). */
enum smtp_perr smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, bool *last);

/* Writes "local@domain" (or "local" when domain is empty) into buf; returns length, or -1
 * when it does not fit. */
int smtp_addr_format(const struct smtp_addr *a, char *buf, size_t bufsz);

/* Lower-cases ASCII letters in place (domains and, for lookups, local parts). */
void smtp_ascii_lower(char *s);

/* Validates a domain name (LDH labels, each 1-63, total <= 255, no leading/trailing hyphen;
 * with utf8_ok, labels may contain UTF-8). Used for EHLO arguments too. */
bool smtp_domain_valid(const char *s, size_t len, bool utf8_ok);

#endif
