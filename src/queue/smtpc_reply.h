/* The SMTP client's reply reader and EHLO keyword parser: bytes from a server in, complete
 * replies out (RFC 5321 4.2: multiline, one code throughout; RFC 3463/2034 enhanced status
 * codes; text joined and made printable ASCII), and what the EHLO reply offers. Pure: no
 * I/O, no allocation. Used by smtpc.c in the queue process, the fuzzer and the unit tests.
 * Untrusted input: every byte given to it (lines bounded by SMTPC_MAX_LINE, replies by
 * SMTPC_MAX_LINES, kept text by the fixed buffers below). */
#ifndef SEALMAIL_QUEUE_SMTPC_REPLY_H
#define SEALMAIL_QUEUE_SMTPC_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/smtpc.h"

/* A reply: lines joined with a space, the enhanced code of the first line kept once,
 * printable ASCII only (TAB becomes a space, other bytes '?'), truncated to fit text. */
struct smtpc_reply {
	int code;      /* 100..599 */
	int nlines;
	char enh[16];  /* "5.1.1", or "" when the first line has none (or it is a 1xx) */
	char text[512];
	size_t len;    /* strlen(text) */
};

/* EHLO keywords seen (applied to smtpc_info with smtpc_caps_apply when the reply is 2xx). */
struct smtpc_caps {
	bool starttls, pipelining, eightbitmime, smtputf8, dsn, chunking, binarymime;
	bool auth_plain, auth_login, size;
	uint64_t max_size; /* RFC 1870 4: SIZE's number; 0 = absent, 0 or unreadable */
};

/* A reply being read; all zero (smtpc_reader_init) before its first line. */
struct smtpc_reader {
	struct smtpc_reply cur;
};

enum smtpc_rd {
	SMTPC_RD_ERROR = -1, /* protocol violation: out->text says what; the connection is
			      * unusable (bytes after the bad line are not looked at) */
	SMTPC_RD_MORE = 0,   /* no complete reply yet: feed more bytes */
	SMTPC_RD_REPLY = 1,  /* *out is a complete reply */
};

void smtpc_reader_init(struct smtpc_reader *rd);

/* Reads lines from buf[0, n): a line ends at LF, a CR just before it is dropped. Stops after
 * the line that completes a reply, at a line that breaks the rules, or when no complete line
 * is left; *used says how many bytes were taken (whole lines only: the caller keeps the rest
 * and offers it again with what follows; how the bytes are split never changes the result).
 * Errors: a line longer than SMTPC_MAX_LINE bytes without its line end, or an unfinished
 * rest already longer ("reply line longer than 4096 bytes"); a line that is not "ddd",
 * "ddd text" or "ddd-text" with a first digit 1..5, a code other than the reply's first, or
 * more than SMTPC_MAX_LINES lines ("malformed reply: <line>", made printable). With caps
 * non-NULL every line after the first is read as an EHLO keyword into *caps (the caller
 * clears it before EHLO). On REPLY and ERROR the reader starts afresh for the next reply;
 * *out is written only then. */
enum smtpc_rd smtpc_reader_feed(struct smtpc_reader *rd, struct smtpc_caps *caps, const char *buf,
                                size_t n, size_t *used, struct smtpc_reply *out);

/* One EHLO keyword line without its "250-"/"250 " (RFC 5321 4.1.1.1: ehlo-keyword *(SP
 * ehlo-param)), case-insensitive: STARTTLS, PIPELINING, 8BITMIME, SMTPUTF8, DSN, CHUNKING,
 * BINARYMIME, SIZE [number], AUTH mechanisms (also the pre-RFC 4954 "AUTH=PLAIN LOGIN");
 * others are ignored. */
void smtpc_ehlo_keyword(struct smtpc_caps *k, const char *s, size_t n);

/* Sets the offer fields of info from k (all false when !esmtp: HELO offers nothing);
 * info->esmtp = esmtp; max_size only with size. */
void smtpc_caps_apply(struct smtpc_info *info, const struct smtpc_caps *k, bool esmtp);

#endif
