/* Unit tests for src/queue/smtpc_reply.c, table-driven: replies (single and multiline, mixed
 * codes, with and without enhanced codes, over-long lines, control bytes, bare LF, byte-by-
 * byte delivery, pipelined replies) and EHLO keywords ("AUTH=PLAIN", "SIZE" without a
 * number, lower case, unknown words) with how HELO and EHLO apply them. Runs in the test
 * binary only. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/smtpc_reply.h"

/* What feeding one input gives: the first reply, or the error. */
struct got {
	enum smtpc_rd rd;
	struct smtpc_reply rep;
	size_t used;
};

/* Feeds in[0, n) in pieces of `piece` bytes (0: all at once) as a socket reader would,
 * until the first reply or error. */
static struct got feed(const char *in, size_t n, size_t piece, struct smtpc_caps *caps)
{
	struct smtpc_reader rd;
	struct got g;
	char *buf = malloc(n + 1);
	size_t have = 0, pos = 0;

	assert_non_null(buf);
	memset(&g, 0, sizeof(g));
	smtpc_reader_init(&rd);
	g.rd = SMTPC_RD_MORE;
	while (pos < n) {
		size_t k = piece == 0 || n - pos < piece ? n - pos : piece;
		memcpy(buf + have, in + pos, k);
		have += k;
		pos += k;
		size_t used = 0;
		g.rd = smtpc_reader_feed(&rd, caps, buf, have, &used, &g.rep);
		g.used += used;
		memmove(buf, buf + used, have - used);
		have -= used;
		if (g.rd != SMTPC_RD_MORE)
			break;
	}
	free(buf);
	return g;
}

static void test_replies(void **state)
{
	(void)state;
	static const struct {
		const char *name, *in;
		enum smtpc_rd rd;
		int code, nlines;
		const char *enh, *text; /* text: the joined reply, or the error */
	} t[] = {
	    {"single", "250 ok\r\n", SMTPC_RD_REPLY, 250, 1, "", "250 ok"},
	    {"code only", "250\r\n", SMTPC_RD_REPLY, 250, 1, "", "250"},
	    {"code and space", "250 \r\n", SMTPC_RD_REPLY, 250, 1, "", "250"},
	    {"enhanced", "250 2.1.0 sender ok\r\n", SMTPC_RD_REPLY, 250, 1, "2.1.0",
	     "250 2.1.0 sender ok"},
	    {"enhanced 3 digits", "550 5.123.456 x\r\n", SMTPC_RD_REPLY, 550, 1, "5.123.456",
	     "550 5.123.456 x"},
	    {"enhanced only", "550 5.1.1\r\n", SMTPC_RD_REPLY, 550, 1, "5.1.1", "550 5.1.1"},
	    /* RFC 3463: the class must be the reply's; 4 digits, letters, no dots: none */
	    {"enhanced wrong class", "550 4.1.1 no\r\n", SMTPC_RD_REPLY, 550, 1, "",
	     "550 4.1.1 no"},
	    {"enhanced 4 digits", "550 5.1234.1 no\r\n", SMTPC_RD_REPLY, 550, 1, "",
	     "550 5.1234.1 no"},
	    {"enhanced glued", "550 5.1.1<b@x> no\r\n", SMTPC_RD_REPLY, 550, 1, "",
	     "550 5.1.1<b@x> no"},
	    {"missing enhanced", "550 no such user\r\n", SMTPC_RD_REPLY, 550, 1, "",
	     "550 no such user"},
	    {"1xx has no enhanced", "150 1.0.0 x\r\n", SMTPC_RD_REPLY, 150, 1, "", "150 1.0.0 x"},
	    {"multiline", "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n", SMTPC_RD_REPLY, 250,
	     3, "", "250 mx.test PIPELINING SIZE 100"},
	    {"multiline enhanced once", "550-5.7.1 rejected\r\n550-5.7.1 see\r\n550 5.7.1 bye\r\n",
	     SMTPC_RD_REPLY, 550, 3, "5.7.1", "550 5.7.1 rejected see bye"},
	    {"multiline other enhanced kept", "550-5.7.1 a\r\n550 5.7.2 b\r\n", SMTPC_RD_REPLY, 550,
	     2, "5.7.1", "550 5.7.1 a 5.7.2 b"},
	    {"multiline empty lines", "220-\r\n220-\r\n220 \r\n", SMTPC_RD_REPLY, 220, 3, "",
	     "220"},
	    {"bare LF", "220-a\n220 b\n", SMTPC_RD_REPLY, 220, 2, "", "220 a b"},
	    {"mixed codes", "250-first\r\n550 second\r\n", SMTPC_RD_ERROR, 0, 0, "",
	     "malformed reply: 550 second"},
	    {"mixed codes same class", "250-first\r\n251 second\r\n", SMTPC_RD_ERROR, 0, 0, "",
	     "malformed reply: 251 second"},
	    {"control bytes",
	     "220 a\x01"
	     "b\tc\x7f\xff\r\n",
	     SMTPC_RD_REPLY, 220, 1, "", "220 a?b c??"},
	    {"NUL byte", "220 a\0b\r\n", SMTPC_RD_REPLY, 220, 1, "", "220 a?b"},
	    {"CR inside", "220 a\rb\r\n", SMTPC_RD_REPLY, 220, 1, "", "220 a?b"},
	    {"http", "HTTP/1.0 200 OK\r\n", SMTPC_RD_ERROR, 0, 0, "",
	     "malformed reply: HTTP/1.0 200 OK"},
	    {"short", "22\r\n", SMTPC_RD_ERROR, 0, 0, "", "malformed reply: 22"},
	    {"empty line", "\r\n", SMTPC_RD_ERROR, 0, 0, "", "malformed reply: "},
	    {"bad separator", "220x\r\n", SMTPC_RD_ERROR, 0, 0, "", "malformed reply: 220x"},
	    {"code 600", "600 no\r\n", SMTPC_RD_ERROR, 0, 0, "", "malformed reply: 600 no"},
	    {"code 099", "099 no\r\n", SMTPC_RD_ERROR, 0, 0, "", "malformed reply: 099 no"},
	    {"malformed made printable", "2\x1b[31m\r\n", SMTPC_RD_ERROR, 0, 0, "",
	     "malformed reply: 2?[31m"},
	    {"unfinished", "250 ok", SMTPC_RD_MORE, 0, 0, "", ""},
	    {"unfinished multiline", "250-a\r\n250 b", SMTPC_RD_MORE, 0, 0, "", ""},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		size_t n = strlen(t[i].in);
		if (strcmp(t[i].name, "NUL byte") == 0)
			n = 9;
		/* every delivery gives the same answer */
		for (size_t piece = 0; piece < 4; piece++) {
			struct got g = feed(t[i].in, n, piece, NULL);
			if (g.rd != t[i].rd)
				fail_msg("%s (piece %zu): got %d", t[i].name, piece, g.rd);
			if (g.rd == SMTPC_RD_MORE)
				continue;
			if (strcmp(g.rep.text, t[i].text) != 0)
				fail_msg("%s: text \"%s\"", t[i].name, g.rep.text);
			assert_int_equal(g.rep.len, strlen(g.rep.text));
			if (g.rd == SMTPC_RD_REPLY) {
				assert_int_equal(g.rep.code, t[i].code);
				assert_int_equal(g.rep.nlines, t[i].nlines);
				assert_string_equal(g.rep.enh, t[i].enh);
				assert_int_equal(g.used, n);
			}
		}
	}
}

static void test_line_limits(void **state)
{
	(void)state;
	size_t max = SMTPC_MAX_LINE;
	char *in = malloc(max + 64);
	struct got g;

	assert_non_null(in);
	/* exactly SMTPC_MAX_LINE bytes before the CRLF: taken, however the CRLF arrives */
	memset(in, 'x', max + 64);
	memcpy(in, "220 ", 4);
	memcpy(in + max, "\r\n", 2);
	for (size_t piece = 0; piece < 3; piece++) {
		/* piece max + 1 splits between the CR and the LF */
		g = feed(in, max + 2, piece == 0 ? 0 : piece == 1 ? max + 1 : 1, NULL);
		assert_int_equal(g.rd, SMTPC_RD_REPLY);
		assert_int_equal(g.rep.code, 220);
		assert_int_equal(g.rep.len, sizeof(g.rep.text) - 1); /* the text is cut */
	}
	in[max] = '\n'; /* a bare LF after max bytes: the same */
	g = feed(in, max + 1, 0, NULL);
	assert_int_equal(g.rd, SMTPC_RD_REPLY);
	/* one byte more: refused, with or without its line end, whole or in pieces */
	memset(in, 'x', max + 64);
	memcpy(in, "220 ", 4);
	memcpy(in + max + 1, "\r\n", 2);
	static const char too_long[] = "reply line longer than 4096 bytes";
	for (size_t piece = 0; piece < 3; piece++) {
		g = feed(in, max + 3, piece == 0 ? 0 : piece == 1 ? 7 : max + 2, NULL);
		assert_int_equal(g.rd, SMTPC_RD_ERROR);
		assert_string_equal(g.rep.text, too_long);
	}
	g = feed(in, max + 1, 0, NULL); /* no line end yet, already too long */
	assert_int_equal(g.rd, SMTPC_RD_ERROR);
	assert_string_equal(g.rep.text, too_long);
	in[max] = '\r'; /* max bytes and a CR: may still be a good line */
	g = feed(in, max + 1, 0, NULL);
	assert_int_equal(g.rd, SMTPC_RD_MORE);
	in[max + 1] = 'x';
	g = feed(in, max + 2, 0, NULL); /* ... but not with a byte after the CR */
	assert_int_equal(g.rd, SMTPC_RD_ERROR);
	free(in);

	/* SMTPC_MAX_LINES lines in one reply, not one more */
	size_t cap = 8 * (SMTPC_MAX_LINES + 1) + 1;
	char *many = malloc(cap);
	assert_non_null(many);
	size_t n = 0;
	for (int l = 0; l < SMTPC_MAX_LINES - 1; l++)
		n += (size_t)snprintf(many + n, cap - n, "220-x\r\n");
	size_t keep = n;
	n += (size_t)snprintf(many + n, cap - n, "220 x\r\n");
	g = feed(many, n, 0, NULL);
	assert_int_equal(g.rd, SMTPC_RD_REPLY);
	assert_int_equal(g.rep.nlines, SMTPC_MAX_LINES);
	n = keep + (size_t)snprintf(many + keep, cap - keep, "220-x\r\n220 x\r\n");
	g = feed(many, n, 0, NULL);
	assert_int_equal(g.rd, SMTPC_RD_ERROR);
	assert_string_equal(g.rep.text, "malformed reply: 220 x");
	free(many);
}

/* Several replies in one buffer (PIPELINING): each comes out in turn; the reader starts
 * afresh after each. */
static void test_pipelined(void **state)
{
	(void)state;
	static const char in[] = "250 2.1.0 ok\r\n250-2.1.5 a\r\n250 2.1.5 b\r\n354 go\r\n550 5";
	static const struct {
		int code;
		const char *enh, *text;
	} want[] = {
	    {250, "2.1.0", "250 2.1.0 ok"},
	    {250, "2.1.5", "250 2.1.5 a b"},
	    {354, "", "354 go"},
	};
	struct smtpc_reader rd;
	struct smtpc_reply out;
	size_t pos = 0, n = sizeof(in) - 1, used;

	smtpc_reader_init(&rd);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(smtpc_reader_feed(&rd, NULL, in + pos, n - pos, &used, &out),
		                 SMTPC_RD_REPLY);
		assert_int_equal(out.code, want[i].code);
		assert_string_equal(out.enh, want[i].enh);
		assert_string_equal(out.text, want[i].text);
		pos += used;
	}
	assert_int_equal(smtpc_reader_feed(&rd, NULL, in + pos, n - pos, &used, &out),
	                 SMTPC_RD_MORE);
	assert_int_equal(used, 0);
	assert_int_equal(smtpc_reader_feed(&rd, NULL, "", 0, &used, &out), SMTPC_RD_MORE);
	/* after an error the next reply starts clean */
	assert_int_equal(smtpc_reader_feed(&rd, NULL, "250-a\r\n999\r\n", 12, &used, &out),
	                 SMTPC_RD_ERROR);
	assert_int_equal(smtpc_reader_feed(&rd, NULL, "221 bye\r\n", 9, &used, &out),
	                 SMTPC_RD_REPLY);
	assert_int_equal(out.nlines, 1);
	assert_string_equal(out.text, "221 bye");
}

static void test_ehlo_keywords(void **state)
{
	(void)state;
	/* one flag letter per capability; "Z" followed by the expected max_size */
	static const struct {
		const char *line;
		const char *flags; /* T starttls, P pipelining, 8 8bitmime, U smtputf8, D dsn,
		                    * C chunking, B binarymime, p auth plain, l auth login,
		                    * S size */
		uint64_t max_size;
	} t[] = {
	    {"STARTTLS", "T", 0},
	    {"starttls", "T", 0},
	    {"StartTLS", "T", 0},
	    {"STARTTLS extra", "T", 0},
	    {"STARTTLSX", "", 0},
	    {"PIPELINING", "P", 0},
	    {"8bitmime", "8", 0},
	    {"SMTPUTF8", "U", 0},
	    {"dsn", "D", 0},
	    {"CHUNKING", "C", 0},
	    {"BINARYMIME", "B", 0},
	    {"SIZE 10240000", "S", 10240000},
	    {"size 52428800", "S", 52428800},
	    {"SIZE", "S", 0},
	    {"SIZE ", "S", 0},
	    {"SIZE 0", "S", 0},
	    {"SIZE   1000", "S", 1000},
	    {"SIZE 12x", "S", 0},
	    {"SIZE 1000 extra", "S", 1000},
	    {"SIZE 9999999999999999999", "S", 9999999999999999999ULL},
	    {"SIZE 99999999999999999999", "S", 0}, /* 20 digits: unreadable */
	    {"SIZE=1000", "S", 0},
	    {"AUTH PLAIN LOGIN", "pl", 0},
	    {"AUTH=PLAIN LOGIN", "pl", 0},
	    {"AUTH=PLAIN", "p", 0},
	    {"auth login", "l", 0},
	    {"AUTH CRAM-MD5 DIGEST-MD5", "", 0},
	    {"AUTH PLAINX LOGINX", "", 0},
	    {"AUTH  PLAIN", "p", 0},
	    {"AUTH", "", 0},
	    {"ENHANCEDSTATUSCODES", "", 0},
	    {"XCLIENT PLAIN", "", 0},
	    {"", "", 0},
	    {" STARTTLS", "", 0},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct smtpc_caps k;
		memset(&k, 0, sizeof(k));
		smtpc_ehlo_keyword(&k, t[i].line, strlen(t[i].line));
		const char *f = t[i].flags;
		bool want[] = {strchr(f, 'T') != NULL, strchr(f, 'P') != NULL,
		               strchr(f, '8') != NULL, strchr(f, 'U') != NULL,
		               strchr(f, 'D') != NULL, strchr(f, 'C') != NULL,
		               strchr(f, 'B') != NULL, strchr(f, 'p') != NULL,
		               strchr(f, 'l') != NULL, strchr(f, 'S') != NULL};
		bool got[] = {k.starttls, k.pipelining, k.eightbitmime, k.smtputf8,   k.dsn,
		              k.chunking, k.binarymime, k.auth_plain,   k.auth_login, k.size};
		for (size_t j = 0; j < sizeof(want) / sizeof(want[0]); j++)
			if (want[j] != got[j])
				fail_msg("\"%s\": flag %zu is %d", t[i].line, j, got[j]);
		if (k.max_size != t[i].max_size)
			fail_msg("\"%s\": max_size %llu", t[i].line,
			         (unsigned long long)k.max_size);
	}
}

/* A whole EHLO reply through the reader (the first line is the greeting, not a keyword),
 * then applied as EHLO and as HELO. */
static void test_ehlo_reply(void **state)
{
	(void)state;
	static const char in[] = "250-STARTTLS mx.test greets you\r\n"
	                         "250-pipelining\r\n"
	                         "250-AUTH=PLAIN\r\n"
	                         "250-size\r\n"
	                         "250 8BITMIME\r\n";
	struct smtpc_caps k;
	struct smtpc_info info;

	memset(&k, 0, sizeof(k));
	struct got g = feed(in, sizeof(in) - 1, 5, &k);
	assert_int_equal(g.rd, SMTPC_RD_REPLY);
	assert_false(k.starttls); /* the greeting line is not a keyword */
	assert_true(k.pipelining && k.auth_plain && k.size && k.eightbitmime);
	assert_false(k.auth_login || k.smtputf8 || k.dsn || k.chunking || k.binarymime);
	assert_int_equal(k.max_size, 0);

	memset(&info, 0, sizeof(info));
	k.max_size = 4096;
	smtpc_caps_apply(&info, &k, true);
	assert_true(info.esmtp && info.pipelining && info.auth_plain && info.size &&
	            info.eightbitmime);
	assert_false(info.starttls || info.auth_login);
	assert_int_equal(info.max_size, 4096);
	/* HELO offers nothing, whatever was read */
	smtpc_caps_apply(&info, &k, false);
	assert_false(info.esmtp || info.pipelining || info.auth_plain || info.size ||
	             info.eightbitmime);
	assert_int_equal(info.max_size, 0);
	/* max_size only with SIZE */
	k.size = false;
	smtpc_caps_apply(&info, &k, true);
	assert_int_equal(info.max_size, 0);

	/* without caps nothing is read as a keyword */
	memset(&k, 0, sizeof(k));
	g = feed(in, sizeof(in) - 1, 0, NULL);
	assert_int_equal(g.rd, SMTPC_RD_REPLY);
	assert_false(k.pipelining);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_replies),    cmocka_unit_test(test_line_limits),
	    cmocka_unit_test(test_pipelined),  cmocka_unit_test(test_ehlo_keywords),
	    cmocka_unit_test(test_ehlo_reply),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
