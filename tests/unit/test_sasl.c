/* Unit tests for src/auth/sasl.c: strict base64 (RFC 4648 4 vectors, missing and extra
 * padding, whitespace, foreign alphabets, non-canonical bits, data after padding, short
 * buffers), PLAIN (RFC 4616) with and without authzid, authzid != authcid, missing and
 * extra NULs, over-long parts, bad names; LOGIN answers; the "*" cancel. Runs in the test
 * process only; the inputs stand for what a hostile AUTH client could send. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "auth/sasl.h"

#define S(lit) lit, sizeof(lit) - 1

/* ---- base64 --------------------------------------------------------------------------- */

static const struct {
	const char *plain;
	const char *b64;
} b64_vectors[] = {
    /* RFC 4648 10 */
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
    /* the two characters that differ between base64 and base64url */
    {"\xfb\xff", "+/8="},
    {"\xff\xff\xff", "////"},
};

static void test_b64_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(b64_vectors) / sizeof(b64_vectors[0]); i++) {
		unsigned char out[64];
		char enc[64];
		size_t n = 99;
		const char *p = b64_vectors[i].plain, *b = b64_vectors[i].b64;

		assert_int_equal(sasl_b64_decode(b, strlen(b), out, sizeof(out), &n), 0);
		assert_int_equal(n, strlen(p));
		assert_memory_equal(out, p, n);
		assert_int_equal(
		    sasl_b64_encode((const unsigned char *)p, strlen(p), enc, sizeof(enc)),
		    (int)strlen(b));
		assert_string_equal(enc, b);
	}
}

static void test_b64_rfc4616_example(void **state)
{
	static const char b64[] = "AHRpbQB0YW5zdGFhZnRhbnN0YWFm";
	static const unsigned char want[] = "\0tim\0tanstaaftanstaaf";
	unsigned char out[64];
	size_t n;

	(void)state;
	assert_int_equal(sasl_b64_decode(S(b64), out, sizeof(out), &n), 0);
	assert_int_equal(n, sizeof(want) - 1);
	assert_memory_equal(out, want, n);
}

static const char *const b64_bad[] = {
    "QQ",       /* missing padding */
    "QQ=",      /* short padding */
    "QUI",      /* missing padding */
    "QQ===",    /* extra padding */
    "QUJD====", /* padding after a full quantum */
    "QUI==",    /* extra padding */
    "QUJD=",    /* extra padding */
    "=",        "==",
    "===",      "====",
    "=QQQ",     "Q=Q=",
    "QQ=A",     "QR==", /* non-zero bits after the last byte (RFC 4648 3.5) */
    "QUJ=",             /* same, two-byte tail */
    "QQ==QUJD",         /* data after padding */
    "QQ==QQ==", " QQ==",
    "QQ== ",    "Q Q==",
    "QQ==\n",   "QQ==\r\n",
    "QU\r\nJD", "\tQUJD",
    "-_-_", /* base64url alphabet */
    "QUJ.",     "QUJ*",
    "*",        "Q",
    "QUJDQ",    "QUJDQU",
    "QUJDQUJ",  "\xff\xff\xff\xff",
    "QU\x80J",
};

static void test_b64_strict(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(b64_bad) / sizeof(b64_bad[0]); i++) {
		unsigned char out[64];
		size_t n = 99;

		if (sasl_b64_decode(b64_bad[i], strlen(b64_bad[i]), out, sizeof(out), &n) != -1)
			fail_msg("accepted bad base64 \"%s\"", b64_bad[i]);
		assert_int_equal(n, 0);
	}
}

static void test_b64_embedded_nul(void **state)
{
	unsigned char out[16];
	size_t n;

	(void)state;
	assert_int_equal(sasl_b64_decode("QQ\0=", 4, out, sizeof(out), &n), -1);
	assert_int_equal(sasl_b64_decode("QUJD\0\0\0\0", 8, out, sizeof(out), &n), -1);
	/* the length given is what counts, not a NUL: "QUJD" followed by junk not looked at */
	assert_int_equal(sasl_b64_decode("QUJD!!!!", 4, out, sizeof(out), &n), 0);
	assert_int_equal(n, 3);
}

static void test_b64_caps(void **state)
{
	unsigned char out[8];
	char enc[8];
	size_t n;

	(void)state;
	assert_int_equal(sasl_b64_decode(S("QUJD"), out, 3, &n), 0);
	assert_int_equal(sasl_b64_decode(S("QUJD"), out, 2, &n), -1);
	assert_int_equal(sasl_b64_decode(S("QUJDRA=="), out, 3, &n), -1);
	assert_int_equal(sasl_b64_decode(S("QUJD"), NULL, 0, &n), -1);
	assert_int_equal(sasl_b64_decode(S("QUJD"), out, sizeof(out), NULL), -1);
	assert_int_equal(sasl_b64_decode(NULL, 4, out, sizeof(out), &n), -1);
	/* "ABCD" needs 8 characters + NUL */
	assert_int_equal(sasl_b64_encode((const unsigned char *)"ABCD", 4, enc, 8), -1);
	assert_int_equal(sasl_b64_encode((const unsigned char *)"ABC", 3, enc, 5), 4);
	assert_string_equal(enc, "QUJD");
	assert_int_equal(sasl_b64_encode((const unsigned char *)"ABC", 3, enc, 4), -1);
	assert_int_equal(sasl_b64_encode((const unsigned char *)"", 0, enc, 1), 0);
	assert_string_equal(enc, "");
	assert_int_equal(sasl_b64_encode((const unsigned char *)"", 0, enc, 0), -1);
	assert_int_equal(sasl_b64_encode(NULL, 3, enc, sizeof(enc)), -1);
}

static void test_b64_roundtrip(void **state)
{
	unsigned char in[200], out[200];
	char enc[300];

	(void)state;
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)(i * 37 + 11);
	for (size_t len = 0; len <= sizeof(in); len++) {
		size_t n = 0;
		int e = sasl_b64_encode(in, len, enc, sizeof(enc));

		assert_int_equal(e, (int)((len + 2) / 3 * 4));
		assert_int_equal(sasl_b64_decode(enc, (size_t)e, out, sizeof(out), &n), 0);
		assert_int_equal(n, len);
		assert_memory_equal(out, in, len);
		/* exactly enough room decodes; one byte less does not */
		if (len > 0) {
			assert_int_equal(sasl_b64_decode(enc, (size_t)e, out, len, &n), 0);
			assert_int_equal(sasl_b64_decode(enc, (size_t)e, out, len - 1, &n), -1);
		}
	}
}

/* ---- PLAIN ---------------------------------------------------------------------------- */

struct plain_case {
	const char *name;
	const char *msg;
	size_t len;
	int rc;
	const char *user;
	const char *pass;
};

/* clang-format off */
#define P(name, lit, rc, u, p) {name, lit, sizeof(lit) - 1, rc, u, p}

static const struct plain_case plain_cases[] = {
	P("no authzid", "\0user\0pencil", 0, "user", "pencil"),
	P("authzid = authcid", "user\0user\0pencil", 0, "user", "pencil"),
	P("address login", "\0me@example.org\0s3cr3t pass", 0, "me@example.org", "s3cr3t pass"),
	P("utf-8 login", "\0j\xc3\xa9r\xc3\xb4me\0pw", 0, "j\xc3\xa9r\xc3\xb4me", "pw"),
	P("password bytes as sent", "\0user\0p\xff\x01ss", 0, "user", "p\xff\x01ss"),
	P("authzid other user", "admin\0user\0pencil", -1, "", ""),
	P("authzid prefix", "use\0user\0pencil", -1, "", ""),
	P("authzid longer", "users\0user\0pencil", -1, "", ""),
	P("authzid case", "User\0user\0pencil", -1, "", ""),
	P("one NUL", "user\0pencil", -1, "", ""),
	P("no NUL", "userpencil", -1, "", ""),
	P("three NULs", "\0user\0pen\0cil", -1, "", ""),
	P("trailing NUL", "\0user\0pencil\0", -1, "", ""),
	P("empty authcid", "\0\0pencil", -1, "", ""),
	P("empty password", "\0user\0", -1, "", ""),
	P("all empty", "\0\0", -1, "", ""),
	P("only NUL", "\0", -1, "", ""),
	P("empty", "", -1, "", ""),
	P("control in login", "\0us\ner\0pencil", -1, "", ""),
	P("CR in login", "\0user\r\0pencil", -1, "", ""),
	P("DEL in login", "\0user\x7f\0pencil", -1, "", ""),
	P("bad utf-8 login", "\0\xc3(\0pencil", -1, "", ""),
	P("overlong utf-8 login", "\0\xc0\xaf\0pencil", -1, "", ""),
	P("surrogate login", "\0\xed\xa0\x80\0pencil", -1, "", ""),
	P("truncated utf-8 login", "\0ab\xe2\x82\0pencil", -1, "", ""),
	P("overlong 3-byte login", "\0\xe0\x80\xaf\0pencil", -1, "", ""),
	P("overlong 4-byte login", "\0\xf0\x80\x80\xaf\0pencil", -1, "", ""),
	P("above U+10FFFF login", "\0\xf4\x90\x80\x80\0pencil", -1, "", ""),
	P("lone continuation login", "\0a\x80\0pencil", -1, "", ""),
	P("4-byte utf-8 login", "\0\xf0\x9f\x93\xa7\0pencil", 0, "\xf0\x9f\x93\xa7", "pencil"),
};
/* clang-format on */

static void test_plain_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(plain_cases) / sizeof(plain_cases[0]); i++) {
		const struct plain_case *t = &plain_cases[i];
		char user[SASL_USER_MAX + 1], pass[SASL_PASS_MAX + 1];
		int rc;

		memset(user, 'X', sizeof(user));
		memset(pass, 'X', sizeof(pass));
		rc = sasl_plain_parse((const unsigned char *)t->msg, t->len, user, sizeof(user),
		                      pass, sizeof(pass));
		if (rc != t->rc)
			fail_msg("%s: rc %d, want %d", t->name, rc, t->rc);
		assert_string_equal(user, t->user);
		assert_string_equal(pass, t->pass);
	}
}

static void test_plain_lengths(void **state)
{
	unsigned char msg[1024];
	char user[SASL_USER_MAX + 1], pass[SASL_PASS_MAX + 1], small[8];
	size_t n;

	(void)state;
	/* 255-octet login and password: taken */
	n = 0;
	msg[n++] = '\0';
	memset(msg + n, 'u', SASL_USER_MAX);
	n += SASL_USER_MAX;
	msg[n++] = '\0';
	memset(msg + n, 'p', SASL_PASS_MAX);
	n += SASL_PASS_MAX;
	assert_int_equal(sasl_plain_parse(msg, n, user, sizeof(user), pass, sizeof(pass)), 0);
	assert_int_equal(strlen(user), SASL_USER_MAX);
	assert_int_equal(strlen(pass), SASL_PASS_MAX);

	/* 256-octet password */
	msg[n++] = 'p';
	assert_int_equal(sasl_plain_parse(msg, n, user, sizeof(user), pass, sizeof(pass)), -1);
	assert_string_equal(pass, "");

	/* 256-octet login */
	n = 0;
	msg[n++] = '\0';
	memset(msg + n, 'u', SASL_USER_MAX + 1);
	n += SASL_USER_MAX + 1;
	msg[n++] = '\0';
	msg[n++] = 'p';
	assert_int_equal(sasl_plain_parse(msg, n, user, sizeof(user), pass, sizeof(pass)), -1);

	/* caller's buffers smaller than the parts */
	assert_int_equal(sasl_plain_parse((const unsigned char *)"\0username\0pw", 12, small,
	                                  sizeof(small), pass, sizeof(pass)),
	                 -1);
	assert_int_equal(sasl_plain_parse((const unsigned char *)"\0user\0password", 14, user,
	                                  sizeof(user), small, sizeof(small)),
	                 -1);
	assert_int_equal(sasl_plain_parse((const unsigned char *)"\0user\0passwor", 13, user,
	                                  sizeof(user), small, sizeof(small)),
	                 0);
	assert_string_equal(small, "passwor");

	/* over SASL_MSG_MAX as a whole */
	{
		static unsigned char big[SASL_MSG_MAX + 2];

		memset(big, 'a', sizeof(big));
		big[0] = '\0';
		big[5] = '\0';
		assert_int_equal(
		    sasl_plain_parse(big, sizeof(big), user, sizeof(user), pass, sizeof(pass)), -1);
	}
	/* NULL and zero sizes */
	assert_int_equal(sasl_plain_parse(NULL, 5, user, sizeof(user), pass, sizeof(pass)), -1);
	assert_int_equal(sasl_plain_parse(msg, n, NULL, 0, pass, sizeof(pass)), -1);
	assert_int_equal(sasl_plain_parse(msg, n, user, sizeof(user), pass, 0), -1);
}

/* The whole path a client's line takes: base64, then PLAIN. */
static void test_plain_via_b64(void **state)
{
	unsigned char msg[SASL_MSG_MAX];
	char user[SASL_USER_MAX + 1], pass[SASL_PASS_MAX + 1];
	size_t n;

	(void)state;
	assert_int_equal(sasl_b64_decode(S("AHRlc3QAdGVzdHBhc3M="), msg, sizeof(msg), &n), 0);
	assert_int_equal(sasl_plain_parse(msg, n, user, sizeof(user), pass, sizeof(pass)), 0);
	assert_string_equal(user, "test");
	assert_string_equal(pass, "testpass");
	/* same with "dGVzdA" authzid = test */
	assert_int_equal(sasl_b64_decode(S("dGVzdAB0ZXN0AHRlc3RwYXNz"), msg, sizeof(msg), &n), 0);
	assert_int_equal(sasl_plain_parse(msg, n, user, sizeof(user), pass, sizeof(pass)), 0);
	assert_string_equal(user, "test");
	assert_string_equal(pass, "testpass");
	/* unpadded (some clients get it wrong): refused, not guessed at */
	assert_int_equal(sasl_b64_decode(S("AHRlc3QAdGVzdHBhc3M"), msg, sizeof(msg), &n), -1);
}

/* ---- LOGIN ---------------------------------------------------------------------------- */

static void test_login(void **state)
{
	char out[SASL_PASS_MAX + 1], small[4];

	(void)state;
	assert_int_equal(sasl_login_decode(S(SASL_LOGIN_PROMPT_USER), out, sizeof(out)), 0);
	assert_string_equal(out, "Username:");
	assert_int_equal(sasl_login_decode(S(SASL_LOGIN_PROMPT_PASS), out, sizeof(out)), 0);
	assert_string_equal(out, "Password:");
	assert_int_equal(sasl_login_decode(S("dXNlcg=="), out, sizeof(out)), 0);
	assert_string_equal(out, "user");
	assert_true(sasl_name_valid((const unsigned char *)out, strlen(out)));

	assert_int_equal(sasl_login_decode(S(""), out, sizeof(out)), -1); /* empty */
	assert_string_equal(out, "");
	assert_int_equal(sasl_login_decode(S("AA=="), out, sizeof(out)), -1);     /* NUL */
	assert_int_equal(sasl_login_decode(S("dXMAcg=="), out, sizeof(out)), -1); /* NUL */
	assert_int_equal(sasl_login_decode(S("dXNlcg"), out, sizeof(out)), -1);
	assert_int_equal(sasl_login_decode(S("dXNlcg==\r\n"), out, sizeof(out)), -1);
	assert_int_equal(sasl_login_decode(S("dXNlcg=="), small, sizeof(small)), -1);
	assert_string_equal(small, "");
	assert_int_equal(sasl_login_decode(S("dXNl"), small, sizeof(small)), 0);
	assert_string_equal(small, "use");
	assert_int_equal(sasl_login_decode(NULL, 4, out, sizeof(out)), -1);
	assert_int_equal(sasl_login_decode(S("dXNl"), NULL, 0), -1);

	assert_false(sasl_name_valid((const unsigned char *)"a\nb", 3));
	assert_false(sasl_name_valid((const unsigned char *)"\xf5\x80\x80\x80", 4));
	assert_true(sasl_name_valid((const unsigned char *)"\xf0\x9f\x93\xa7", 4));
}

/* ---- cancel --------------------------------------------------------------------------- */

static void test_cancel(void **state)
{
	(void)state;
	assert_true(sasl_is_cancel("*", 1));
	assert_true(sasl_is_cancel("*junk", 1)); /* only len counts */
	assert_false(sasl_is_cancel("*", 0));
	assert_false(sasl_is_cancel("", 0));
	assert_false(sasl_is_cancel("**", 2));
	assert_false(sasl_is_cancel("* ", 2));
	assert_false(sasl_is_cancel(" *", 2));
	assert_false(sasl_is_cancel("*\r\n", 3));
	assert_false(sasl_is_cancel("=", 1));
	assert_false(sasl_is_cancel("Kg==", 4)); /* base64 of "*" is not a cancel */
	assert_false(sasl_is_cancel(NULL, 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_b64_vectors),   cmocka_unit_test(test_b64_rfc4616_example),
	    cmocka_unit_test(test_b64_strict),    cmocka_unit_test(test_b64_embedded_nul),
	    cmocka_unit_test(test_b64_caps),      cmocka_unit_test(test_b64_roundtrip),
	    cmocka_unit_test(test_plain_table),   cmocka_unit_test(test_plain_lengths),
	    cmocka_unit_test(test_plain_via_b64), cmocka_unit_test(test_login),
	    cmocka_unit_test(test_cancel),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
