/* Unit tests for src/queue/dsn.c: failure, delay and success notices written into memory
 * from an original in a temp file; the form of the returned original (RET, max_full, header
 * end), ORCPT/ENVID, SMTPUTF8 addresses, header injection through remote replies, line
 * lengths, write and read failures. With DSN_DUMP_DIR set, every notice is also saved there
 * (to be checked by hand with Python's email package). Runs in the test binary only. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue/dsn.h"
#include "smtp/parse.h"

#define PREFIX "JUNK-BEFORE-THE-MESSAGE\r\n"
#define SUFFIX "JUNK-AFTER"

static const char orig_msg[] = "Received: from client.example (client.example [192.0.2.1])\r\n"
                               "\tby mx.example.org with ESMTPS id 01ABC\r\n"
                               "From: Alice <alice@example.org>\r\n"
                               "To: Bob <bob@example.net>\r\n"
                               "Subject: lunch\r\n"
                               "Message-ID: <m1@example.org>\r\n"
                               "\r\n"
                               "Shall we meet at noon?\r\n"
                               "BODY-MARKER\r\n";

struct sink {
	char *p;
	size_t n, cap;
	int calls;
	int fail_at; /* the call that fails (1-based), 0: never */
	int calls_after_fail;
	bool failed;
};

static int sink_wr(void *arg, const void *p, size_t n)
{
	struct sink *s = arg;
	if (s->failed)
		s->calls_after_fail++;
	s->calls++;
	if (s->fail_at != 0 && s->calls >= s->fail_at) {
		s->failed = true;
		return -1;
	}
	if (s->n + n + 1 > s->cap) {
		s->cap = (s->n + n + 1) * 2;
		s->p = realloc(s->p, s->cap);
		assert_non_null(s->p);
	}
	memcpy(s->p + s->n, p, n);
	s->n += n;
	s->p[s->n] = '\0';
	return 0;
}

struct orig {
	int fd;
	uint64_t off, len;
};

/* The original in a temp file between junk, so off/len are honoured. */
static struct orig orig_file(const char *msg, size_t len)
{
	char path[] = "/tmp/sealmail-dsn-XXXXXX";
	struct orig o;
	o.fd = mkstemp(path);
	assert_true(o.fd >= 0);
	unlink(path);
	assert_int_equal(write(o.fd, PREFIX, strlen(PREFIX)), (ssize_t)strlen(PREFIX));
	assert_int_equal(write(o.fd, msg, len), (ssize_t)len);
	assert_int_equal(write(o.fd, SUFFIX, strlen(SUFFIX)), (ssize_t)strlen(SUFFIX));
	o.off = strlen(PREFIX);
	o.len = len;
	return o;
}

static struct dsn_rcpt rcpt_fail(void)
{
	return (struct dsn_rcpt){
	    .addr = "bob@example.net",
	    .orcpt = "rfc822;bob@example.net",
	    .action = DSN_FAILED,
	    .status = "5.1.1",
	    .remote_mta = "mx1.example.net",
	    .diag = "550 5.1.1 <bob@example.net>: Recipient address rejected: no such user",
	    .last_attempt = 1700000300,
	};
}

static struct dsn_report report(const struct dsn_rcpt *r, int n)
{
	return (struct dsn_report){
	    .reporting_mta = "mx.example.org",
	    .qid = "01JD3K7Q9X4M2B",
	    .from = "alice@example.org",
	    .envid = "QQ314159",
	    .ret = SMTP_RET_FULL,
	    .arrival = 1700000000,
	    .now = 1700000400,
	    .rcpts = r,
	    .nrcpts = n,
	};
}

static int dump_seq;

static void dump(const struct sink *s, const char *name)
{
	const char *dir = getenv("DSN_DUMP_DIR");
	if (dir == NULL || strcmp(name, "random") == 0)
		return;
	char path[512];
	snprintf(path, sizeof(path), "%s/%02d-%s.eml", dir, ++dump_seq, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	fwrite(s->p, 1, s->n, f);
	fclose(f);
}

/* Every line ends in CRLF, no bare CR or LF, none longer than 998 octets. */
static void check_lines(const struct sink *s)
{
	size_t start = 0;
	assert_true(s->n >= 2);
	for (size_t i = 0; i < s->n; i++) {
		if (s->p[i] == '\n') {
			if (i == 0 || s->p[i - 1] != '\r')
				fail_msg("bare LF at %zu", i);
			size_t len = i - 1 - start;
			if (len > 998)
				fail_msg("line of %zu octets at %zu", len, start);
			start = i + 1;
		} else if (s->p[i] == '\r' && (i + 1 >= s->n || s->p[i + 1] != '\n')) {
			fail_msg("bare CR at %zu", i);
		}
	}
	assert_int_equal(start, s->n); /* ends with CRLF */
}

static const char *find(const struct sink *s, const char *needle)
{
	return memmem(s->p, s->n, needle, strlen(needle));
}

static int count(const struct sink *s, const char *needle)
{
	int c = 0;
	size_t nl = strlen(needle);
	for (const char *p = s->p; (p = memmem(p, s->n - (size_t)(p - s->p), needle, nl)) != NULL;
	     p += nl)
		c++;
	return c;
}

/* Whether needle occurs once lines are joined: each CRLF and the blanks after it count
 * as one space (undoes header folding and the human part's wrapping). */
static bool find_flat(const struct sink *s, const char *needle)
{
	char *f = malloc(s->n + 1);
	size_t o = 0;
	for (size_t i = 0; i < s->n; i++) {
		if (s->p[i] == '\r' && i + 1 < s->n && s->p[i + 1] == '\n') {
			i += 2;
			while (i < s->n && (s->p[i] == ' ' || s->p[i] == '\t'))
				i++;
			i--;
			f[o++] = ' ';
		} else {
			f[o++] = s->p[i];
		}
	}
	bool r = memmem(f, o, needle, strlen(needle)) != NULL;
	free(f);
	return r;
}

/* A line that is exactly `line` (given without CRLF). */
static bool has_line(const struct sink *s, const char *line)
{
	char buf[2048];
	snprintf(buf, sizeof(buf), "\r\n%s\r\n", line);
	return find(s, buf) != NULL;
}

/* The boundary from the top-level Content-Type; checks the part structure around it. */
static void check_structure(const struct sink *s, char *boundary, size_t bsz)
{
	const char *p = find(s, "boundary=\"");
	assert_non_null(p);
	p += strlen("boundary=\"");
	const char *q = memchr(p, '"', s->n - (size_t)(p - s->p));
	assert_non_null(q);
	assert_true((size_t)(q - p) < bsz && q - p <= 70 && q > p);
	memcpy(boundary, p, (size_t)(q - p));
	boundary[q - p] = '\0';
	char delim[128];
	snprintf(delim, sizeof(delim), "\r\n--%s\r\n", boundary);
	assert_int_equal(count(s, delim), 3);
	snprintf(delim, sizeof(delim), "\r\n--%s--\r\n", boundary);
	assert_int_equal(count(s, delim), 1);
	/* it closes the message */
	assert_true(s->n > strlen(delim));
	assert_memory_equal(s->p + s->n - strlen(delim), delim, strlen(delim));
}

/* The top-level header section: every line is a known field or a continuation. */
static void check_top_header(const struct sink *s)
{
	static const char *const names[] = {
	    "From: ",           "To: ",           "Subject: ",
	    "Date: ",           "Message-ID: ",   "MIME-Version: ",
	    "Auto-Submitted: ", "Content-Type: ", "Content-Transfer-Encoding: "};
	const char *end = find(s, "\r\n\r\n");
	assert_non_null(end);
	for (const char *l = s->p; l < end;) {
		const char *e = memmem(l, (size_t)(end + 2 - l), "\r\n", 2);
		bool ok = l[0] == ' ' || l[0] == '\t';
		for (size_t i = 0; !ok && i < sizeof(names) / sizeof(names[0]); i++)
			ok = strncmp(l, names[i], strlen(names[i])) == 0;
		if (!ok)
			fail_msg("unexpected top-level header line: %.*s", (int)(e - l), l);
		l = e + 2;
	}
}

static void run(const struct dsn_report *r, const struct orig *o, uint64_t max_full, struct sink *s,
                const char *name)
{
	memset(s, 0, sizeof(*s));
	assert_int_equal(dsn_write(r, o->fd, o->off, o->len, max_full, sink_wr, s), 0);
	dump(s, name);
	check_lines(s);
	check_top_header(s);
	char b[128];
	check_structure(s, b, sizeof(b));
}

static void test_subject(void **state)
{
	(void)state;
	struct dsn_rcpt rc = rcpt_fail();
	struct dsn_report r = report(&rc, 1);
	assert_string_equal(dsn_subject(&r), "Undelivered Mail Returned to Sender");
	rc.action = DSN_DELAYED;
	assert_string_equal(dsn_subject(&r), "Delayed Mail (still being retried)");
	rc.action = DSN_DELIVERED;
	assert_string_equal(dsn_subject(&r), "Successful Mail Delivery Report");
	rc.action = DSN_RELAYED;
	assert_string_equal(dsn_subject(&r), "Successful Mail Delivery Report");
}

static void test_failure_full(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	struct dsn_rcpt rc = rcpt_fail();
	struct dsn_report r = report(&rc, 1);
	struct sink s;
	run(&r, &o, 10 * 1024 * 1024, &s, "failure-full");

	/* top-level header */
	assert_memory_equal(
	    s.p, "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n",
	    strlen("From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"));
	assert_true(has_line(&s, "To: <alice@example.org>"));
	assert_true(has_line(&s, "Subject: Undelivered Mail Returned to Sender"));
	assert_true(has_line(&s, "Date: Tue, 14 Nov 2023 22:20:00 +0000"));
	assert_true(has_line(&s, "Auto-Submitted: auto-replied"));
	assert_true(has_line(&s, "MIME-Version: 1.0"));
	assert_non_null(find(&s, "\r\nMessage-ID: <01JD3K7Q9X4M2B."));
	assert_non_null(find(&s, "@mx.example.org>\r\n"));
	assert_non_null(
	    find(&s, "\r\nContent-Type: multipart/report; report-type=delivery-status;"));
	assert_null(find(&s, "Content-Transfer-Encoding")); /* all 7-bit */

	/* human part */
	assert_true(has_line(&s, "Content-Type: text/plain; charset=us-ascii"));
	assert_true(has_line(&s, "This is the mail system at host mx.example.org."));
	assert_true(find_flat(&s, "Your message could not be delivered to the recipients listed "
	                          "below, and no further attempts will be made. It is attached "
	                          "below."));
	assert_non_null(find(&s, "01JD3K7Q9X4M2B"));
	assert_non_null(find(&s, "<bob@example.net>: host mx1.example.net said: 550 5.1.1"));

	/* delivery-status part */
	assert_true(has_line(&s, "Content-Type: message/delivery-status"));
	assert_non_null(find(&s, "\r\n\r\nReporting-MTA: dns; mx.example.org\r\n"));
	assert_true(has_line(&s, "Original-Envelope-Id: QQ314159"));
	assert_true(has_line(&s, "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000"));
	assert_non_null(
	    find(&s, "\r\n\r\nOriginal-Recipient: rfc822;bob@example.net\r\n"
	             "Final-Recipient: rfc822;bob@example.net\r\n"
	             "Action: failed\r\n"
	             "Status: 5.1.1\r\n"
	             "Remote-MTA: dns; mx1.example.net\r\n"
	             "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address\r\n"
	             " rejected: no such user\r\n"
	             "Last-Attempt-Date: Tue, 14 Nov 2023 22:18:20 +0000\r\n"));
	assert_null(find(&s, "Will-Retry-Until"));

	/* the whole original, byte for byte, as message/rfc822 */
	assert_true(has_line(&s, "Content-Type: message/rfc822"));
	char want[2048];
	snprintf(want, sizeof(want), "message/rfc822\r\n\r\n%s\r\n--", orig_msg);
	assert_non_null(find(&s, want));
	assert_null(find(&s, "JUNK"));
	free(s.p);
	close(o.fd);
}

static void test_failure_hdrs(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	struct dsn_rcpt rc = rcpt_fail();
	struct dsn_report r = report(&rc, 1);
	r.ret = SMTP_RET_HDRS;
	struct sink s;
	run(&r, &o, 10 * 1024 * 1024, &s, "failure-hdrs");
	assert_true(has_line(&s, "Content-Type: text/rfc822-headers"));
	assert_null(find(&s, "message/rfc822"));
	assert_non_null(find(&s, "Subject: lunch\r\nMessage-ID: <m1@example.org>\r\n\r\n\r\n--"));
	assert_null(find(&s, "BODY-MARKER"));
	assert_null(find(&s, "Shall we meet"));
	free(s.p);

	/* RET absent: the whole original, like FULL */
	r.ret = SMTP_RET_NONE;
	run(&r, &o, 10 * 1024 * 1024, &s, "failure-ret-none");
	assert_true(has_line(&s, "Content-Type: message/rfc822"));
	assert_non_null(find(&s, "BODY-MARKER"));
	free(s.p);
	close(o.fd);
}

static void test_max_full(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	struct dsn_rcpt rc = rcpt_fail();
	struct dsn_report r = report(&rc, 1);
	struct sink s;
	/* exactly max_full: still whole */
	run(&r, &o, strlen(orig_msg), &s, "max-full-equal");
	assert_true(has_line(&s, "Content-Type: message/rfc822"));
	assert_non_null(find(&s, "BODY-MARKER"));
	free(s.p);
	/* one octet more: headers only, and the human part says why */
	run(&r, &o, strlen(orig_msg) - 1, &s, "max-full-over");
	assert_true(has_line(&s, "Content-Type: text/rfc822-headers"));
	assert_null(find(&s, "BODY-MARKER"));
	assert_non_null(find(&s, "too large"));
	free(s.p);
	close(o.fd);
}

static void test_delay(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	struct dsn_rcpt rc = {
	    .addr = "carol@example.com",
	    .action = DSN_DELAYED,
	    .status = "4.4.1",
	    .reason = "connection to mx.example.com timed out",
	    .last_attempt = 1700003600,
	};
	struct dsn_report r = report(&rc, 1);
	r.give_up = 1700000000 + 5 * 86400;
	r.envid = NULL;
	struct sink s;
	run(&r, &o, 10 * 1024 * 1024, &s, "delay");
	assert_true(has_line(&s, "Subject: Delayed Mail (still being retried)"));
	assert_true(find_flat(&s, "has not reached the recipients listed below yet"));
	/* the human part names the give-up date (possibly wrapped) */
	assert_true(find_flat(&s, "delivery will be tried again until Sun, 19 Nov 2023 "
	                          "22:13:20 +0000,"));
	/* the human part ends with its last recipient line */
	assert_non_null(find(&s, "\r\n\r\n<carol@example.com>: connection to mx.example.com timed "
	                         "out\r\n\r\n--"));
	assert_non_null(find(&s, "\r\n\r\nFinal-Recipient: rfc822;carol@example.com\r\n"
	                         "Action: delayed\r\n"
	                         "Status: 4.4.1\r\n"
	                         "Last-Attempt-Date: Tue, 14 Nov 2023 23:13:20 +0000\r\n"
	                         "Will-Retry-Until: Sun, 19 Nov 2023 22:13:20 +0000\r\n"));
	assert_null(find(&s, "Original-Recipient"));
	assert_null(find(&s, "Original-Envelope-Id"));
	assert_null(find(&s, "Remote-MTA"));
	assert_null(find(&s, "Diagnostic-Code"));
	/* a delay notice carries the header section only, whatever RET said */
	assert_true(has_line(&s, "Content-Type: text/rfc822-headers"));
	assert_null(find(&s, "BODY-MARKER"));
	free(s.p);

	/* without a give-up time: no Will-Retry-Until, no date promised */
	r.give_up = 0;
	rc.last_attempt = 0;
	run(&r, &o, 10 * 1024 * 1024, &s, "delay-no-giveup");
	assert_null(find(&s, "Will-Retry-Until"));
	assert_null(find(&s, "Last-Attempt-Date"));
	assert_false(find_flat(&s, "keep trying until"));
	free(s.p);
	close(o.fd);
}

static void test_success(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	struct dsn_rcpt rc[2] = {
	    {.addr = "dave@example.com",
	     .action = DSN_RELAYED,
	     .status = "2.0.0",
	     .remote_mta = "mx.example.com",
	     .diag = "250 2.0.0 Ok: queued as 4QxYz"},
	    {.addr = "erin@example.org", .action = DSN_DELIVERED, .status = "2.0.0"},
	};
	struct dsn_report r = report(rc, 2);
	struct sink s;
	run(&r, &o, 10 * 1024 * 1024, &s, "success");
	assert_true(has_line(&s, "Subject: Successful Mail Delivery Report"));
	assert_true(has_line(&s, "Action: relayed"));
	assert_true(has_line(&s,
	                     "<dave@example.com>: relayed via mx.example.com: 250 2.0.0 Ok: queued "
	                     "as 4QxYz"));
	assert_true(has_line(&s, "<erin@example.org>: delivered"));
	assert_true(has_line(&s, "Action: delivered"));
	assert_true(has_line(&s, "Content-Type: text/rfc822-headers"));
	assert_null(find(&s, "BODY-MARKER"));
	free(s.p);
	close(o.fd);
}

static void test_orcpt_envid(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	static const struct {
		const char *orcpt, *envid;
		bool has_orcpt, has_envid;
	} t[] = {
	    {"rfc822;bob+2Bx@example.net", "ABC+2Bdef", true, true},
	    {NULL, NULL, false, false},
	    {"", "", false, false},
	    {"rfc822;bob with space@example.net", "has space", false, false},
	    {"rfc822;b\xc3\xb6@example.net", "\xc3\xb6", false, false},
	    {"rfc822;bob\r\nX-Injected: yes", "id\r\nX-Injected: yes", false, false},
	    {"no-semicolon", "ok", false, true},
	    {";x", "ok", false, true},
	    {"rfc822;", "ok", false, true},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct dsn_rcpt rc = rcpt_fail();
		rc.orcpt = t[i].orcpt;
		struct dsn_report r = report(&rc, 1);
		r.envid = t[i].envid;
		struct sink s;
		run(&r, &o, 10 * 1024 * 1024, &s, "orcpt-envid");
		char line[256];
		snprintf(line, sizeof(line), "Original-Recipient: %s",
		         t[i].orcpt ? t[i].orcpt : "");
		assert_int_equal(has_line(&s, line), t[i].has_orcpt);
		assert_int_equal(find(&s, "Original-Recipient") != NULL, t[i].has_orcpt);
		snprintf(line, sizeof(line), "Original-Envelope-Id: %s",
		         t[i].envid ? t[i].envid : "");
		assert_int_equal(has_line(&s, line), t[i].has_envid);
		assert_int_equal(find(&s, "Original-Envelope-Id") != NULL, t[i].has_envid);
		assert_null(find(&s, "\nX-Injected"));
		free(s.p);
	}
	close(o.fd);
}

/* A hostile remote reply cannot add header fields, DSN fields or MIME parts. */
static void test_diag_injection(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	struct dsn_rcpt rc = rcpt_fail();
	rc.diag =
	    "550 no\r\nX-Injected: header\r\n\r\nAction: delivered\n\rStatus: 2.0.0\r\n--x--\r\n"
	    "Content-Type: text/html\r\n\x01\x7f\xff\tend";
	rc.reason = "our\nreason\r\nX-Injected: too";
	rc.remote_mta = "mx1.example.net\r\nX-Injected: mta";
	rc.addr = "bob@example.net\r\nX-Injected: addr";
	struct dsn_report r = report(&rc, 1);
	r.from = "alice@example.org>\r\nX-Injected: to";
	r.reporting_mta = "mx.example.org\r\nX-Injected: host";
	r.qid = "Q1\r\nX-Injected: qid";
	struct sink s;
	run(&r, &o, 10 * 1024 * 1024, &s, "injection");
	assert_null(find(&s, "\nX-Injected"));
	assert_null(find(&s, "\nAction: delivered"));
	assert_null(find(&s, "\nStatus: 2.0.0"));
	assert_null(find(&s, "\n--x--"));
	assert_null(find(&s, "\nContent-Type: text/html"));
	assert_int_equal(count(&s, "\r\nAction: "), 1);
	assert_int_equal(count(&s, "\r\nStatus: "), 1);
	assert_true(has_line(&s, "Action: failed"));
	/* the reply is one cleaned line (folded, so compare unfolded) */
	assert_true(find_flat(
	    &s, "Diagnostic-Code: smtp; 550 no X-Injected: header Action: "
	        "delivered Status: 2.0.0 --x-- Content-Type: text/html ?? end Last-Attempt-Date:"));
	assert_true(find_flat(&s, "host mx1.example.net X-Injected: mta said: 550 no X-Injected"));
	assert_true(find_flat(&s, " our reason X-Injected: too"));
	/* the MTA name with a space in it is no host name: left out of Remote-MTA */
	assert_null(find(&s, "Remote-MTA"));
	/* the To: address cannot be closed early either */
	assert_true(has_line(&s, "To: <alice@example.org? X-Injected: to>"));
	free(s.p);
	close(o.fd);
}

static void test_long_lines(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	char *nospace = malloc(5001), *spaced = malloc(5001);
	memset(nospace, 'x', 5000);
	nospace[5000] = '\0';
	for (int i = 0; i < 5000; i++)
		spaced[i] = i % 7 == 6 ? ' ' : 'y';
	spaced[5000] = '\0';
	char longaddr[400];
	memset(longaddr, 'l', 300);
	snprintf(longaddr + 300, sizeof(longaddr) - 300, "@example.net");
	struct dsn_rcpt rc[3] = {rcpt_fail(), rcpt_fail(), rcpt_fail()};
	rc[0].diag = nospace;
	rc[1].diag = spaced;
	rc[1].reason = nospace;
	rc[2].addr = longaddr;
	rc[2].diag = NULL;
	rc[2].reason = spaced;
	struct dsn_report r = report(rc, 3);
	struct sink s;
	run(&r, &o, 10 * 1024 * 1024, &s, "long-lines"); /* checks <= 998 per line */
	/* cut, marked as cut */
	assert_non_null(find(&s, "xxx..."));
	assert_null(find(&s, "xxxx ..."));
	free(s.p);
	free(nospace);
	free(spaced);
	close(o.fd);
}

static void test_multiple_rcpts(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	struct dsn_rcpt rc[3] = {rcpt_fail(), rcpt_fail(), rcpt_fail()};
	rc[1].addr = "second@example.net";
	rc[1].orcpt = NULL;
	rc[1].status = "5.7.1";
	rc[1].remote_mta = NULL;
	rc[1].diag = NULL;
	rc[1].reason = "TLS required by policy for example.net but mx1.example.net did not offer "
	               "STARTTLS";
	rc[2].addr = "third@example.net";
	rc[2].orcpt = "rfc822;third@example.net";
	rc[2].status = "bogus";
	rc[2].diag = "554 5.7.1 rejected";
	struct dsn_report r = report(rc, 3);
	struct sink s;
	run(&r, &o, 10 * 1024 * 1024, &s, "multi");
	assert_int_equal(count(&s, "\r\nFinal-Recipient: "), 3);
	assert_int_equal(count(&s, "\r\nAction: failed\r\n"), 3);
	/* groups: each starts after a blank line */
	assert_non_null(find(&s, "\r\n\r\nOriginal-Recipient: rfc822;bob@example.net\r\n"));
	assert_non_null(find(&s, "\r\n\r\nFinal-Recipient: rfc822;second@example.net\r\n"
	                         "Action: failed\r\nStatus: 5.7.1\r\n"));
	assert_non_null(find(&s, "\r\n\r\nOriginal-Recipient: rfc822;third@example.net\r\n"
	                         "Final-Recipient: rfc822;third@example.net\r\n"
	                         "Action: failed\r\nStatus: 5.0.0\r\n"));
	assert_non_null(find(&s, "<second@example.net>: TLS required by policy"));
	assert_non_null(find(&s, "<third@example.net>: host mx1.example.net said: 554 5.7.1"));
	/* human lines come in recipient order */
	const char *a = find(&s, "<bob@example.net>:"), *b = find(&s, "<second@example.net>:"),
	           *c = find(&s, "<third@example.net>:");
	assert_true(a != NULL && b != NULL && c != NULL && a < b && b < c);
	free(s.p);
	close(o.fd);
}

static void test_smtputf8(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	struct dsn_rcpt rc[2] = {rcpt_fail(), rcpt_fail()};
	rc[0].addr = "j\xc3\xb6s\xc3\xa9@b\xc3\xbc"
	             "cher.example";
	rc[1].addr = "a+b=c@example.net";
	struct dsn_report r = report(rc, 2);
	r.smtputf8 = true;
	r.from = "\xc3\xa4lice@example.org";
	struct sink s;
	run(&r, &o, 10 * 1024 * 1024, &s, "smtputf8");
	/* RFC 6533: utf-8-addr-xtext keeps message/delivery-status 7-bit */
	assert_true(has_line(&s, "Final-Recipient: utf-8;j\\x{F6}s\\x{E9}@b\\x{FC}cher.example"));
	assert_true(has_line(&s, "Final-Recipient: rfc822;a+b=c@example.net"));
	assert_true(has_line(&s, "To: <\xc3\xa4lice@example.org>"));
	assert_true(has_line(&s, "Content-Type: text/plain; charset=utf-8"));
	assert_non_null(find(&s, "<j\xc3\xb6s\xc3\xa9@b\xc3\xbc"
	                         "cher.example>: host"));
	assert_true(has_line(&s, "Content-Transfer-Encoding: 8bit"));
	free(s.p);

	/* without SMTPUTF8, 8-bit in an address never reaches the notice */
	r.smtputf8 = false;
	run(&r, &o, 10 * 1024 * 1024, &s, "no-smtputf8");
	assert_true(has_line(&s, "Final-Recipient: rfc822;j?s?@b?cher.example"));
	assert_true(has_line(&s, "Content-Type: text/plain; charset=us-ascii"));
	assert_true(has_line(&s, "To: <??lice@example.org>"));
	for (size_t i = 0; i < s.n; i++)
		assert_true((unsigned char)s.p[i] < 0x80);
	free(s.p);
	close(o.fd);
}

static void test_8bit_original(void **state)
{
	(void)state;
	static const char msg8[] =
	    "From: a@example.org\r\nSubject: caf\xc3\xa9\r\n\r\nna\xc3\xafve\r\n";
	struct orig o = orig_file(msg8, strlen(msg8));
	struct dsn_rcpt rc = rcpt_fail();
	struct dsn_report r = report(&rc, 1);
	struct sink s;
	run(&r, &o, 10 * 1024 * 1024, &s, "8bit-full");
	assert_true(has_line(&s, "Content-Transfer-Encoding: 8bit"));
	assert_non_null(find(&s, msg8));
	free(s.p);
	close(o.fd);
}

static void test_big_original(void **state)
{
	(void)state;
	/* 300 KiB: several read chunks; the whole body is copied exactly */
	size_t n = 300 * 1024;
	char *big = malloc(n + 1);
	size_t hl = (size_t)snprintf(big, n, "Subject: big\r\n\r\n");
	for (size_t i = hl; i < n; i++)
		big[i] = (i - hl) % 80 == 78   ? '\r'
		         : (i - hl) % 80 == 79 ? '\n'
		                               : (char)('a' + i % 26);
	big[n - 2] = '\r';
	big[n - 1] = '\n';
	big[n] = '\0';
	struct orig o = orig_file(big, n);
	struct dsn_rcpt rc = rcpt_fail();
	struct dsn_report r = report(&rc, 1);
	struct sink s;
	run(&r, &o, n, &s, "big-full");
	assert_non_null(memmem(s.p, s.n, big, n));
	free(s.p);
	close(o.fd);

	/* no empty line at all in 300 KiB: the first 256 KiB, cut at a line end */
	for (size_t i = 0; i < n; i++)
		big[i] = i % 80 == 78   ? '\r'
		         : i % 80 == 79 ? '\n'
		         : i % 80 < 4   ? "X-H:"[i % 80]
		                        : 'h';
	o = orig_file(big, n);
	r.ret = SMTP_RET_HDRS;
	run(&r, &o, n, &s, "big-nohdrend");
	const char *p = find(&s, "text/rfc822-headers\r\n\r\n");
	assert_non_null(p);
	p += strlen("text/rfc822-headers\r\n\r\n");
	size_t want = (256 * 1024 / 80) * 80; /* 3276 lines of 80 octets fit in 256 KiB */
	assert_memory_equal(p, big, want);
	assert_memory_equal(p + want, "\r\n--", 4);
	free(s.p);
	close(o.fd);

	/* a message with a header section but no body: the whole of it */
	static const char nobody[] = "Subject: x\r\nFrom: y@example.org\r\n";
	o = orig_file(nobody, strlen(nobody));
	run(&r, &o, n, &s, "hdrs-nobody");
	char w[256];
	snprintf(w, sizeof(w), "text/rfc822-headers\r\n\r\n%s\r\n--", nobody);
	assert_non_null(find(&s, w));
	free(s.p);
	close(o.fd);

	/* an empty original */
	o = orig_file("", 0);
	run(&r, &o, n, &s, "empty-orig");
	assert_non_null(find(&s, "text/rfc822-headers\r\n\r\n\r\n--"));
	free(s.p);
	close(o.fd);
	free(big);
}

static void test_write_failure(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	struct dsn_rcpt rc = rcpt_fail();
	struct dsn_report r = report(&rc, 1);
	struct sink s;
	/* count the calls of a full run, then fail each one in turn */
	run(&r, &o, 1 << 20, &s, "write-ok");
	int total = s.calls;
	free(s.p);
	assert_true(total > 10);
	for (int k = 1; k <= total; k++) {
		memset(&s, 0, sizeof(s));
		s.fail_at = k;
		assert_int_equal(dsn_write(&r, o.fd, o.off, o.len, 1 << 20, sink_wr, &s), -1);
		assert_int_equal(s.calls_after_fail, 0); /* stops at the first failure */
		free(s.p);
	}
	close(o.fd);
}

static void test_read_failure(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	struct dsn_rcpt rc = rcpt_fail();
	struct dsn_report r = report(&rc, 1);
	struct sink s;
	memset(&s, 0, sizeof(s));
	/* the file is shorter than the queue says */
	assert_int_equal(dsn_write(&r, o.fd, o.off, o.len + 1000, 1 << 20, sink_wr, &s), -1);
	free(s.p);
	memset(&s, 0, sizeof(s));
	r.ret = SMTP_RET_HDRS;
	assert_int_equal(dsn_write(&r, o.fd, 1 << 20, 100, 1 << 20, sink_wr, &s), -1);
	free(s.p);
	/* not a file */
	memset(&s, 0, sizeof(s));
	assert_int_equal(dsn_write(&r, -1, 0, 10, 1 << 20, sink_wr, &s), -1);
	free(s.p);
	/* no recipients */
	memset(&s, 0, sizeof(s));
	r.nrcpts = 0;
	assert_int_equal(dsn_write(&r, o.fd, o.off, o.len, 1 << 20, sink_wr, &s), -1);
	assert_int_equal(s.calls, 0);
	close(o.fd);
}

/* Two notices of the same message differ in boundary and Message-ID. */
static void test_unique_ids(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	struct dsn_rcpt rc = rcpt_fail();
	struct dsn_report r = report(&rc, 1);
	struct sink s1, s2;
	char b1[128], b2[128];
	run(&r, &o, 1 << 20, &s1, "uniq1");
	run(&r, &o, 1 << 20, &s2, "uniq2");
	check_structure(&s1, b1, sizeof(b1));
	check_structure(&s2, b2, sizeof(b2));
	assert_string_not_equal(b1, b2);
	assert_memory_equal(b1, "01JD3K7Q9X4M2B.", 15);
	assert_non_null(strstr(b1, "/mx.example.org"));
	free(s1.p);
	free(s2.p);
	close(o.fd);
}

/* Random replies, reasons and addresses (any bytes, any length, runs of blanks): the notice
 * always keeps its structure and its line limits. */
static void test_random_text(void **state)
{
	(void)state;
	struct orig o = orig_file(orig_msg, strlen(orig_msg));
	static const char alphabet[] = "ab \t\r\n\x01\x7f\x80\xc3\xa9:<>\"\\-+=";
	uint32_t x = 12345;
	char *txt[4];
	for (int k = 0; k < 4; k++)
		txt[k] = malloc(4001);
	for (int iter = 0; iter < 300; iter++) {
		for (int k = 0; k < 4; k++) {
			x = x * 1103515245 + 12345;
			size_t n = (x >> 8) % 4000;
			for (size_t i = 0; i < n; i++) {
				x = x * 1103515245 + 12345;
				/* mostly letters so that words of every length occur */
				txt[k][i] = (x >> 24) % 4 == 0
				                ? alphabet[(x >> 16) % (sizeof(alphabet) - 1)]
				                : 'w';
			}
			txt[k][n] = '\0';
		}
		struct dsn_rcpt rc = rcpt_fail();
		rc.diag = txt[0];
		rc.reason = txt[1];
		rc.remote_mta = iter % 2 ? txt[2] : "mx.example.net";
		rc.addr = iter % 3 ? txt[3] : "x@example.net";
		rc.action = (enum dsn_action)(iter % 4);
		struct dsn_report r = report(&rc, 1);
		r.smtputf8 = iter % 5 == 0;
		r.from = txt[3];
		struct sink s;
		run(&r, &o, 1 << 20, &s, "random"); /* structure, CRLF, <= 998 */
		free(s.p);
	}
	for (int k = 0; k < 4; k++)
		free(txt[k]);
	close(o.fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_subject),      cmocka_unit_test(test_failure_full),
	    cmocka_unit_test(test_failure_hdrs), cmocka_unit_test(test_max_full),
	    cmocka_unit_test(test_delay),        cmocka_unit_test(test_success),
	    cmocka_unit_test(test_orcpt_envid),  cmocka_unit_test(test_diag_injection),
	    cmocka_unit_test(test_long_lines),   cmocka_unit_test(test_multiple_rcpts),
	    cmocka_unit_test(test_smtputf8),     cmocka_unit_test(test_8bit_original),
	    cmocka_unit_test(test_big_original), cmocka_unit_test(test_write_failure),
	    cmocka_unit_test(test_read_failure), cmocka_unit_test(test_unique_ids),
	    cmocka_unit_test(test_random_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
