/* libFuzzer driver for the body reader (src/smtp/body.c). Byte 0 picks the mode (DATA,
 * BDAT, BDAT+BINARYMIME, DATA with binary) and the piece size, byte 1 the size limit; the
 * rest is what a client sends after DATA/BDAT, fed in pieces and all at once. Checks that
 * every split agrees, that DATA ends exactly at the first CRLF.CRLF (promise 3), and the
 * output, error, size and Received: count against a plain reference written without states. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "limits.h"
#include "smtp/body.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

struct out {
	char *p;
	size_t len;
	size_t cap;
};

struct run {
	struct out out;
	size_t consumed;
	bool done;
	enum body_err err;
	unsigned received;
	uint64_t size;
};

static void collect(void *arg, const char *p, size_t n)
{
	struct out *o = arg;

	CHECK(n > 0);
	CHECK(n <= o->cap - o->len); /* output never exceeds input + completing CRLF */
	memcpy(o->p + o->len, p, n);
	o->len += n;
}

static void feed_all(bool bdat, bool binary, uint64_t max_size, const uint8_t *in, size_t n,
                     size_t piece, struct run *res)
{
	struct body_reader r;
	size_t pos = 0;

	res->out.len = 0;
	res->done = false;
	body_init(&r, bdat, binary, max_size, collect, &res->out);
	while (pos < n) {
		size_t k = n - pos < piece ? n - pos : piece;
		bool done = false;
		size_t used = body_feed(&r, (const char *)in + pos, k, &done);

		CHECK(used <= k);
		pos += used;
		if (bdat) {
			CHECK(used == k);
			CHECK(!done);
		} else if (done) {
			res->done = true;
			/* a second feed after the end consumes nothing */
			CHECK(body_feed(&r, (const char *)in + pos, n - pos, &done) == 0);
			CHECK(done);
			break;
		} else {
			CHECK(used == k);
		}
	}
	if (bdat)
		body_finish(&r);
	res->consumed = pos;
	res->err = body_error(&r);
	res->received = body_received(&r);
	res->size = body_size(&r);
}

/* DATA: offset of the dot of the first end marker, or n if none. The first line counts as
 * preceded by CRLF. */
static size_t find_marker(const uint8_t *in, size_t n)
{
	for (size_t k = 0; k + 3 <= n; k++) {
		if (in[k] != '.' || in[k + 1] != '\r' || in[k + 2] != '\n')
			continue;
		if (k == 0 || (k >= 2 && in[k - 2] == '\r' && in[k - 1] == '\n'))
			return k;
	}
	return n;
}

/* RFC 5321 4.5.2 dot removal on in[0, n), as a plain loop. */
static size_t unstuff(const uint8_t *in, size_t n, uint8_t *dst)
{
	size_t len = 0;

	for (size_t j = 0; j < n; j++) {
		bool line_start = j == 0 || (j >= 2 && in[j - 2] == '\r' && in[j - 1] == '\n');

		if (line_start && in[j] == '.')
			continue;
		dst[len++] = in[j];
	}
	return len;
}

static uint8_t lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c - 'A' + 'a') : c;
}

/* The first error and Received: count of a complete stored message s[0, n). */
static enum body_err ref_check(const uint8_t *s, size_t n, bool binary, uint64_t max_size,
                               unsigned *received)
{
	static const char name[] = "received:";
	enum body_err e = BODY_OK;
	size_t line_len = 0, match = 0;
	bool in_headers = true;

	*received = 0;
	for (size_t j = 0; j < n; j++) {
		uint8_t c = s[j];
		bool prev_cr = j > 0 && s[j - 1] == '\r';

		if (!binary && e == BODY_OK) {
			if (prev_cr && c != '\n')
				e = BODY_ERR_BARE_CR;
			else if (c == 0)
				e = BODY_ERR_NUL;
			else if (c == '\n' && !prev_cr)
				e = BODY_ERR_BARE_LF;
		}
		if (e == BODY_OK && max_size != 0 && j + 1 > max_size)
			e = BODY_ERR_SIZE;
		if (e == BODY_OK && !binary && line_len + 1 > LIM_TEXT_LINE)
			e = BODY_ERR_LINE_LONG;
		if (in_headers && line_len < sizeof(name) - 1 && match == line_len &&
		    lower(c) == (uint8_t)name[line_len]) {
			match++;
			if (match == sizeof(name) - 1)
				(*received)++;
		}
		line_len++;
		if (c == '\n' && prev_cr) {
			if (line_len == 2)
				in_headers = false;
			line_len = 0;
			match = 0;
		}
	}
	if (!binary && e == BODY_OK && n > 0 && s[n - 1] == '\r')
		e = BODY_ERR_BARE_CR;
	return e;
}

static bool has_bare_cr_lf_nul(const char *p, size_t n)
{
	for (size_t j = 0; j < n; j++) {
		if (p[j] == '\0')
			return true;
		if (p[j] == '\r' && (j + 1 == n || p[j + 1] != '\n'))
			return true;
		if (p[j] == '\n' && (j == 0 || p[j - 1] != '\r'))
			return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run whole = {0}, part = {0};
	const uint8_t *in;
	uint8_t *ref;
	size_t n, piece, ref_len, marker;
	bool bdat, binary, complete;
	uint64_t max_size;
	unsigned ref_received;
	enum body_err ref_err;

	if (size < 2)
		return 0;
	bdat = (data[0] & 1) != 0;
	binary = (data[0] & 3) >= 2; /* 0 DATA, 1 BDAT, 2 DATA+binary, 3 BDAT+BINARYMIME */
	piece = (size_t)(data[0] >> 2) + 1;
	max_size = (uint64_t)data[1] * 8;
	in = data + 2;
	n = size - 2;

	whole.out.cap = part.out.cap = n + 2;
	whole.out.p = malloc(n + 2);
	part.out.p = malloc(n + 2);
	ref = malloc(n + 2);
	CHECK(whole.out.p != NULL && part.out.p != NULL && ref != NULL);

	feed_all(bdat, binary, max_size, in, n, n + 1, &whole);
	feed_all(bdat, binary, max_size, in, n, piece, &part);

	/* any split gives the same result */
	CHECK(whole.consumed == part.consumed);
	CHECK(whole.done == part.done);
	CHECK(whole.err == part.err);
	CHECK(whole.received == part.received);
	CHECK(whole.size == part.size);
	CHECK(whole.out.len == part.out.len);
	CHECK(memcmp(whole.out.p, part.out.p, whole.out.len) == 0);
	CHECK(whole.consumed <= n);

	if (bdat) {
		/* RFC 3030: no dot handling; a last line without CRLF is completed */
		CHECK(whole.consumed == n);
		memcpy(ref, in, n);
		ref_len = n;
		if (n > 0 && !(n >= 2 && in[n - 2] == '\r' && in[n - 1] == '\n')) {
			if (in[n - 1] == '\r') {
				if (binary)
					ref[ref_len++] = '\n';
			} else {
				ref[ref_len++] = '\r';
				ref[ref_len++] = '\n';
			}
		}
		complete = true;
	} else {
		/* promise 3: DATA ends exactly at the first CRLF "." CRLF, whatever came before */
		marker = find_marker(in, n);
		CHECK(whole.done == (marker < n));
		if (whole.done) {
			CHECK(whole.consumed == marker + 3);
			ref_len = unstuff(in, marker, ref);
		} else {
			CHECK(whole.consumed == n);
			ref_len = unstuff(in, n, ref);
		}
		complete = whole.done;
	}

	/* what was emitted is always the start of the message as stored */
	CHECK(whole.out.len <= ref_len);
	CHECK(memcmp(whole.out.p, ref, whole.out.len) == 0);

	if (complete) {
		ref_err = ref_check(ref, ref_len, binary, max_size, &ref_received);
		CHECK(whole.err == ref_err);
		CHECK(whole.received == ref_received);
		CHECK(whole.size == ref_len);
		if (whole.err == BODY_OK) {
			CHECK(whole.out.len == ref_len);
			if (ref_len > 0) {
				CHECK(ref_len >= 2);
				CHECK(whole.out.p[ref_len - 2] == '\r' &&
				      whole.out.p[ref_len - 1] == '\n');
			}
		}
	}
	if (whole.err == BODY_OK) {
		size_t len = whole.out.len;

		/* an unfinished DATA may end in a CR still waiting for its LF */
		if (!complete && len > 0 && whole.out.p[len - 1] == '\r')
			len--;
		if (!binary)
			CHECK(!has_bare_cr_lf_nul(whole.out.p, len));
		if (max_size != 0)
			CHECK(whole.size <= max_size);
	} else if (whole.err == BODY_ERR_SIZE) {
		CHECK(max_size != 0 && whole.size > max_size);
	}

	free(whole.out.p);
	free(part.out.p);
	free(ref);
	return 0;
}
