/* The message body reader for DATA (RFC 5321 4.1.1.4, 4.5.2) and BDAT (RFC 3030): a
 * byte-driven state machine with no I/O. It removes dot-stuffing, finds the end of data,
 * and enforces promise 3 (one message stays one message) and the size/line caps.
 * Untrusted input: every byte a client sends after DATA/BDAT. Fuzzed by fuzz_body.c. */
#ifndef SEALMAIL_SMTP_BODY_H
#define SEALMAIL_SMTP_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum body_err {
	BODY_OK = 0,
	BODY_ERR_BARE_LF,   /* LF not preceded by CR: 550 5.6.11 (RFC 5321 2.3.8) */
	BODY_ERR_BARE_CR,   /* CR not followed by LF: 550 5.6.11 */
	BODY_ERR_LINE_LONG, /* a line over LIM_TEXT_LINE octets incl. CRLF: 500 5.5.6 */
	BODY_ERR_SIZE,      /* message larger than the limit: 552 5.3.4 */
	BODY_ERR_NUL,       /* NUL octet (not allowed without BINARYMIME): 550 5.6.0 */
};

/* Emits a span of the message as stored: CRLF line ends, dots unstuffed. Called only while
 * no error has been seen; after an error the reader keeps consuming (to stay in step with
 * the client) but emits nothing. */
typedef void (*body_emit_fn)(void *arg, const char *p, size_t n);

struct body_reader {
	/* private state; callers use the functions below */
	int state;           /* enum body_state in body.c */
	bool bdat;           /* BDAT mode: no dot handling, no end marker */
	bool binary;         /* BODY=BINARYMIME: NUL and bare CR/LF allowed, no line cap */
	bool in_headers;     /* still in the header section (before the first empty line) */
	uint64_t max_size;   /* 0 = unlimited */
	uint64_t size;       /* octets of message emitted so far (or that would have been) */
	size_t line_len;     /* octets of the current line so far, as stored (saturates) */
	enum body_err err;   /* first error seen */
	unsigned received;   /* number of Received: header fields seen */
	size_t hdr_name_len; /* octets of "Received:" matched at the start of this line */
	body_emit_fn emit;
	void *emit_arg;
};

/* Starts a DATA (bdat=false) or BDAT (bdat=true) message. For BDAT the same reader is fed
 * every chunk of the message in turn. emit may be NULL (count and check only). The reader
 * holds no allocation; there is nothing to free. RFC 3030 3 allows BODY=BINARYMIME only
 * with BDAT: the session must refuse DATA for such a transaction (binary DATA still ends
 * only at <CRLF>.<CRLF> here). */
void body_init(struct body_reader *r, bool bdat, bool binary, uint64_t max_size, body_emit_fn emit,
               void *arg);

/* DATA: consumes bytes up to and including the "<CRLF>.<CRLF>" end marker. Returns the
 * number of bytes consumed; sets *done when the marker was consumed (the bytes after it are
 * the next command and are not consumed). A lone "." line ends the message only when it is
 * CR LF "." CR LF; "<LF>.<LF>", "<LF>.<CR><LF>", "<CR><LF>.<LF>", "<CR>.<CR>" do not.
 * BDAT: consumes all n bytes and never sets *done (the caller counts chunk sizes).
 * Any split of the input gives the same result as feeding it at once. done may be NULL
 * for BDAT. Once DATA is done it consumes nothing and sets *done again; after body_finish
 * a BDAT reader consumes nothing. */
size_t body_feed(struct body_reader *r, const char *p, size_t n, bool *done);

/* Ends a BDAT message at BDAT LAST (a pending CR at the very end is a bare CR; a last line
 * without CRLF is completed with CRLF, emitted and counted in the size; with BINARYMIME a
 * trailing CR is completed with LF). An empty message stays empty. For DATA it does
 * nothing. Returns the first error. Calling it twice is harmless. */
enum body_err body_finish(struct body_reader *r);

/* First error seen, BODY_OK when none. */
enum body_err body_error(const struct body_reader *r);

/* Number of "Received:" header fields in the header section so far (RFC 5321 6.3 loop
 * detection; compare with LIM_RECEIVED_DEFAULT). */
unsigned body_received(const struct body_reader *r);

/* Octets of the message as stored so far (after dot removal, with any completing CRLF). */
uint64_t body_size(const struct body_reader *r);

/* Short reason for logs, e.g. "bare LF in message". */
const char *body_err_str(enum body_err e);

#endif
