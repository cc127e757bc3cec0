/* Unit tests for src/smtp/body.c: DATA end-of-data and dot removal, bare CR/LF smuggling,
 * NUL, line and size caps, Received: counting, BDAT chunking. Every table case is run fed
 * all at once, in pieces of every size, and cut in two at every position; all must agree.
 * Runs in the test process only; the inputs are the hostile bytes a client could send. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "limits.h"
#include "smtp/body.h"

enum mode { M_DATA, M_BDAT, M_BINARY /* BDAT + BODY=BINARYMIME */ };

/* What one run produced. */
struct result {
	char *out;
	size_t out_len;
	size_t out_cap;
	size_t emits;
	size_t consumed;
	bool done;
	enum body_err err;
	unsigned received;
	uint64_t size;
};

static void collect(void *arg, const char *p, size_t n)
{
	struct result *res = arg;

	assert_true(n > 0); /* no empty spans */
	if (res->out_len + n > res->out_cap) {
		size_t cap = (res->out_len + n) * 2;
		char *q = realloc(res->out, cap);

		assert_non_null(q);
		res->out = q;
		res->out_cap = cap;
	}
	memcpy(res->out + res->out_len, p, n);
	res->out_len += n;
	res->emits++;
}

/* Feeds in[0, len) as a first piece of `first` octets, then pieces of `step` octets. DATA
 * stops at the end marker (the rest is the next command); BDAT ends with body_finish. */
static void run(enum mode m, uint64_t max_size, const char *in, size_t len, size_t first,
                size_t step, struct result *res)
{
	struct body_reader r;
	size_t pos = 0, piece = first;

	memset(res, 0, sizeof(*res));
	body_init(&r, m != M_DATA, m == M_BINARY, max_size, collect, res);
	while (pos < len) {
		size_t n = len - pos < piece ? len - pos : piece;
		bool done = true;
		size_t used = body_feed(&r, in + pos, n, &done);

		assert_true(used <= n);
		pos += used;
		if (done) {
			assert_int_equal(m, M_DATA);
			res->done = true;
			break;
		}
		assert_int_equal(used, n); /* not done: everything is consumed */
		piece = step;
	}
	if (m != M_DATA)
		body_finish(&r);
	res->consumed = pos;
	res->err = body_error(&r);
	res->received = body_received(&r);
	res->size = body_size(&r);
}

static void result_free(struct result *res)
{
	free(res->out);
	res->out = NULL;
}

static void assert_same(const struct result *a, const struct result *b)
{
	assert_int_equal(a->consumed, b->consumed);
	assert_int_equal(a->done, b->done);
	assert_int_equal(a->err, b->err);
	assert_int_equal(a->received, b->received);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->out_len, b->out_len);
	if (a->out_len > 0)
		assert_memory_equal(a->out, b->out, a->out_len);
}

struct body_case {
	const char *name;
	enum mode mode;
	uint64_t max_size;
	const char *in;
	size_t in_len;
	enum body_err err;
	bool done;
	size_t left;     /* octets not consumed (the pipelined next command) */
	const char *out; /* expected message as stored; NULL: not checked (after an error) */
	size_t out_len;
	unsigned received;
};

#define S(s) s, sizeof(s) - 1
#define NOOUT NULL, 0

static const struct body_case cases[] = {
    /* DATA: plain messages and the end marker */
    {"plain", M_DATA, 0, S("Subject: hi\r\n\r\nhello\r\n.\r\n"), BODY_OK, true, 0,
     S("Subject: hi\r\n\r\nhello\r\n"), 0},
    {"empty message", M_DATA, 0, S(".\r\n"), BODY_OK, true, 0, S(""), 0},
    {"empty line only", M_DATA, 0, S("\r\n.\r\n"), BODY_OK, true, 0, S("\r\n"), 0},
    {"no end yet", M_DATA, 0, S("a\r\nb\r\n"), BODY_OK, false, 0, S("a\r\nb\r\n"), 0},
    {"dot line pending", M_DATA, 0, S("a\r\n."), BODY_OK, false, 0, S("a\r\n"), 0},
    {"dot CR pending", M_DATA, 0, S("a\r\n.\r"), BODY_OK, false, 0, S("a\r\n"), 0},
    {"pipelined QUIT not consumed", M_DATA, 0, S("a\r\n.\r\nQUIT\r\n"), BODY_OK, true, 6,
     S("a\r\n"), 0},
    {"pipelined MAIL not consumed", M_DATA, 0, S(".\r\nMAIL FROM:<a@b>\r\n"), BODY_OK, true, 17,
     S(""), 0},
    /* RFC 5321 4.5.2 dot removal */
    {"dot unstuff first line", M_DATA, 0, S("..a\r\n.\r\n"), BODY_OK, true, 0, S(".a\r\n"), 0},
    {"dot unstuff lone dot", M_DATA, 0, S("a\r\n..\r\n.\r\n"), BODY_OK, true, 0, S("a\r\n.\r\n"),
     0},
    {"dot removed before text", M_DATA, 0, S("a\r\n.b\r\n.\r\n"), BODY_OK, true, 0, S("a\r\nb\r\n"),
     0},
    {"dot mid-line kept", M_DATA, 0, S("a.b\r\n. \r\n.\r\n"), BODY_OK, true, 0, S("a.b\r\n \r\n"),
     0},
    {"three dots", M_DATA, 0, S("...\r\n.\r\n"), BODY_OK, true, 0, S("..\r\n"), 0},
    {"BDAT keeps dots", M_BDAT, 0, S("..a\r\n.\r\n"), BODY_OK, false, 0, S("..a\r\n.\r\n"), 0},
    /* smuggling: none of these sequences ends the message; each sets an error; only the
     * real CR LF . CR LF that follows does */
    {"LF.LF no end", M_DATA, 0, S("a\n.\nMAIL FROM:<x@y>\r\n"), BODY_ERR_BARE_LF, false, 0, NOOUT,
     0},
    {"LF.LF then end", M_DATA, 0, S("a\n.\nMAIL FROM:<x@y>\r\n.\r\nQUIT\r\n"), BODY_ERR_BARE_LF,
     true, 6, NOOUT, 0},
    {"LF.CRLF no end", M_DATA, 0, S("a\n.\r\nRCPT TO:<x@y>\r\n"), BODY_ERR_BARE_LF, false, 0, NOOUT,
     0},
    {"LF.CRLF then end", M_DATA, 0, S("a\n.\r\nRCPT TO:<x@y>\r\n.\r\nQUIT\r\n"), BODY_ERR_BARE_LF,
     true, 6, NOOUT, 0},
    {"CRLF.LF no end", M_DATA, 0, S("a\r\n.\nDATA\r\n"), BODY_ERR_BARE_LF, false, 0, NOOUT, 0},
    {"CRLF.LF then end", M_DATA, 0, S("a\r\n.\nDATA\r\n.\r\nQUIT\r\n"), BODY_ERR_BARE_LF, true, 6,
     NOOUT, 0},
    {"CR.CR no end", M_DATA, 0, S("a\r.\rDATA\r\n"), BODY_ERR_BARE_CR, false, 0, NOOUT, 0},
    {"CR.CR then end", M_DATA, 0, S("a\r.\rDATA\r\n.\r\nQUIT\r\n"), BODY_ERR_BARE_CR, true, 6,
     NOOUT, 0},
    {"CRLF.CR no end", M_DATA, 0, S("a\r\n.\rX\r\n"), BODY_ERR_BARE_CR, false, 0, NOOUT, 0},
    {"CRLF.CR then end", M_DATA, 0, S("a\r\n.\rX\r\n.\r\nQUIT\r\n"), BODY_ERR_BARE_CR, true, 6,
     NOOUT, 0},
    {"CR.CRLF no end", M_DATA, 0, S("a\r.\r\nX\r\n"), BODY_ERR_BARE_CR, false, 0, NOOUT, 0},
    {"LF.LF at start no end", M_DATA, 0, S(".\n.\r\n"), BODY_ERR_BARE_LF, false, 0, NOOUT, 0},
    {"LF.LF at start then end", M_DATA, 0, S(".\n.\r\n.\r\nQUIT\r\n"), BODY_ERR_BARE_LF, true, 6,
     NOOUT, 0},
    {"LF at start then .CRLF", M_DATA, 0, S("\n.\r\n"), BODY_ERR_BARE_LF, false, 0, NOOUT, 0},
    {"CR CR LF", M_DATA, 0, S("a\r\r\n.\r\n"), BODY_ERR_BARE_CR, true, 0, NOOUT, 0},
    {"bare LF then CRLF.CRLF", M_DATA, 0, S("a\n\r\n.\r\n"), BODY_ERR_BARE_LF, true, 0, NOOUT, 0},
    {"CR at line start", M_DATA, 0, S("a\r\n\r.\r\n"), BODY_ERR_BARE_CR, false, 0, NOOUT, 0},
    {"LF in headers", M_DATA, 0, S("Subject: x\nFrom: y\r\n\r\nb\r\n.\r\n"), BODY_ERR_BARE_LF, true,
     0, NOOUT, 0},
    /* NUL */
    {"NUL", M_DATA, 0, S("a\0b\r\n.\r\n"), BODY_ERR_NUL, true, 0, NOOUT, 0},
    {"NUL after dot", M_DATA, 0, S(".\0\r\n.\r\n"), BODY_ERR_NUL, true, 0, NOOUT, 0},
    {"first error wins", M_DATA, 0, S("a\0\nb\r\n.\r\n"), BODY_ERR_NUL, true, 0, NOOUT, 0},
    {"first error wins 2", M_DATA, 0, S("a\n\0b\r\n.\r\n"), BODY_ERR_BARE_LF, true, 0, NOOUT, 0},
    /* size: as stored (dots removed, end marker not counted) */
    {"size exact", M_DATA, 5, S("abc\r\n.\r\n"), BODY_OK, true, 0, S("abc\r\n"), 0},
    {"size dots not counted", M_DATA, 5, S("..b\r\n.\r\n"), BODY_OK, true, 0, S(".b\r\n"), 0},
    {"size over", M_DATA, 5, S("abcd\r\n.\r\nQUIT\r\n"), BODY_ERR_SIZE, true, 6, NOOUT, 0},
    {"size 0 unlimited", M_DATA, 0, S("abcdefgh\r\n.\r\n"), BODY_OK, true, 0, S("abcdefgh\r\n"), 0},
    /* Received: counting, only in the header section */
    {"received count", M_DATA, 0,
     S("Received: a\r\nreceived: b\r\nRECEIVED:c\r\nX-Received: d\r\nReceivedx: e\r\n"
       " Received: f\r\nReceived : g\r\nSubject: Received:\r\n\r\nReceived: body\r\n.\r\n"),
     BODY_OK, true, 0, NOOUT, 3},
    {"received dot-stuffed header", M_DATA, 0, S(".Received: a\r\n\r\n.\r\n"), BODY_OK, true, 0,
     S("Received: a\r\n\r\n"), 1},
    {"received none without header end", M_DATA, 0, S("\r\nReceived: a\r\n.\r\n"), BODY_OK, true, 0,
     S("\r\nReceived: a\r\n"), 0},
    {"received BDAT", M_BDAT, 0, S("Received: a\r\nReceived: b\r\n\r\nReceived: c\r\n"), BODY_OK,
     false, 0, S("Received: a\r\nReceived: b\r\n\r\nReceived: c\r\n"), 2},
    /* BDAT (RFC 3030) */
    {"BDAT plain", M_BDAT, 0, S("a\r\nb\r\n"), BODY_OK, false, 0, S("a\r\nb\r\n"), 0},
    {"BDAT empty", M_BDAT, 0, S(""), BODY_OK, false, 0, S(""), 0},
    {"BDAT no final CRLF", M_BDAT, 0, S("a\r\nb"), BODY_OK, false, 0, S("a\r\nb\r\n"), 0},
    {"BDAT trailing CR", M_BDAT, 0, S("a\r\nb\r"), BODY_ERR_BARE_CR, false, 0, NOOUT, 0},
    {"BDAT bare LF", M_BDAT, 0, S("a\nb\r\n"), BODY_ERR_BARE_LF, false, 0, NOOUT, 0},
    {"BDAT bare CR", M_BDAT, 0, S("a\rb\r\n"), BODY_ERR_BARE_CR, false, 0, NOOUT, 0},
    {"BDAT NUL", M_BDAT, 0, S("a\0b\r\n"), BODY_ERR_NUL, false, 0, NOOUT, 0},
    {"BDAT completion fits size", M_BDAT, 4, S("ab"), BODY_OK, false, 0, S("ab\r\n"), 0},
    {"BDAT completion over size", M_BDAT, 4, S("abc"), BODY_ERR_SIZE, false, 0, NOOUT, 0},
    {"BDAT size over", M_BDAT, 4, S("abc\r\n"), BODY_ERR_SIZE, false, 0, NOOUT, 0},
    /* BINARYMIME: NUL and bare CR/LF are content */
    {"binary", M_BINARY, 0, S("a\0\nb\rc\r\n"), BODY_OK, false, 0, S("a\0\nb\rc\r\n"), 0},
    {"binary trailing CR", M_BINARY, 0, S("a\r\nb\r"), BODY_OK, false, 0, S("a\r\nb\r\n"), 0},
    {"binary trailing LF", M_BINARY, 0, S("a\n"), BODY_OK, false, 0, S("a\n\r\n"), 0},
    {"binary size", M_BINARY, 3, S("a\0\n\r"), BODY_ERR_SIZE, false, 0, NOOUT, 0},
};

static void check_case(const struct body_case *c, const struct result *res)
{
	assert_int_equal(res->err, c->err);
	assert_int_equal(res->done, c->done);
	assert_int_equal(res->consumed, c->in_len - c->left);
	assert_int_equal(res->received, c->received);
	if (c->out != NULL) {
		assert_int_equal(res->out_len, c->out_len);
		if (c->out_len > 0)
			assert_memory_equal(res->out, c->out, c->out_len);
		assert_int_equal(res->size, c->out_len);
	}
}

static void test_table(void **state)
{
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		const struct body_case *c = &cases[k];
		size_t len = c->in_len;
		struct result whole, part;

		print_message("case: %s\n", c->name);
		run(c->mode, c->max_size, c->in, len, len + 1, len + 1, &whole);
		check_case(c, &whole);
		/* pieces of every size, then a cut at every position */
		for (size_t step = 1; step <= len; step++) {
			run(c->mode, c->max_size, c->in, len, step, step, &part);
			assert_same(&whole, &part);
			result_free(&part);
		}
		for (size_t cut = 0; cut <= len; cut++) {
			run(c->mode, c->max_size, c->in, len, cut, len + 1, &part);
			assert_same(&whole, &part);
			result_free(&part);
		}
		result_free(&whole);
	}
}

/* A message of one line of `fill` octets (plus a leading dot if `stuffed`) and CRLF. */
static size_t line_msg(char *buf, size_t fill, bool stuffed)
{
	size_t n = 0;

	if (stuffed)
		buf[n++] = '.';
	memset(buf + n, 'x', fill);
	n += fill;
	memcpy(buf + n, "\r\n.\r\n", 5);
	return n + 5;
}

static void test_line_limit(void **state)
{
	static char buf[LIM_TEXT_LINE + 16];
	struct result res;
	size_t n;

	/* RFC 5321 4.5.3.1.6: 1000 octets including CRLF is fine */
	n = line_msg(buf, LIM_TEXT_LINE - 2, false);
	run(M_DATA, 0, buf, n, n, n, &res);
	assert_int_equal(res.err, BODY_OK);
	assert_true(res.done);
	assert_int_equal(res.out_len, LIM_TEXT_LINE);
	result_free(&res);
	/* 1001 is not */
	n = line_msg(buf, LIM_TEXT_LINE - 1, false);
	run(M_DATA, 0, buf, n, n, n, &res);
	assert_int_equal(res.err, BODY_ERR_LINE_LONG);
	assert_true(res.done);
	assert_int_equal(res.consumed, n);
	result_free(&res);
	for (size_t step = 1; step < 8; step++) {
		run(M_DATA, 0, buf, n, step, step, &res);
		assert_int_equal(res.err, BODY_ERR_LINE_LONG);
		assert_true(res.done);
		result_free(&res);
	}
	/* the duplicated leading dot is not counted (RFC 5321 4.5.3.1.6) */
	n = line_msg(buf, LIM_TEXT_LINE - 2, true);
	run(M_DATA, 0, buf, n, 1, 1, &res);
	assert_int_equal(res.err, BODY_OK);
	assert_int_equal(res.out_len, LIM_TEXT_LINE);
	result_free(&res);
	/* a long line without any CRLF still ends at the marker */
	n = line_msg(buf, LIM_TEXT_LINE + 5, false);
	run(M_DATA, 0, buf, n, 3, 7, &res);
	assert_int_equal(res.err, BODY_ERR_LINE_LONG);
	assert_true(res.done);
	result_free(&res);
	/* BDAT: the same limit; a completed last line counts its CRLF */
	memset(buf, 'x', LIM_TEXT_LINE - 2);
	run(M_BDAT, 0, buf, LIM_TEXT_LINE - 2, 100, 100, &res);
	assert_int_equal(res.err, BODY_OK);
	assert_int_equal(res.out_len, LIM_TEXT_LINE);
	result_free(&res);
	run(M_BDAT, 0, buf, LIM_TEXT_LINE - 1, 100, 100, &res);
	assert_int_equal(res.err, BODY_ERR_LINE_LONG);
	result_free(&res);
	/* BINARYMIME: no line limit (RFC 3030 3) */
	n = line_msg(buf, LIM_TEXT_LINE + 5, false);
	run(M_BINARY, 0, buf, n, n, n, &res);
	assert_int_equal(res.err, BODY_OK);
	assert_int_equal(res.out_len, n);
	result_free(&res);
}

/* Lines after the first also reset and count correctly. */
static void test_line_limit_second_line(void **state)
{
	static char buf[2 * LIM_TEXT_LINE + 16];
	struct result res;
	size_t n = 0;

	memcpy(buf, "ab\r\n", 4);
	n = 4 + line_msg(buf + 4, LIM_TEXT_LINE - 2, false);
	run(M_DATA, 0, buf, n, 1, 1, &res);
	assert_int_equal(res.err, BODY_OK);
	result_free(&res);
	n = 4 + line_msg(buf + 4, LIM_TEXT_LINE - 1, false);
	run(M_DATA, 0, buf, n, 1, 1, &res);
	assert_int_equal(res.err, BODY_ERR_LINE_LONG);
	result_free(&res);
}

static void test_emit_in_spans(void **state)
{
	static const char msg[] = "Subject: hi\r\n\r\nline one\r\nline two\r\n.\r\n";
	struct result res;

	run(M_DATA, 0, msg, sizeof(msg) - 1, sizeof(msg), sizeof(msg), &res);
	assert_int_equal(res.err, BODY_OK);
	assert_int_equal(res.emits, 1);
	result_free(&res);
}

static void test_nothing_after_done(void **state)
{
	static const char msg[] = "a\r\n.\r\nQUIT\r\n";
	struct result res = {0};
	struct body_reader r;
	bool done = false;

	body_init(&r, false, false, 0, collect, &res);
	assert_int_equal(body_feed(&r, msg, sizeof(msg) - 1, &done), 6);
	assert_true(done);
	done = false;
	assert_int_equal(body_feed(&r, msg + 6, sizeof(msg) - 7, &done), 0);
	assert_true(done);
	assert_int_equal(body_finish(&r), BODY_OK); /* no-op for DATA */
	assert_int_equal(res.out_len, 3);
	result_free(&res);
}

/* RFC 3030 2: a CR ending one chunk and the LF starting the next form one CRLF. */
static void test_bdat_crlf_across_chunks(void **state)
{
	static const char *chunks[] = {"Subject: x\r", "\n\r", "\nbody\r", "\n"};
	struct result res = {0};
	struct body_reader r;

	body_init(&r, true, false, 0, collect, &res);
	for (size_t k = 0; k < 4; k++) {
		bool done = true;

		assert_int_equal(body_feed(&r, chunks[k], strlen(chunks[k]), &done),
		                 strlen(chunks[k]));
		assert_false(done);
	}
	assert_int_equal(body_finish(&r), BODY_OK);
	assert_int_equal(res.out_len, 20);
	assert_memory_equal(res.out, "Subject: x\r\n\r\nbody\r\n", 20);
	assert_int_equal(body_size(&r), 20);
	/* after BDAT LAST nothing more is taken, and finishing again changes nothing */
	assert_int_equal(body_feed(&r, "x", 1, NULL), 0);
	assert_int_equal(body_finish(&r), BODY_OK);
	assert_int_equal(res.out_len, 20);
	result_free(&res);
}

static void test_bdat_trailing_cr(void **state)
{
	struct result res = {0};
	struct body_reader r;

	body_init(&r, true, false, 0, collect, &res);
	assert_int_equal(body_feed(&r, "a\r\nb\r", 5, NULL), 5);
	assert_int_equal(body_error(&r), BODY_OK); /* the LF may still come */
	assert_int_equal(body_finish(&r), BODY_ERR_BARE_CR);
	result_free(&res);
}

static void test_bdat_no_final_crlf(void **state)
{
	struct result res = {0};
	struct body_reader r;

	body_init(&r, true, false, 0, collect, &res);
	assert_int_equal(body_feed(&r, "a\r\n", 3, NULL), 3);
	assert_int_equal(body_feed(&r, "b", 1, NULL), 1);
	assert_int_equal(body_finish(&r), BODY_OK);
	assert_int_equal(res.out_len, 6);
	assert_memory_equal(res.out, "a\r\nb\r\n", 6);
	result_free(&res);
}

/* No emit callback: the reader still checks and counts. */
static void test_null_emit(void **state)
{
	struct body_reader r;
	bool done = false;

	body_init(&r, false, false, 0, NULL, NULL);
	assert_int_equal(body_feed(&r, "Received: x\r\n\r\n.\r\n", 18, &done), 18);
	assert_true(done);
	assert_int_equal(body_received(&r), 1);
	assert_int_equal(body_size(&r), 15);
}

static void test_err_str(void **state)
{
	assert_string_equal(body_err_str(BODY_OK), "ok");
	assert_string_equal(body_err_str(BODY_ERR_BARE_LF), "bare LF in message");
	assert_non_null(body_err_str(BODY_ERR_BARE_CR));
	assert_non_null(body_err_str(BODY_ERR_LINE_LONG));
	assert_non_null(body_err_str(BODY_ERR_SIZE));
	assert_non_null(body_err_str(BODY_ERR_NUL));
	assert_non_null(body_err_str((enum body_err)99));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_line_limit),
	    cmocka_unit_test(test_line_limit_second_line),
	    cmocka_unit_test(test_emit_in_spans),
	    cmocka_unit_test(test_nothing_after_done),
	    cmocka_unit_test(test_bdat_crlf_across_chunks),
	    cmocka_unit_test(test_bdat_trailing_cr),
	    cmocka_unit_test(test_bdat_no_final_crlf),
	    cmocka_unit_test(test_null_emit),
	    cmocka_unit_test(test_err_str),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
