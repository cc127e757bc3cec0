/* Unit tests for src/queue/records.c: delivery attempts (every field round-trips, history is
 * oldest first and per message), schedule state get/put/del, pruning, persistence across a
 * reopen, and refusing a newer schema. Each test gets its own temporary data directory. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "queue/records.h"

struct fx {
	char dir[64];
	struct records *r;
};

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static struct records *open_rec(const char *dir)
{
	char err[256] = "";
	struct records *r = records_open(dir, err, sizeof(err));
	if (r == NULL)
		fail_msg("records_open: %s", err);
	return r;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/sealmail-test-records-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->r = open_rec(f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	records_close(f->r);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* ---- helpers ---- */

#define MAXSEEN 8

struct seen {
	struct attempt a[MAXSEEN];
	int n;
};

static void collect(void *arg, const struct attempt *a)
{
	struct seen *s = arg;
	assert_true(s->n < MAXSEEN);
	s->a[s->n++] = *a;
}

/* A fully populated attempt: every string non-empty, numbers distinct. */
static void full_attempt(struct attempt *a, const char *qid, int rcpt, double t)
{
	memset(a, 0, sizeof(*a));
	snprintf(a->qid, sizeof(a->qid), "%s", qid);
	a->rcpt = rcpt;
	snprintf(a->rcpt_addr, sizeof(a->rcpt_addr), "bob%d@example.org", rcpt);
	a->time = t;
	snprintf(a->status, sizeof(a->status), "deferred");
	snprintf(a->mx, sizeof(a->mx), "mx1.example.org");
	snprintf(a->ip, sizeof(a->ip), "2001:db8::7");
	a->port = 25;
	a->code = 451;
	snprintf(a->enh, sizeof(a->enh), "4.7.1");
	snprintf(a->reply, sizeof(a->reply), "451 4.7.1 Try again later\t'quoted' \"x\" \\ ü");
	snprintf(a->reason, sizeof(a->reason), "greylisted");
	snprintf(a->stage, sizeof(a->stage), "rcpt");
	snprintf(a->tls_policy, sizeof(a->tls_policy), "verify");
	snprintf(a->policy_source, sizeof(a->policy_source), "domain");
	snprintf(a->tls_version, sizeof(a->tls_version), "TLSv1.3");
	snprintf(a->tls_cipher, sizeof(a->tls_cipher), "TLS_AES_256_GCM_SHA384");
	snprintf(a->cert, sizeof(a->cert), "failed");
	snprintf(a->cert_error, sizeof(a->cert_error), "certificate has expired");
	snprintf(a->dnssec, sizeof(a->dnssec), "secure");
	a->fallback = true;
	a->attempt_no = 3;
	a->delay = 1234.567;
}

static void assert_attempt_equal(const struct attempt *x, const struct attempt *y)
{
	assert_string_equal(x->qid, y->qid);
	assert_int_equal(x->rcpt, y->rcpt);
	assert_string_equal(x->rcpt_addr, y->rcpt_addr);
	assert_true(x->time == y->time); /* REAL is an IEEE double: exact */
	assert_string_equal(x->status, y->status);
	assert_string_equal(x->mx, y->mx);
	assert_string_equal(x->ip, y->ip);
	assert_int_equal(x->port, y->port);
	assert_int_equal(x->code, y->code);
	assert_string_equal(x->enh, y->enh);
	assert_string_equal(x->reply, y->reply);
	assert_string_equal(x->reason, y->reason);
	assert_string_equal(x->stage, y->stage);
	assert_string_equal(x->tls_policy, y->tls_policy);
	assert_string_equal(x->policy_source, y->policy_source);
	assert_string_equal(x->tls_version, y->tls_version);
	assert_string_equal(x->tls_cipher, y->tls_cipher);
	assert_string_equal(x->cert, y->cert);
	assert_string_equal(x->cert_error, y->cert_error);
	assert_string_equal(x->dnssec, y->dnssec);
	assert_int_equal(x->fallback, y->fallback);
	assert_int_equal(x->attempt_no, y->attempt_no);
	assert_true(x->delay == y->delay);
}

/* ---- tests ---- */

static void test_attempt_round_trip(void **state)
{
	struct fx *f = *state;
	struct attempt a;
	struct seen s = {.n = 0};

	full_attempt(&a, "01JD3K7Q9X4M2B", 2, 1796076605.123);
	assert_int_equal(records_add(f->r, &a), 0);
	assert_int_equal(records_history(f->r, "01JD3K7Q9X4M2B", collect, &s), 1);
	assert_int_equal(s.n, 1);
	assert_attempt_equal(&s.a[0], &a);
}

/* "" strings stay "" (not NULL, not missing), zeros stay zeros, false stays false. */
static void test_attempt_empty_fields(void **state)
{
	struct fx *f = *state;
	struct attempt a;
	struct seen s = {.n = 0};

	memset(&a, 0, sizeof(a));
	snprintf(a.qid, sizeof(a.qid), "Q1");
	snprintf(a.status, sizeof(a.status), "bounced");
	a.time = 0.001;
	assert_int_equal(records_add(f->r, &a), 0);
	assert_int_equal(records_history(f->r, "Q1", collect, &s), 1);
	assert_attempt_equal(&s.a[0], &a);
	assert_string_equal(s.a[0].mx, "");
	assert_false(s.a[0].fallback);
}

/* Strings filled to the last byte of their field come back whole. */
static void test_attempt_full_length_fields(void **state)
{
	struct fx *f = *state;
	struct attempt a;
	struct seen s = {.n = 0};

	full_attempt(&a, "Q2", 0, 10.0);
	memset(a.reply, 'r', sizeof(a.reply) - 1);
	a.reply[sizeof(a.reply) - 1] = '\0';
	memset(a.rcpt_addr, 'x', sizeof(a.rcpt_addr) - 1);
	a.rcpt_addr[sizeof(a.rcpt_addr) - 1] = '\0';
	assert_int_equal(records_add(f->r, &a), 0);
	assert_int_equal(records_history(f->r, "Q2", collect, &s), 1);
	assert_attempt_equal(&s.a[0], &a);
}

static void test_history_order_and_filter(void **state)
{
	struct fx *f = *state;
	struct attempt a;
	struct seen s = {.n = 0};

	/* inserted out of time order, plus two at the same instant (insertion order wins) */
	full_attempt(&a, "QA", 0, 300.5);
	a.attempt_no = 3;
	assert_int_equal(records_add(f->r, &a), 0);
	full_attempt(&a, "QB", 0, 100.0);
	assert_int_equal(records_add(f->r, &a), 0);
	full_attempt(&a, "QA", 0, 100.25);
	a.attempt_no = 1;
	assert_int_equal(records_add(f->r, &a), 0);
	full_attempt(&a, "QA", 1, 200.0);
	a.attempt_no = 2;
	assert_int_equal(records_add(f->r, &a), 0);
	full_attempt(&a, "QA", 0, 200.0);
	a.attempt_no = 2;
	assert_int_equal(records_add(f->r, &a), 0);

	assert_int_equal(records_history(f->r, "QA", collect, &s), 4);
	assert_true(s.a[0].time == 100.25);
	assert_true(s.a[1].time == 200.0);
	assert_int_equal(s.a[1].rcpt, 1);
	assert_true(s.a[2].time == 200.0);
	assert_int_equal(s.a[2].rcpt, 0);
	assert_true(s.a[3].time == 300.5);
	for (int i = 0; i < 4; i++)
		assert_string_equal(s.a[i].qid, "QA");

	s.n = 0;
	assert_int_equal(records_history(f->r, "QB", collect, &s), 1);
	s.n = 0;
	assert_int_equal(records_history(f->r, "NONE", collect, &s), 0);
	assert_int_equal(s.n, 0);
}

static void test_state(void **state)
{
	struct fx *f = *state;
	struct msgstate st, got;

	memset(&got, 0xff, sizeof(got));
	assert_int_equal(records_state_get(f->r, "Q1", &got), 1);
	assert_int_equal(got.attempts, 0); /* zeroed when none */
	assert_int_equal(got.next_try, 0);
	assert_false(got.held);
	assert_string_equal(got.last_reason, "");

	memset(&st, 0, sizeof(st));
	st.attempts = 2;
	st.next_try = 1796076905;
	st.held = true;
	st.warned = false;
	snprintf(st.last_reason, sizeof(st.last_reason), "451 4.7.1 greylisted \"try\"\tlater");
	assert_int_equal(records_state_put(f->r, "Q1", &st), 0);
	assert_int_equal(records_state_get(f->r, "Q1", &got), 0);
	assert_int_equal(got.attempts, 2);
	assert_int_equal(got.next_try, 1796076905);
	assert_true(got.held);
	assert_false(got.warned);
	assert_string_equal(got.last_reason, st.last_reason);

	/* put replaces */
	st.attempts = 3;
	st.held = false;
	st.warned = true;
	st.last_reason[0] = '\0';
	assert_int_equal(records_state_put(f->r, "Q1", &st), 0);
	assert_int_equal(records_state_get(f->r, "Q1", &got), 0);
	assert_int_equal(got.attempts, 3);
	assert_false(got.held);
	assert_true(got.warned);
	assert_string_equal(got.last_reason, "");

	/* another message is separate */
	assert_int_equal(records_state_get(f->r, "Q2", &got), 1);

	assert_int_equal(records_state_del(f->r, "Q1"), 0);
	assert_int_equal(records_state_get(f->r, "Q1", &got), 1);
	/* forgetting twice is not an error */
	assert_int_equal(records_state_del(f->r, "Q1"), 0);
}

/* Deleting the state of a message keeps its history. */
static void test_state_del_keeps_history(void **state)
{
	struct fx *f = *state;
	struct attempt a;
	struct msgstate st = {.attempts = 1};
	struct seen s = {.n = 0};

	full_attempt(&a, "Q1", 0, 50.0);
	assert_int_equal(records_add(f->r, &a), 0);
	assert_int_equal(records_state_put(f->r, "Q1", &st), 0);
	assert_int_equal(records_state_del(f->r, "Q1"), 0);
	assert_int_equal(records_history(f->r, "Q1", collect, &s), 1);
}

static void test_prune(void **state)
{
	struct fx *f = *state;
	struct attempt a;
	struct seen s = {.n = 0};

	full_attempt(&a, "Q1", 0, 99.9);
	assert_int_equal(records_add(f->r, &a), 0);
	full_attempt(&a, "Q1", 0, 100.0);
	assert_int_equal(records_add(f->r, &a), 0);
	full_attempt(&a, "Q2", 0, 50.0);
	assert_int_equal(records_add(f->r, &a), 0);
	full_attempt(&a, "Q2", 0, 150.0);
	assert_int_equal(records_add(f->r, &a), 0);

	assert_int_equal(records_prune(f->r, 100), 2);
	assert_int_equal(records_history(f->r, "Q1", collect, &s), 1);
	assert_true(s.a[0].time == 100.0);
	s.n = 0;
	assert_int_equal(records_history(f->r, "Q2", collect, &s), 1);
	assert_true(s.a[0].time == 150.0);
	assert_int_equal(records_prune(f->r, 100), 0);
}

static void test_reopen_persists(void **state)
{
	struct fx *f = *state;
	struct attempt a;
	struct msgstate st = {.attempts = 4, .next_try = 777, .warned = true};
	struct msgstate got;
	struct seen s = {.n = 0};
	struct stat sb;
	char path[128];

	full_attempt(&a, "QP", 1, 1796076605.5);
	assert_int_equal(records_add(f->r, &a), 0);
	assert_int_equal(records_state_put(f->r, "QP", &st), 0);
	records_close(f->r);
	f->r = open_rec(f->dir);

	assert_int_equal(records_history(f->r, "QP", collect, &s), 1);
	assert_attempt_equal(&s.a[0], &a);
	assert_int_equal(records_state_get(f->r, "QP", &got), 0);
	assert_int_equal(got.attempts, 4);
	assert_int_equal(got.next_try, 777);
	assert_true(got.warned);

	snprintf(path, sizeof(path), "%s/queue.db", f->dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
}

/* Batched writes: invisible to another connection until the loop turn ends, then committed;
 * records_close commits what is still open. */
static void test_batch_commits_per_loop_turn(void **state)
{
	struct fx *f = *state;
	struct attempt a;
	struct seen s = {.n = 0};
	struct event_base *base = event_base_new();
	assert_non_null(base);
	records_batch(f->r, base);
	struct records *other = open_rec(f->dir);

	full_attempt(&a, "QB", 0, 1796076605.25);
	assert_int_equal(records_add(f->r, &a), 0);
	assert_int_equal(records_add(f->r, &a), 0);
	/* the writer sees its own rows at once; another reader only after the commit */
	assert_int_equal(records_history(f->r, "QB", collect, &s), 2);
	s.n = 0;
	assert_int_equal(records_history(other, "QB", collect, &s), 0);
	assert_true(event_base_loop(base, EVLOOP_NONBLOCK) >= 0);
	assert_int_equal(records_history(other, "QB", collect, &s), 2);

	/* a write left open at close is committed by records_close */
	assert_int_equal(records_add(f->r, &a), 0);
	records_close(f->r);
	f->r = open_rec(f->dir);
	s.n = 0;
	assert_int_equal(records_history(other, "QB", collect, &s), 3);
	records_close(other);
	event_base_free(base);
}

/* The file is WAL with user_version 1 (what a tool reading it expects). */
static void test_schema_pragmas(void **state)
{
	struct fx *f = *state;
	char path[128];
	sqlite3 *db;
	sqlite3_stmt *s;

	snprintf(path, sizeof(path), "%s/queue.db", f->dir);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(s, 0), 1);
	sqlite3_finalize(s);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	sqlite3_close(db);
}

/* A database from a newer sealmail is refused, not silently used. */
static void test_newer_schema_refused(void **state)
{
	struct fx *f = *state;
	char path[128];
	char err[256] = "";
	sqlite3 *db;

	records_close(f->r);
	f->r = NULL;
	snprintf(path, sizeof(path), "%s/queue.db", f->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 9", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_null(records_open(f->dir, err, sizeof(err)));
	assert_non_null(strstr(err, "newer"));
	assert_non_null(strstr(err, "queue.db"));
}

static void test_open_errors(void **state)
{
	char err[256] = "";
	assert_null(records_open("", err, sizeof(err)));
	assert_string_not_equal(err, "");
	assert_null(records_open("/nonexistent/sealmail-records", err, sizeof(err)));
	assert_non_null(strstr(err, "queue.db"));
	records_close(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_attempt_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_attempt_empty_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_attempt_full_length_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_history_order_and_filter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_state_del_keeps_history, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_persists, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batch_commits_per_loop_turn, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_schema_pragmas, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
	    cmocka_unit_test(test_open_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
