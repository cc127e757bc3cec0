/* Unit tests for src/policy/tlspolicy.c: level and source names, the policy file reader
 * (good files, every error with its exact "path:line: message", limits) and the decision
 * (exact, ".suffix", longest suffix, case, trailing dot, message minimum). Policy files are
 * written to mkstemp files under /tmp. Runs in the test binary only. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy/tlspolicy.h"

/* Writes n bytes to a new temp file; its path goes to path (size >= 64). */
static void write_file(char *path, const char *data, size_t n)
{
	snprintf(path, 64, "/tmp/sealmail-tlspol-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
}

/* Loads text as a policy file; err gets the message (and the file is removed). */
static struct tls_policy_map *load_text(const char *text, char *path, char *err, size_t errsz)
{
	write_file(path, text, strlen(text));
	err[0] = '\0';
	struct tls_policy_map *m = tls_policy_load(path, err, errsz);
	unlink(path);
	return m;
}

static void test_level_names(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		int ok;
		enum tls_level lev;
	} t[] = {
	    {"none", 1, TLS_LEVEL_NONE},
	    {"may", 1, TLS_LEVEL_MAY},
	    {"encrypt", 1, TLS_LEVEL_ENCRYPT},
	    {"verify", 1, TLS_LEVEL_VERIFY},
	    {"VERIFY", 1, TLS_LEVEL_VERIFY},
	    {"Encrypt", 1, TLS_LEVEL_ENCRYPT},
	    {"", 0, 0},
	    {"dane", 0, 0},
	    {"verify ", 0, 0},
	    {"secure", 0, 0},
	    {"mayy", 0, 0},
	    {"non", 0, 0},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		enum tls_level l = (enum tls_level)99;
		int r = tls_level_parse(t[i].s, &l);
		assert_int_equal(r, t[i].ok ? 0 : -1);
		if (t[i].ok) {
			assert_int_equal(l, t[i].lev);
			assert_string_equal(tls_level_name(l), t[i].s[0] == 'V'   ? "verify"
			                                       : t[i].s[0] == 'E' ? "encrypt"
			                                                          : t[i].s);
		} else {
			assert_int_equal(l, 99); /* untouched on failure */
		}
	}
	assert_int_equal(tls_level_parse(NULL, NULL), -1);
	assert_string_equal(tls_level_name((enum tls_level)42), "unknown");
	/* the order the decision relies on */
	assert_true(TLS_LEVEL_NONE < TLS_LEVEL_MAY && TLS_LEVEL_MAY < TLS_LEVEL_ENCRYPT &&
	            TLS_LEVEL_ENCRYPT < TLS_LEVEL_VERIFY);
}

static void test_source_names(void **state)
{
	(void)state;
	assert_string_equal(tls_policy_source_name(TLS_SRC_DEFAULT), "default");
	assert_string_equal(tls_policy_source_name(TLS_SRC_DOMAIN), "domain");
	assert_string_equal(tls_policy_source_name(TLS_SRC_MESSAGE), "message");
	assert_string_equal(tls_policy_source_name(TLS_SRC_RELAYHOST), "relayhost");
	assert_string_equal(tls_policy_source_name((enum tls_policy_source)9), "unknown");
}

static void test_empty_files(void **state)
{
	(void)state;
	static const char *const texts[] = {
	    "", "\n", "# only a comment\n", "   \n\t\n# x\n\r\n", "# no newline at end",
	};
	char path[64], err[512];
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct tls_policy_map *m = load_text(texts[i], path, err, sizeof(err));
		assert_non_null(m);
		assert_int_equal(tls_policy_count(m), 0);
		enum tls_policy_source src = TLS_SRC_DOMAIN;
		assert_int_equal(
		    tls_policy_decide(m, TLS_LEVEL_MAY, "example.com", TLS_LEVEL_NONE, &src),
		    TLS_LEVEL_MAY);
		assert_int_equal(src, TLS_SRC_DEFAULT);
		tls_policy_free(m);
	}
	assert_int_equal(tls_policy_count(NULL), 0);
	tls_policy_free(NULL);
}

static void test_good_file(void **state)
{
	(void)state;
	const char *text = "# outbound TLS policy\n"
	                   "example.com verify\n"
	                   "\n"
	                   ".example.com\tencrypt   # every subdomain\n"
	                   "  .Sub.Example.COM   may\r\n"
	                   "other.org. NONE\n"
	                   ".org may\n"
	                   "xn--bcher-kva.example VERIFY\n"
	                   "a.b-c.d1 may\n"
	                   "last.example encrypt"; /* no final newline */
	char path[64], err[512];
	struct tls_policy_map *m = load_text(text, path, err, sizeof(err));
	assert_non_null(m);
	assert_string_equal(err, "");
	assert_int_equal(tls_policy_count(m), 8);
	tls_policy_free(m);
}

static void test_missing_file(void **state)
{
	(void)state;
	char err[512];
	assert_null(tls_policy_load("/nonexistent/sealmail/tls_policy", err, sizeof(err)));
	assert_string_equal(err, "/nonexistent/sealmail/tls_policy: No such file or directory");
}

static void test_bad_lines(void **state)
{
	(void)state;
	char label63[64], label64[65], long_dom[300], long_line[1100], max_line[1100];
	memset(label63, 'a', 63);
	label63[63] = '\0';
	memset(label64, 'a', 64);
	label64[64] = '\0';
	/* 4 labels of 63 + 3 dots = 255: allowed; one more label is too long */
	snprintf(long_dom, sizeof(long_dom), "%s.%s.%s.%s.b verify\n", label63, label63, label63,
	         label63);
	memset(long_line, 'x', 1025);
	long_line[0] = '#';
	long_line[1025] = '\0';
	memset(max_line, 'x', 1024);
	max_line[0] = '#';
	max_line[1024] = '\0';

	char buf1[200], buf2[200], buf3[400], buf4[1200], buf5[1200], buf6[1200];
	snprintf(buf1, sizeof(buf1), "%s.example verify\n", label63);
	snprintf(buf2, sizeof(buf2), "ok.example may\n%s.example verify\n", label64);
	snprintf(buf3, sizeof(buf3), "%s.%s.%s.%s verify\n", label63, label63, label63, label63);
	snprintf(buf4, sizeof(buf4), "a.example may\n\n%s\nb.example may\n", long_line);
	snprintf(buf5, sizeof(buf5), "%s\r\nb.example may\n", max_line);
	snprintf(buf6, sizeof(buf6), "%s\nb.example may\n", max_line);

	static const char bad_dom[] =
	    "bad domain \"%s\" (LDH labels of 1-63 characters, at most "
	    "255 in all; a leading '.' means subdomains; IDNs in xn-- form)";
	struct {
		const char *text;
		int line;        /* 0: loads fine */
		const char *msg; /* printf format with one %s (arg) or plain */
		const char *arg;
	} t[] = {
	    {"example.com\n", 1,
	     "missing TLS level after \"example.com\" (none, may, encrypt or verify)", NULL},
	    {"# c\nExample.COM.   # no level\n", 2,
	     "missing TLS level after \"example.com\" (none, may, encrypt or verify)", NULL},
	    {"a.example may\nexample.com dane\n", 2,
	     "unknown TLS level \"dane\" (none, may, encrypt or verify)", NULL},
	    {"example.com verify extra\n", 1, "unexpected text \"extra\" after the TLS level",
	     NULL},
	    {"example.com verify match=x:y\n", 1,
	     "unexpected text \"match=x:y\" after the TLS level", NULL},
	    {"exa_mple.com verify\n", 1, bad_dom, "exa_mple.com"},
	    {"-a.example verify\n", 1, bad_dom, "-a.example"},
	    {"a-.example verify\n", 1, bad_dom, "a-.example"},
	    {"a..example verify\n", 1, bad_dom, "a..example"},
	    {". verify\n", 1, bad_dom, "."},
	    {".. verify\n", 1, bad_dom, ".."},
	    {"..example verify\n", 1, bad_dom, "..example"},
	    {"example.com.. verify\n", 1, bad_dom, "example.com.."},
	    {"[192.0.2.1] verify\n", 1, bad_dom, "[192.0.2.1]"},
	    {"b\xc3\xbc"
	     "cher.example verify\n",
	     1, bad_dom, "b??cher.example"},
	    {"a\"b.example verify\n", 1, bad_dom, "a?b.example"},
	    {buf1, 0, NULL, NULL},
	    {buf2, 2, NULL, NULL}, /* label of 64: checked below */
	    {buf3, 0, NULL, NULL},
	    {long_dom, 1, NULL, NULL},
	    {buf4, 3, "line longer than 1024 bytes", NULL},
	    {buf5, 0, NULL, NULL},
	    {buf6, 0, NULL, NULL},
	    {"a.example may\nb.example verify\nA.EXAMPLE. encrypt\n", 3,
	     "duplicate entry for \"a.example\" (first on line 1)", NULL},
	    {".a.example may\na.example verify\n", 0, NULL, NULL},
	    /* the first problem in file order is reported, duplicate or syntax */
	    {"a.example may\na.example may\nbad_ verify\n", 2,
	     "duplicate entry for \"a.example\" (first on line 1)", NULL},
	    {"x.example may\nbad_ verify\nx.example may\n", 2, bad_dom, "bad_"},
	    {"c.example may\nd.example may\nd.example may\nc.example may\n", 3,
	     "duplicate entry for \"d.example\" (first on line 2)", NULL},
	};
	char path[64], err[512], want[1024], fmtbuf[600];
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct tls_policy_map *m = load_text(t[i].text, path, err, sizeof(err));
		if (t[i].line == 0) {
			if (m == NULL)
				fail_msg("case %zu: unexpected error: %s", i, err);
			tls_policy_free(m);
			continue;
		}
		if (m != NULL)
			fail_msg("case %zu: loaded, expected an error on line %d", i, t[i].line);
		if (t[i].msg == NULL) {
			/* a label of 64 / a name of 257: just the line and the kind */
			snprintf(want, sizeof(want), "%s:%d: bad domain \"", path, t[i].line);
			assert_memory_equal(err, want, strlen(want));
			continue;
		}
		if (t[i].arg != NULL)
			snprintf(fmtbuf, sizeof(fmtbuf), t[i].msg, t[i].arg);
		else
			snprintf(fmtbuf, sizeof(fmtbuf), "%s", t[i].msg);
		snprintf(want, sizeof(want), "%s:%d: %s", path, t[i].line, fmtbuf);
		if (strcmp(err, want) != 0)
			fail_msg("case %zu:\n got  %s\n want %s", i, err, want);
	}
}

static void test_nul_byte(void **state)
{
	(void)state;
	char path[64], err[512], want[128];
	static const char text[] = "a.example may\nb.exam\0ple may\n";
	write_file(path, text, sizeof(text) - 1);
	assert_null(tls_policy_load(path, err, sizeof(err)));
	unlink(path);
	snprintf(want, sizeof(want), "%s:2: NUL byte in line", path);
	assert_string_equal(err, want);
}

static char *many_entries(int n)
{
	char *s = malloc((size_t)n * 32 + 1);
	size_t o = 0;
	for (int i = 0; i < n; i++)
		o += (size_t)snprintf(s + o, 32, "d%d.example %s\n", i, i % 2 ? "verify" : "may");
	s[o] = '\0';
	return s;
}

static void test_entry_limit(void **state)
{
	(void)state;
	char path[64], err[512], want[128];
	char *text = many_entries(100000);
	struct tls_policy_map *m = load_text(text, path, err, sizeof(err));
	free(text);
	assert_non_null(m);
	assert_int_equal(tls_policy_count(m), 100000);
	enum tls_policy_source src;
	assert_int_equal(
	    tls_policy_decide(m, TLS_LEVEL_NONE, "d77777.example", TLS_LEVEL_NONE, &src),
	    TLS_LEVEL_VERIFY);
	assert_int_equal(src, TLS_SRC_DOMAIN);
	assert_int_equal(tls_policy_decide(m, TLS_LEVEL_NONE, "D0.EXAMPLE", TLS_LEVEL_NONE, &src),
	                 TLS_LEVEL_MAY);
	assert_int_equal(
	    tls_policy_decide(m, TLS_LEVEL_NONE, "d100000.example", TLS_LEVEL_NONE, &src),
	    TLS_LEVEL_NONE);
	assert_int_equal(src, TLS_SRC_DEFAULT);
	tls_policy_free(m);

	text = many_entries(100001);
	m = load_text(text, path, err, sizeof(err));
	free(text);
	assert_null(m);
	snprintf(want, sizeof(want), "%s:100001: more than 100000 entries", path);
	assert_string_equal(err, want);
}

static void test_decide(void **state)
{
	(void)state;
	const char *text = "example.com verify\n"
	                   ".example.com encrypt\n"
	                   ".sub.example.com may\n"
	                   "other.org none\n"
	                   ".org may\n"
	                   ".deep.a.example none\n"
	                   "x.deep.a.example verify\n";
	char path[64], err[512];
	struct tls_policy_map *m = load_text(text, path, err, sizeof(err));
	assert_non_null(m);
	static const struct {
		const char *dom;
		enum tls_level def, msg_min, want;
		enum tls_policy_source src;
	} t[] = {
	    /* exact */
	    {"example.com", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_VERIFY, TLS_SRC_DOMAIN},
	    {"EXAMPLE.Com", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_VERIFY, TLS_SRC_DOMAIN},
	    {"example.com.", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_VERIFY, TLS_SRC_DOMAIN},
	    /* suffix, and the longest suffix wins */
	    {"a.example.com", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_ENCRYPT, TLS_SRC_DOMAIN},
	    {"b.a.example.com", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_ENCRYPT, TLS_SRC_DOMAIN},
	    {"sub.example.com", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_ENCRYPT, TLS_SRC_DOMAIN},
	    {"x.sub.example.com", TLS_LEVEL_VERIFY, TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_SRC_DOMAIN},
	    {"Y.X.SUB.example.com.", TLS_LEVEL_VERIFY, TLS_LEVEL_NONE, TLS_LEVEL_MAY,
	     TLS_SRC_DOMAIN},
	    /* exact beats a suffix, even a longer one is not involved */
	    {"x.deep.a.example", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_VERIFY, TLS_SRC_DOMAIN},
	    {"y.deep.a.example", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_NONE, TLS_SRC_DOMAIN},
	    {"z.x.deep.a.example", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_NONE, TLS_SRC_DOMAIN},
	    {"deep.a.example", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_SRC_DEFAULT},
	    {"other.org", TLS_LEVEL_VERIFY, TLS_LEVEL_NONE, TLS_LEVEL_NONE, TLS_SRC_DOMAIN},
	    {"x.other.org", TLS_LEVEL_VERIFY, TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_SRC_DOMAIN},
	    {"org", TLS_LEVEL_ENCRYPT, TLS_LEVEL_NONE, TLS_LEVEL_ENCRYPT, TLS_SRC_DEFAULT},
	    /* no match: not a label boundary, other names, not domains at all */
	    {"notexample.com", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_SRC_DEFAULT},
	    {"example.com.evil", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_SRC_DEFAULT},
	    {"com", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_SRC_DEFAULT},
	    {"[192.0.2.1]", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_SRC_DEFAULT},
	    {"", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_SRC_DEFAULT},
	    {".", TLS_LEVEL_MAY, TLS_LEVEL_NONE, TLS_LEVEL_MAY, TLS_SRC_DEFAULT},
	    /* the message can only raise the level; it is the source only when it did */
	    {"other.org", TLS_LEVEL_VERIFY, TLS_LEVEL_ENCRYPT, TLS_LEVEL_ENCRYPT, TLS_SRC_MESSAGE},
	    {"example.com", TLS_LEVEL_NONE, TLS_LEVEL_ENCRYPT, TLS_LEVEL_VERIFY, TLS_SRC_DOMAIN},
	    {"example.com", TLS_LEVEL_NONE, TLS_LEVEL_VERIFY, TLS_LEVEL_VERIFY, TLS_SRC_DOMAIN},
	    {"nomatch.net", TLS_LEVEL_MAY, TLS_LEVEL_MAY, TLS_LEVEL_MAY, TLS_SRC_DEFAULT},
	    {"nomatch.net", TLS_LEVEL_MAY, TLS_LEVEL_VERIFY, TLS_LEVEL_VERIFY, TLS_SRC_MESSAGE},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		enum tls_policy_source src = (enum tls_policy_source)77;
		enum tls_level got = tls_policy_decide(m, t[i].def, t[i].dom, t[i].msg_min, &src);
		if (got != t[i].want || src != t[i].src)
			fail_msg("case %zu (%s): got %s/%s want %s/%s", i, t[i].dom,
			         tls_level_name(got), tls_policy_source_name(src),
			         tls_level_name(t[i].want), tls_policy_source_name(t[i].src));
	}
	/* an over-long name matches nothing and does not overflow anything */
	char huge[600];
	memset(huge, 'a', sizeof(huge) - 13);
	memcpy(huge + sizeof(huge) - 13, ".example.com", 13);
	enum tls_policy_source src;
	assert_int_equal(tls_policy_decide(m, TLS_LEVEL_MAY, huge, TLS_LEVEL_NONE, &src),
	                 TLS_LEVEL_MAY);
	assert_int_equal(src, TLS_SRC_DEFAULT);
	/* src may be NULL */
	assert_int_equal(tls_policy_decide(m, TLS_LEVEL_MAY, "example.com", TLS_LEVEL_NONE, NULL),
	                 TLS_LEVEL_VERIFY);
	tls_policy_free(m);

	/* no file at all */
	assert_int_equal(
	    tls_policy_decide(NULL, TLS_LEVEL_ENCRYPT, "example.com", TLS_LEVEL_MAY, &src),
	    TLS_LEVEL_ENCRYPT);
	assert_int_equal(src, TLS_SRC_DEFAULT);
	assert_int_equal(tls_policy_decide(NULL, TLS_LEVEL_MAY, NULL, TLS_LEVEL_VERIFY, &src),
	                 TLS_LEVEL_VERIFY);
	assert_int_equal(src, TLS_SRC_MESSAGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_level_names),  cmocka_unit_test(test_source_names),
	    cmocka_unit_test(test_empty_files),  cmocka_unit_test(test_good_file),
	    cmocka_unit_test(test_missing_file), cmocka_unit_test(test_bad_lines),
	    cmocka_unit_test(test_nul_byte),     cmocka_unit_test(test_entry_limit),
	    cmocka_unit_test(test_decide),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
