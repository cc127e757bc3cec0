/* The message body reader: end-of-data detection, dot removal and CRLF/NUL/line/size checks
 * for DATA (RFC 5321 4.1.1.4, 4.5.2) and BDAT (RFC 3030). Runs in the smtp worker, no I/O.
 * Untrusted input: every byte a client sends after DATA/BDAT, split however TCP and TLS
 * split it. The state survives between calls so any split gives the same result; errors
 * never change how the end of data is found (promise 3: one message stays one message). */
#include "smtp/body.h"

#include "limits.h"

enum body_state {
	BODY_ST_LINE_START = 0, /* at the start of the message or right after CR LF */
	BODY_ST_TEXT,           /* inside a line */
	BODY_ST_CR,             /* inside a line, the last octet was CR */
	BODY_ST_DOT,            /* DATA: "." at the start of a line (not emitted) */
	BODY_ST_DOT_CR,         /* DATA: "." CR at the start of a line (neither emitted yet) */
	BODY_ST_DONE,           /* DATA: end marker consumed; BDAT: body_finish called */
};

/* "Received:" as matched case-insensitively at the start of a header line (RFC 5322 3.6.7,
 * field names are case-insensitive per RFC 5322 1.2.2). */
static const char received_name[] = "received:";
#define RECEIVED_NAME_LEN (sizeof(received_name) - 1)

/* The span of the current input buffer not yet handed to emit: p[start, i). */
struct body_span {
	const char *p;
	size_t start;
};

static void span_flush(struct body_reader *r, struct body_span *s, size_t end)
{
	if (s == NULL)
		return;
	if (end > s->start && r->err == BODY_OK && r->emit != NULL)
		r->emit(r->emit_arg, s->p + s->start, end - s->start);
	s->start = end;
}

/* The octet at i is not part of the message (a removed dot, the end marker, a deferred CR). */
static void span_skip(struct body_reader *r, struct body_span *s, size_t i)
{
	span_flush(r, s, i);
	s->start = i + 1;
}

/* Records the first error. What came before the offending octet is emitted first, so the
 * output is the same however the input was split. */
static void body_fail(struct body_reader *r, struct body_span *s, size_t i, enum body_err e)
{
	if (r->err != BODY_OK)
		return;
	span_flush(r, s, i);
	r->err = e;
}

static unsigned char lower_ascii(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Counts one octet of the message as stored: size, line length, Received: fields. The octet
 * itself is emitted by the caller (as part of the span or on its own). */
static void body_account(struct body_reader *r, struct body_span *s, size_t i, unsigned char c)
{
	size_t pos = r->line_len; /* offset of c in its line */

	r->size++;
	/* RFC 1870 / RFC 5321 4.5.3.1.7: the message may not exceed the size we announced. */
	if (r->max_size != 0 && r->size > r->max_size)
		body_fail(r, s, i, BODY_ERR_SIZE);
	if (r->line_len <= LIM_TEXT_LINE)
		r->line_len++;
	/* RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF, not counting
	 * a leading dot duplicated for transparency (we count after removing it). RFC 3030 3:
	 * BINARYMIME has no line length limit. */
	if (!r->binary && r->line_len > LIM_TEXT_LINE)
		body_fail(r, s, i, BODY_ERR_LINE_LONG);
	if (r->in_headers && pos < RECEIVED_NAME_LEN && r->hdr_name_len == pos &&
	    lower_ascii(c) == (unsigned char)received_name[pos]) {
		r->hdr_name_len++;
		if (r->hdr_name_len == RECEIVED_NAME_LEN && r->received != ~0u)
			r->received++;
	}
}

/* A CR LF pair has just been accounted: a new line starts. */
static void body_line_end(struct body_reader *r)
{
	/* RFC 5322 2.1: the header section ends at the first empty line. */
	if (r->in_headers && r->line_len == 2)
		r->in_headers = false;
	r->line_len = 0;
	r->hdr_name_len = 0;
}

/* An octet inside a line, or the first octet of a line that is not a dot line. */
static void body_text(struct body_reader *r, struct body_span *s, size_t i, unsigned char c)
{
	switch (c) {
	case '\r':
		r->state = BODY_ST_CR;
		break;
	case '\n':
		/* RFC 5321 2.3.8: LF without CR is not a line end; it never starts a line, so it
		 * can never help form an end marker. Rejected unless BINARYMIME. */
		if (!r->binary)
			body_fail(r, s, i, BODY_ERR_BARE_LF);
		r->state = BODY_ST_TEXT;
		break;
	case '\0':
		/* RFC 5321 4.5.2 / RFC 6152: NUL is not allowed in 7bit or 8bitMIME text. */
		if (!r->binary)
			body_fail(r, s, i, BODY_ERR_NUL);
		r->state = BODY_ST_TEXT;
		break;
	default:
		r->state = BODY_ST_TEXT;
		break;
	}
	body_account(r, s, i, c);
}

/* The octet after a CR (which is already counted and in the span). */
static void body_after_cr(struct body_reader *r, struct body_span *s, size_t i, unsigned char c)
{
	if (c == '\n') {
		body_account(r, s, i, c);
		body_line_end(r);
		r->state = BODY_ST_LINE_START;
		return;
	}
	/* RFC 5321 2.3.8: CR without LF is not a line end. */
	if (!r->binary)
		body_fail(r, s, i, BODY_ERR_BARE_CR);
	body_text(r, s, i, c);
}

void body_init(struct body_reader *r, bool bdat, bool binary, uint64_t max_size, body_emit_fn emit,
               void *arg)
{
	*r = (struct body_reader){
	    .state = BODY_ST_LINE_START,
	    .bdat = bdat,
	    .binary = binary,
	    .in_headers = true,
	    .max_size = max_size,
	    .err = BODY_OK,
	    .emit = emit,
	    .emit_arg = arg,
	};
}

size_t body_feed(struct body_reader *r, const char *p, size_t n, bool *done)
{
	struct body_span s = {.p = p, .start = 0};
	size_t i;

	if (done != NULL)
		*done = false;
	if (r->state == BODY_ST_DONE) {
		if (done != NULL && !r->bdat)
			*done = true;
		return 0;
	}
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		switch (r->state) {
		case BODY_ST_LINE_START:
			/* RFC 5321 4.5.2: a line starting with "." is either the end marker or
			 * has its first dot removed. RFC 3030 2: BDAT has neither. */
			if (!r->bdat && c == '.') {
				span_skip(r, &s, i);
				r->state = BODY_ST_DOT;
			} else {
				body_text(r, &s, i, c);
			}
			break;
		case BODY_ST_DOT:
			if (c == '\r') {
				/* held back: the end marker, or content if no LF follows */
				span_skip(r, &s, i);
				r->state = BODY_ST_DOT_CR;
			} else {
				/* RFC 5321 4.5.2: the leading dot is removed, the rest is text */
				body_text(r, &s, i, c);
			}
			break;
		case BODY_ST_DOT_CR:
			if (c == '\n') {
				/* RFC 5321 4.1.1.4: CR LF "." CR LF ends the mail data; the first
				 * CR LF belongs to the message, ". CR LF" does not. */
				span_skip(r, &s, i);
				r->state = BODY_ST_DONE;
				break;
			}
			/* "." CR <not LF>: the dot was stuffing, the held CR is content (a bare
			 * CR, so an error unless BINARYMIME). It is emitted before c. */
			span_flush(r, &s, i);
			body_account(r, &s, i, '\r');
			if (r->err == BODY_OK && r->emit != NULL)
				r->emit(r->emit_arg, "\r", 1);
			r->state = BODY_ST_CR;
			body_after_cr(r, &s, i, c);
			break;
		case BODY_ST_CR:
			body_after_cr(r, &s, i, c);
			break;
		default: /* BODY_ST_TEXT */
			body_text(r, &s, i, c);
			break;
		}
		if (r->state == BODY_ST_DONE) {
			i++;
			break;
		}
	}
	span_flush(r, &s, i);
	if (r->state == BODY_ST_DONE && done != NULL)
		*done = true;
	return i;
}

enum body_err body_finish(struct body_reader *r)
{
	if (!r->bdat || r->state == BODY_ST_DONE)
		return r->err;
	if (r->state == BODY_ST_CR) {
		/* RFC 3030 2: chunks are opaque, so a CR may wait for an LF in the next chunk;
		 * at BDAT LAST nothing follows and the CR is bare. */
		if (!r->binary) {
			body_fail(r, NULL, 0, BODY_ERR_BARE_CR);
		} else {
			body_account(r, NULL, 0, '\n');
			if (r->err == BODY_OK && r->emit != NULL)
				r->emit(r->emit_arg, "\n", 1);
			body_line_end(r);
		}
	} else if (r->state == BODY_ST_TEXT) {
		/* RFC 5322 2.1 / RFC 5321 2.3.8: stored messages are lines ending in CRLF. */
		body_account(r, NULL, 0, '\r');
		body_account(r, NULL, 0, '\n');
		if (r->err == BODY_OK && r->emit != NULL)
			r->emit(r->emit_arg, "\r\n", 2);
		body_line_end(r);
	}
	r->state = BODY_ST_DONE;
	return r->err;
}

enum body_err body_error(const struct body_reader *r)
{
	return r->err;
}

unsigned body_received(const struct body_reader *r)
{
	return r->received;
}

uint64_t body_size(const struct body_reader *r)
{
	return r->size;
}

const char *body_err_str(enum body_err e)
{
	switch (e) {
	case BODY_OK:
		return "ok";
	case BODY_ERR_BARE_LF:
		return "bare LF in message";
	case BODY_ERR_BARE_CR:
		return "bare CR in message";
	case BODY_ERR_LINE_LONG:
		return "line longer than 1000 octets";
	case BODY_ERR_SIZE:
		return "message too big";
	case BODY_ERR_NUL:
		return "NUL octet in message";
	}
	return "unknown body error";
}
