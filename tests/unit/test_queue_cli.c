/* Unit tests for src/cli/queue_print.c: field unescaping, JSON and terminal escaping, and
 * the tables and JSON `sealmail queue` prints for list/show/actions replies, plus the
 * strict checks on malformed replies (nothing printed, EX_PROTOCOL). No sockets. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "cli/queue_cli_int.h"

/* 2026-11-29 22:10:05 UTC */
#define T0 1795990205LL
#define T0S "1795990205"

struct cap {
	char *buf;
	size_t len;
	FILE *f;
};

static void cap_open(struct cap *c)
{
	c->buf = NULL;
	c->len = 0;
	c->f = open_memstream(&c->buf, &c->len);
	assert_non_null(c->f);
}

static const char *cap_close(struct cap *c)
{
	fclose(c->f);
	return c->buf;
}

static char *json_of(const char *s)
{
	static struct cap c;
	free(c.buf);
	cap_open(&c);
	qcli_json_str(c.f, s);
	return (char *)cap_close(&c);
}

static char *term_of(const char *s, size_t maxcols)
{
	static struct cap c;
	free(c.buf);
	cap_open(&c);
	qcli_term_str(c.f, s, maxcols);
	return (char *)cap_close(&c);
}

/* Runs qcli_print on a copy of reply; *out gets what was printed (caller frees). */
static int run_w(enum qcli_cmd cmd, bool json, const char *reply, size_t width, char **out)
{
	struct cap c;
	size_t n = strlen(reply);
	char *buf = malloc(n + 1);
	assert_non_null(buf);
	memcpy(buf, reply, n + 1);
	cap_open(&c);
	int rc = qcli_print(c.f, cmd, json, buf, n, (time_t)T0, width);
	*out = (char *)cap_close(&c);
	free(buf);
	return rc;
}

static int run(enum qcli_cmd cmd, bool json, const char *reply, char **out)
{
	return run_w(cmd, json, reply, QCLI_TABLE_WIDTH, out);
}

static void expect_w(enum qcli_cmd cmd, bool json, const char *reply, size_t width,
                     const char *want)
{
	char *got;
	assert_int_equal(run_w(cmd, json, reply, width, &got), 0);
	if (strcmp(got, want) != 0)
		fail_msg("got:\n%s\nwant:\n%s", got, want);
	free(got);
}

static void expect(enum qcli_cmd cmd, bool json, const char *reply, const char *want)
{
	expect_w(cmd, json, reply, QCLI_TABLE_WIDTH, want);
}

static void expect_bad(enum qcli_cmd cmd, const char *reply)
{
	char *got;
	assert_int_equal(run(cmd, false, reply, &got), EX_PROTOCOL);
	assert_string_equal(got, "");
	free(got);
}

/* ---- escaping ---- */

static void test_unescape(void **state)
{
	static const struct {
		const char *in, *out;
	} ok[] = {
	    {"plain", "plain"},
	    {"", ""},
	    {"a\\tb", "a\tb"},
	    {"\\\\", "\\"},
	    {"\\n\\r\\t\\\\x", "\n\r\t\\x"},
	    {"\\\\t", "\\t"},
	};
	static const char *const bad[] = {"\\", "a\\", "\\x", "\\0", "\\\\\\"};
	char b[64];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(b, sizeof(b), "%s", ok[i].in);
		assert_int_equal(qcli_unescape(b), 0);
		assert_string_equal(b, ok[i].out);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(b, sizeof(b), "%s", bad[i]);
		assert_int_equal(qcli_unescape(b), -1);
	}
}

static void test_json_str(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    {"", "\"\""},
	    {"abc", "\"abc\""},
	    {"a\"b\\c", "\"a\\\"b\\\\c\""},
	    {"\n\t\r", "\"\\n\\t\\r\""},
	    {"\x01\x1f\x7f", "\"\\u0001\\u001f\\u007f\""},
	    {"b\xc3\xbc"
	     "cher \xe2\x82\xac \xf0\x9f\x93\xa7",
	     "\"b\xc3\xbc"
	     "cher \xe2\x82\xac \xf0\x9f\x93\xa7\""},
	    {"\xff", "\"\\u00ff\""},
	    {"x\xc3", "\"x\\u00c3\""},                                /* cut sequence */
	    {"\xc0\xaf", "\"\\u00c0\\u00af\""},                       /* overlong '/' */
	    {"\xed\xa0\x80", "\"\\u00ed\\u00a0\\u0080\""},            /* surrogate */
	    {"\xf4\x90\x80\x80", "\"\\u00f4\\u0090\\u0080\\u0080\""}, /* above U+10FFFF */
	    {"\xc3\x28", "\"\\u00c3(\""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_string_equal(json_of(cases[i].in), cases[i].out);
}

static void test_term_str(void **state)
{
	assert_string_equal(term_of("hello", SIZE_MAX), "hello");
	assert_string_equal(term_of("a\x1b[31mred\r\n", SIZE_MAX), "a?[31mred??");
	assert_string_equal(term_of("\x7f", SIZE_MAX), "?");
	/* U+009B (CSI as a C1 control) and invalid bytes are replaced; real text kept */
	assert_string_equal(term_of("\xc2\x9b"
	                            "2J",
	                            SIZE_MAX),
	                    "?2J");
	assert_string_equal(term_of("\xff\xfe", SIZE_MAX), "??");
	assert_string_equal(term_of("m\xc3\xbcller", SIZE_MAX), "m\xc3\xbcller");
	/* cut to width, counting characters, not bytes */
	assert_string_equal(term_of("abcdefghij", 10), "abcdefghij");
	assert_string_equal(term_of("abcdefghijk", 10), "abcdefg...");
	assert_string_equal(term_of("\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc\xc3\xbc", 4), "\xc3\xbc...");
	assert_string_equal(term_of("abcdef", 2), "ab");
}

/* ---- list ---- */

#define M1                                                                                         \
	"M\t01JD3K7Q9X4M2B7C\t" T0S "\t1234\talice@example.com\t3\t1\twaiting\t2\t1795990445"      \
	"\t451 4.7.1 Try again later\n"
#define M2 "M\t01JD3K8A00000000\t1795989600\t98765\t\t1\t1\tactive\t0\t0\t\n"
#define M3                                                                                         \
	"M\t01JD3K8B00000001\t1795983600\t5\tbob@example.net\t2\t2\theld\t5\t0"                    \
	"\tconnect to mx.example.net[192.0.2.1]:25: Connection refused\n"

#define LIST_HEAD                                                                                  \
	"ID                Arrival (UTC)         Size  State                    Sender           " \
	"  "                                                                                       \
	"Pending  Reason\n"
#define LIST_ROW1                                                                                  \
	"01JD3K7Q9X4M2B7C  2026-11-29 22:10:05   1234  waiting, next try in 4m  "                  \
	"alice@example.com      1/3  "
#define LIST_ROW2                                                                                  \
	"01JD3K8A00000000  2026-11-29 22:00:00  98765  active                   "                  \
	"<>                     1/1\n"
#define LIST_ROW3                                                                                  \
	"01JD3K8B00000001  2026-11-29 20:20:00      5  held                     "                  \
	"bob@example.net        2/2  "

static void test_list_text(void **state)
{
	/* a terminal 140 wide: rows stop there */
	expect_w(QCLI_LIST, false, M1 M2 M3, 140,
	         LIST_HEAD LIST_ROW1 "451 4.7.1 Try again later\n" LIST_ROW2 LIST_ROW3
	                             "connect to mx.example.net[192.0.2.1]:2...\n"
	                             "-- 3 messages in the queue\n");
	/* 120 wide: the reason keeps its 20 characters (and the cut marker) */
	expect_w(QCLI_LIST, false, M1 M2 M3, 120,
	         LIST_HEAD LIST_ROW1 "451 4.7.1 Try agai...\n" LIST_ROW2 LIST_ROW3
	                             "connect to mx.exam...\n"
	                             "-- 3 messages in the queue\n");
	/* a pipe: never cut */
	expect_w(QCLI_LIST, false, M1 M2 M3, 0,
	         LIST_HEAD LIST_ROW1 "451 4.7.1 Try again later\n" LIST_ROW2 LIST_ROW3
	                             "connect to mx.example.net[192.0.2.1]:25: Connection refused\n"
	                             "-- 3 messages in the queue\n");
}

static void test_list_text_one_and_empty(void **state)
{
	char *got;
	assert_int_equal(run(QCLI_LIST, false, M2, &got), 0);
	assert_non_null(strstr(got, "-- 1 message in the queue\n"));
	free(got);
	expect(QCLI_LIST, false, "", "Mail queue is empty\n");
}

/* A hostile reason cannot move the cursor, and a long sender is cut. */
static void test_list_text_sanitized(void **state)
{
	char *got;
	assert_int_equal(run(QCLI_LIST, false,
	                     "M\t01JD3K7Q9X4M2B7C\t" T0S "\t1\t"
	                     "a-very-long-local-part-that-goes-on@a-very-long-domain.example\t1\t1"
	                     "\twaiting\t1\t0\tevil\\r\x1b[2Jreply\n",
	                     &got),
	                 0);
	assert_null(strchr(got, '\x1b'));
	assert_null(strchr(got, '\r'));
	assert_non_null(strstr(got, "a-very-long-local-part-that-goes-on@a..."));
	assert_non_null(strstr(got, "waiting, due now"));
	assert_non_null(strstr(got, "evil??[2Jreply"));
	free(got);
}

static void test_list_json(void **state)
{
	expect(QCLI_LIST, true, M1 M2,
	       "{\"messages\":[{\"id\":\"01JD3K7Q9X4M2B7C\",\"arrival\":\"2026-11-29T22:10:05Z\","
	       "\"size\":1234,\"from\":\"alice@example.com\",\"recipients\":3,\"pending\":1,"
	       "\"state\":\"waiting\",\"attempts\":2,\"next_try\":\"2026-11-29T22:14:05Z\","
	       "\"reason\":\"451 4.7.1 Try again later\"},"
	       "{\"id\":\"01JD3K8A00000000\",\"arrival\":\"2026-11-29T22:00:00Z\",\"size\":98765,"
	       "\"from\":\"\",\"recipients\":1,\"pending\":1,\"state\":\"active\",\"attempts\":0,"
	       "\"next_try\":null,\"reason\":\"\"}]}\n");
	expect(QCLI_LIST, true, "", "{\"messages\":[]}\n");
}

/* ---- show ---- */

#define R0 "R\t01JD3K7Q9X4M2B7C\t0\tbob@example.org\tpending\n"
#define R1 "R\t01JD3K7Q9X4M2B7C\t1\tcarol@example.org\tdone\n"
#define A1                                                                                         \
	"A\t01JD3K7Q9X4M2B7C\t0\tbob@example.org\t1795990206.250\tdeferred"                        \
	"\tmx1.example.org\t198.51.100.7\t25\t451\t4.7.1\t451 4.7.1 Try again later\t"             \
	"\tRCPT TO\tverify\tdomain\tTLSv1.3\tTLS_AES_256_GCM_SHA384\tverified\t\tsecure"           \
	"\t0\t1\t1.210\n"
#define A2                                                                                         \
	"A\t01JD3K7Q9X4M2B7C\t1\tcarol@example.org\t1795990207.000\tsent"                          \
	"\tmx2.example.org\t2001:db8::25\t25\t250\t2.0.0\t250 2.0.0 Ok\\tqueued"                   \
	"\tTLS handshake failed: unverified certificate\tend of data\tmay\tdefault\t\t"            \
	"\tunverified\tself-signed \"certificate\"\tinsecure\t1\t1\t2.000\n"
#define A3                                                                                         \
	"A\t01JD3K7Q9X4M2B7C\t0\tbob@example.org\t1795990300.999\tdeferred"                        \
	"\t\t\t0\t0\t\t\tHost not found: example.org\tconnect\t\t\t\t\tnone\t\t\t0\t2\t95.999\n"

static void test_show_text(void **state)
{
	expect(
	    QCLI_SHOW, false, M1 R0 R1 A1 A2 A3,
	    "Message 01JD3K7Q9X4M2B7C\n"
	    "  arrival:     2026-11-29 22:10:05 UTC\n"
	    "  from:        <alice@example.com>\n"
	    "  size:        1234 bytes\n"
	    "  state:       waiting, next try in 4m\n"
	    "  attempts:    2\n"
	    "  next try:    2026-11-29 22:14:05 UTC\n"
	    "  last reason: 451 4.7.1 Try again later\n"
	    "  recipients:  3 (1 pending)\n"
	    "Recipients:\n"
	    "    0  pending  <bob@example.org>\n"
	    "    1  done     <carol@example.org>\n"
	    "History:\n"
	    "  2026-11-29 22:10:06 to=<bob@example.org>, relay=mx1.example.org[198.51.100.7]:25,"
	    " delay=1.21, dsn=4.7.1, status=deferred, tls=verify(domain), tls_version=TLSv1.3,"
	    " tls_cipher=TLS_AES_256_GCM_SHA384, cert=verified, dnssec=secure, attempt=1"
	    " (451 4.7.1 Try again later (in reply to RCPT TO))\n"
	    "  2026-11-29 22:10:07 to=<carol@example.org>, relay=mx2.example.org[2001:db8::25]:25,"
	    " delay=2.00, dsn=2.0.0, status=sent, tls=may(default), cert=unverified,"
	    " cert_error=\"self-signed \"certificate\"\", dnssec=insecure, fallback to plaintext,"
	    " attempt=1 (250 2.0.0 Ok?queued (in reply to end of data); TLS handshake failed:"
	    " unverified certificate)\n"
	    "  2026-11-29 22:11:40 to=<bob@example.org>, relay=none, delay=96.00,"
	    " status=deferred, attempt=2 (Host not found: example.org)\n");
}

static void test_show_text_no_history(void **state)
{
	expect(QCLI_SHOW, false, M2,
	       "Message 01JD3K8A00000000\n"
	       "  arrival:     2026-11-29 22:00:00 UTC\n"
	       "  from:        <>\n"
	       "  size:        98765 bytes\n"
	       "  state:       active\n"
	       "  attempts:    0\n"
	       "  recipients:  1 (1 pending)\n"
	       "History: no delivery attempts yet\n");
}

static void test_show_json(void **state)
{
	expect(
	    QCLI_SHOW, true, M1 R0 A2,
	    "{\"id\":\"01JD3K7Q9X4M2B7C\",\"arrival\":\"2026-11-29T22:10:05Z\",\"size\":1234,"
	    "\"from\":\"alice@example.com\",\"pending\":1,\"state\":\"waiting\",\"rounds\":2,"
	    "\"next_try\":\"2026-11-29T22:14:05Z\",\"reason\":\"451 4.7.1 Try again later\","
	    "\"recipients\":[{\"index\":0,\"address\":\"bob@example.org\",\"state\":\"pending\"}],"
	    "\"attempts\":[{\"qid\":\"01JD3K7Q9X4M2B7C\",\"rcpt\":1,"
	    "\"rcpt_addr\":\"carol@example.org\",\"time\":\"2026-11-29T22:10:07.000Z\","
	    "\"status\":\"sent\",\"mx\":\"mx2.example.org\",\"ip\":\"2001:db8::25\",\"port\":25,"
	    "\"code\":250,\"enh\":\"2.0.0\",\"reply\":\"250 2.0.0 Ok\\tqueued\","
	    "\"reason\":\"TLS handshake failed: unverified certificate\","
	    "\"stage\":\"end of data\",\"tls_policy\":\"may\",\"policy_source\":\"default\","
	    "\"tls_version\":\"\",\"tls_cipher\":\"\",\"cert\":\"unverified\","
	    "\"cert_error\":\"self-signed \\\"certificate\\\"\",\"dnssec\":\"insecure\","
	    "\"fallback\":true,\"attempt_no\":1,\"delay\":2.000}]}\n");
	expect(QCLI_SHOW, true, M2,
	       "{\"id\":\"01JD3K8A00000000\",\"arrival\":\"2026-11-29T22:00:00Z\",\"size\":98765,"
	       "\"from\":\"\",\"pending\":1,\"state\":\"active\",\"rounds\":0,\"next_try\":null,"
	       "\"reason\":\"\",\"recipients\":[],\"attempts\":[]}\n");
}

/* Milliseconds round to the nearest and carry into the second. */
static void test_show_json_time_ms(void **state)
{
	char *got;
	assert_int_equal(run(QCLI_SHOW, true,
	                     M2
	                     "A\tQ\t0\ta\t1795990205.9996\ts\t\t\t0\t0\t\t\t\t\t\t\t\t\t\t\t\t0\t1"
	                     "\t0.5\n",
	                     &got),
	                 0);
	assert_non_null(strstr(got, "\"time\":\"2026-11-29T22:10:06.000Z\""));
	assert_non_null(strstr(got, "\"delay\":0.500"));
	free(got);
}

/* ---- actions ---- */

static void test_actions(void **state)
{
	const char *reply = "C\t01JD3K7Q9X4M2B7C\theld\nC\t01JD3K8A00000000\theld\n";
	expect(QCLI_HOLD, false, reply,
	       "01JD3K7Q9X4M2B7C: held\n01JD3K8A00000000: held\n2 messages held\n");
	expect(QCLI_HOLD, true, reply,
	       "{\"done\":[{\"id\":\"01JD3K7Q9X4M2B7C\",\"action\":\"held\"},"
	       "{\"id\":\"01JD3K8A00000000\",\"action\":\"held\"}]}\n");
	expect(QCLI_DELETE, false, "C\t01JD3K7Q9X4M2B7C\tdeleted\n",
	       "01JD3K7Q9X4M2B7C: deleted\n1 message deleted\n");
	expect(QCLI_RETRY, false, "", "0 messages queued for retry\n");
	expect(QCLI_RELEASE, true, "", "{\"done\":[]}\n");
}

/* ---- malformed replies ---- */

static void test_malformed(void **state)
{
	expect_bad(QCLI_LIST, "M\t01JD3K7Q9X4M2B7C\n");                   /* too few fields */
	expect_bad(QCLI_LIST, M2 "X\tfoo\n");                             /* unknown kind */
	expect_bad(QCLI_LIST, "MM\tQ\t1\t1\t\t1\t1\tactive\t0\t0\t\n");   /* kind too long */
	expect_bad(QCLI_LIST, "M\tQ\t1\t1\t\t1\t1\tactive\t0\t0\t\t\n");  /* too many */
	expect_bad(QCLI_LIST, "M\tQ\tsoon\t1\t\t1\t1\tactive\t0\t0\t\n"); /* not a number */
	expect_bad(QCLI_LIST, "M\tQ\t\t1\t\t1\t1\tactive\t0\t0\t\n");     /* empty number */
	expect_bad(QCLI_LIST, "M\tQ\t1234567890123456789\t1\t\t1\t1\tactive\t0\t0\t\n");
	expect_bad(QCLI_LIST, "M\tQ\t1\t1\tbad\\escape\t1\t1\tactive\t0\t0\t\n");
	expect_bad(QCLI_LIST, "M\tQ\t1\t1\t\t1\t1\tactive\t0\t0\t"); /* no newline */
	expect_bad(QCLI_LIST, "C\tQ\theld\n");                       /* wrong kind */
	expect_bad(QCLI_HOLD, M2);
	expect_bad(QCLI_SHOW, "");       /* no M */
	expect_bad(QCLI_SHOW, R0 M1);    /* R before M */
	expect_bad(QCLI_SHOW, M1 M2);    /* two M */
	expect_bad(QCLI_SHOW, M1 A1 R0); /* R after A */
	expect_bad(QCLI_SHOW, M1 "C\tQ\theld\n");
	/* decimals: no NaN, infinity or hex */
	expect_bad(QCLI_SHOW, M2 "A\tQ\t0\ta\tnan\ts\t\t\t0\t0\t\t\t\t\t\t\t\t\t\t\t\t0\t1\t0\n");
	expect_bad(QCLI_SHOW, M2 "A\tQ\t0\ta\t1e999\ts\t\t\t0\t0\t\t\t\t\t\t\t\t\t\t\t\t0\t1\t0\n");
	expect_bad(QCLI_SHOW, M2 "A\tQ\t0\ta\t0x10\ts\t\t\t0\t0\t\t\t\t\t\t\t\t\t\t\t\t0\t1\t0\n");
	/* fallback is 0 or 1 */
	expect_bad(QCLI_SHOW, M2 "A\tQ\t0\ta\t1.0\ts\t\t\t0\t0\t\t\t\t\t\t\t\t\t\t\t\t2\t1\t0\n");
}

static void test_nul_byte(void **state)
{
	char buf[] = "C\tQ\theld\n";
	char *got;
	struct cap c;

	buf[3] = '\0';
	cap_open(&c);
	assert_int_equal(qcli_print(c.f, QCLI_HOLD, false, buf, sizeof(buf) - 1, (time_t)T0, 0),
	                 EX_PROTOCOL);
	got = (char *)cap_close(&c);
	assert_string_equal(got, "");
	free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unescape),
	    cmocka_unit_test(test_json_str),
	    cmocka_unit_test(test_term_str),
	    cmocka_unit_test(test_list_text),
	    cmocka_unit_test(test_list_text_one_and_empty),
	    cmocka_unit_test(test_list_text_sanitized),
	    cmocka_unit_test(test_list_json),
	    cmocka_unit_test(test_show_text),
	    cmocka_unit_test(test_show_text_no_history),
	    cmocka_unit_test(test_show_json),
	    cmocka_unit_test(test_show_json_time_ms),
	    cmocka_unit_test(test_actions),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_nul_byte),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
