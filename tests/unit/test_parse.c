/* Unit tests for src/smtp/parse.c: command lines, paths, MAIL/RCPT parameters, BDAT,
 * domain checks and address formatting. Table-driven: each row is one input and what the
 * parser must say about it. Runs under ASan/UBSan in `make unit`; no I/O, no sockets.
 * Untrusted input is simulated by the tables (NUL bytes, 8-bit bytes, over-long parts). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "smtp/parse.h"

/* Reports the failing row before failing, so one run names every broken case. */
#define ROW_CHECK(cond, i, in)                                                                    \
	do {                                                                                      \
		if (!(cond)) {                                                                    \
			print_error("row %zu (%s): check failed: %s\n", (size_t)(i), (in), #cond); \
			bad++;                                                                    \
		}                                                                                 \
	} while (0)

#define NROWS(t) (sizeof(t) / sizeof((t)[0]))

/* ---- helpers building long inputs ------------------------------------------------------- */

static char *rep(char *dst, char c, size_t n)
{
	memset(dst, c, n);
	dst[n] = '\0';
	return dst;
}

/* A domain of exactly n octets made of 63-octet labels ("aaa...a.bbb...") */
static void mkdomain(char *dst, size_t n)
{
	size_t i = 0, lab = 0;

	while (i < n) {
		if (lab == 63 && i + 1 < n) {
			dst[i++] = '.';
			lab = 0;
			continue;
		}
		dst[i++] = 'a';
		lab++;
	}
	/* a label must not end the domain on a dot */
	dst[n] = '\0';
}

/* ---- smtp_parse_cmd --------------------------------------------------------------------- */

struct cmd_row {
	const char *line;
	size_t len; /* 0: strlen(line) */
	enum smtp_perr err;
	enum smtp_verb verb;
	const char *arg;
};

static const struct cmd_row cmd_rows[] = {
	{"HELO x.example", 0, SMTP_P_OK, SMTP_V_HELO, "x.example"},
	{"EHLO x.example", 0, SMTP_P_OK, SMTP_V_EHLO, "x.example"},
	{"MAIL FROM:<a@b.example>", 0, SMTP_P_OK, SMTP_V_MAIL, "FROM:<a@b.example>"},
	{"RCPT TO:<a@b.example>", 0, SMTP_P_OK, SMTP_V_RCPT, "TO:<a@b.example>"},
	{"DATA", 0, SMTP_P_OK, SMTP_V_DATA, ""},
	{"BDAT 10 LAST", 0, SMTP_P_OK, SMTP_V_BDAT, "10 LAST"},
	{"RSET", 0, SMTP_P_OK, SMTP_V_RSET, ""},
	{"NOOP", 0, SMTP_P_OK, SMTP_V_NOOP, ""},
	{"NOOP hello there", 0, SMTP_P_OK, SMTP_V_NOOP, "hello there"},
	{"QUIT", 0, SMTP_P_OK, SMTP_V_QUIT, ""},
	{"VRFY user", 0, SMTP_P_OK, SMTP_V_VRFY, "user"},
	{"EXPN list", 0, SMTP_P_OK, SMTP_V_EXPN, "list"},
	{"HELP", 0, SMTP_P_OK, SMTP_V_HELP, ""},
	{"STARTTLS", 0, SMTP_P_OK, SMTP_V_STARTTLS, ""},
	{"AUTH PLAIN AGFAYg==", 0, SMTP_P_OK, SMTP_V_AUTH, "PLAIN AGFAYg=="},
	/* RFC 5321 2.4: verbs are case-insensitive */
	{"helo x", 0, SMTP_P_OK, SMTP_V_HELO, "x"},
	{"eHlO x", 0, SMTP_P_OK, SMTP_V_EHLO, "x"},
	{"mail FROM:<>", 0, SMTP_P_OK, SMTP_V_MAIL, "FROM:<>"},
	{"rcpt to:<a@b>", 0, SMTP_P_OK, SMTP_V_RCPT, "to:<a@b>"},
	{"data", 0, SMTP_P_OK, SMTP_V_DATA, ""},
	{"bdat 1", 0, SMTP_P_OK, SMTP_V_BDAT, "1"},
	{"rset", 0, SMTP_P_OK, SMTP_V_RSET, ""},
	{"nOoP", 0, SMTP_P_OK, SMTP_V_NOOP, ""},
	{"quit", 0, SMTP_P_OK, SMTP_V_QUIT, ""},
	{"vrfy x", 0, SMTP_P_OK, SMTP_V_VRFY, "x"},
	{"expn x", 0, SMTP_P_OK, SMTP_V_EXPN, "x"},
	{"help me", 0, SMTP_P_OK, SMTP_V_HELP, "me"},
	{"StartTLS", 0, SMTP_P_OK, SMTP_V_STARTTLS, ""},
	{"auth login", 0, SMTP_P_OK, SMTP_V_AUTH, "login"},
	/* trailing spaces are not part of the argument; only one space separates */
	{"QUIT   ", 0, SMTP_P_OK, SMTP_V_QUIT, ""},
	{"EHLO x.example  ", 0, SMTP_P_OK, SMTP_V_EHLO, "x.example"},
	{"EHLO  x", 0, SMTP_P_OK, SMTP_V_EHLO, " x"},
	/* unknown verbs */
	{"FOO bar", 0, SMTP_P_OK, SMTP_V_UNKNOWN, "bar"},
	{"", 0, SMTP_P_OK, SMTP_V_UNKNOWN, ""},
	{" HELO x", 0, SMTP_P_OK, SMTP_V_UNKNOWN, "HELO x"},
	{"HELOX", 0, SMTP_P_OK, SMTP_V_UNKNOWN, ""},
	{"HEL", 0, SMTP_P_OK, SMTP_V_UNKNOWN, ""},
	{"MAILFROM:<a@b>", 0, SMTP_P_OK, SMTP_V_UNKNOWN, ""},
	{"STARTTLSX", 0, SMTP_P_OK, SMTP_V_UNKNOWN, ""},
	{"QUIT\t", 0, SMTP_P_OK, SMTP_V_UNKNOWN, ""},
	{"\xc3\xa9HLO x", 0, SMTP_P_OK, SMTP_V_UNKNOWN, "x"},
	/* NUL inside the line (len given explicitly) */
	{"QUIT\0", 5, SMTP_P_NUL, SMTP_V_UNKNOWN, ""},
	{"\0QUIT", 5, SMTP_P_NUL, SMTP_V_UNKNOWN, ""},
	{"MAIL FROM:<a\0@b>", 16, SMTP_P_NUL, SMTP_V_UNKNOWN, ""},
};

static void test_cmd_table(void **state)
{
	size_t bad = 0;

	for (size_t i = 0; i < NROWS(cmd_rows); i++) {
		const struct cmd_row *r = &cmd_rows[i];
		size_t len = r->len ? r->len : strlen(r->line);
		struct smtp_cmd c;
		enum smtp_perr e = smtp_parse_cmd(r->line, len, &c);

		ROW_CHECK(e == r->err, i, r->line);
		if (e != SMTP_P_OK)
			continue;
		ROW_CHECK(c.verb == r->verb, i, r->line);
		ROW_CHECK(c.arg_len == strlen(r->arg), i, r->line);
		ROW_CHECK(c.arg_len == 0 || memcmp(c.arg, r->arg, c.arg_len) == 0, i, r->line);
		ROW_CHECK(c.arg >= r->line || c.arg_len == 0, i, r->line);
	}
	assert_int_equal(bad, 0);
}

static void test_cmd_line_length(void **state)
{
	char line[LIM_CMD_LINE_EXT + 8];
	struct smtp_cmd c;

	/* RFC 5321 4.5.3.1.4: 512 with CRLF, so 510 without */
	memcpy(line, "NOOP ", 5);
	rep(line + 5, 'x', LIM_CMD_LINE - 2 - 5);
	assert_int_equal(smtp_parse_cmd(line, strlen(line), &c), SMTP_P_OK);
	rep(line + 5, 'x', LIM_CMD_LINE - 2 - 5 + 1);
	assert_int_equal(smtp_parse_cmd(line, strlen(line), &c), SMTP_P_TOO_LONG);
	assert_int_equal(c.verb, SMTP_V_NOOP);

	/* MAIL may carry parameters past 512 */
	memcpy(line, "MAIL ", 5);
	rep(line + 5, 'x', 1000);
	assert_int_equal(smtp_parse_cmd(line, strlen(line), &c), SMTP_P_OK);
	rep(line + 5, 'x', LIM_CMD_LINE_EXT - 2 - 5);
	assert_int_equal(smtp_parse_cmd(line, strlen(line), &c), SMTP_P_OK);
	rep(line + 5, 'x', LIM_CMD_LINE_EXT - 2 - 5 + 1);
	assert_int_equal(smtp_parse_cmd(line, strlen(line), &c), SMTP_P_TOO_LONG);
	assert_int_equal(c.verb, SMTP_V_MAIL);

	/* NULL never crashes */
	assert_int_equal(smtp_parse_cmd(NULL, 0, &c), SMTP_P_SYNTAX);
	assert_int_equal(smtp_parse_cmd("QUIT", 4, NULL), SMTP_P_SYNTAX);
}

/* ---- smtp_parse_path -------------------------------------------------------------------- */

struct path_row {
	const char *s;
	bool brackets;
	bool utf8_ok;
	enum smtp_perr err;
	const char *local;
	const char *domain;
	bool is_null;
	bool utf8;
};

static const struct path_row path_rows[] = {
	{"<a@b.example>", true, false, SMTP_P_OK, "a", "b.example", false, false},
	{"<First.Last@Example.COM>", true, false, SMTP_P_OK, "First.Last", "example.com", false, false},
	{"<>", true, false, SMTP_P_OK, "", "", true, false},
	{"<a@b>", true, false, SMTP_P_OK, "a", "b", false, false},
	{"<a+tag@b-c.example>", true, false, SMTP_P_OK, "a+tag", "b-c.example", false, false},
	{"<!#$%&'*+-/=?^_`{|}~@x>", true, false, SMTP_P_OK, "!#$%&'*+-/=?^_`{|}~", "x", false, false},
	/* RFC 5321 4.1.2 Quoted-string, kept as sent */
	{"<\"a b\"@x.example>", true, false, SMTP_P_OK, "\"a b\"", "x.example", false, false},
	{"<\"a\\\"b\"@x>", true, false, SMTP_P_OK, "\"a\\\"b\"", "x", false, false},
	{"<\"a\\\\b\"@x>", true, false, SMTP_P_OK, "\"a\\\\b\"", "x", false, false},
	{"<\"a>b\"@x>", true, false, SMTP_P_OK, "\"a>b\"", "x", false, false},
	{"<\"a@b\"@x>", true, false, SMTP_P_OK, "\"a@b\"", "x", false, false},
	{"<\"\"@x>", true, false, SMTP_P_OK, "\"\"", "x", false, false},
	{"<\"a\tb\"@x>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<\"a\\\tb\"@x>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<\"abc@x>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<\"abc\\", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	/* source routes are accepted and dropped (RFC 5321 4.1.2, appendix C) */
	{"<@a.example:u@d.example>", true, false, SMTP_P_OK, "u", "d.example", false, false},
	{"<@a,@b.example:u@d>", true, false, SMTP_P_OK, "u", "d", false, false},
	{"<@a,b:u@d>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<@a:>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<@:u@d>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<@a u@d>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<@[1.2.3.4]:u@d>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	/* address literals (RFC 5321 4.1.3) */
	{"<u@[192.0.2.1]>", true, false, SMTP_P_OK, "u", "[192.0.2.1]", false, false},
	{"<u@[IPv6:2001:db8::1]>", true, false, SMTP_P_OK, "u", "[IPv6:2001:db8::1]", false, false},
	{"<u@[ipv6:2001:DB8::A]>", true, false, SMTP_P_OK, "u", "[IPv6:2001:db8::a]", false, false},
	{"<u@[IPv6:::ffff:192.0.2.1]>", true, false, SMTP_P_OK, "u", "[IPv6:::ffff:192.0.2.1]", false,
	 false},
	{"<u@[IPv6:::1]>", true, false, SMTP_P_OK, "u", "[IPv6:::1]", false, false},
	{"<u@[192.0.2.256]>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<u@[192.0.2]>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<u@[2001:db8::1]>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<u@[IPv6:2001:db8::g]>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<u@[IPv6:1.2.3.4]>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<u@[x-tag:abc]>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<u@[]>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<u@[IPv6:]>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<u@[192.0.2.1>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<u@[192.0.2.1]x>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	/* local part and domain syntax */
	{"<.a@b>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a.@b>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a..b@b>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a b@c>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a(b)@c>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<@b>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<Postmaster>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@b@c>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@b..c>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@.b>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@b.>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@-b.c>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@b-.c>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@b_c.d>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@b c>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@xn--bcher-kva.example>", true, false, SMTP_P_OK, "a", "xn--bcher-kva.example", false,
	 false},
	{"<a@123.example>", true, false, SMTP_P_OK, "a", "123.example", false, false},
	/* missing brackets, stray bytes */
	{"a@b", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@b", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"a@b>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<<a@b>>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@b>x", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false}, /* used == NULL */
	/* bare addresses (CLI) */
	{"a@b.example", false, false, SMTP_P_OK, "a", "b.example", false, false},
	{"<a@b.example>", false, false, SMTP_P_OK, "a", "b.example", false, false},
	{"\"a b\"@[192.0.2.1]", false, false, SMTP_P_OK, "\"a b\"", "[192.0.2.1]", false, false},
	{"", false, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"a@b ", false, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"@x:a@b", false, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	/* UTF-8 (RFC 6531): allowed only with utf8_ok; malformed UTF-8 never */
	{"<j\xc3\xb6rg@b\xc3\xbc" "cher.example>", true, true, SMTP_P_OK, "j\xc3\xb6rg",
	 "b\xc3\xbc" "cher.example", false, true},
	{"<j\xc3\xb6rg@b.example>", true, false, SMTP_P_UTF8_NEEDS_SMTPUTF8, NULL, NULL, false, false},
	{"<a@B\xc3\xbc.example>", true, false, SMTP_P_UTF8_NEEDS_SMTPUTF8, NULL, NULL, false, false},
	{"<a@B\xc3\x9c.example>", true, true, SMTP_P_OK, "a", "b\xc3\x9c.example", false, true},
	{"<\"\xe2\x82\xac x\"@b>", true, true, SMTP_P_OK, "\"\xe2\x82\xac x\"", "b", false, true},
	{"<\xf0\x9f\x98\x80@b>", true, true, SMTP_P_OK, "\xf0\x9f\x98\x80", "b", false, true},
	{"<\xc3@b>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false},      /* truncated */
	{"<\xc0\xaf@b>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false},  /* overlong */
	{"<\xed\xa0\x80@b>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false}, /* surrogate */
	{"<\xf4\x90\x80\x80@b>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false}, /* >10FFFF */
	{"<\xff@b>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<\xe0\x80\x80@b>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false}, /* overlong */
	{"<\xe2\x28\xa1@b>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false}, /* bad cont. */
	{"<\xf0\x9f\x98\x28@b>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<\"\xc3\"@b>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<\x80@b>", true, false, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@b\xc3>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<a@\xe2\x82>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
	{"<@\xc3\xbc:a@b>", true, true, SMTP_P_BAD_ADDR, NULL, NULL, false, false},
};

static void test_path_table(void **state)
{
	size_t bad = 0;

	for (size_t i = 0; i < NROWS(path_rows); i++) {
		const struct path_row *r = &path_rows[i];
		struct smtp_addr a;
		enum smtp_perr e =
			smtp_parse_path(r->s, strlen(r->s), r->brackets, r->utf8_ok, &a, NULL);

		ROW_CHECK(e == r->err, i, r->s);
		if (e != SMTP_P_OK || r->err != SMTP_P_OK)
			continue;
		ROW_CHECK(strcmp(a.local, r->local) == 0, i, r->s);
		ROW_CHECK(strcmp(a.domain, r->domain) == 0, i, r->s);
		ROW_CHECK(a.is_null == r->is_null, i, r->s);
		ROW_CHECK(a.utf8 == r->utf8, i, r->s);
	}
	assert_int_equal(bad, 0);
}

static void test_path_used(void **state)
{
	struct smtp_addr a;
	size_t used = 99;
	const char *s = "<a@b.example> SIZE=1";

	assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, &used), SMTP_P_OK);
	assert_int_equal(used, 13);
	s = "a@b.example>rest";
	assert_int_equal(smtp_parse_path(s, strlen(s), false, false, &a, &used), SMTP_P_OK);
	assert_int_equal(used, 11);
	assert_string_equal(a.domain, "b.example");
	s = "<>x";
	assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, &used), SMTP_P_OK);
	assert_int_equal(used, 2);
	assert_true(a.is_null);
	/* len is respected: the '>' past len is not seen */
	s = "<a@b>";
	assert_int_equal(smtp_parse_path(s, 4, true, false, &a, &used), SMTP_P_BAD_ADDR);
	assert_int_equal(used, 0);
	/* NUL inside an address is just a bad byte */
	assert_int_equal(smtp_parse_path("<a\0b@c>", 7, true, false, &a, NULL), SMTP_P_BAD_ADDR);
	assert_int_equal(smtp_parse_path(NULL, 0, true, false, &a, NULL), SMTP_P_BAD_ADDR);
	assert_int_equal(smtp_parse_path("<>", 2, true, false, NULL, NULL), SMTP_P_SYNTAX);
}

/* RFC 5321 4.5.3.1.1-3: local part 64, domain 255, path 256 octets. */
static void test_path_limits(void **state)
{
	char local[200], dom[400], s[800];
	struct smtp_addr a;

	/* local part: 64 ok, 65 too long */
	rep(local, 'l', 64);
	snprintf(s, sizeof(s), "<%s@b>", local);
	assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL), SMTP_P_OK);
	assert_string_equal(a.local, local);
	rep(local, 'l', 65);
	snprintf(s, sizeof(s), "<%s@b>", local);
	assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL), SMTP_P_TOO_LONG);
	/* dotted local part counts the dots */
	rep(local, 'l', 65);
	local[10] = '.';
	snprintf(s, sizeof(s), "<%s@b>", local);
	assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL), SMTP_P_TOO_LONG);

	/* quoted: 64 unquoted octets (each an escaped pair) fit, 65 do not */
	{
		char q[200];
		size_t n = 0;

		q[n++] = '"';
		for (int k = 0; k < 64; k++) {
			q[n++] = '\\';
			q[n++] = '"';
		}
		q[n++] = '"';
		q[n] = '\0';
		snprintf(s, sizeof(s), "<%s@b>", q);
		assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL), SMTP_P_OK);
		assert_string_equal(a.local, q);
		memmove(q + 3, q + 1, n); /* one more escaped pair */
		q[1] = '\\';
		q[2] = 'x';
		snprintf(s, sizeof(s), "<%s@b>", q);
		assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL),
				 SMTP_P_TOO_LONG);
	}

	/* domain: 255 fits the domain cap but not a 256-octet path with "<a@" and ">" */
	mkdomain(dom, 251);
	snprintf(s, sizeof(s), "<ab@%s>", dom); /* 1+2+1+251+1 = 256 */
	assert_int_equal(strlen(s), 256);
	assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL), SMTP_P_OK);
	assert_string_equal(a.domain, dom);
	snprintf(s, sizeof(s), "<abc@%s>", dom); /* 257 */
	assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL), SMTP_P_TOO_LONG);
	mkdomain(dom, 255);
	snprintf(s, sizeof(s), "<a@%s>", dom);
	assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL), SMTP_P_TOO_LONG);
	mkdomain(dom, 256);
	snprintf(s, sizeof(s), "<a@%s>", dom);
	assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL), SMTP_P_TOO_LONG);
	/* bare form: domain over 255 */
	snprintf(s, sizeof(s), "a@%s", dom);
	assert_int_equal(smtp_parse_path(s, strlen(s), false, false, &a, NULL), SMTP_P_TOO_LONG);

	/* an address literal longer than a domain may be */
	{
		char lit[300];

		memcpy(lit, "[IPv6:", 6);
		rep(lit + 6, '1', 260);
		snprintf(s, sizeof(s), "<a@%s]>", lit);
		assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL),
				 SMTP_P_TOO_LONG);
	}

	/* a 64-octet label is a bad address, not a long one */
	rep(dom, 'd', 64);
	snprintf(s, sizeof(s), "<a@%s>", dom);
	assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL), SMTP_P_BAD_ADDR);
	rep(dom, 'd', 63);
	snprintf(s, sizeof(s), "<a@%s>", dom);
	assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL), SMTP_P_OK);

	/* path over 256 through a source route */
	{
		size_t n = 0;

		s[n++] = '<';
		while (n < 300) {
			memcpy(s + n, "@r.example,", 11);
			n += 11;
		}
		memcpy(s + n - 1, ":a@b>", 6);
		assert_int_equal(smtp_parse_path(s, strlen(s), true, false, &a, NULL),
				 SMTP_P_TOO_LONG);
	}
}

/* ---- smtp_parse_mail -------------------------------------------------------------------- */

struct mail_row {
	const char *arg;
	enum smtp_perr err;
	const char *local;
	const char *domain;
	bool is_null;
	bool has_size;
	uint64_t size;
	enum smtp_body_type body;
	bool smtputf8;
	enum smtp_dsn_ret ret;
	const char *envid;
};

#define MOK(arg, l, d) {arg, SMTP_P_OK, l, d, false, false, 0, SMTP_BODY_NONE, false, SMTP_RET_NONE, ""}
#define MERR(arg, e) {arg, e, NULL, NULL, false, false, 0, SMTP_BODY_NONE, false, SMTP_RET_NONE, ""}

static const struct mail_row mail_rows[] = {
	MOK("FROM:<a@b.example>", "a", "b.example"),
	MOK("FROM: <a@b.example>", "a", "b.example"),
	MOK("from:<a@B.Example>", "a", "b.example"),
	MOK("From:<a@b.example>", "a", "b.example"),
	{"FROM:<>", SMTP_P_OK, "", "", true, false, 0, SMTP_BODY_NONE, false, SMTP_RET_NONE, ""},
	{"FROM: <>", SMTP_P_OK, "", "", true, false, 0, SMTP_BODY_NONE, false, SMTP_RET_NONE, ""},
	MOK("FROM:<\"x y\"@b>", "\"x y\"", "b"),
	MOK("FROM:<@r.example:a@b>", "a", "b"),
	MOK("FROM:<a@[192.0.2.1]>", "a", "[192.0.2.1]"),
	MOK("FROM:<a@[IPv6:2001:db8::1]>", "a", "[IPv6:2001:db8::1]"),
	/* SIZE (RFC 1870) */
	{"FROM:<a@b> SIZE=10", SMTP_P_OK, "a", "b", false, true, 10, SMTP_BODY_NONE, false,
	 SMTP_RET_NONE, ""},
	{"FROM:<a@b> size=0", SMTP_P_OK, "a", "b", false, true, 0, SMTP_BODY_NONE, false,
	 SMTP_RET_NONE, ""},
	{"FROM:<a@b> SIZE=18446744073709551615", SMTP_P_OK, "a", "b", false, true, UINT64_MAX,
	 SMTP_BODY_NONE, false, SMTP_RET_NONE, ""},
	{"FROM:<a@b> SIZE=00000000000000000001", SMTP_P_OK, "a", "b", false, true, 1,
	 SMTP_BODY_NONE, false, SMTP_RET_NONE, ""},
	/* RFC 1870: 20 digits are valid; past 2^64-1 means "too big" (552), not bad syntax */
	{"FROM:<a@b> SIZE=18446744073709551616", SMTP_P_OK, "a", "b", false, true, UINT64_MAX,
	 SMTP_BODY_NONE, false, SMTP_RET_NONE, ""},
	{"FROM:<a@b> SIZE=99999999999999999999", SMTP_P_OK, "a", "b", false, true, UINT64_MAX,
	 SMTP_BODY_NONE, false, SMTP_RET_NONE, ""},
	MERR("FROM:<a@b> SIZE=000000000000000000001", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> SIZE=", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> SIZE", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> SIZE=-1", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> SIZE=+1", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> SIZE=1k", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> SIZE=1=2", SMTP_P_BAD_PARAM),
	/* BODY (RFC 6152, RFC 3030) */
	{"FROM:<a@b> BODY=7BIT", SMTP_P_OK, "a", "b", false, false, 0, SMTP_BODY_7BIT, false,
	 SMTP_RET_NONE, ""},
	{"FROM:<a@b> BODY=8BITMIME", SMTP_P_OK, "a", "b", false, false, 0, SMTP_BODY_8BITMIME, false,
	 SMTP_RET_NONE, ""},
	{"FROM:<a@b> body=8bitmime", SMTP_P_OK, "a", "b", false, false, 0, SMTP_BODY_8BITMIME, false,
	 SMTP_RET_NONE, ""},
	{"FROM:<a@b> BODY=BINARYMIME", SMTP_P_OK, "a", "b", false, false, 0, SMTP_BODY_BINARYMIME,
	 false, SMTP_RET_NONE, ""},
	MERR("FROM:<a@b> BODY=8BIT", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> BODY=", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> BODY", SMTP_P_BAD_PARAM),
	/* SMTPUTF8 (RFC 6531) */
	{"FROM:<a@b> SMTPUTF8", SMTP_P_OK, "a", "b", false, false, 0, SMTP_BODY_NONE, true,
	 SMTP_RET_NONE, ""},
	{"FROM:<a@b> smtputf8", SMTP_P_OK, "a", "b", false, false, 0, SMTP_BODY_NONE, true,
	 SMTP_RET_NONE, ""},
	MERR("FROM:<a@b> SMTPUTF8=yes", SMTP_P_BAD_PARAM),
	/* RET / ENVID (RFC 3461) */
	{"FROM:<a@b> RET=FULL", SMTP_P_OK, "a", "b", false, false, 0, SMTP_BODY_NONE, false,
	 SMTP_RET_FULL, ""},
	{"FROM:<a@b> ret=hdrs", SMTP_P_OK, "a", "b", false, false, 0, SMTP_BODY_NONE, false,
	 SMTP_RET_HDRS, ""},
	MERR("FROM:<a@b> RET=BOTH", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> RET", SMTP_P_BAD_PARAM),
	{"FROM:<a@b> ENVID=QQ314159", SMTP_P_OK, "a", "b", false, false, 0, SMTP_BODY_NONE, false,
	 SMTP_RET_NONE, "QQ314159"},
	{"FROM:<a@b> ENVID=a+2Bb+3Dc", SMTP_P_OK, "a", "b", false, false, 0, SMTP_BODY_NONE, false,
	 SMTP_RET_NONE, "a+2Bb+3Dc"},
	{"FROM:<a@b> ENVID=+20", SMTP_P_OK, "a", "b", false, false, 0, SMTP_BODY_NONE, false,
	 SMTP_RET_NONE, "+20"},
	MERR("FROM:<a@b> ENVID=a+2bb", SMTP_P_BAD_PARAM),  /* lower-case hex */
	MERR("FROM:<a@b> ENVID=a+2", SMTP_P_BAD_PARAM),    /* short hexchar */
	MERR("FROM:<a@b> ENVID=a+", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> ENVID=a+G0", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> ENVID=a+0D+0A", SMTP_P_BAD_PARAM), /* decodes to CR LF */
	MERR("FROM:<a@b> ENVID=a+7F", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> ENVID=", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> ENVID", SMTP_P_BAD_PARAM),
	/* AUTH (RFC 4954 5) accepted, value ignored */
	MOK("FROM:<a@b> AUTH=<>", "a", "b"),
	MOK("FROM:<a@b> AUTH=e+2Bf@g.example", "a", "b"),
	MERR("FROM:<a@b> AUTH=", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> AUTH", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> AUTH=a+zz", SMTP_P_BAD_PARAM),
	/* everything at once, with extra spaces between parameters */
	{"FROM:<a@b> SIZE=123  BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x1", SMTP_P_OK, "a", "b", false,
	 true, 123, SMTP_BODY_8BITMIME, true, SMTP_RET_HDRS, "x1"},
	/* duplicate parameters */
	MERR("FROM:<a@b> SIZE=1 SIZE=1", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> SIZE=1 size=2", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> BODY=7BIT BODY=8BITMIME", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> SMTPUTF8 SMTPUTF8", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> RET=FULL RET=HDRS", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> ENVID=a ENVID=b", SMTP_P_BAD_PARAM),
	MERR("FROM:<a@b> AUTH=<> AUTH=<>", SMTP_P_BAD_PARAM),
	/* unknown parameters, including RCPT-only ones */
	MERR("FROM:<a@b> FOO=bar", SMTP_P_UNKNOWN_PARAM),
	MERR("FROM:<a@b> FOO", SMTP_P_UNKNOWN_PARAM),
	MERR("FROM:<a@b> NOTIFY=NEVER", SMTP_P_UNKNOWN_PARAM),
	MERR("FROM:<a@b> ORCPT=rfc822;a@b", SMTP_P_UNKNOWN_PARAM),
	MERR("FROM:<a@b> SIZEX=1", SMTP_P_UNKNOWN_PARAM),
	MERR("FROM:<a@b> X-1=2", SMTP_P_UNKNOWN_PARAM),
	/* malformed keywords, trailing garbage, control and 8-bit bytes */
	MERR("FROM:<a@b>x", SMTP_P_SYNTAX),
	MERR("FROM:<a@b>SIZE=1", SMTP_P_SYNTAX),
	MERR("FROM:<a@b> =1", SMTP_P_SYNTAX),
	MERR("FROM:<a@b> -X=1", SMTP_P_SYNTAX),
	MERR("FROM:<a@b> X_Y=1", SMTP_P_SYNTAX),
	MERR("FROM:<a@b> SIZE=1\t", SMTP_P_SYNTAX),
	MERR("FROM:<a@b> SIZE=\x7f", SMTP_P_SYNTAX),
	MERR("FROM:<a@b> ENVID=\xc3\xa9", SMTP_P_NON_ASCII),
	MERR("FROM:<a@b> X\xc3\xa9=1", SMTP_P_NON_ASCII),
	/* the FROM: keyword and the path */
	MERR("", SMTP_P_SYNTAX),
	MERR("FROM", SMTP_P_SYNTAX),
	MERR("FROM <a@b>", SMTP_P_SYNTAX),
	MERR("FROM :<a@b>", SMTP_P_SYNTAX),
	MERR("TO:<a@b>", SMTP_P_SYNTAX),
	MERR("FROM:", SMTP_P_BAD_ADDR),
	MERR("FROM:a@b", SMTP_P_BAD_ADDR),
	MERR("FROM:<a@b", SMTP_P_BAD_ADDR),
	MERR("FROM:a@b>", SMTP_P_BAD_ADDR),
	MERR("FROM:<a@b.example.>", SMTP_P_BAD_ADDR),
	MERR("FROM:<Postmaster>", SMTP_P_BAD_ADDR),
	MERR("FROM:<a@[192.0.2.1.5]>", SMTP_P_BAD_ADDR),
	/* UTF-8 sender (RFC 6531 3.4): only with the SMTPUTF8 parameter */
	{"FROM:<j\xc3\xb6rg@b\xc3\xbc.example> SMTPUTF8", SMTP_P_OK, "j\xc3\xb6rg",
	 "b\xc3\xbc.example", false, false, 0, SMTP_BODY_NONE, true, SMTP_RET_NONE, ""},
	MERR("FROM:<j\xc3\xb6rg@b.example>", SMTP_P_UTF8_NEEDS_SMTPUTF8),
	MERR("FROM:<j\xc3\xb6rg@b.example> BODY=8BITMIME", SMTP_P_UTF8_NEEDS_SMTPUTF8),
	MERR("FROM:<j\xc3@b.example> SMTPUTF8", SMTP_P_BAD_ADDR),
	MERR("FROM:<j\xff@b.example> SMTPUTF8", SMTP_P_BAD_ADDR),
	/* a param error is reported even when the address needs SMTPUTF8 */
	MERR("FROM:<j\xc3\xb6rg@b.example> FOO", SMTP_P_UNKNOWN_PARAM),
};

static void test_mail_table(void **state)
{
	size_t bad = 0;

	for (size_t i = 0; i < NROWS(mail_rows); i++) {
		const struct mail_row *r = &mail_rows[i];
		struct smtp_mail_args m;
		enum smtp_perr e = smtp_parse_mail(r->arg, strlen(r->arg), &m);

		ROW_CHECK(e == r->err, i, r->arg);
		if (e != SMTP_P_OK || r->err != SMTP_P_OK)
			continue;
		ROW_CHECK(strcmp(m.from.local, r->local) == 0, i, r->arg);
		ROW_CHECK(strcmp(m.from.domain, r->domain) == 0, i, r->arg);
		ROW_CHECK(m.from.is_null == r->is_null, i, r->arg);
		ROW_CHECK(m.has_size == r->has_size, i, r->arg);
		ROW_CHECK(m.size == r->size, i, r->arg);
		ROW_CHECK(m.body == r->body, i, r->arg);
		ROW_CHECK(m.smtputf8 == r->smtputf8, i, r->arg);
		ROW_CHECK(m.ret == r->ret, i, r->arg);
		ROW_CHECK(strcmp(m.envid, r->envid) == 0, i, r->arg);
	}
	assert_int_equal(bad, 0);
}

static void test_mail_long_values(void **state)
{
	char v[700], s[900];
	struct smtp_mail_args m;

	/* RFC 3461 4.4: ENVID at most 100 characters */
	rep(v, 'e', LIM_ENVID);
	snprintf(s, sizeof(s), "FROM:<a@b> ENVID=%s", v);
	assert_int_equal(smtp_parse_mail(s, strlen(s), &m), SMTP_P_OK);
	assert_string_equal(m.envid, v);
	rep(v, 'e', LIM_ENVID + 1);
	snprintf(s, sizeof(s), "FROM:<a@b> ENVID=%s", v);
	assert_int_equal(smtp_parse_mail(s, strlen(s), &m), SMTP_P_BAD_PARAM);

	/* the parser reads only [0, len): a valid prefix of a longer buffer */
	snprintf(s, sizeof(s), "FROM:<a@b> SIZE=12345");
	assert_int_equal(smtp_parse_mail(s, strlen(s) - 2, &m), SMTP_P_OK);
	assert_int_equal(m.size, 123);

	assert_int_equal(smtp_parse_mail(NULL, 0, &m), SMTP_P_SYNTAX);
	assert_int_equal(smtp_parse_mail("FROM:<>", 7, NULL), SMTP_P_SYNTAX);
}

/* ---- smtp_parse_rcpt -------------------------------------------------------------------- */

struct rcpt_row {
	const char *arg;
	bool smtputf8;
	enum smtp_perr err;
	const char *local;
	const char *domain;
	unsigned notify;
	const char *orcpt;
};

static const struct rcpt_row rcpt_rows[] = {
	{"TO:<b@c.example>", false, SMTP_P_OK, "b", "c.example", 0, ""},
	{"to:<b@C.EXAMPLE>", false, SMTP_P_OK, "b", "c.example", 0, ""},
	{"To: <b@c>", false, SMTP_P_OK, "b", "c", 0, ""},
	{"TO:<\"x y\"@[IPv6:::1]>", false, SMTP_P_OK, "\"x y\"", "[IPv6:::1]", 0, ""},
	{"TO:<@r:b@c>", false, SMTP_P_OK, "b", "c", 0, ""},
	/* RFC 5321 4.1.1.3 Postmaster without a domain, any case */
	{"TO:<Postmaster>", false, SMTP_P_OK, "Postmaster", "", 0, ""},
	{"TO:<postmaster>", false, SMTP_P_OK, "Postmaster", "", 0, ""},
	{"TO:<POSTMASTER>", false, SMTP_P_OK, "Postmaster", "", 0, ""},
	{"TO: <PostMaster> NOTIFY=NEVER", false, SMTP_P_OK, "Postmaster", "", SMTP_NOTIFY_NEVER, ""},
	{"TO:<Postmaster@C.Example>", false, SMTP_P_OK, "Postmaster", "c.example", 0, ""},
	{"TO:<Postmaster>x", false, SMTP_P_SYNTAX, NULL, NULL, 0, NULL},
	{"TO:<Postmasters>", false, SMTP_P_BAD_ADDR, NULL, NULL, 0, NULL},
	{"TO:<Postmaster", false, SMTP_P_BAD_ADDR, NULL, NULL, 0, NULL},
	{"TO:<\"Postmaster\">", false, SMTP_P_BAD_ADDR, NULL, NULL, 0, NULL},
	/* the null path is not a forward-path */
	{"TO:<>", false, SMTP_P_BAD_ADDR, NULL, NULL, 0, NULL},
	{"TO:b@c", false, SMTP_P_BAD_ADDR, NULL, NULL, 0, NULL},
	{"TO:<b@c", false, SMTP_P_BAD_ADDR, NULL, NULL, 0, NULL},
	{"TO:<b>", false, SMTP_P_BAD_ADDR, NULL, NULL, 0, NULL},
	{"TO <b@c>", false, SMTP_P_SYNTAX, NULL, NULL, 0, NULL},
	{"FROM:<b@c>", false, SMTP_P_SYNTAX, NULL, NULL, 0, NULL},
	{"", false, SMTP_P_SYNTAX, NULL, NULL, 0, NULL},
	{"TO:<b@c>junk", false, SMTP_P_SYNTAX, NULL, NULL, 0, NULL},
	/* NOTIFY (RFC 3461 4.1) */
	{"TO:<b@c> NOTIFY=NEVER", false, SMTP_P_OK, "b", "c", SMTP_NOTIFY_NEVER, ""},
	{"TO:<b@c> notify=never", false, SMTP_P_OK, "b", "c", SMTP_NOTIFY_NEVER, ""},
	{"TO:<b@c> NOTIFY=SUCCESS", false, SMTP_P_OK, "b", "c", SMTP_NOTIFY_SUCCESS, ""},
	{"TO:<b@c> NOTIFY=FAILURE", false, SMTP_P_OK, "b", "c", SMTP_NOTIFY_FAILURE, ""},
	{"TO:<b@c> NOTIFY=DELAY", false, SMTP_P_OK, "b", "c", SMTP_NOTIFY_DELAY, ""},
	{"TO:<b@c> NOTIFY=SUCCESS,FAILURE", false, SMTP_P_OK, "b", "c",
	 SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE, ""},
	{"TO:<b@c> NOTIFY=delay,Success,FAILURE", false, SMTP_P_OK, "b", "c",
	 SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY, ""},
	{"TO:<b@c> NOTIFY=NEVER,SUCCESS", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> NOTIFY=FAILURE,NEVER", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> NOTIFY=", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> NOTIFY", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> NOTIFY=SUCCESS,", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> NOTIFY=,SUCCESS", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> NOTIFY=SUCCESS,,DELAY", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> NOTIFY=ALWAYS", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> NOTIFY=NEVER NOTIFY=NEVER", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	/* ORCPT (RFC 3461 4.2) */
	{"TO:<b@c> ORCPT=rfc822;b@c", false, SMTP_P_OK, "b", "c", 0, "rfc822;b@c"},
	{"TO:<b@c> ORCPT=rfc822;a+2Bb@c", false, SMTP_P_OK, "b", "c", 0, "rfc822;a+2Bb@c"},
	{"TO:<b@c> ORCPT=RFC822;x+20y@c", false, SMTP_P_OK, "b", "c", 0, "RFC822;x+20y@c"},
	{"TO:<b@c> ORCPT=utf-8;x@c", false, SMTP_P_OK, "b", "c", 0, "utf-8;x@c"},
	{"TO:<b@c> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@c", false, SMTP_P_OK, "b", "c",
	 SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE, "rfc822;b@c"},
	{"TO:<b@c> ORCPT=rfc822", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> ORCPT=rfc822;", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> ORCPT=;b@c", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> ORCPT=rf(c;b@c", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> ORCPT=rfc822;a+2bb@c", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> ORCPT=rfc822;a+0A@c", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> ORCPT=rfc822;a+", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> ORCPT=rfc822;a=b", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> ORCPT=", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> ORCPT=rfc822;a ORCPT=rfc822;b", false, SMTP_P_BAD_PARAM, NULL, NULL, 0, NULL},
	/* unknown parameters, including MAIL-only ones */
	{"TO:<b@c> FOO=1", false, SMTP_P_UNKNOWN_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> SIZE=1", false, SMTP_P_UNKNOWN_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> SMTPUTF8", false, SMTP_P_UNKNOWN_PARAM, NULL, NULL, 0, NULL},
	{"TO:<b@c> NOTIFY=NEVER\xc3\xa9", false, SMTP_P_NON_ASCII, NULL, NULL, 0, NULL},
	/* UTF-8 recipients only in an SMTPUTF8 transaction */
	{"TO:<j\xc3\xb6rg@c>", true, SMTP_P_OK, "j\xc3\xb6rg", "c", 0, ""},
	{"TO:<b@\xc3\xbc.example>", true, SMTP_P_OK, "b", "\xc3\xbc.example", 0, ""},
	{"TO:<j\xc3\xb6rg@c>", false, SMTP_P_UTF8_NEEDS_SMTPUTF8, NULL, NULL, 0, NULL},
	{"TO:<b@\xc3\xbc.example>", false, SMTP_P_UTF8_NEEDS_SMTPUTF8, NULL, NULL, 0, NULL},
	{"TO:<j\xf8rg@c>", true, SMTP_P_BAD_ADDR, NULL, NULL, 0, NULL},
	{"TO:<j\xf8rg@c>", false, SMTP_P_BAD_ADDR, NULL, NULL, 0, NULL},
};

static void test_rcpt_table(void **state)
{
	size_t bad = 0;

	for (size_t i = 0; i < NROWS(rcpt_rows); i++) {
		const struct rcpt_row *r = &rcpt_rows[i];
		struct smtp_rcpt_args a;
		enum smtp_perr e = smtp_parse_rcpt(r->arg, strlen(r->arg), r->smtputf8, &a);

		ROW_CHECK(e == r->err, i, r->arg);
		if (e != SMTP_P_OK || r->err != SMTP_P_OK)
			continue;
		ROW_CHECK(strcmp(a.to.local, r->local) == 0, i, r->arg);
		ROW_CHECK(strcmp(a.to.domain, r->domain) == 0, i, r->arg);
		ROW_CHECK(!a.to.is_null, i, r->arg);
		ROW_CHECK(a.notify == r->notify, i, r->arg);
		ROW_CHECK(strcmp(a.orcpt, r->orcpt) == 0, i, r->arg);
	}
	assert_int_equal(bad, 0);
}

static void test_rcpt_long_values(void **state)
{
	char v[700], s[900];
	struct smtp_rcpt_args a;

	/* RFC 3461 4.2: ORCPT value at most 500 characters, "rfc822;" included */
	rep(v, 'o', LIM_ORCPT - 7);
	snprintf(s, sizeof(s), "TO:<b@c> ORCPT=rfc822;%s", v);
	assert_int_equal(smtp_parse_rcpt(s, strlen(s), false, &a), SMTP_P_OK);
	assert_int_equal(strlen(a.orcpt), LIM_ORCPT);
	rep(v, 'o', LIM_ORCPT - 6);
	snprintf(s, sizeof(s), "TO:<b@c> ORCPT=rfc822;%s", v);
	assert_int_equal(smtp_parse_rcpt(s, strlen(s), false, &a), SMTP_P_BAD_PARAM);

	/* local part over 64 */
	rep(v, 'l', 65);
	snprintf(s, sizeof(s), "TO:<%s@c>", v);
	assert_int_equal(smtp_parse_rcpt(s, strlen(s), false, &a), SMTP_P_TOO_LONG);

	assert_int_equal(smtp_parse_rcpt(NULL, 0, false, &a), SMTP_P_SYNTAX);
	assert_int_equal(smtp_parse_rcpt("TO:<a@b>", 8, false, NULL), SMTP_P_SYNTAX);
	/* "<Postmaster>" cut short by len */
	assert_int_equal(smtp_parse_rcpt("TO:<Postmaster>", 14, false, &a), SMTP_P_BAD_ADDR);
}

/* ---- smtp_parse_bdat -------------------------------------------------------------------- */

struct bdat_row {
	const char *arg;
	enum smtp_perr err;
	uint64_t size;
	bool last;
};

static const struct bdat_row bdat_rows[] = {
	{"100", SMTP_P_OK, 100, false},
	{"100 LAST", SMTP_P_OK, 100, true},
	{"100 last", SMTP_P_OK, 100, true},
	{"0 LAST", SMTP_P_OK, 0, true},
	{"0", SMTP_P_OK, 0, false},
	{"100 ", SMTP_P_OK, 100, false},
	{"100 LAST  ", SMTP_P_OK, 100, true},
	{"18446744073709551615", SMTP_P_OK, UINT64_MAX, false},
	{"00000000000000000007 LAST", SMTP_P_OK, 7, true},
	{"18446744073709551616", SMTP_P_SYNTAX, 0, false},
	{"100000000000000000000", SMTP_P_SYNTAX, 0, false}, /* 21 digits */
	{"000000000000000000000", SMTP_P_SYNTAX, 0, false}, /* 21 digits */
	{"", SMTP_P_SYNTAX, 0, false},
	{"LAST", SMTP_P_SYNTAX, 0, false},
	{" 100", SMTP_P_SYNTAX, 0, false},
	{"-1", SMTP_P_SYNTAX, 0, false},
	{"+1", SMTP_P_SYNTAX, 0, false},
	{"1x", SMTP_P_SYNTAX, 0, false},
	{"0x10", SMTP_P_SYNTAX, 0, false},
	{"100 LASTX", SMTP_P_SYNTAX, 0, false},
	{"100 LAS", SMTP_P_SYNTAX, 0, false},
	{"100 LAST x", SMTP_P_SYNTAX, 0, false},
	{"100 FIRST", SMTP_P_SYNTAX, 0, false},
	{"100\tLAST", SMTP_P_SYNTAX, 0, false},
	{"100 \xc3\xa9", SMTP_P_NON_ASCII, 0, false},
};

static void test_bdat_table(void **state)
{
	size_t bad = 0;

	for (size_t i = 0; i < NROWS(bdat_rows); i++) {
		const struct bdat_row *r = &bdat_rows[i];
		uint64_t size = 42;
		bool last = true;
		enum smtp_perr e = smtp_parse_bdat(r->arg, strlen(r->arg), &size, &last);

		ROW_CHECK(e == r->err, i, r->arg);
		if (e != SMTP_P_OK)
			continue;
		ROW_CHECK(size == r->size, i, r->arg);
		ROW_CHECK(last == r->last, i, r->arg);
	}
	assert_int_equal(bad, 0);
}

static void test_bdat_bounds(void **state)
{
	uint64_t size;
	bool last;

	/* only [0, len) is read */
	assert_int_equal(smtp_parse_bdat("12 LAST", 2, &size, &last), SMTP_P_OK);
	assert_int_equal(size, 12);
	assert_false(last);
	assert_int_equal(smtp_parse_bdat("12\0LAST", 7, &size, &last), SMTP_P_SYNTAX);
	assert_int_equal(smtp_parse_bdat(NULL, 0, &size, &last), SMTP_P_SYNTAX);
	assert_int_equal(smtp_parse_bdat("1", 1, NULL, &last), SMTP_P_SYNTAX);
}

/* ---- smtp_domain_valid ------------------------------------------------------------------ */

struct dom_row {
	const char *s;
	bool utf8_ok;
	bool valid;
};

static const struct dom_row dom_rows[] = {
	{"example.com", false, true},
	{"a", false, true},
	{"A-B.c0", false, true},
	{"mail.EXAMPLE.org", false, true},
	{"1.2.3.4", false, true},
	{"xn--bcher-kva.example", false, true},
	{"a-b-c.d", false, true},
	{"", false, false},
	{".", false, false},
	{"a.", false, false},
	{".a", false, false},
	{"a..b", false, false},
	{"-a.b", false, false},
	{"a-.b", false, false},
	{"a.-b", false, false},
	{"a.b-", false, false},
	{"a_b.c", false, false},
	{"a b", false, false},
	{"[192.0.2.1]", false, false},
	{"a@b", false, false},
	{"b\xc3\xbc" "cher.example", false, false},
	{"b\xc3\xbc" "cher.example", true, true},
	{"\xe4\xbe\x8b\xe3\x81\x88.\xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88", true, true},
	{"b\xc3.example", true, false},
	{"b\xc0\x80.example", true, false},
	{"b\xff.example", true, false},
};

static void test_domain_table(void **state)
{
	size_t bad = 0;

	for (size_t i = 0; i < NROWS(dom_rows); i++) {
		const struct dom_row *r = &dom_rows[i];

		ROW_CHECK(smtp_domain_valid(r->s, strlen(r->s), r->utf8_ok) == r->valid, i, r->s);
	}
	assert_int_equal(bad, 0);
}

static void test_domain_lengths(void **state)
{
	char d[400];

	/* RFC 1035: labels 1-63 */
	rep(d, 'a', 63);
	assert_true(smtp_domain_valid(d, 63, false));
	rep(d, 'a', 64);
	assert_false(smtp_domain_valid(d, 64, false));
	/* RFC 5321 4.5.3.1.2: 255 octets */
	mkdomain(d, 255);
	assert_true(smtp_domain_valid(d, 255, false));
	mkdomain(d, 256);
	assert_false(smtp_domain_valid(d, 256, false));
	/* only len bytes count */
	assert_true(smtp_domain_valid("ab.c-", 4, false));
	assert_false(smtp_domain_valid("a\0b", 3, false));
	assert_false(smtp_domain_valid(NULL, 0, false));
}

/* ---- smtp_addr_format / smtp_ascii_lower ------------------------------------------------ */

static void test_addr_format(void **state)
{
	struct smtp_addr a;
	char buf[600];

	assert_int_equal(smtp_parse_path("<A.B@Example.COM>", 17, true, false, &a, NULL),
			 SMTP_P_OK);
	assert_int_equal(smtp_addr_format(&a, buf, sizeof(buf)), 15);
	assert_string_equal(buf, "A.B@example.com");
	/* exact fit and one short */
	assert_int_equal(smtp_addr_format(&a, buf, 16), 15);
	assert_string_equal(buf, "A.B@example.com");
	assert_int_equal(smtp_addr_format(&a, buf, 15), -1);
	assert_int_equal(smtp_addr_format(&a, buf, 1), -1);
	assert_int_equal(smtp_addr_format(&a, buf, 0), -1);
	assert_int_equal(smtp_addr_format(NULL, buf, sizeof(buf)), -1);
	assert_int_equal(smtp_addr_format(&a, NULL, 10), -1);

	/* Postmaster without a domain */
	{
		struct smtp_rcpt_args r;

		assert_int_equal(smtp_parse_rcpt("TO:<postmaster>", 15, false, &r), SMTP_P_OK);
		assert_int_equal(smtp_addr_format(&r.to, buf, sizeof(buf)), 10);
		assert_string_equal(buf, "Postmaster");
	}
	/* null path */
	assert_int_equal(smtp_parse_path("<>", 2, true, false, &a, NULL), SMTP_P_OK);
	assert_int_equal(smtp_addr_format(&a, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");
	/* quoted local part and literal kept */
	assert_int_equal(smtp_parse_path("<\"a b\"@[IPv6:::1]>", 18, true, false, &a, NULL),
			 SMTP_P_OK);
	assert_int_equal(smtp_addr_format(&a, buf, sizeof(buf)), 16);
	assert_string_equal(buf, "\"a b\"@[IPv6:::1]");
	/* an unterminated struct is refused, not overrun */
	memset(&a, 'x', sizeof(a));
	assert_int_equal(smtp_addr_format(&a, buf, sizeof(buf)), -1);
}

static void test_ascii_lower(void **state)
{
	char s[] = "AbC-\xc3\x9cZ.EXAMPLE";

	smtp_ascii_lower(s);
	assert_string_equal(s, "abc-\xc3\x9cz.example");
	smtp_ascii_lower(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cmd_table),
		cmocka_unit_test(test_cmd_line_length),
		cmocka_unit_test(test_path_table),
		cmocka_unit_test(test_path_used),
		cmocka_unit_test(test_path_limits),
		cmocka_unit_test(test_mail_table),
		cmocka_unit_test(test_mail_long_values),
		cmocka_unit_test(test_rcpt_table),
		cmocka_unit_test(test_rcpt_long_values),
		cmocka_unit_test(test_bdat_table),
		cmocka_unit_test(test_bdat_bounds),
		cmocka_unit_test(test_domain_table),
		cmocka_unit_test(test_domain_lengths),
		cmocka_unit_test(test_addr_format),
		cmocka_unit_test(test_ascii_lower),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
